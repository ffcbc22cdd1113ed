"""Pure domain logic of the scheduler: no I/O, no NATS, no clock of its own.

* :mod:`~ibflow_scheduler.domain.calendar`: NYSE sessions (exchange_calendars XNYS)
  in UTC, New York wall times (:class:`NyseCalendar`, :class:`Session`);
* :mod:`~ibflow_scheduler.domain.schedule`: the event rules and a session's
  occurrences (:class:`ScheduleConfig`, :class:`EventRule`, :func:`occurrences`,
  :func:`plan`);
* :mod:`~ibflow_scheduler.domain.policy`: the missed-event policy (:func:`decide`),
  occurrence states for the operators (:func:`states`) and manual-trigger rules.
"""

from __future__ import annotations

from ibflow_scheduler.domain.calendar import NEW_YORK, NyseCalendar, Session, new_york_date
from ibflow_scheduler.domain.policy import (
    Decision,
    Record,
    StateOf,
    decide,
    next_manual_slot,
    states,
    trigger_refusal,
)
from ibflow_scheduler.domain.schedule import (
    DEFAULT_RULES,
    EVENT_NAMES,
    Anchor,
    ConfigProblem,
    EventRule,
    Occurrence,
    ScheduleConfig,
    occurrences,
    plan,
)

__all__ = [
    "DEFAULT_RULES",
    "EVENT_NAMES",
    "NEW_YORK",
    "Anchor",
    "ConfigProblem",
    "Decision",
    "EventRule",
    "NyseCalendar",
    "Occurrence",
    "Record",
    "ScheduleConfig",
    "Session",
    "StateOf",
    "decide",
    "new_york_date",
    "next_manual_slot",
    "occurrences",
    "plan",
    "states",
    "trigger_refusal",
]
