"""The scheduler's sense of time, injectable so that tests run days in milliseconds.

The schedule runs on a :class:`Clock` (:class:`SystemClock` in production,
:class:`FakeClock` in tests); the leader lease runs on real monotonic time, because
its expiry is enforced by the NATS server's clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]

MAX_SLEEP_SECONDS: Final = 30.0
"""A long wait is cut into pieces this long, so a wall-clock step (NTP) is noticed."""


class Clock(Protocol):
    """A source of the current UTC time and a way to wait for a moment."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    async def sleep_until(self, when: datetime) -> None:
        """Return once :meth:`now` is at or after ``when``."""


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until ``when`` (in steps of at most :data:`MAX_SLEEP_SECONDS`)."""
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, MAX_SLEEP_SECONDS))


class FakeClock:
    """A clock that moves only when told to (:meth:`set`, :meth:`advance`).

    Every move wakes the coroutines waiting in :meth:`sleep_until`; those whose moment
    has come return.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a FakeClock starts at a timezone-aware time")
        self._now = start.astimezone(UTC)
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forwards or backwards) and wake the sleepers."""
        if when.tzinfo is None:
            raise ValueError("a FakeClock is set to a timezone-aware time")
        self._now = when.astimezone(UTC)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def advance(self, delta: timedelta) -> None:
        """Move forwards by ``delta``."""
        self.set(self._now + delta)

    async def sleep_until(self, when: datetime) -> None:
        """Wait until the clock has been moved to ``when`` or later."""
        while self._now < when:
            await self._moved.wait()
