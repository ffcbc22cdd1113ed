"""Settings of api: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class ApiSettings(CommonSettings):
    """Environment of api (``IBFLOW_`` prefix).

    ``http_port`` (default 9105) serves ``/metrics``, ``/healthz`` and ``/readyz`` only;
    the REST API gets its own port later.
    """

    service_name: str = Field(default="api", min_length=1)
    http_port: int = Field(default=9105, ge=0, le=65535)
