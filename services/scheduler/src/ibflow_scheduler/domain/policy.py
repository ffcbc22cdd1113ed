"""What to do with occurrences whose time has come, what state each one is in, and which
manual triggers to refuse. Pure: the caller passes the time and what is recorded.

The missed-event policy (:func:`decide`), for every due occurrence not yet recorded:

1. ``morning_entry`` is skipped once the close-out has come (its time has passed or a
   close-out was emitted): no entry is ever sent after the positions were closed out;
2. a slot of a periodic event is skipped when a later slot of the same event is due as
   well: the later one does the same work, so after downtime a position check runs once,
   not once per missed slot;
3. an occurrence due for longer than its grace period is skipped (and logged by the
   caller);
4. anything else is emitted, ``late`` when it is more than ``tolerance`` past its time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ibflow.contracts.session import OccurrenceState
from ibflow_scheduler.domain.calendar import NEW_YORK, Session, new_york_date
from ibflow_scheduler.domain.schedule import CLOSE_OUT, MORNING_ENTRY, Occurrence

__all__ = [
    "GUARDED",
    "NEVER_AFTER",
    "Decision",
    "Record",
    "StateOf",
    "decide",
    "next_manual_slot",
    "slot_of",
    "states",
    "trigger_refusal",
]

NEVER_AFTER: Final[Mapping[str, str]] = {MORNING_ENTRY: CLOSE_OUT}
"""An event (key) that is never emitted once the other (value) has come."""

GUARDED: Final = frozenset({MORNING_ENTRY, CLOSE_OUT})
"""Events that move money: a manual trigger outside the session needs ``force``."""


@dataclass(frozen=True, slots=True)
class Record:
    """What is recorded about an occurrence: emitted or skipped, when, and how."""

    state: OccurrenceState
    at: datetime
    """When it was emitted or skipped."""
    scheduled_for: datetime
    late: bool = False
    manual: bool = False
    reason: str | None = None
    """Why it was skipped, or where the record came from when repaired."""
    stream_sequence: int | None = None
    """The event's sequence in the events stream, once emitted."""
    command_id: uuid.UUID | None = None
    """The ``TriggerSessionEvent`` that caused a manual occurrence (its ``event_id``)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now with a due occurrence: emit it (perhaps late) or skip it, and why."""

    occurrence: Occurrence
    emit: bool
    late: bool = False
    reason: str = ""


def slot_of(occurrence_id: str) -> int:
    """The slot (sequence number) of ``<name>:<date>:<slot>``."""
    return int(occurrence_id.rsplit(":", 1)[1])


def _hhmm(instant: datetime) -> str:
    return instant.astimezone(NEW_YORK).strftime("%H:%M ET")


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _has_come(
    name: str,
    session: Session,
    now: datetime,
    occurrences: Sequence[Occurrence],
    recorded: Mapping[str, Record],
) -> bool:
    """True once ``name`` is due on ``session``, or was emitted there (manually too)."""
    if any(o.name == name and o.scheduled_for <= now for o in occurrences):
        return True
    prefix = f"{name}:{session.date.isoformat()}:"
    return any(
        oid.startswith(prefix) and record.state is OccurrenceState.EMITTED
        for oid, record in recorded.items()
    )


def decide(
    now: datetime,
    occurrences: Sequence[Occurrence],
    recorded: Mapping[str, Record],
    *,
    tolerance: timedelta,
) -> list[Decision]:
    """What to do with each occurrence of one session that is due at ``now`` and not
    recorded yet, in time order (see the module docstring for the rules)."""
    decisions: list[Decision] = []
    for occ in occurrences:
        if occ.scheduled_for > now or occ.occurrence_id in recorded:
            continue
        blocker = NEVER_AFTER.get(occ.name)
        later = [
            other.occurrence_id
            for other in occurrences
            if other.name == occ.name and occ.scheduled_for < other.scheduled_for <= now
        ]
        if blocker is not None and _has_come(blocker, occ.session, now, occurrences, recorded):
            reason = f"the {blocker} has come: no {occ.name} after it"
            decisions.append(Decision(occ, emit=False, reason=reason))
        elif later:
            decisions.append(Decision(occ, emit=False, reason=f"superseded by {later[-1]}"))
        elif now > occ.deadline:
            reason = (
                f"missed by {_duration(now - occ.scheduled_for)}, beyond its grace period"
                f" (until {_hhmm(occ.deadline)})"
            )
            decisions.append(Decision(occ, emit=False, reason=reason))
        else:
            late = now - occ.scheduled_for > tolerance
            reason = f"late by {_duration(now - occ.scheduled_for)}" if late else "on time"
            decisions.append(Decision(occ, emit=True, late=late, reason=reason))
    return decisions


@dataclass(frozen=True, slots=True)
class StateOf:
    """An occurrence with its state and, when there is one, its record."""

    occurrence: Occurrence
    state: OccurrenceState
    record: Record | None = None
    reason: str | None = None


def states(
    now: datetime,
    occurrences: Sequence[Occurrence],
    recorded: Mapping[str, Record],
    *,
    tolerance: timedelta,
) -> list[StateOf]:
    """The state of every scheduled occurrence at ``now``: recorded ones as recorded;
    unrecorded ones ``skipped`` when the policy would skip them now, else ``pending``."""
    verdicts = {
        d.occurrence.occurrence_id: d
        for d in decide(now, occurrences, recorded, tolerance=tolerance)
    }
    result: list[StateOf] = []
    for occ in occurrences:
        record = recorded.get(occ.occurrence_id)
        verdict = verdicts.get(occ.occurrence_id)
        if record is not None:
            result.append(StateOf(occ, record.state, record, record.reason))
        elif verdict is not None and not verdict.emit:
            result.append(StateOf(occ, OccurrenceState.SKIPPED, reason=verdict.reason))
        else:
            result.append(StateOf(occ, OccurrenceState.PENDING))
    return result


def next_manual_slot(scheduled_slots: int, recorded_slots: Iterable[int]) -> int:
    """The slot of a manual trigger: after every scheduled slot and every recorded one."""
    return max([scheduled_slots, *(slot + 1 for slot in recorded_slots)])


def trigger_refusal(
    now: datetime,
    name: str,
    session: Session,
    occurrences: Sequence[Occurrence],
    recorded: Mapping[str, Record],
) -> str | None:
    """Why a manual trigger of ``name`` for ``session`` is refused unless forced, or ``None``.

    Only :data:`GUARDED` events are refused: outside today's session (from its first
    scheduled event, 09:00 by default, to the close), and a morning entry once the
    close-out has come.
    """
    if name not in GUARDED:
        return None
    today = new_york_date(now)
    if session.date != today:
        return f"{name} for the session of {session.date} outside that session (today is {today})"
    start = min([session.open, *(o.scheduled_for for o in occurrences)])
    if not start <= now < session.close:
        return (
            f"{name} outside the session ({_hhmm(start)}-{_hhmm(session.close)} on"
            f" {session.date}; now {_hhmm(now)})"
        )
    if name in NEVER_AFTER and _has_come(NEVER_AFTER[name], session, now, occurrences, recorded):
        return f"{name} after the {NEVER_AFTER[name]}"
    return None
