"""Settings of scheduler: :class:`~ibflow.settings.CommonSettings` with its own defaults.

The schedule itself is ZimuaBull's unless overridden per event, either as JSON::

    IBFLOW_SCHEDULE='{"morning_entry": {"offset_minutes": -10, "grace_minutes": 10}}'

or one field at a time (``__`` separates the levels)::

    IBFLOW_SCHEDULE__POSITION_CHECK__PERIOD_MINUTES=5
    IBFLOW_SCHEDULE__PREMARKET__ENABLED=false

An unknown event name, an unknown field, a period ≤ 0 or an offset that puts an event
outside the session (or outside the 04:00-20:00 trading day) fails at start, naming the
setting (exit status 2).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from ibflow.settings import ENV_PREFIX, CommonSettings
from ibflow_scheduler.domain.schedule import EVENT_NAMES, Anchor, ScheduleConfig

__all__ = ["EventSettings", "SchedulerSettings", "default_replica_id"]


def default_replica_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in logs and the lease."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_MINUTE_FIELDS = {
    "offset_minutes": "offset",
    "end_offset_minutes": "end_offset",
    "final_offset_minutes": "final_offset",
    "period_minutes": "period",
}


class EventSettings(BaseModel):
    """Overrides of one event's rule; every field left out keeps the default.

    Minutes are whole minutes; offsets are counted from ``anchor`` (``open`` or
    ``close``) in New York wall-clock time. ``grace_minutes`` may be ``"close"``: an
    occurrence missed during downtime is still emitted until the session's close.
    ``final_offset_minutes: null`` removes a periodic event's extra last slot.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    anchor: Anchor | None = None
    offset_minutes: int | None = None
    period_minutes: Annotated[int, Field(gt=0)] | None = None
    end_anchor: Anchor | None = None
    end_offset_minutes: int | None = None
    final_offset_minutes: int | None = None
    grace_minutes: Annotated[int, Field(ge=0)] | Literal["close"] | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given, as :class:`~ibflow_scheduler.domain.schedule.EventRule` fields."""
        result: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name in _MINUTE_FIELDS:
                result[_MINUTE_FIELDS[name]] = None if value is None else timedelta(minutes=value)
            elif name == "grace_minutes":
                if value is not None:
                    result["grace"] = None if value == "close" else timedelta(minutes=value)
            elif value is not None:
                result[name] = value
        return result


def _setting(event: str, field: str) -> str:
    return f"{ENV_PREFIX}SCHEDULE__{event}__{field}".upper()


class SchedulerSettings(CommonSettings):
    """Environment of scheduler (``IBFLOW_`` prefix).

    Metrics and health are served on port 9104 by default. Besides the schedule
    (``IBFLOW_SCHEDULE``, see the module docstring): the leader lease's time to live
    and renewal period, the tolerance before an event counts as late, this replica's
    name in the lease, and how many days of occurrence records the KV bucket keeps.
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__")

    service_name: str = Field(default="scheduler", min_length=1)
    http_port: int = Field(default=9104, ge=0, le=65535)
    schedule: dict[str, EventSettings] = Field(default_factory=dict)
    """Per-event overrides of the default schedule, by event name."""
    late_tolerance_seconds: float = Field(default=5.0, ge=0)
    """An occurrence emitted more than this after its time is flagged ``late``."""
    lease_ttl_seconds: int = Field(default=10, ge=1, le=3600)
    """The leader lease expires this long after its last renewal (whole seconds)."""
    lease_renew_seconds: float = Field(default=3.0, gt=0)
    """The leader renews its lease this often; others try to take it this often."""
    replica_id: str = Field(default_factory=default_replica_id, min_length=1, max_length=128)
    """This replica's name in the lease and the logs."""
    history_days: int = Field(default=8, ge=2, le=366)
    """Days the occurrence records (what was emitted or skipped) are kept."""

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: dict[str, EventSettings]) -> dict[str, EventSettings]:
        unknown = sorted(set(value) - set(EVENT_NAMES))
        if unknown:
            raise ValueError(
                f"unknown session event(s) {', '.join(unknown)}; known: {', '.join(EVENT_NAMES)}"
            )
        config = ScheduleConfig.with_overrides({n: s.changes() for n, s in value.items()})
        problems = config.problems()
        if problems:
            raise ValueError(
                "; ".join(f"{_setting(p.event, p.field)}: {p.message}" for p in problems)
            )
        return value

    @field_validator("lease_renew_seconds")
    @classmethod
    def _check_renewal(cls, value: float, info: ValidationInfo) -> float:
        ttl = info.data.get("lease_ttl_seconds")
        if ttl is not None and value * 2 > ttl:
            raise ValueError(
                f"must be at most half of IBFLOW_LEASE_TTL_SECONDS ({ttl}), so that a leader"
                " renews at least twice before its lease can expire"
            )
        return value

    def schedule_config(self) -> ScheduleConfig:
        """The schedule these settings describe: the defaults with the overrides applied."""
        return ScheduleConfig.with_overrides({n: s.changes() for n, s in self.schedule.items()})

    @property
    def late_tolerance(self) -> timedelta:
        """:attr:`late_tolerance_seconds` as a timedelta."""
        return timedelta(seconds=self.late_tolerance_seconds)
