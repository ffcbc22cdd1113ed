"""Settings of scheduler: :class:`~ibflow.settings.CommonSettings` with its own defaults."""

from __future__ import annotations

from pydantic import Field

from ibflow.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    """Environment of scheduler (``IBFLOW_`` prefix).

    Metrics and health are served on port 9104 by default.
    """

    service_name: str = Field(default="scheduler", min_length=1)
    http_port: int = Field(default=9104, ge=0, le=65535)
