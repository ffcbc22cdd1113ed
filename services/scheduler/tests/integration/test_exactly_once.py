"""Exactly once with several replicas, on a real nats-server: a whole day through two
replicas, the leader killed mid-day, a crash between publishing and recording, and a
stale publisher fenced off by the stream."""

from __future__ import annotations

import json

import nats.errors
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from ibflow.bus.subjects import session_event
from ibflow.contracts import OccurrenceState, SessionEventEmitted
from ibflow_scheduler.domain.policy import Record
from ibflow_scheduler.store import BUCKET, LEADER_KEY, OccurrenceStore, record_key

from .conftest import DAY, Fleet, copies, day_plan, instants, ny, stored_session_events


async def test_two_replicas_emit_each_occurrence_of_a_day_exactly_once(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    await fleet.start("alpha")
    await fleet.start("beta")
    leader = await fleet.wait_for_leader()

    await fleet.run_through([*instants(), ny(17, 30)])

    events = await stored_session_events(events_js)
    planned = [occ.occurrence_id for occ in day_plan()]
    assert len(planned) == 150
    assert copies(events) == dict.fromkeys(planned, 1)
    assert [e.occurrence_id for e in events] == planned  # in schedule order
    assert not any(e.late or e.manual for e in events)
    assert all(e.session_date == DAY for e in events)
    entry = next(e for e in events if e.name == "morning_entry")
    assert entry.scheduled_for == entry.emitted_at == ny(9, 15)
    assert entry.session_close == ny(16, 0)
    kv = await events_js.key_value(BUCKET)
    writers = set()
    for occurrence_id in planned:
        stored = json.loads((await kv.get(record_key(occurrence_id))).value or b"")
        writers.add(stored["by"])
    assert writers == {leader.name}
    assert len(fleet.alive) == 2


async def test_killing_the_leader_mid_day_hands_over_without_a_gap_or_a_duplicate(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    await fleet.start("alpha")
    await fleet.start("beta")
    first = await fleet.wait_for_leader()
    moments = instants()
    noon = moments.index(ny(12, 0))
    await fleet.run_through(moments[: noon + 1])

    await first.kill()
    # The clock goes on while nobody leads: the 12:05 slot falls due during the handover.
    fleet.clock.set(ny(12, 5, 20))
    second = await fleet.settle(within=10.0)
    assert second is not first

    await fleet.run_through([*moments[noon + 2 :], ny(17, 30)])

    events = await stored_session_events(events_js)
    planned = [occ.occurrence_id for occ in day_plan()]
    assert copies(events) == dict.fromkeys(planned, 1)
    handed_over = [e for e in events if e.emitted_at == ny(12, 5, 20)]
    assert [e.occurrence_id for e in handed_over] == ["reconcile:2026-11-23:31"]
    assert handed_over[0].late


async def test_an_event_published_by_a_leader_that_died_before_recording_it_is_not_repeated(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    session = next(o.session for o in day_plan())
    # What a leader that crashed right after publishing leaves behind: the event in the
    # stream, no KV record, and no Nats-Msg-Id to deduplicate by (as if the 2-minute
    # duplicate window had long passed).
    orphan = SessionEventEmitted(
        name="morning_entry",
        occurrence_id="morning_entry:2026-11-23:0",
        session_date=DAY,
        scheduled_for=ny(9, 15),
        emitted_at=ny(9, 15),
        session_open=session.open,
        session_close=session.close,
    )
    await events_js.publish(session_event("morning_entry"), orphan.to_json())
    fleet.clock.set(ny(9, 20))

    await fleet.start("gamma")
    await fleet.settle()

    events = await stored_session_events(events_js)
    assert copies(events)["morning_entry:2026-11-23:0"] == 1
    assert copies(events)["premarket:2026-11-23:0"] == 1  # 20 min late, within its grace
    kv = await events_js.key_value(BUCKET)
    record = json.loads((await kv.get(record_key("morning_entry:2026-11-23:0"))).value or b"")
    assert record["state"] == OccurrenceState.EMITTED
    assert "recorded from the events stream" in record["reason"]


async def test_a_foreign_publish_on_a_session_subject_fences_the_leader_off(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    first = await fleet.start("alpha")
    await fleet.wait_for_leader()
    await fleet.run_through([ny(10, 0)])
    session = next(o.session for o in day_plan())
    # Someone else (a paused ex-leader waking up) writes on the reconcile subject.
    rogue = SessionEventEmitted(
        name="reconcile",
        occurrence_id="reconcile:2026-11-23:90",
        session_date=DAY,
        scheduled_for=ny(10, 1),
        emitted_at=ny(10, 1),
        manual=True,
        session_open=session.open,
        session_close=session.close,
    )
    await events_js.publish(session_event("reconcile"), rogue.to_json())

    fleet.clock.set(ny(10, 5))
    first.scheduler.wake()
    # The leader's next write on that subject is refused by the stream: it steps down,
    # and whoever leads next re-reads the stream before emitting.
    await fleet.settle(within=10.0)

    events = await stored_session_events(events_js)
    assert copies(events)["reconcile:2026-11-23:7"] == 1
    assert max(copies(events).values()) == 1


async def test_a_graceful_stop_releases_the_lease_for_an_immediate_handover(
    fleet: Fleet, events_js: JetStreamContext
) -> None:
    first = await fleet.start("alpha")
    await fleet.wait_for_leader()
    second = await fleet.start("beta")
    await first.stop()
    kv = await events_js.key_value(BUCKET)
    await fleet.wait_for_leader(within=2.0)
    holder = json.loads((await kv.get(LEADER_KEY)).value or b"")["holder"]
    assert holder == second.name == "beta"


async def test_a_record_write_that_fails_after_publishing_is_retried_without_publishing_again(
    fleet: Fleet, events_js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_record = OccurrenceStore.record
    failures = {"morning_entry:2026-11-23:0": 2}

    async def flaky_record(self: OccurrenceStore, occurrence_id: str, record: Record) -> Record:
        if failures.get(occurrence_id, 0) > 0:
            failures[occurrence_id] -= 1
            raise nats.errors.TimeoutError
        return await real_record(self, occurrence_id, record)

    monkeypatch.setattr(OccurrenceStore, "record", flaky_record)
    duplicates_before = REGISTRY.get_sample_value("ibflow_bus_publish_duplicates_total") or 0.0
    await fleet.start("alpha")
    await fleet.wait_for_leader()

    await fleet.run_through([ny(9, 0), ny(9, 15), ny(9, 30)])

    events = await stored_session_events(events_js)
    assert copies(events)["morning_entry:2026-11-23:0"] == 1
    assert failures["morning_entry:2026-11-23:0"] == 0
    duplicates = REGISTRY.get_sample_value("ibflow_bus_publish_duplicates_total") or 0.0
    assert duplicates == duplicates_before  # not even sent again: the stream was read instead
    kv = await events_js.key_value(BUCKET)
    record = json.loads((await kv.get(record_key("morning_entry:2026-11-23:0"))).value or b"")
    assert record["state"] == OccurrenceState.EMITTED
    assert record["stream_sequence"] == next(
        index + 1 for index, e in enumerate(events) if e.name == "morning_entry"
    )
