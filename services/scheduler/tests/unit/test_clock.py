"""The injectable clock: a fake one wakes sleepers when moved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ibflow_scheduler.clock import FakeClock, SystemClock

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


async def test_a_fake_clock_sleeper_returns_once_the_clock_reaches_its_moment() -> None:
    clock = FakeClock(T0)
    sleeper = asyncio.create_task(clock.sleep_until(T0 + timedelta(minutes=10)))
    clock.advance(timedelta(minutes=5))
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(timedelta(minutes=5))
    await asyncio.wait_for(sleeper, 1.0)
    assert clock.now() == T0 + timedelta(minutes=10)


async def test_a_moment_already_past_returns_at_once() -> None:
    clock = FakeClock(T0)
    await asyncio.wait_for(clock.sleep_until(T0 - timedelta(days=1)), 0.1)
    await asyncio.wait_for(SystemClock().sleep_until(SystemClock().now()), 0.1)


def test_a_fake_clock_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 11, 23, 9))
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2026, 11, 23, 9))


def test_the_system_clock_is_utc() -> None:
    assert SystemClock().now().tzinfo is UTC
