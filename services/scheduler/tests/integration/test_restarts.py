"""Missed events after downtime, on a real nats-server: late within the grace period,
skipped (and recorded) beyond it, never a morning entry after the close-out, and
nothing emitted twice across restarts."""

from __future__ import annotations

import json

from nats.js import JetStreamContext

from ibflow.contracts import OccurrenceState
from ibflow_scheduler.store import BUCKET, record_key

from .conftest import Fleet, copies, ny, stored_session_events


async def test_a_restart_ten_minutes_after_0915_emits_the_morning_entry_late_once(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    fleet.clock.set(ny(9, 25))
    first = await fleet.start("alpha")
    await fleet.settle()
    await first.stop()

    fleet.clock.set(ny(9, 26))  # and once more: a second restart emits nothing again
    await fleet.start("beta")
    await fleet.settle()

    events = await stored_session_events(events_js)
    entries = [e for e in events if e.name == "morning_entry"]
    assert [(e.occurrence_id, e.late) for e in entries] == [("morning_entry:2026-11-23:0", True)]
    assert entries[0].scheduled_for == ny(9, 15)
    assert entries[0].emitted_at == ny(9, 25)
    assert copies(events) == {"premarket:2026-11-23:0": 1, "morning_entry:2026-11-23:0": 1}


async def test_a_restart_after_the_close_out_emits_nothing_for_the_morning(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    fleet.clock.set(ny(15, 57))
    await fleet.start("alpha")
    await fleet.settle()

    events = await stored_session_events(events_js)
    assert sorted(copies(events)) == [
        "close_out:2026-11-23:0",
        "position_check:2026-11-23:38",
        "reconcile:2026-11-23:77",
        "stale_order_sweep:2026-11-23:26",
    ]
    assert all(e.late for e in events)
    kv = await events_js.key_value(BUCKET)
    entry = json.loads((await kv.get(record_key("morning_entry:2026-11-23:0"))).value or b"")
    assert entry["state"] == OccurrenceState.SKIPPED
    assert entry["reason"] == "the close_out has come: no morning_entry after it"
    opening = json.loads((await kv.get(record_key("market_open:2026-11-23:0"))).value or b"")
    assert opening["state"] == OccurrenceState.SKIPPED
    assert opening["reason"].startswith("missed by 6h27m00s, beyond its grace period")


async def test_a_replica_started_on_a_holiday_emits_nothing(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    fleet.clock.set(ny(12, 0).replace(day=26))  # Thanksgiving
    await fleet.start("alpha")
    await fleet.settle()
    assert await stored_session_events(events_js) == []
