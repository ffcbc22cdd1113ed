"""Settings of api: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from ibflow.settings import CommonSettings


class ApiSettings(CommonSettings):
    """Environment of api (``IBFLOW_`` prefix).

    One HTTP server on ``IBFLOW_API_PORT`` (default 8000, also read from
    ``IBFLOW_HTTP_PORT``) on ``IBFLOW_HTTP_HOST`` (127.0.0.1) serves the REST API, the
    WebSocket ``/ws`` and the operational ``/metrics``, ``/healthz``, ``/readyz``.
    """

    service_name: str = Field(default="api", min_length=1)
    http_port: int = Field(default=8000, ge=0, le=65535)
    api_port: int | None = Field(default=None, ge=0, le=65535)
    """``IBFLOW_API_PORT``: when set, the port served (it wins over ``IBFLOW_HTTP_PORT``)."""
    default_portfolio: str | None = None
    """Portfolio of the single-portfolio dashboard routes without ``?portfolio=``; unset:
    the first enabled portfolio by id."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS (JSON list); empty (the default) allows none."""
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    """Larger request bodies are refused with 413 before they are read whole."""
    command_timeout: float = Field(default=15.0, gt=0)
    """How long a command over NATS may take before the call answers 504."""
    ws_queue_size: int = Field(default=256, gt=0)
    """Messages buffered per WebSocket client; a client this far behind is dropped."""
    ws_auth_timeout: float = Field(default=5.0, gt=0)
    """How long a WebSocket client without a key header has to send its auth message."""

    key_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a verified API key is trusted without looking at the table again (so a
    revocation takes effect within this delay)."""

    @model_validator(mode="before")
    @classmethod
    def _api_port_wins(cls, data: Any) -> Any:
        if isinstance(data, dict):
            port = str(data.get("api_port", "")).strip()
            if port.isdigit() and int(port) <= 65535:  # else api_port's own error names it
                return {**data, "http_port": port}
        return data

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """:meth:`CommonSettings.load`; an explicit ``http_port`` wins over the environment's
        ``IBFLOW_API_PORT`` too (tests serve on port 0)."""
        if "http_port" in overrides:
            overrides.setdefault("api_port", None)
        return super().load(**overrides)
