"""Scheduler replicas in-process on a real nats-server, with a shared fake clock.

Each replica has its own NATS connection (so "killing" one closes its connection
without releasing the lease); the lease runs on real time with a 1 s TTL, the
schedule on a :class:`FakeClock` the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ibflow.bus import provision
from ibflow.bus.subjects import EVENTS_STREAM, SESSION_EVENTS
from ibflow.contracts import SessionEventEmitted
from ibflow_scheduler.clock import FakeClock
from ibflow_scheduler.domain.calendar import NyseCalendar
from ibflow_scheduler.domain.schedule import Occurrence, ScheduleConfig, plan
from ibflow_scheduler.scheduler import SchedulerTimings, SessionScheduler
from ibflow_scheduler.store import ensure_bucket

NEW_YORK = ZoneInfo("America/New_York")
DAY = date(2026, 11, 23)
CALENDAR = NyseCalendar(first_year=2025, last_year=2027)
CONFIG = ScheduleConfig()
FAST = SchedulerTimings(
    lease_ttl=1, lease_renew=0.2, late_tolerance=timedelta(seconds=5), retry_delay=0.05
)


def ny(hour: int, minute: int, second: int = 0, day: date = DAY) -> datetime:
    """A New York wall time on ``day``."""
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=NEW_YORK)


def day_plan(day: date = DAY) -> list[Occurrence]:
    """The default schedule's occurrences on ``day``."""
    return plan(CONFIG, CALENDAR, day)


def instants(day: date = DAY) -> list[datetime]:
    """The distinct moments something is due on ``day``, in order."""
    return sorted({occ.scheduled_for for occ in day_plan(day)})


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until true; AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.002)


async def stored_session_events(js: JetStreamContext) -> list[SessionEventEmitted]:
    """Every session event stored in ``IBFLOW_EVENTS``, in stream order."""
    info = await js.stream_info(EVENTS_STREAM.name)
    if not info.state.messages:
        return []
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(EVENTS_STREAM.name, seq)
        if (msg.subject or "").startswith(f"{SESSION_EVENTS}."):
            found.append(SessionEventEmitted.from_json(msg.data or b""))
    return found


def copies(events: Iterable[SessionEventEmitted]) -> Counter[str]:
    """How many times each occurrence id was stored."""
    return Counter(event.occurrence_id for event in events)


@dataclass
class Replica:
    """One scheduler replica: its connection, worker and running task."""

    name: str
    nc: NatsClient
    scheduler: SessionScheduler
    task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.scheduler.is_leader

    async def stop(self) -> None:
        """Graceful stop: the lease is released."""
        self.scheduler.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5.0)

    async def kill(self) -> None:
        """Crash: the task dies and the connection closes; the lease is left to expire."""
        if self.task is not None:
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=5.0)
            assert done, f"replica {self.name} still runs 5 s after it was cancelled"
            if not self.task.cancelled():
                self.task.result()  # what it died of, if not of the cancel
        await self.nc.close()


@dataclass
class Fleet:
    """Scheduler replicas sharing one fake clock and one nats-server."""

    url: str
    clock: FakeClock
    replicas: list[Replica] = field(default_factory=list)
    config: ScheduleConfig = CONFIG

    async def start(self, name: str) -> Replica:
        nc = await nats.connect(self.url, connect_timeout=5)
        js = nc.jetstream()
        kv = await ensure_bucket(js, history_days=8)
        scheduler = SessionScheduler(
            nc,
            kv,
            js=js,
            config=self.config,
            calendar=CALENDAR,
            clock=self.clock,
            replica_id=name,
            timings=FAST,
        )
        replica = Replica(name, nc, scheduler)
        replica.task = asyncio.create_task(scheduler.run(), name=f"scheduler-{name}")
        self.replicas.append(replica)
        return replica

    @property
    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.task is not None and not r.task.done()]

    def leader(self) -> Replica | None:
        leaders = [r for r in self.alive if r.is_leader]
        assert len(leaders) <= 1, f"two leaders: {[r.name for r in leaders]}"
        return leaders[0] if leaders else None

    async def wait_for_leader(self, within: float = 5.0) -> Replica:
        await wait_until(lambda: self.leader() is not None, within)
        leader = self.leader()
        assert leader is not None
        return leader

    async def settle(self, within: float = 5.0) -> Replica:
        """Wait until a leader has handled everything due at the clock's time."""
        target = self.clock.now()
        for replica in self.alive:
            replica.scheduler.wake()

        def done() -> bool:
            leader = self.leader()
            caught_up = None if leader is None else leader.scheduler.caught_up_to
            return caught_up is not None and caught_up >= target

        await wait_until(done, within)
        leader = self.leader()
        assert leader is not None
        return leader

    async def run_through(self, moments: Iterable[datetime]) -> None:
        """Move the clock to each moment in turn and let the leader handle it."""
        for moment in moments:
            self.clock.set(moment)
            await self.settle()

    async def close(self) -> None:
        for replica in self.replicas:
            if replica.task is not None and not replica.task.done():
                with contextlib.suppress(Exception):
                    await replica.stop()
            if not replica.nc.is_closed:
                await replica.nc.close()


@pytest.fixture
async def events_js(nc: NatsClient) -> JetStreamContext:
    """JetStream with ``IBFLOW_EVENTS`` provisioned."""
    js = nc.jetstream()
    await provision(js, [EVENTS_STREAM])
    return js


@pytest.fixture
async def fleet(nats_url: str, events_js: JetStreamContext) -> AsyncIterator[Fleet]:
    """An empty fleet whose clock stands at 08:30 New York time on Monday 2026-11-23."""
    del events_js  # provisioned
    group = Fleet(nats_url, FakeClock(ny(8, 30)))
    try:
        yield group
    finally:
        await group.close()
