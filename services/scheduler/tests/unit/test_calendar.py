"""The NYSE calendar (exchange_calendars XNYS): sessions, holidays, half days, DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from ibflow_scheduler.domain.calendar import NEW_YORK, NyseCalendar, new_york_date

CALENDAR = NyseCalendar(first_year=2025, last_year=2027)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "opens", "closes"),
    [
        (date(2026, 11, 23), utc(2026, 11, 23, 14, 30), utc(2026, 11, 23, 21)),  # EST
        (date(2026, 3, 6), utc(2026, 3, 6, 14, 30), utc(2026, 3, 6, 21)),  # Friday, EST
        (date(2026, 3, 9), utc(2026, 3, 9, 13, 30), utc(2026, 3, 9, 20)),  # Monday, EDT
        (date(2026, 10, 30), utc(2026, 10, 30, 13, 30), utc(2026, 10, 30, 20)),  # Friday, EDT
        (date(2026, 11, 2), utc(2026, 11, 2, 14, 30), utc(2026, 11, 2, 21)),  # Monday, EST
    ],
)
def test_a_session_opens_at_0930_and_closes_at_1600_new_york_time_in_utc(
    day: date, opens: datetime, closes: datetime
) -> None:
    session = CALENDAR.session(day)
    assert session is not None
    assert (session.open, session.close) == (opens, closes)
    assert session.local_open.time() == time(9, 30)
    assert session.local_close.time() == time(16, 0)
    assert not session.early_close


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 11, 26),  # Thanksgiving
        date(2026, 12, 25),  # Christmas
        date(2026, 3, 8),  # the Sunday DST starts
        date(2026, 11, 1),  # the Sunday DST ends
        date(2026, 11, 28),  # Saturday
        date(2026, 11, 29),  # Sunday
    ],
)
def test_no_session_on_holidays_and_weekends(day: date) -> None:
    assert CALENDAR.session(day) is None
    assert not CALENDAR.is_session(day)


@pytest.mark.parametrize("day", [date(2026, 11, 27), date(2026, 12, 24)])
def test_the_day_after_thanksgiving_and_christmas_eve_close_at_1300(day: date) -> None:
    session = CALENDAR.session(day)
    assert session is not None
    assert session.early_close
    assert session.local_close.time() == time(13, 0)
    assert session.close == datetime.combine(day, time(18, 0), UTC)


def test_next_and_previous_sessions_step_over_closed_days() -> None:
    assert CALENDAR.next_session(date(2026, 11, 25)).date == date(2026, 11, 27)
    assert CALENDAR.next_session(date(2026, 11, 27)).date == date(2026, 11, 30)
    assert CALENDAR.previous_session(date(2026, 11, 30)).date == date(2026, 11, 27)
    assert CALENDAR.session_on_or_before(date(2026, 11, 29)).date == date(2026, 11, 27)
    assert CALENDAR.session_on_or_before(date(2026, 11, 27)).date == date(2026, 11, 27)


def test_a_date_beyond_the_first_build_extends_the_calendar() -> None:
    calendar = NyseCalendar(first_year=2026, last_year=2026)
    session = calendar.session(date(2029, 7, 3))  # an early close before Independence Day
    assert session is not None
    assert session.early_close
    assert calendar.session(date(2029, 7, 4)) is None


def test_the_new_york_date_turns_at_new_york_midnight_not_utc_midnight() -> None:
    assert new_york_date(utc(2026, 11, 24, 4, 59)) == date(2026, 11, 23)
    assert new_york_date(utc(2026, 11, 24, 5, 0)) == date(2026, 11, 24)
    assert NEW_YORK.key == "America/New_York"


def test_is_open_includes_the_open_and_excludes_the_close() -> None:
    session = CALENDAR.session(date(2026, 11, 23))
    assert session is not None
    assert session.is_open(session.open)
    assert not session.is_open(session.close)
