"""The missed-event policy, occurrence states and manual-trigger rules, on real dates."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from ibflow.contracts import OccurrenceState
from ibflow_scheduler.domain.calendar import NEW_YORK, NyseCalendar, Session
from ibflow_scheduler.domain.policy import (
    Decision,
    Record,
    decide,
    next_manual_slot,
    slot_of,
    states,
    trigger_refusal,
)
from ibflow_scheduler.domain.schedule import Occurrence, ScheduleConfig, occurrences

CALENDAR = NyseCalendar(first_year=2025, last_year=2027)
DAY = date(2026, 11, 23)
TOLERANCE = timedelta(seconds=5)


def session(day: date = DAY) -> Session:
    found = CALENDAR.session(day)
    assert found is not None
    return found


OCCS = occurrences(ScheduleConfig(), session())


def ny(hour: int, minute: int, second: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute, second), NEW_YORK)


def emitted_until(moment: datetime) -> dict[str, Record]:
    """Everything due before ``moment`` recorded as emitted on time."""
    return {
        o.occurrence_id: Record(OccurrenceState.EMITTED, o.scheduled_for, o.scheduled_for)
        for o in OCCS
        if o.scheduled_for < moment
    }


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.occurrence.occurrence_id: d for d in decisions}


def test_nothing_is_due_before_the_first_event() -> None:
    assert decide(ny(8, 59, 59), OCCS, {}, tolerance=TOLERANCE) == []


def test_an_event_at_its_time_is_emitted_on_time() -> None:
    decisions = decide(ny(9, 15, 2), OCCS, emitted_until(ny(9, 15)), tolerance=TOLERANCE)
    assert [(d.occurrence.occurrence_id, d.emit, d.late) for d in decisions] == [
        ("morning_entry:2026-11-23:0", True, False)
    ]


def test_ten_minutes_after_the_morning_entry_it_is_emitted_late_within_its_grace() -> None:
    decisions = by_id(decide(ny(9, 25), OCCS, {}, tolerance=TOLERANCE))
    entry = decisions["morning_entry:2026-11-23:0"]
    assert (entry.emit, entry.late) == (True, True)
    assert entry.reason == "late by 10m00s"
    assert decisions["premarket:2026-11-23:0"].emit  # 25 min late, grace 30


def test_beyond_its_grace_an_occurrence_is_skipped_and_says_why() -> None:
    decisions = by_id(decide(ny(9, 31), OCCS, emitted_until(ny(9, 0)), tolerance=TOLERANCE))
    entry = decisions["morning_entry:2026-11-23:0"]
    assert not entry.emit
    assert entry.reason == "missed by 16m00s, beyond its grace period (until 09:30 ET)"
    assert decisions["market_open:2026-11-23:0"].emit


def test_after_the_close_out_no_morning_entry_ever_and_nothing_else_from_the_morning() -> None:
    decisions = by_id(decide(ny(15, 57), OCCS, {}, tolerance=TOLERANCE))
    assert decisions["morning_entry:2026-11-23:0"].reason == (
        "the close_out has come: no morning_entry after it"
    )
    emitted = sorted(d.occurrence.occurrence_id for d in decisions.values() if d.emit)
    assert emitted == [
        "close_out:2026-11-23:0",
        "position_check:2026-11-23:38",
        "reconcile:2026-11-23:77",
        "stale_order_sweep:2026-11-23:26",
    ]
    assert all(d.late for d in decisions.values() if d.emit)


def test_a_manual_close_out_blocks_the_morning_entry_too() -> None:
    manual = {
        "close_out:2026-11-23:1": Record(OccurrenceState.EMITTED, ny(9, 5), ny(9, 5), manual=True)
    }
    recorded = emitted_until(ny(9, 15)) | manual
    decisions = by_id(decide(ny(9, 15), OCCS, recorded, tolerance=TOLERANCE))
    assert not decisions["morning_entry:2026-11-23:0"].emit


def test_missed_slots_of_a_periodic_event_are_superseded_by_the_latest() -> None:
    decisions = by_id(decide(ny(10, 25), OCCS, emitted_until(ny(10, 0)), tolerance=TOLERANCE))
    checks = {oid: d for oid, d in decisions.items() if oid.startswith("position_check")}
    assert checks["position_check:2026-11-23:3"].reason == (
        "superseded by position_check:2026-11-23:5"
    )
    assert [oid for oid, d in checks.items() if d.emit] == ["position_check:2026-11-23:5"]
    assert decisions["reconcile:2026-11-23:11"].emit  # 10:25, on time
    assert not decisions["reconcile:2026-11-23:10"].emit  # superseded by 10:25


def test_recorded_occurrences_are_never_decided_again() -> None:
    assert decide(ny(12, 0), OCCS, emitted_until(ny(12, 0, 1)), tolerance=TOLERANCE) == []


def test_states_report_recorded_pending_and_skipped() -> None:
    recorded = emitted_until(ny(9, 0, 1))
    found = states(ny(9, 40), OCCS, recorded, tolerance=TOLERANCE)
    report = {s.occurrence.occurrence_id: s for s in found}
    assert report["premarket:2026-11-23:0"].state is OccurrenceState.EMITTED
    assert report["morning_entry:2026-11-23:0"].state is OccurrenceState.SKIPPED
    assert report["market_open:2026-11-23:0"].state is OccurrenceState.PENDING  # due, in grace
    assert report["position_check:2026-11-23:2"].state is OccurrenceState.PENDING  # 09:50
    assert report["close_out:2026-11-23:0"].state is OccurrenceState.PENDING
    assert len(report) == len(OCCS)


def test_manual_triggers_take_the_next_slot_after_every_scheduled_and_recorded_one() -> None:
    assert next_manual_slot(1, []) == 1
    assert next_manual_slot(1, [0, 1, 2]) == 3
    assert next_manual_slot(39, [0, 5]) == 39
    assert slot_of("position_check:2026-11-23:39") == 39


@pytest.mark.parametrize("name", ["close_out", "morning_entry"])
def test_money_moving_triggers_are_refused_outside_the_session(name: str) -> None:
    assert trigger_refusal(ny(8, 30), name, session(), OCCS, {}) is not None
    assert trigger_refusal(ny(16, 0), name, session(), OCCS, {}) is not None
    refusal = trigger_refusal(ny(12, 0, day=date(2026, 11, 24)), name, session(), OCCS, {})
    assert refusal is not None
    assert "today is 2026-11-24" in refusal


def test_money_moving_triggers_are_allowed_during_the_session() -> None:
    assert trigger_refusal(ny(9, 0), "morning_entry", session(), OCCS, {}) is None
    assert trigger_refusal(ny(15, 59), "close_out", session(), OCCS, {}) is None


def test_a_morning_entry_after_the_close_out_is_refused() -> None:
    refusal = trigger_refusal(ny(15, 56), "morning_entry", session(), OCCS, {})
    assert refusal == "morning_entry after the close_out"


def test_other_events_may_be_triggered_at_any_time() -> None:
    assert trigger_refusal(ny(3, 0), "reconcile", session(), OCCS, {}) is None
    assert trigger_refusal(ny(20, 0), "position_check", session(), OCCS, {}) is None


def test_occurrence_ids_follow_the_contract() -> None:
    first: Occurrence = OCCS[0]
    assert first.occurrence_id == "premarket:2026-11-23:0"
