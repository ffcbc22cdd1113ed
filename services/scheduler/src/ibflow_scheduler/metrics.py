"""Prometheus metrics of the scheduler (default registry, served on ``/metrics``).

Labels are the event names (eight of them).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

NEXT_EVENT: Final = Gauge(
    "ibflow_scheduler_next_event_timestamp_seconds",
    "When each session event is next due (Unix time, UTC); 0 when none is planned.",
    ["name"],
)
EMITTED: Final = Counter(
    "ibflow_scheduler_events_emitted_total",
    "Session events emitted (published once), scheduled and manual.",
    ["name"],
)
LATE: Final = Counter(
    "ibflow_scheduler_events_late_total",
    "Session events emitted after their time (beyond IBFLOW_LATE_TOLERANCE_SECONDS).",
    ["name"],
)
SKIPPED: Final = Counter(
    "ibflow_scheduler_events_skipped_total",
    "Occurrences never to be emitted: missed beyond their grace, superseded, or a morning"
    " entry after the close-out.",
    ["name"],
)
MANUAL: Final = Counter(
    "ibflow_scheduler_manual_triggers_total",
    "Manual triggers (TriggerSessionEvent), by event and outcome (emitted, duplicate, refused).",
    ["name", "outcome"],
)
LEADER: Final = Gauge(
    "ibflow_scheduler_leader",
    "1 while this replica holds the leader lease and emits, else 0.",
)
