"""A day's occurrences on real calendar dates: ET wall times, UTC instants, half days,
holidays, the DST transitions, and configuration that is refused."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest

from ibflow_scheduler.domain.calendar import NEW_YORK, NyseCalendar
from ibflow_scheduler.domain.schedule import (
    CLOSE_OUT,
    EVENT_NAMES,
    MARKET_CLOSE,
    MARKET_OPEN,
    MORNING_ENTRY,
    POSITION_CHECK,
    PREMARKET,
    RECONCILE,
    STALE_ORDER_SWEEP,
    Anchor,
    Occurrence,
    ScheduleConfig,
    occurrences,
    plan,
)

CALENDAR = NyseCalendar(first_year=2025, last_year=2027)
DEFAULT = ScheduleConfig()
SINGLE = (PREMARKET, MORNING_ENTRY, MARKET_OPEN, CLOSE_OUT, MARKET_CLOSE)


def singles(day: date, config: ScheduleConfig = DEFAULT) -> dict[str, Occurrence]:
    return {o.name: o for o in plan(config, CALENDAR, day) if o.name in SINGLE}


def wall(occ: Occurrence) -> str:
    return occ.local_time.strftime("%H:%M %Z")


def utc(occ: Occurrence) -> str:
    return occ.scheduled_for.strftime("%Y-%m-%dT%H:%MZ")


def test_a_normal_day_reproduces_zimuabulls_schedule() -> None:
    day = date(2026, 11, 23)
    events = plan(DEFAULT, CALENDAR, day)

    assert {name: wall(o) for name, o in singles(day).items()} == {
        PREMARKET: "09:00 EST",
        MORNING_ENTRY: "09:15 EST",
        MARKET_OPEN: "09:30 EST",
        CLOSE_OUT: "15:55 EST",
        MARKET_CLOSE: "16:00 EST",
    }
    assert {name: utc(o) for name, o in singles(day).items()} == {
        PREMARKET: "2026-11-23T14:00Z",
        MORNING_ENTRY: "2026-11-23T14:15Z",
        MARKET_OPEN: "2026-11-23T14:30Z",
        CLOSE_OUT: "2026-11-23T20:55Z",
        MARKET_CLOSE: "2026-11-23T21:00Z",
    }
    counts = Counter(o.name for o in events)
    assert counts == {
        PREMARKET: 1,
        MORNING_ENTRY: 1,
        MARKET_OPEN: 1,
        POSITION_CHECK: 39,  # 09:30 .. 15:50 every 10 min
        STALE_ORDER_SWEEP: 27,  # 09:30 .. 15:45 every 15 min, plus 15:50
        CLOSE_OUT: 1,
        MARKET_CLOSE: 1,
        RECONCILE: 79,  # 09:30 .. 15:55 every 5 min, plus 16:05 after the close
    }
    assert events == sorted(events, key=lambda o: o.scheduled_for)
    assert [o.name for o in events[:6]] == [
        PREMARKET,
        MORNING_ENTRY,
        MARKET_OPEN,
        POSITION_CHECK,
        STALE_ORDER_SWEEP,
        RECONCILE,
    ]


def test_periodic_events_run_while_open_with_their_extra_slots() -> None:
    events = plan(DEFAULT, CALENDAR, date(2026, 11, 23))

    def times(name: str) -> list[str]:
        return [o.local_time.strftime("%H:%M") for o in events if o.name == name]

    assert times(POSITION_CHECK)[:3] == ["09:30", "09:40", "09:50"]
    assert times(POSITION_CHECK)[-1] == "15:50"
    assert times(STALE_ORDER_SWEEP)[-3:] == ["15:30", "15:45", "15:50"]
    assert times(RECONCILE)[-3:] == ["15:50", "15:55", "16:05"]


def test_slots_number_each_events_occurrences_in_time_order() -> None:
    events = [o for o in plan(DEFAULT, CALENDAR, date(2026, 11, 23)) if o.name == RECONCILE]
    assert [o.slot for o in events] == list(range(79))
    assert events[0].occurrence_id == "reconcile:2026-11-23:0"
    assert events[-1].occurrence_id == "reconcile:2026-11-23:78"


def test_grace_periods_set_each_deadline() -> None:
    events = singles(date(2026, 11, 23))
    assert events[MORNING_ENTRY].deadline - events[MORNING_ENTRY].scheduled_for == timedelta(
        minutes=15
    )
    assert events[CLOSE_OUT].deadline == events[CLOSE_OUT].session.close  # until the close


@pytest.mark.parametrize(
    ("day", "premarket_utc", "close_out_utc", "zone"),
    [
        (date(2026, 3, 6), "2026-03-06T14:00Z", "2026-03-06T20:55Z", "EST"),  # Friday before
        (date(2026, 3, 9), "2026-03-09T13:00Z", "2026-03-09T19:55Z", "EDT"),  # Monday after
        (date(2026, 10, 30), "2026-10-30T13:00Z", "2026-10-30T19:55Z", "EDT"),  # Friday before
        (date(2026, 11, 2), "2026-11-02T14:00Z", "2026-11-02T20:55Z", "EST"),  # Monday after
    ],
)
def test_around_the_dst_changes_wall_times_stay_and_utc_instants_move_by_an_hour(
    day: date, premarket_utc: str, close_out_utc: str, zone: str
) -> None:
    events = singles(day)
    assert wall(events[PREMARKET]) == f"09:00 {zone}"
    assert wall(events[MORNING_ENTRY]) == f"09:15 {zone}"
    assert wall(events[CLOSE_OUT]) == f"15:55 {zone}"
    assert utc(events[PREMARKET]) == premarket_utc
    assert utc(events[CLOSE_OUT]) == close_out_utc
    assert len(plan(DEFAULT, CALENDAR, day)) == 150


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2026, 11, 1)])
def test_the_dst_change_itself_falls_on_a_sunday_without_events(day: date) -> None:
    assert plan(DEFAULT, CALENDAR, day) == []


def test_thanksgiving_has_no_events() -> None:
    assert plan(DEFAULT, CALENDAR, date(2026, 11, 26)) == []


@pytest.mark.parametrize("day", [date(2026, 11, 28), date(2026, 11, 29)])
def test_a_weekend_has_no_events(day: date) -> None:
    assert plan(DEFAULT, CALENDAR, day) == []


@pytest.mark.parametrize("day", [date(2026, 11, 27), date(2026, 12, 24)])
def test_on_a_half_day_the_close_out_moves_with_the_1300_close(day: date) -> None:
    events = singles(day)
    assert wall(events[CLOSE_OUT]) == "12:55 EST"
    assert utc(events[CLOSE_OUT]) == f"{day.isoformat()}T17:55Z"
    assert wall(events[MARKET_CLOSE]) == "13:00 EST"
    assert wall(events[MORNING_ENTRY]) == "09:15 EST"
    everything = plan(DEFAULT, CALENDAR, day)
    last_checks = [o for o in everything if o.name == POSITION_CHECK][-1]
    sweeps = [o.local_time.strftime("%H:%M") for o in everything if o.name == STALE_ORDER_SWEEP]
    assert last_checks.local_time.strftime("%H:%M") == "12:50"
    assert sweeps[-2:] == ["12:45", "12:50"]
    assert [o for o in everything if o.name == RECONCILE][-1].local_time.time() == time(13, 5)


def test_overrides_replace_only_the_fields_given() -> None:
    config = ScheduleConfig.with_overrides(
        {
            MORNING_ENTRY: {"offset": timedelta(minutes=-10)},
            POSITION_CHECK: {"period": timedelta(minutes=30)},
            PREMARKET: {"enabled": False},
        }
    )
    assert config.problems() == []
    events = plan(config, CALENDAR, date(2026, 11, 23))
    names = Counter(o.name for o in events)
    assert PREMARKET not in names
    assert names[POSITION_CHECK] == 13
    entry = next(o for o in events if o.name == MORNING_ENTRY)
    assert entry.local_time.time() == time(9, 20)
    assert config.rule(MORNING_ENTRY).grace == timedelta(minutes=15)


def test_an_event_can_be_anchored_to_the_close() -> None:
    config = ScheduleConfig.with_overrides(
        {MORNING_ENTRY: {"anchor": Anchor.CLOSE, "offset": timedelta(minutes=-120)}}
    )
    entry = next(o for o in plan(config, CALENDAR, date(2026, 11, 27)) if o.name == MORNING_ENTRY)
    assert entry.local_time.time() == time(11, 0)


def test_an_unknown_event_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="unknown session event"):
        ScheduleConfig.with_overrides({"lunch": {"offset": timedelta(0)}})


@pytest.mark.parametrize(
    ("changes", "setting", "message"),
    [
        ({CLOSE_OUT: {"offset": timedelta(minutes=10)}}, "close_out.offset_minutes", "outside"),
        (
            {PREMARKET: {"offset": timedelta(minutes=-400)}},
            "premarket.offset_minutes",
            "outside the trading day",
        ),
        (
            {POSITION_CHECK: {"offset": timedelta(minutes=-10)}},
            "position_check.offset_minutes",
            "before the open",
        ),
        (
            {RECONCILE: {"end_offset": timedelta(minutes=30)}},
            "reconcile.end_offset_minutes",
            "after the close",
        ),
        ({POSITION_CHECK: {"period": timedelta(0)}}, "position_check.period_minutes", "> 0"),
        (
            {POSITION_CHECK: {"offset": timedelta(hours=4)}},
            "position_check.offset_minutes",
            "never occurs on a half day",
        ),
        (
            {MORNING_ENTRY: {"anchor": Anchor.CLOSE, "offset": timedelta(0)}},
            "morning_entry.offset_minutes",
            "before the close-out",
        ),
        (
            {MARKET_CLOSE: {"offset": timedelta(minutes=30), "grace": None}},
            "market_close.grace_minutes",
            "after the close",
        ),
        (
            {STALE_ORDER_SWEEP: {"final_offset": timedelta(hours=5)}},
            "stale_order_sweep.final_offset_minutes",
            "outside the trading day",
        ),
    ],
)
def test_a_configuration_outside_the_session_is_refused_naming_the_setting(
    changes: dict[str, dict[str, object]], setting: str, message: str
) -> None:
    problems = ScheduleConfig.with_overrides(changes).problems()
    assert any(p.setting == setting and message in p.message for p in problems), problems


def test_the_default_configuration_is_valid_and_covers_every_event() -> None:
    assert DEFAULT.problems() == []
    assert DEFAULT.names == EVENT_NAMES


def test_occurrences_work_on_any_session_value() -> None:
    session = CALENDAR.session(date(2026, 11, 23))
    assert session is not None
    first = occurrences(DEFAULT, session)[0]
    assert first.scheduled_for == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert first.local_time.tzinfo == NEW_YORK
