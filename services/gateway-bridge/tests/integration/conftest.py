"""Fixtures: a GatewaySimulator on port 0 in the test's loop, JetStream with the events
stream, and a collector of the connection events a test's supervisor publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ibflow.bus import provision
from ibflow.bus.subjects import EVENTS_STREAM, GATEWAY_CONNECTION, wildcard
from ibflow.contracts.gateway import GatewayConnectionChanged
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator


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
