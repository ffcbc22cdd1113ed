"""What the scheduler emits on a given session: named events at times anchored to the
open or the close, in New York wall-clock time, as UTC instants.

Pure: no I/O, no clock. :func:`occurrences` turns a :class:`ScheduleConfig` and a
:class:`~ibflow_scheduler.domain.calendar.Session` into the day's :class:`Occurrence`
list; :func:`plan` does the same for a date (empty on a closed day).

An :class:`EventRule` is either a single event (``anchor`` + ``offset``) or a periodic
one (every ``period`` from ``anchor`` + ``offset`` while before ``end_anchor`` +
``end_offset``), optionally with one extra ``final`` slot relative to the close. Each
occurrence of a rule is numbered by its slot (0, 1, … in time order), which makes its
id ``<name>:<session date>:<slot>``. Offsets are wall-clock: ``open - 15 min`` is 09:15
New York time in winter and in summer alike, and close-anchored times move with an
early close (the close-out is 12:55 on a half day).

The defaults reproduce ZimuaBull's day: premarket 09:00, morning entry 09:15, the open,
position checks every 10 minutes and stale-order sweeps every 15 minutes while open (one
more sweep at 15:50, before the close-out), the close-out at 15:55, the close, and a
broker reconciliation every 5 minutes while open and once more at 16:05.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from ibflow.contracts.session import occurrence_id
from ibflow_scheduler.domain.calendar import NEW_YORK, Session

__all__ = [
    "CLOSE_OUT",
    "DEFAULT_RULES",
    "EVENT_NAMES",
    "MARKET_CLOSE",
    "MARKET_OPEN",
    "MORNING_ENTRY",
    "POSITION_CHECK",
    "PREMARKET",
    "RECONCILE",
    "STALE_ORDER_SWEEP",
    "Anchor",
    "ConfigProblem",
    "EventRule",
    "Occurrence",
    "ScheduleConfig",
    "SessionSource",
    "occurrences",
    "plan",
    "slot_count",
]

PREMARKET: Final = "premarket"
MORNING_ENTRY: Final = "morning_entry"
MARKET_OPEN: Final = "market_open"
POSITION_CHECK: Final = "position_check"
STALE_ORDER_SWEEP: Final = "stale_order_sweep"
CLOSE_OUT: Final = "close_out"
MARKET_CLOSE: Final = "market_close"
RECONCILE: Final = "reconcile"

EVENT_NAMES: Final = (
    PREMARKET,
    MORNING_ENTRY,
    MARKET_OPEN,
    POSITION_CHECK,
    STALE_ORDER_SWEEP,
    CLOSE_OUT,
    MARKET_CLOSE,
    RECONCILE,
)
"""Every session event the scheduler knows, in the order they are emitted when simultaneous."""

EXTENDED_DAY: Final = (time(4, 0), time(20, 0))
"""No event may fall outside NYSE's extended trading day (pre-market 04:00 to after-hours 20:00)."""


class Anchor(StrEnum):
    """What an offset is counted from: the session's open or its close."""

    OPEN = "open"
    CLOSE = "close"


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


@dataclass(frozen=True, slots=True)
class EventRule:
    """When one named session event occurs, and how late it may still be emitted.

    ``grace``: how long after its time an occurrence missed during downtime is still
    emitted (late); ``None`` means until the session's close.
    """

    name: str
    anchor: Anchor
    offset: timedelta = timedelta(0)
    period: timedelta | None = None
    """Repeat every ``period`` (a periodic event); ``None`` for a single event."""
    end_anchor: Anchor = Anchor.CLOSE
    end_offset: timedelta = timedelta(0)
    """A periodic event's slots are strictly before ``end_anchor + end_offset``."""
    final_offset: timedelta | None = None
    """One more slot at ``close + final_offset`` (a last sweep, a reconciliation after
    the close)."""
    grace: timedelta | None = timedelta(0)
    enabled: bool = True

    @property
    def periodic(self) -> bool:
        """True for an event that repeats during the session."""
        return self.period is not None

    def instants(self, session: Session) -> list[datetime]:
        """The UTC instants of this event on ``session``, in order, without repeats."""
        start = _local(session, self.anchor) + self.offset
        times = [start]
        if self.period is not None and self.period > timedelta(0):
            end = _local(session, self.end_anchor) + self.end_offset
            times = []
            current = start
            while current < end:
                times.append(current)
                current += self.period
        if self.final_offset is not None:
            times.append(_local(session, Anchor.CLOSE) + self.final_offset)
        return sorted({moment.astimezone(UTC) for moment in times})

    def deadline(self, session: Session, scheduled_for: datetime) -> datetime:
        """The last moment an occurrence due at ``scheduled_for`` is still emitted."""
        if self.grace is None:
            return max(session.close, scheduled_for)
        return scheduled_for + self.grace


def _local(session: Session, anchor: Anchor) -> datetime:
    """The anchor in New York time: arithmetic on it is wall-clock arithmetic."""
    return session.local_open if anchor is Anchor.OPEN else session.local_close


DEFAULT_RULES: Final[Mapping[str, EventRule]] = {
    rule.name: rule
    for rule in (
        EventRule(PREMARKET, Anchor.OPEN, _minutes(-30), grace=_minutes(30)),
        EventRule(MORNING_ENTRY, Anchor.OPEN, _minutes(-15), grace=_minutes(15)),
        EventRule(MARKET_OPEN, Anchor.OPEN, grace=_minutes(30)),
        EventRule(POSITION_CHECK, Anchor.OPEN, period=_minutes(10), grace=_minutes(10)),
        EventRule(
            STALE_ORDER_SWEEP,
            Anchor.OPEN,
            period=_minutes(15),
            end_offset=_minutes(-5),
            final_offset=_minutes(-10),
            grace=_minutes(15),
        ),
        EventRule(CLOSE_OUT, Anchor.CLOSE, _minutes(-5), grace=None),
        EventRule(MARKET_CLOSE, Anchor.CLOSE, grace=_minutes(60)),
        EventRule(
            RECONCILE, Anchor.OPEN, period=_minutes(5), final_offset=_minutes(5), grace=_minutes(5)
        ),
    )
}
"""ZimuaBull's schedule (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """Why a configuration is refused: the event, the setting at fault and the reason."""

    event: str
    field: str
    message: str

    @property
    def setting(self) -> str:
        """``<event>.<field>``, e.g. ``close_out.offset_minutes``."""
        return f"{self.event}.{self.field}"

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


def _model_session(close: time) -> Session:
    """A session with regular hours (or a half day's) on an ordinary date, for validation."""
    day = date(2026, 1, 6)
    return Session(
        date=day,
        open=datetime.combine(day, time(9, 30), NEW_YORK).astimezone(UTC),
        close=datetime.combine(day, close, NEW_YORK).astimezone(UTC),
    )


_MODEL_DAYS: Final = (
    ("a regular day", _model_session(time(16, 0))),
    ("a half day", _model_session(time(13, 0))),
)


def _hhmm(instant: datetime) -> str:
    return instant.astimezone(NEW_YORK).strftime("%H:%M ET")


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Every event rule of a deployment, in emission order for simultaneous events."""

    rules: tuple[EventRule, ...] = field(default_factory=lambda: tuple(DEFAULT_RULES.values()))

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"each event has one rule, got {names}")

    @classmethod
    def with_overrides(cls, changes: Mapping[str, Mapping[str, Any]]) -> ScheduleConfig:
        """The defaults with some fields of some rules replaced (``{name: {field: value}}``,
        fields of :class:`EventRule`); ``ValueError`` for an unknown event name."""
        unknown = sorted(set(changes) - set(DEFAULT_RULES))
        if unknown:
            raise ValueError(f"unknown session event(s) {unknown}; known: {list(EVENT_NAMES)}")
        rules = [
            replace(rule, **dict(changes.get(rule.name, {}))) for rule in DEFAULT_RULES.values()
        ]
        return cls(tuple(rules))

    @property
    def names(self) -> tuple[str, ...]:
        """Every configured event name (enabled or not)."""
        return tuple(rule.name for rule in self.rules)

    def rule(self, name: str) -> EventRule:
        """The rule of ``name``; ``KeyError`` for an unknown event."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def order(self, name: str) -> int:
        """Position of ``name`` among the rules (ties between simultaneous events)."""
        return self.names.index(name)

    def problems(self) -> list[ConfigProblem]:
        """Everything wrong with this configuration (empty when it is usable)."""
        found: list[ConfigProblem] = []
        for rule in self.rules:
            found.extend(_rule_problems(rule))
        found.extend(self._relation_problems())
        unique: dict[str, ConfigProblem] = {}  # the first problem of each setting
        for problem in found:
            unique.setdefault(problem.setting, problem)
        return list(unique.values())

    def _relation_problems(self) -> Iterator[ConfigProblem]:
        names = self.names
        if MORNING_ENTRY not in names or CLOSE_OUT not in names:
            return
        entry, close_out = self.rule(MORNING_ENTRY), self.rule(CLOSE_OUT)
        if not (entry.enabled and close_out.enabled):
            return
        for label, session in _MODEL_DAYS:
            entry_at, close_out_at = entry.instants(session)[0], close_out.instants(session)[0]
            if entry_at >= close_out_at:
                yield ConfigProblem(
                    MORNING_ENTRY,
                    "offset_minutes",
                    f"the morning entry ({_hhmm(entry_at)}) must come before the close-out"
                    f" ({_hhmm(close_out_at)}) on {label}",
                )


def _rule_problems(rule: EventRule) -> Iterator[ConfigProblem]:
    if rule.period is not None and rule.period <= timedelta(0):
        yield ConfigProblem(rule.name, "period_minutes", "must be > 0")
        return
    if rule.grace is not None and rule.grace < timedelta(0):
        yield ConfigProblem(rule.name, "grace_minutes", "must be >= 0")
    if not rule.enabled:
        return
    for label, session in _MODEL_DAYS:
        yield from _placement_problems(rule, label, session)
        if rule.periodic:
            yield from _periodic_problems(rule, label, session)
        if rule.grace is None and max(rule.instants(session)) > session.close:
            yield ConfigProblem(
                rule.name,
                "grace_minutes",
                f"'close' (until the close) for an event after the close on {label}",
            )


def _window(session: Session) -> str:
    return f"{_hhmm(session.open)}-{_hhmm(session.close)}"


def _placement_problems(rule: EventRule, label: str, session: Session) -> Iterator[ConfigProblem]:
    """Every instant within the extended trading day; the close-out within the session."""
    earliest, latest = EXTENDED_DAY
    start = (_local(session, rule.anchor) + rule.offset).astimezone(UTC)
    checked = [("offset_minutes", start)]
    if rule.final_offset is not None:
        final = (_local(session, Anchor.CLOSE) + rule.final_offset).astimezone(UTC)
        checked.append(("final_offset_minutes", final))
    for field_name, instant in checked:
        local = instant.astimezone(NEW_YORK)
        if local.date() != session.date or not earliest <= local.time() <= latest:
            yield ConfigProblem(
                rule.name,
                field_name,
                f"puts {rule.name} at {_hhmm(instant)} on {label}, outside the trading day"
                f" ({earliest:%H:%M}-{latest:%H:%M} ET)",
            )
    if rule.name == CLOSE_OUT and not session.open < start <= session.close:
        yield ConfigProblem(
            rule.name,
            "offset_minutes",
            f"puts the close-out at {_hhmm(start)}, outside the session on {label}"
            f" ({_window(session)})",
        )


def _periodic_problems(rule: EventRule, label: str, session: Session) -> Iterator[ConfigProblem]:
    """A periodic event runs while the market is open, and at least once."""
    start = (_local(session, rule.anchor) + rule.offset).astimezone(UTC)
    end = (_local(session, rule.end_anchor) + rule.end_offset).astimezone(UTC)
    if start < session.open:
        yield ConfigProblem(
            rule.name,
            "offset_minutes",
            f"a periodic event runs while the market is open, but its first slot is"
            f" {_hhmm(start)}, before the open on {label} ({_window(session)})",
        )
    if end > session.close:
        yield ConfigProblem(
            rule.name,
            "end_offset_minutes",
            f"a periodic event runs while the market is open, but it ends at {_hhmm(end)},"
            f" after the close on {label} ({_window(session)})",
        )
    if start >= end:
        yield ConfigProblem(
            rule.name,
            "offset_minutes",
            f"never occurs on {label}: first slot {_hhmm(start)}, end {_hhmm(end)}",
        )


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence of a session event: due at ``scheduled_for``, still emitted (late)
    until ``deadline``."""

    name: str
    slot: int
    session: Session
    scheduled_for: datetime
    deadline: datetime

    @property
    def occurrence_id(self) -> str:
        """``<name>:<session date>:<slot>``: the event's identity, its ``Nats-Msg-Id`` part."""
        return occurrence_id(self.name, self.session.date, self.slot)

    @property
    def local_time(self) -> datetime:
        """``scheduled_for`` in New York time."""
        return self.scheduled_for.astimezone(NEW_YORK)


def occurrences(config: ScheduleConfig, session: Session) -> list[Occurrence]:
    """Every occurrence of every enabled event on ``session``, in time order (ties: rule order)."""
    found = [
        Occurrence(rule.name, slot, session, instant, rule.deadline(session, instant))
        for rule in config.rules
        if rule.enabled
        for slot, instant in enumerate(rule.instants(session))
    ]
    return sorted(found, key=lambda occ: (occ.scheduled_for, config.order(occ.name), occ.slot))


class SessionSource(Protocol):
    """Where sessions come from (the NYSE calendar, or a fixed table in tests)."""

    def session(self, day: date) -> Session | None:
        """The session on ``day``, or ``None`` when closed."""


def plan(config: ScheduleConfig, calendar: SessionSource, day: date) -> list[Occurrence]:
    """The occurrences on ``day``; empty when the exchange is closed that day."""
    session = calendar.session(day)
    return [] if session is None else occurrences(config, session)


def slot_count(config: ScheduleConfig, name: str, session: Session) -> int:
    """How many scheduled slots ``name`` has on ``session`` (0 when disabled)."""
    rule = config.rule(name)
    return len(rule.instants(session)) if rule.enabled else 0
