"""Settings of gateway-bridge: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class GatewayBridgeSettings(CommonSettings):
    """Environment of gateway-bridge (``IBFLOW_`` prefix).

    Metrics and health are served on port 9101 by default.
    """

    service_name: str = Field(default="gateway-bridge", min_length=1)
    http_port: int = Field(default=9101, ge=0, le=65535)
