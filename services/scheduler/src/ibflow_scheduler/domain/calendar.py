"""The NYSE trading calendar: sessions with their open and close in UTC.

The sessions come from a maintained library, ``exchange_calendars``' ``XNYS``
(holidays, early closes, the odd special closure), not from rules written here:
ZimuaBull's duplicated UTC crons and a hand-kept holiday list are exactly the failure
modes (ib-failure-modes 14, 15) this replaces. Everything that is a wall-clock time
is computed in ``America/New_York`` with :mod:`zoneinfo`; everything stored or
published is UTC.

The library is imported, and its calendar built, only when a session is first asked
for (the import costs about two seconds); the calendar covers a few years around the
dates asked for and grows when a date outside it is asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["CALENDAR_NAME", "NEW_YORK", "NyseCalendar", "Session", "new_york_date"]

NEW_YORK: Final = ZoneInfo("America/New_York")
"""The exchange's time zone."""
CALENDAR_NAME: Final = "XNYS"
"""The exchange_calendars code of the New York Stock Exchange."""
REGULAR_CLOSE: Final = time(16, 0)
"""The close of a full session, New York time (half days close at 13:00)."""

_MARGIN_YEARS: Final = 1
_MAX_GAP_DAYS: Final = 31
"""No run of closed days is this long; a search for the next session stops there."""


def new_york_date(instant: datetime) -> date:
    """The calendar date in New York at ``instant`` (a timezone-aware datetime)."""
    return instant.astimezone(NEW_YORK).date()


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session: its date and its regular open and close, in UTC."""

    date: date
    open: datetime
    close: datetime

    @property
    def local_open(self) -> datetime:
        """The open in New York time."""
        return self.open.astimezone(NEW_YORK)

    @property
    def local_close(self) -> datetime:
        """The close in New York time."""
        return self.close.astimezone(NEW_YORK)

    @property
    def early_close(self) -> bool:
        """A half day: the close is before 16:00 New York time."""
        return self.local_close.time() < REGULAR_CLOSE

    def is_open(self, instant: datetime) -> bool:
        """True while the regular session runs (open included, close excluded)."""
        return self.open <= instant < self.close


class NyseCalendar:
    """The sessions of the New York Stock Exchange (``exchange_calendars`` XNYS).

    ``first_year``/``last_year`` bound the first build (default: around this year);
    asking about a date outside them rebuilds a larger calendar.
    """

    def __init__(self, *, first_year: int | None = None, last_year: int | None = None) -> None:
        this_year = datetime.now(UTC).year
        self._first = first_year if first_year is not None else this_year - _MARGIN_YEARS
        self._last = last_year if last_year is not None else this_year + _MARGIN_YEARS
        self._sessions: dict[date, Session] | None = None

    def session(self, day: date) -> Session | None:
        """The session on ``day``, or ``None`` when the exchange is closed (weekend, holiday)."""
        return self._table(day).get(day)

    def is_session(self, day: date) -> bool:
        """True when the exchange trades on ``day``."""
        return self.session(day) is not None

    def next_session(self, day: date) -> Session:
        """The first session strictly after ``day``."""
        return self._search(day, timedelta(days=1))

    def previous_session(self, day: date) -> Session:
        """The last session strictly before ``day``."""
        return self._search(day, timedelta(days=-1))

    def session_on_or_before(self, day: date) -> Session:
        """The session on ``day``, or the last one before it."""
        return self.session(day) or self.previous_session(day)

    def _search(self, day: date, step: timedelta) -> Session:
        candidate = day
        for _ in range(_MAX_GAP_DAYS):
            candidate += step
            found = self.session(candidate)
            if found is not None:
                return found
        raise LookupError(f"no {CALENDAR_NAME} session within {_MAX_GAP_DAYS} days of {day}")

    def _table(self, day: date) -> dict[date, Session]:
        if self._sessions is None or not self._first <= day.year <= self._last:
            self._first = min(self._first, day.year - _MARGIN_YEARS)
            self._last = max(self._last, day.year + _MARGIN_YEARS)
            self._sessions = _build(self._first, self._last)
        return self._sessions


def _build(first_year: int, last_year: int) -> dict[date, Session]:
    """Every XNYS session from ``first_year`` to ``last_year``, by date."""
    import exchange_calendars  # noqa: PLC0415 - heavy (pandas); only when first needed
    import pandas  # noqa: PLC0415

    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads Series.values, deprecated by pandas 3.1
        # (Pandas4Warning); harmless for what is read here.
        warnings.simplefilter("ignore", pandas.errors.Pandas4Warning)
        calendar = exchange_calendars.get_calendar(
            CALENDAR_NAME, start=f"{first_year}-01-01", end=f"{last_year}-12-31"
        )
        rows = zip(calendar.sessions, calendar.opens, calendar.closes, strict=True)
        return {
            label.date(): Session(
                date=label.date(),
                open=opens.to_pydatetime().astimezone(UTC),
                close=closes.to_pydatetime().astimezone(UTC),
            )
            for label, opens, closes in rows
        }
