"""Settings for every ibflow process, read from the environment (prefix ``IBFLOW_``).

Each service composes :class:`CommonSettings` with its own fields::

    class OrderManagerSettings(CommonSettings):
        service_name: str = "order-manager"
        http_port: int = 9102

Invalid settings fail at start with :class:`SettingsError`, whose message names
the environment variable at fault (``IBFLOW_NATS_URL: ...``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Self

from pydantic import AnyUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IBFLOW_"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/ibflow"


class SettingsError(ValueError):
    """Raised when the environment holds invalid settings; names each bad variable."""


class CommonSettings(BaseSettings):
    """What every ibflow service reads from its environment.

    ``IBFLOW_NATS_URL``, ``IBFLOW_NATS_CREDS`` (a creds file), ``IBFLOW_DATABASE_URL``
    (a secret: it may carry a password), ``IBFLOW_LOG_LEVEL``, ``IBFLOW_LOG_FORMAT``
    and ``IBFLOW_HTTP_HOST``/``IBFLOW_HTTP_PORT`` for the ``/metrics``, ``/healthz``
    and ``/readyz`` endpoint of the process. ``IBFLOW_EVENT_LOOP`` picks the event loop
    of :func:`ibflow.runtime.run`: ``uvloop`` (the default where it is installed) or
    ``asyncio``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    service_name: str = Field(default="ibflow", min_length=1)
    nats_url: str = DEFAULT_NATS_URL
    nats_creds: str | None = None
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "json"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9100, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _check_nats_url(cls, value: str) -> str:
        for server in value.split(","):
            url = AnyUrl(server.strip())
            if url.scheme not in {"nats", "tls", "ws", "wss"}:
                raise ValueError(
                    f"scheme must be nats://, tls://, ws:// or wss://, got {url.scheme!r}"
                )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        url = AnyUrl(value.get_secret_value())
        if url.scheme not in {"postgresql", "postgres"}:
            raise ValueError("scheme must be postgresql:// or postgres://")
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read the environment, raising :class:`SettingsError` that names each bad variable."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc, cls)) from None

    @property
    def python_log_level(self) -> int:
        """The stdlib logging level for :attr:`log_level`."""
        return logging.getLevelNamesMapping()[self.log_level]


def describe_errors(exc: ValidationError, settings_cls: type[BaseSettings]) -> str:
    """Turn a validation error into one line per bad environment variable.

    The offending value is echoed, except for secret fields, which are never printed.
    """
    prefix = settings_cls.model_config.get("env_prefix", "")
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "?"
        variable = f"{prefix}{field}".upper().replace(".", "__")
        info = settings_cls.model_fields.get(str(error["loc"][0])) if error["loc"] else None
        secret = info is not None and "SecretStr" in repr(info.annotation)
        shown = "<secret>" if secret else repr(error.get("input"))
        lines.append(f"{variable}: {error['msg']} (got {shown})")
    return "invalid settings:\n  " + "\n  ".join(lines)
