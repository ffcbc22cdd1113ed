"""Settings of position-monitor: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class PositionMonitorSettings(CommonSettings):
    """Environment of position-monitor (``IBFLOW_`` prefix).

    Metrics and health are served on port 9103 by default.
    """

    service_name: str = Field(default="position-monitor", min_length=1)
    http_port: int = Field(default=9103, ge=0, le=65535)
