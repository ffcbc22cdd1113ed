"""The trading calendar's moments, as the scheduler emits them (NYSE calendar)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from ibflow.contracts.base import Actor, Command, Contract, Event, UtcDatetime

SessionEventName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""A session event's name (``morning_entry``, ``close_out``); a subject token."""


def occurrence_id(name: str, session_date: date, sequence: int = 0) -> str:
    """``<name>:<session date>:<sequence>``, e.g. ``morning_entry:2026-11-23:0``.

    ``sequence`` is 0 for the scheduled occurrence and counts manual triggers after it.
    """
    return f"{name}:{session_date.isoformat()}:{sequence}"


class SessionEventEmitted(Event):
    """A scheduled (or manually triggered) moment of a trading session has come.

    Emitted once per ``occurrence_id``, also after a scheduler restart (then ``late``
    if past its time); consumers act on each occurrence once, and everything they do
    because of it is caused by it (``Envelope.caused``).
    """

    name: SessionEventName
    occurrence_id: str
    session_date: date
    scheduled_for: UtcDatetime
    emitted_at: UtcDatetime
    late: bool = False
    """Emitted after its time (beyond the scheduler's tolerance), e.g. after downtime."""
    manual: bool = False
    """Triggered by ``TriggerSessionEvent`` rather than the calendar."""
    session_open: UtcDatetime
    """The session's regular open."""
    session_close: UtcDatetime
    """The session's regular close (early on half days)."""

    @model_validator(mode="after")
    def _check_occurrence(self) -> Self:
        prefix = f"{self.name}:{self.session_date.isoformat()}:"
        suffix = self.occurrence_id.removeprefix(prefix)
        if suffix == self.occurrence_id or not suffix.isdigit():
            raise ValueError(f"occurrence_id must look like {prefix}<n>")
        return self

    def dedupe_key(self) -> str:
        """``session:<occurrence_id>``."""
        return f"session:{self.occurrence_id}"


class TriggerSessionEvent(Command):
    """Ask the scheduler to emit a session event now (operations, tests); it is emitted
    with ``manual`` set and the next sequence number of the day.

    ``close_out`` and ``morning_entry`` are refused outside today's session (and
    ``morning_entry`` after the close-out) unless ``force`` is set; an unknown name is
    an error reply."""

    name: SessionEventName
    session_date: date | None = None
    """``None``: today's session in New York."""
    reason: str = ""
    requested_by: Actor
    force: bool = False
    """Emit even outside the session (audited); never for a day without a session."""


class RequestSessionSchedule(Command):
    """Ask the scheduler for a session's occurrences with their state, and the next
    session's (answered with ``SessionScheduleReported``)."""

    session_date: date | None = None
    """``None``: today in New York."""


class OccurrenceState(StrEnum):
    """Where one occurrence of a session event stands."""

    PENDING = "pending"
    """Not emitted yet: its time has not come, or it is due and still within its grace."""
    EMITTED = "emitted"
    """Published on its subject (once)."""
    SKIPPED = "skipped"
    """Never to be emitted: missed beyond its grace, superseded by a later slot, or a
    morning entry after the close-out."""


class ScheduledOccurrence(Contract):
    """One occurrence of a session event and its state."""

    name: SessionEventName
    occurrence_id: str
    scheduled_for: UtcDatetime
    """When it is due (for a manual trigger: when it was triggered)."""
    deadline: UtcDatetime
    """The last moment it is still emitted, late, after downtime (its grace period)."""
    state: OccurrenceState
    emitted_at: UtcDatetime | None = None
    """When it was emitted or skipped."""
    late: bool = False
    manual: bool = False
    reason: str | None = None
    """Why it was skipped."""


class SessionSchedule(Contract):
    """A session's hours and every occurrence of its events, in time order."""

    session_date: date
    session_open: UtcDatetime
    session_close: UtcDatetime
    early_close: bool
    """A half day (13:00 close)."""
    occurrences: tuple[ScheduledOccurrence, ...]


class SessionScheduleReported(Contract):
    """The answer to :class:`RequestSessionSchedule`: the requested day's session (``None``
    when the exchange is closed that day) and the next session, each occurrence with its
    state."""

    as_of: UtcDatetime
    """The scheduler's time when it answered."""
    session: SessionSchedule | None
    next_session: SessionSchedule
    leader: str | None = None
    """The scheduler replica holding the leader lease (``None``: none right now)."""
