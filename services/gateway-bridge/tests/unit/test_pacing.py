"""The per-connection pacer: at most ``rate`` messages in any 1-s window, FIFO, a
burst queues instead of failing, queue depth metric, close on disconnect.

Time is a fake clock whose ``sleep`` advances it: deterministic and instant.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from prometheus_client import REGISTRY

from ibflow_gateway_bridge.pacing import DEFAULT_RATE, Pacer, PacerClosed, Priority

_portfolio_ids = itertools.count()


def portfolio_label() -> str:
    """A label value no other test uses, so metric values start at zero."""
    return f"test-pacing-{next(_portfolio_ids)}"


class FakeTime:
    """A monotonic clock that only moves when the pacer sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)


async def never_wakes(_delay: float) -> None:
    """A sleep that only ends when cancelled: the pacer must be woken by close()."""
    await asyncio.Event().wait()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most completion times falling in any half-open window ``[s, s + window)``."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] + window <= t:
            start += 1
        best = max(best, end - start + 1)
    return best


def metric(name: str, portfolio: str) -> float:
    value = REGISTRY.get_sample_value(name, {"portfolio": portfolio})
    return 0.0 if value is None else value


def paced(time: FakeTime, portfolio: str, **kwargs: int) -> Pacer:
    return Pacer(portfolio, clock=time.clock, sleep=time.sleep, **kwargs)


async def run_burst(
    pacer: Pacer, time: FakeTime, count: int, n: int = 1
) -> list[tuple[int, float]]:
    """``count`` concurrent acquisitions started in index order; (index, completion time)."""
    done: list[tuple[int, float]] = []

    async def one(index: int) -> None:
        await pacer.acquire(n)
        done.append((index, time.now))

    await asyncio.gather(*(one(i) for i in range(count)))
    return done


def test_window_helper_detects_a_violation() -> None:
    assert max_in_window([0.0] * 40 + [0.999]) == 41
    assert max_in_window([0.0] * 40 + [1.0]) == 40
    assert max_in_window([]) == 0


async def test_burst_of_200_never_exceeds_40_in_any_one_second_window() -> None:
    time = FakeTime()
    pacer = paced(time, portfolio_label())

    done = await run_burst(pacer, time, 200)

    times = [t for _, t in done]
    assert len(times) == 200
    assert max_in_window(times) == DEFAULT_RATE
    # ...and it is not slower than it must be: 40 at once, then 40 per second.
    assert times[:40] == [1000.0] * 40
    assert max(times) == pytest.approx(1004.0)


async def test_burst_is_served_in_arrival_order() -> None:
    time = FakeTime()
    pacer = paced(time, portfolio_label(), rate=10)

    done = await run_burst(pacer, time, 57)

    assert [index for index, _ in done] == list(range(57))


async def test_queue_depth_rises_then_falls_to_zero() -> None:
    time = FakeTime()
    portfolio = portfolio_label()
    pacer = paced(time, portfolio)
    depths: list[int] = []

    burst = asyncio.ensure_future(run_burst(pacer, time, 100))
    while not burst.done():
        depths.append(pacer.queue_depth)
        await asyncio.sleep(0)
    await burst

    assert depths[0] == 0  # nothing started yet
    assert max(depths) == 60  # the first 40 went through at once
    peak = depths.index(60)
    falling = depths[peak:]
    assert falling == sorted(falling, reverse=True)  # once queued, it only drains
    assert {60, 20, 0} <= set(falling)  # 40 let through per second, down to empty
    assert pacer.queue_depth == 0
    assert metric("ibflow_bridge_pacer_queue_depth", portfolio) == 0
    assert metric("ibflow_bridge_paced_messages_total", portfolio) == 100


async def test_queue_depth_gauge_follows_the_waiting_messages() -> None:
    time = FakeTime()
    portfolio = portfolio_label()
    pacer = Pacer(portfolio, rate=5, clock=time.clock, sleep=never_wakes)

    waiters = [asyncio.ensure_future(pacer.acquire(2)) for _ in range(4)]
    await asyncio.sleep(0)

    # Two acquisitions (4 messages) fit the window, two (4 messages) wait.
    assert pacer.queue_depth == 4
    assert metric("ibflow_bridge_pacer_queue_depth", portfolio) == 4
    assert metric("ibflow_bridge_paced_messages_total", portfolio) == 4
    pacer.close()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert metric("ibflow_bridge_pacer_queue_depth", portfolio) == 0


async def test_close_wakes_every_waiter_with_pacer_closed() -> None:
    time = FakeTime()
    pacer = Pacer(portfolio_label(), clock=time.clock, sleep=never_wakes)

    waiters = [asyncio.ensure_future(pacer.acquire()) for _ in range(100)]
    await asyncio.sleep(0)
    assert pacer.queue_depth == 60

    pacer.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 1.0)

    assert results[:40] == [None] * 40
    assert all(isinstance(result, PacerClosed) for result in results[40:])
    assert pacer.queue_depth == 0
    assert pacer.closed


async def test_acquire_after_close_fails_at_once() -> None:
    pacer = paced(FakeTime(), portfolio_label())
    pacer.close()
    pacer.close()  # idempotent

    with pytest.raises(PacerClosed, match="closed"):
        await pacer.acquire()


class GatedTime(FakeTime):
    """A fake clock whose sleeps wait for ``gate`` before advancing the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        await self.gate.wait()
        await super().sleep(delay)


@pytest.mark.parametrize(
    "cancelled",
    [pytest.param(2, id="head-sleeping-for-its-turn"), pytest.param(4, id="queued-behind")],
)
async def test_a_cancelled_waiter_leaves_the_queue_and_the_rest_go_on(cancelled: int) -> None:
    time = GatedTime()
    portfolio = portfolio_label()
    pacer = paced(time, portfolio, rate=2)
    order: list[int] = []

    async def one(index: int) -> None:
        await pacer.acquire()
        order.append(index)

    tasks = [asyncio.ensure_future(one(i)) for i in range(6)]
    await asyncio.sleep(0)
    assert pacer.queue_depth == 4
    tasks[cancelled].cancel()
    await asyncio.sleep(0)
    assert pacer.queue_depth == 3

    time.gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert order == [i for i in range(6) if i != cancelled]
    assert tasks[cancelled].cancelled()
    assert pacer.queue_depth == 0
    assert metric("ibflow_bridge_pacer_queue_depth", portfolio) == 0
    assert metric("ibflow_bridge_paced_messages_total", portfolio) == 5


async def test_multi_message_acquisitions_count_every_message() -> None:
    time = FakeTime()
    portfolio = portfolio_label()
    pacer = paced(time, portfolio)

    done = await run_burst(pacer, time, 5, n=30)  # 150 messages, e.g. brackets

    assert [t for _, t in done] == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0, 1004.0])
    assert metric("ibflow_bridge_paced_messages_total", portfolio) == 150


async def test_an_idle_window_lets_a_full_rate_through_again() -> None:
    time = FakeTime()
    pacer = paced(time, portfolio_label(), rate=4)

    await run_burst(pacer, time, 4)
    time.now += 1.0
    await run_burst(pacer, time, 4)

    assert time.sleeps == []


async def test_a_smaller_burst_spreads_messages_evenly() -> None:
    time = FakeTime()
    pacer = paced(time, portfolio_label(), rate=40, burst=1)

    done = await run_burst(pacer, time, 41)

    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(done)]
    assert gaps == pytest.approx([1 / 40] * 40)
    assert max_in_window([t for _, t in done]) == 40


async def test_default_clock_is_the_running_loop() -> None:
    pacer = Pacer(portfolio_label(), rate=3)

    await asyncio.wait_for(asyncio.gather(*(pacer.acquire() for _ in range(3))), 1.0)

    assert pacer.queue_depth == 0


async def test_an_exit_overtakes_queued_entries_which_overtake_market_data() -> None:
    time = FakeTime()
    pacer = paced(time, portfolio_label(), rate=2)
    done: list[str] = []

    async def one(name: str, priority: Priority) -> None:
        await pacer.acquire(priority=priority)
        done.append(name)

    arrivals = [
        ("first", Priority.DATA),
        ("second", Priority.DATA),
        ("data-1", Priority.DATA),
        ("entry-1", Priority.ORDER),
        ("data-2", Priority.DATA),
        ("entry-2", Priority.ORDER),
        ("exit", Priority.URGENT),
    ]
    await asyncio.gather(*(one(name, priority) for name, priority in arrivals))

    # the first two fit the idle window; then priority, and arrival order within one
    assert done == ["first", "second", "exit", "entry-1", "entry-2", "data-1", "data-2"]


async def test_an_exit_takes_the_turn_a_market_data_request_was_sleeping_for() -> None:
    time = GatedTime()
    pacer = paced(time, portfolio_label(), rate=1)
    done: list[tuple[str, float]] = []

    async def one(name: str, priority: Priority) -> None:
        await pacer.acquire(priority=priority)
        done.append((name, time.now))

    await one("sent", Priority.DATA)
    data = asyncio.ensure_future(one("data", Priority.DATA))
    await asyncio.sleep(0)  # the data request heads the queue, asleep until t+1
    exit_ = asyncio.ensure_future(one("exit", Priority.URGENT))
    for _ in range(5):  # the data request wakes, gives up its sleep and queues again
        await asyncio.sleep(0)
    assert pacer.queue_depth == 2

    time.gate.set()
    await asyncio.wait_for(asyncio.gather(data, exit_), 1.0)

    assert done == [("sent", 1000.0), ("exit", 1001.0), ("data", 1002.0)]
    assert pacer.queue_depth == 0


async def test_close_wakes_waiters_of_every_priority() -> None:
    pacer = Pacer(portfolio_label(), rate=1, clock=FakeTime().clock, sleep=never_wakes)
    await pacer.acquire()
    waiters = [
        asyncio.ensure_future(pacer.acquire(priority=priority))
        for priority in (Priority.DATA, Priority.URGENT, Priority.ORDER)
    ]
    await asyncio.sleep(0)
    assert pacer.queue_depth == 3

    pacer.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 1.0)

    assert all(isinstance(result, PacerClosed) for result in results)
    assert pacer.queue_depth == 0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, None), (-1, None), (46, None), (40, 0), (40, 41)],
)
def test_rate_and_burst_are_validated(rate: int, burst: int | None) -> None:
    with pytest.raises(ValueError, match="must be between"):
        Pacer(portfolio_label(), rate=rate, burst=burst)


def test_defaults_are_40_per_second_with_a_full_burst() -> None:
    pacer = Pacer(portfolio_label())
    assert (pacer.rate, pacer.burst) == (40, 40)


@pytest.mark.parametrize("n", [0, -3, 41])
async def test_acquisition_size_is_validated(n: int) -> None:
    pacer = paced(FakeTime(), portfolio_label())
    with pytest.raises(ValueError, match="n must be between"):
        await pacer.acquire(n)
    assert pacer.queue_depth == 0
