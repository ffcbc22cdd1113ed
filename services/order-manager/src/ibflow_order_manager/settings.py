"""Settings of order-manager: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class OrderManagerSettings(CommonSettings):
    """Environment of order-manager (``IBFLOW_`` prefix).

    Metrics and health are served on port 9102 by default.
    """

    service_name: str = Field(default="order-manager", min_length=1)
    http_port: int = Field(default=9102, ge=0, le=65535)
