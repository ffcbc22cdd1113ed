"""Two replicas of every consumer service (order-manager, position-monitor: real
subprocesses sharing the queue groups and the durable consumers) and two scheduler
replicas running a whole trading session, during a burst; the scheduler leader is
killed at noon. No order, exit or session event may be doubled or lost.

The scheduler replicas run in the test process on a :class:`FakeClock` (each with its
own NATS connection, leases on real time, as in the scheduler's own tests): a real
session cannot be waited for in CI (on a weekend there is none). Everything the
session sets off (the morning entry, exits on ticks and at the close-out) runs in the
real services.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import nats
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import request, subjects
from ibflow.contracts import (
    CommandAccepted,
    OrderType,
    Recommendation,
    SessionEventEmitted,
    SubmitRecommendations,
)
from ibflow_scheduler.clock import FakeClock
from ibflow_scheduler.domain.calendar import NyseCalendar
from ibflow_scheduler.domain.schedule import ScheduleConfig, plan
from ibflow_scheduler.scheduler import SchedulerTimings, SessionScheduler
from ibflow_scheduler.store import ensure_bucket

from .harness import (
    PORTFOLIO,
    POS_ACCOUNT,
    POS_PORTFOLIO,
    POSITION_SYMBOLS,
    ServiceProcess,
    Stack,
    assert_books_match_the_broker,
    chaos_stack,
    run_burst,
    wait_for,
    wait_settled,
)
from .positions import (
    STOP,
    Ticker,
    assert_positions_match_the_broker,
    position_orders,
    positions_left,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

NEW_YORK = ZoneInfo("America/New_York")
DAY = date(2026, 11, 23)  # a Monday, a regular session
CONFIG = ScheduleConfig()
FAST = SchedulerTimings(lease_ttl=1, lease_renew=0.2, retry_delay=0.05)


def ny(hour: int, minute: int) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=NEW_YORK)


class SchedulerFleet:
    """Scheduler replicas sharing a fake clock, each on its own NATS connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = FakeClock(ny(8, 30))
        self.calendar = NyseCalendar(first_year=2025, last_year=2027)
        self.replicas: list[tuple[str, NatsClient, SessionScheduler, asyncio.Task[None]]] = []

    async def start(self, name: str) -> None:
        nc = await nats.connect(self.url, connect_timeout=5)
        js = nc.jetstream()
        kv = await ensure_bucket(js, history_days=8)
        scheduler = SessionScheduler(
            nc,
            kv,
            js=js,
            config=CONFIG,
            calendar=self.calendar,
            clock=self.clock,
            replica_id=name,
            timings=FAST,
        )
        self.replicas.append((name, nc, scheduler, asyncio.create_task(scheduler.run())))

    def alive(self) -> list[tuple[str, NatsClient, SessionScheduler, asyncio.Task[None]]]:
        return [r for r in self.replicas if not r[3].done()]

    def leader(self) -> SessionScheduler | None:
        leaders = [s for _, _, s, _ in self.alive() if s.is_leader]
        assert len(leaders) <= 1, "two scheduler leaders"
        return leaders[0] if leaders else None

    async def kill_leader(self) -> str:
        """Crash: the task dies and its connection closes; the lease is left to expire."""
        for name, nc, scheduler, task in self.alive():
            if scheduler.is_leader:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await nc.close()
                return name
        raise AssertionError("no leader to kill")

    async def run_until(self, until: datetime) -> None:
        """Move the clock through every due moment up to ``until``, each handled."""
        moments = sorted({o.scheduled_for for o in plan(CONFIG, self.calendar, DAY)})
        for moment in [m for m in moments if m <= until] + [until]:
            if moment < self.clock.now():
                continue
            self.clock.set(moment)

            def caught_up(target: datetime = moment) -> bool:
                for _, _, scheduler, _ in self.alive():
                    scheduler.wake()
                leader = self.leader()
                done = None if leader is None else leader.caught_up_to
                return done is not None and done >= target

            await wait_for(caught_up, within=30, what=f"the schedule handled {moment}")

    async def close(self) -> None:
        for _, nc, scheduler, task in self.replicas:
            if not task.done():
                scheduler.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)
            if not nc.is_closed:
                await nc.close()


async def session_events(stack: Stack) -> Counter[str]:
    """How many times each session occurrence is stored in ``IBFLOW_EVENTS``."""
    js = stack.nc.jetstream()
    sub = await js.subscribe(subjects.ALL_SESSION_EVENTS, ordered_consumer=True)
    found: Counter[str] = Counter()
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=3)
            except TimeoutError:
                break
            found[SessionEventEmitted.from_json(msg.data).occurrence_id] += 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


async def handled(proc: ServiceProcess, consumer: str) -> Decimal:
    return await proc.metric("ibflow_bus_handler_seconds_count", f'consumer="{consumer}"')


@pytest.mark.timeout(600)
async def test_two_replicas_of_every_service_and_the_scheduler_double_nothing(
    tmp_path: Path,
) -> None:
    total = 500
    async with chaos_stack(tmp_path, with_positions=True) as stack:
        bridge = stack.process("gateway-bridge")
        await bridge.start()
        oms = [stack.process("order-manager", f"order-manager-{x}") for x in "ab"]
        pms = [stack.process("position-monitor", f"position-monitor-{x}") for x in "ab"]
        await asyncio.gather(*(p.start() for p in [*oms, *pms]))
        await wait_for(
            lambda: stack.bridge_ready((PORTFOLIO, POS_PORTFOLIO)), within=60, what="bridge"
        )
        recommendations = SubmitRecommendations(
            portfolio_id=POS_PORTFOLIO,
            session_date=DAY,
            items=tuple(
                Recommendation(
                    symbol=symbol,
                    quantity=Decimal(10),
                    entry_type=OrderType.LMT,
                    limit_price=Decimal("100.50"),
                    stop_loss=STOP,
                    take_profit=Decimal(110),
                )
                for symbol in POSITION_SYMBOLS
            ),
            requested_by="user:chaos",
        )
        await request(
            stack.nc, subjects.SUBMIT_RECOMMENDATIONS, recommendations, CommandAccepted, timeout=30
        )
        fleet = SchedulerFleet(stack.infra.nats_url)
        try:
            await fleet.start("scheduler-a")
            await fleet.start("scheduler-b")
            ticking = Ticker(stack)
            killed: list[str] = []

            async def session() -> None:
                await fleet.run_until(ny(9, 30))  # premarket, morning entry, open

                async def all_open() -> bool:
                    rows = await stack.fetch(
                        "SELECT count(*) AS n FROM positions WHERE portfolio_id = $1"
                        " AND status = 'OPEN'",
                        POS_PORTFOLIO,
                    )
                    return bool(rows[0]["n"] == len(POSITION_SYMBOLS))

                await wait_for(all_open, within=90, what="the morning entry's positions open")
                for symbol in POSITION_SYMBOLS[:4]:  # stops hit, two monitors watching
                    ticking.move(symbol, STOP - 1)
                await fleet.run_until(ny(12, 0))
                killed.append(await fleet.kill_leader())
                await fleet.run_until(ny(17, 30))  # the close-out exits the other four

            async with ticking:
                burst, _ = await asyncio.gather(run_burst(stack, total), session())
                await wait_settled(stack, within=180, extra=lambda: positions_left(stack))
                await wait_settled(stack, within=60, account=POS_ACCOUNT, portfolio=POS_PORTFOLIO)
        finally:
            await fleet.close()

        # session events: each occurrence of the day exactly once
        planned = [o.occurrence_id for o in plan(CONFIG, fleet.calendar, DAY)]
        stored = await session_events(stack)
        assert stored == dict.fromkeys(planned, 1), {
            k: v for k, v in stored.items() if v != 1 or k not in planned
        }
        # orders: each once at the broker; the books exact in both portfolios
        books = await assert_books_match_the_broker(stack, set(burst.coids))
        closed = await assert_positions_match_the_broker(stack, POSITION_SYMBOLS)
        reasons = Counter(r["exit_reason"] for r in closed)
        assert reasons == {"stop": 4, "close_out": 4}, reasons
        pos_books = await assert_books_match_the_broker(
            stack, position_orders(closed), account=POS_ACCOUNT, portfolio=POS_PORTFOLIO
        )
        entries = await stack.fetch(
            "SELECT symbol, status FROM recommendations WHERE portfolio_id = $1", POS_PORTFOLIO
        )
        assert len(entries) == len(POSITION_SYMBOLS)
        # both replicas of each service did work
        om_work = [await handled(p, "order-manager-facts") for p in oms]
        pm_work = [await handled(p, "position-monitor-executions") for p in pms]
        assert all(n > 0 for n in om_work), om_work
        assert all(n > 0 for n in pm_work), pm_work
        assert all(p.alive for p in [bridge, *oms, *pms])
        print(
            f"\ntwo replicas each: {len(planned)} session events once each (leader"
            f" {killed[0]} killed at noon); burst {books}; positions {dict(reasons)},"
            f" {pos_books}; facts handled per order-manager {om_work}, executions per"
            f" position-monitor {pm_work}"
        )
