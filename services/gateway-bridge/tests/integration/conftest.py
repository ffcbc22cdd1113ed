"""Fixtures: a GatewaySimulator on port 0 in the test's loop, JetStream with the events
stream, and a collector of the connection events a test's supervisor publishes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ibflow.bus import provision
from ibflow.bus.subjects import EVENTS_STREAM, GATEWAY_CONNECTION, wildcard
from ibflow.contracts.enums import ConnectionState, GatewayType
from ibflow.contracts.gateway import GatewayConnectionChanged
from ibflow_gateway_bridge.events import BrokerEventPublisher
from ibflow_gateway_bridge.ib import IbClient
from ibflow_gateway_bridge.pacing import Pacer, Priority
from ibflow_gateway_bridge.reconciliation import Reconciler
from ibflow_gateway_bridge.repository import PortfolioConfig
from ibflow_gateway_bridge.supervisor import ConnectionTimings, PortfolioConnection
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator


class RecordingPacer(Pacer):
    """A real :class:`Pacer` that also records the size and priority of every ``acquire``."""

    def __init__(self, portfolio: str) -> None:
        super().__init__(portfolio)
        self.acquired: list[int] = []
        self.priorities: list[Priority] = []

    async def acquire(self, n: int = 1, priority: Priority = Priority.ORDER) -> None:
        self.acquired.append(n)
        self.priorities.append(priority)
        await super().acquire(n, priority)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until true; AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def gateway_sim() -> AsyncIterator[GatewaySimulator]:
    """A running gateway simulator on a free port, market frozen."""
    simulator = GatewaySimulator(SimConfig().with_seed(7))
    await simulator.start("127.0.0.1", 0)
    simulator.faults.freeze(True)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def bridge_js(nc: NatsClient) -> JetStreamContext:
    """JetStream with ``IBFLOW_EVENTS`` provisioned."""
    js = nc.jetstream()
    await provision(js, [EVENTS_STREAM])
    return js


class ConnectionEvents:
    """Every ``GatewayConnectionChanged`` published during the test, in order."""

    def __init__(self) -> None:
        self.events: list[GatewayConnectionChanged] = []
        self.msg_ids: list[str] = []

    async def handle(self, msg: Msg) -> None:
        self.events.append(GatewayConnectionChanged.from_json(msg.data))
        self.msg_ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))

    def states(self) -> list[str]:
        return [event.state.value for event in self.events]

    async def wait_for(
        self, condition: Callable[[list[GatewayConnectionChanged]], bool], within: float = 10.0
    ) -> None:
        deadline = time.monotonic() + within
        while not condition(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s; states so far: {self.states()}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def connection_events(nc: NatsClient) -> AsyncIterator[ConnectionEvents]:
    """Collects connection events of every portfolio (core NATS subscription)."""
    collector = ConnectionEvents()
    sub = await nc.subscribe(wildcard(GATEWAY_CONNECTION), cb=collector.handle)
    try:
        yield collector
    finally:
        await sub.unsubscribe()


# --------------------------------------------------------------------- broker events

FAST_TIMINGS = ConnectionTimings(
    heartbeat_interval=0.3,
    heartbeat_timeout=0.3,
    connect_timeout=1.0,
    reconnect_base=0.05,
    reconnect_cap=0.2,
    publish_timeout=2.0,
)
"""Short intervals so reconnect scenarios take about a second."""


def portfolio_config(
    portfolio: str,
    port: int,
    *,
    client_id: int = 11,
    fallback_client_id: int | None = None,
    account: str | None = "DU1234567",
) -> PortfolioConfig:
    """A paper portfolio on the simulator's account ``DU1234567`` (by default)."""
    return PortfolioConfig(
        id=portfolio,
        name=portfolio,
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        fallback_client_id=fallback_client_id,
        account=account,
        is_paper=True,
        allow_live=False,
        enabled=True,
    )


@dataclass
class Bridge:
    """One portfolio's connection, event publisher and reconciler, running."""

    connection: PortfolioConnection
    events: BrokerEventPublisher
    reconciler: Reconciler

    @property
    def client(self) -> IbClient:
        return self.connection.client

    async def wait_ready(self, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while self.connection.state is not ConnectionState.READY:
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {within}s: {self.connection.state}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def start_portfolio(
    bridge_js: JetStreamContext,
) -> AsyncIterator[Callable[..., Bridge]]:
    """``start_portfolio(config, timings=..., query_timeout=...)`` → a running :class:`Bridge`."""
    running: list[tuple[Bridge, list[asyncio.Task[None]]]] = []

    def _start(
        config: PortfolioConfig,
        *,
        timings: ConnectionTimings = FAST_TIMINGS,
        query_timeout: float = 2.0,
    ) -> Bridge:
        connection = PortfolioConnection(
            config,
            bridge_js,
            timings=timings,
            gateway_type=GatewayType.SIMULATOR,
            rng=random.Random(1),
        )
        events = BrokerEventPublisher(config.id, bridge_js, connection, account_interval=0.2)
        reconciler = Reconciler(
            connection, events, query_timeout=query_timeout, commission_grace=1.0
        )
        bridge = Bridge(connection, events, reconciler)
        tasks = [asyncio.create_task(events.run()), asyncio.create_task(connection.run())]
        running.append((bridge, tasks))
        return bridge

    yield _start
    for bridge, tasks in running:
        await bridge.connection.stop()
        await bridge.reconciler.close()
        bridge.events.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


@dataclass(frozen=True)
class StoredEvent:
    """A message as JetStream stored it."""

    subject: str
    msg_id: str
    data: bytes


async def stored_events(js: JetStreamContext, subject: str) -> list[StoredEvent]:
    """Every message the events stream holds on ``subject`` (exact), in stream order."""
    info = await js.stream_info(EVENTS_STREAM.name)
    out: list[StoredEvent] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(EVENTS_STREAM.name, seq)
        except nats.js.errors.NotFoundError:
            continue
        if raw.subject == subject:
            headers = raw.headers or {}
            out.append(StoredEvent(subject, headers.get("Nats-Msg-Id", ""), raw.data or b""))
    return out


async def wait_stored(
    js: JetStreamContext,
    subject: str,
    condition: Callable[[list[StoredEvent]], bool],
    within: float = 10.0,
) -> list[StoredEvent]:
    """Poll the stream until ``condition(stored_events(subject))`` holds (or fail)."""
    deadline = time.monotonic() + within
    while True:
        found = await stored_events(js, subject)
        if condition(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s on {subject}: {len(found)} stored")
        await asyncio.sleep(0.05)
