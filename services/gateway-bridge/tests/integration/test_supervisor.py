"""PortfolioConnection against the REAL gateway simulator over TCP and a REAL nats-server.

No mocks: ib_async talks to the simulator's socket, events go through JetStream.
Intervals are shortened (heartbeat, backoff) so every scenario takes about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import pytest
from ib_async import IB
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from ibflow.contracts.enums import ConnectionState, GatewayType
from ibflow.contracts.gateway import GatewayConnectionChanged
from ibflow_gateway_bridge.domain.connection import Transition
from ibflow_gateway_bridge.repository import PortfolioConfig
from ibflow_gateway_bridge.supervisor import (
    STATE_BUCKET,
    ConnectionTimings,
    PortfolioConnection,
    state_key,
)
from ibflow_gateway_sim.protocol.framing import handshake_reply, read_handshake
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import ConnectionEvents, portfolio_config

pytestmark = pytest.mark.integration

S = ConnectionState
ACCOUNT = "DU1234567"
FAST = ConnectionTimings(
    heartbeat_interval=0.3,
    heartbeat_timeout=0.3,
    connect_timeout=1.0,
    reconnect_base=0.05,
    reconnect_cap=0.2,
    publish_timeout=2.0,
)


@pytest.fixture
async def start_bridge(
    bridge_js: JetStreamContext,
) -> AsyncIterator[Callable[[PortfolioConfig], PortfolioConnection]]:
    """``start_bridge(config)`` → a running PortfolioConnection, stopped after the test."""
    running: list[tuple[PortfolioConnection, asyncio.Task[None]]] = []

    def _start(config: PortfolioConfig) -> PortfolioConnection:
        connection = PortfolioConnection(
            config,
            bridge_js,
            timings=FAST,
            gateway_type=GatewayType.SIMULATOR,
            rng=random.Random(1),
        )
        running.append((connection, asyncio.create_task(connection.run())))
        return connection

    yield _start
    for connection, task in running:
        await connection.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def _stored_state(js: JetStreamContext, portfolio: str) -> GatewayConnectionChanged:
    kv = await js.key_value(STATE_BUCKET)
    entry = await kv.get(state_key(portfolio))
    assert entry.value is not None
    return GatewayConnectionChanged.from_json(entry.value)


def _after(events: list[GatewayConnectionChanged], index: int) -> list[str]:
    return [event.state.value for event in events[index:]]


def _ready_count(events: list[GatewayConnectionChanged]) -> int:
    return sum(event.state is S.READY for event in events)


async def test_connection_state_sequence_is_published(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("seq", gateway_sim.port))

    await connection_events.wait_for(lambda events: _ready_count(events) == 1)

    events = connection_events.events
    assert [(e.previous_state, e.state) for e in events] == [
        (S.DISCONNECTED, S.CONNECTING),
        (S.CONNECTING, S.SYNCHRONISING),
        (S.SYNCHRONISING, S.READY),
    ]
    ready = events[-1]
    assert ready.connected
    assert ready.ready
    assert ready.gateway_type is GatewayType.SIMULATOR
    assert (ready.host, ready.port, ready.client_id) == ("127.0.0.1", gateway_sim.port, 11)
    assert ready.account_id == ACCOUNT
    assert ready.server_version == 176
    assert ready.connection_time is not None
    assert ready.last_heartbeat is not None
    assert ready.error_message is None
    assert not events[0].connected
    ids = connection_events.msg_ids
    assert len(set(ids)) == 3
    assert all(i.startswith(f"conn:seq:{connection.boot_id}:") for i in ids)
    stored = await _stored_state(bridge_js, "seq")
    assert stored.state is S.READY
    assert connection.accepts_orders
    assert connection.last_healthy_round_trip is not None
    assert REGISTRY.get_sample_value("ibflow_bridge_connection_state", {"portfolio": "seq"}) == 3
    since = REGISTRY.get_sample_value("ibflow_bridge_seconds_since_healthy", {"portfolio": "seq"})
    assert since is not None
    assert 0 <= since < 5

    await connection.stop()

    assert connection_events.events[-1].state is S.DISCONNECTED
    assert not connection_events.events[-1].connected
    assert (await _stored_state(bridge_js, "seq")).state is S.DISCONNECTED


async def test_dropped_connection_reconnects_and_publishes_states(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("drop", gateway_sim.port))
    await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    mark = len(connection_events.events)
    reconnects = (
        REGISTRY.get_sample_value("ibflow_bridge_reconnects_total", {"portfolio": "drop"}) or 0
    )

    assert gateway_sim.faults.drop_connections() == 1

    await connection_events.wait_for(lambda events: _ready_count(events) == 2)
    assert _after(connection_events.events, mark) == [
        "disconnected",
        "connecting",
        "synchronising",
        "ready",
    ]
    assert connection_events.events[mark].error_message == "connection lost"
    assert connection.state is S.READY
    assert (await _stored_state(bridge_js, "drop")).state is S.READY
    after = REGISTRY.get_sample_value("ibflow_bridge_reconnects_total", {"portfolio": "drop"})
    assert after == reconnects + 1


async def test_zombie_gateway_is_detected_and_reconnected(
    gateway_sim: GatewaySimulator,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("zombie", gateway_sim.port))
    await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    mark = len(connection_events.events)

    gateway_sim.faults.silence(True)

    await connection_events.wait_for(
        lambda events: any(e.state is S.DISCONNECTED for e in events[mark:]), within=5
    )
    dropped = next(e for e in connection_events.events[mark:] if e.state is S.DISCONNECTED)
    assert dropped.previous_state is S.READY
    assert dropped.error_message is not None
    assert "zombie" in dropped.error_message
    assert not connection.accepts_orders

    gateway_sim.faults.silence(False)

    await connection_events.wait_for(lambda events: _ready_count(events) == 2, within=10)
    assert connection.state is S.READY
    errors = REGISTRY.get_sample_value(
        "ibflow_bridge_errors_total", {"portfolio": "zombie", "class": "heartbeat"}
    )
    assert errors is not None
    assert errors >= 1


async def test_busy_gateway_still_sending_data_is_not_taken_for_a_zombie(
    gateway_sim: GatewaySimulator,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("busy", gateway_sim.port))
    await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    await connection.client.subscribe_ticks("AAPL", timeout=5)
    mark = len(connection_events.events)

    async def stream() -> None:
        price = 190
        while True:
            price = 191 if price == 190 else 190
            gateway_sim.faults.set_price("AAPL", price)
            await asyncio.sleep(0.05)

    # Heartbeat answers come 0.5 s late (timeout 0.3 s) while ticks keep arriving: the
    # answer waits behind a backlog, as in a burst of fills; not a zombie.
    gateway_sim.faults.delay(current_time=0.5)
    ticking = asyncio.create_task(stream())
    try:
        await asyncio.sleep(3)
        assert _after(connection_events.events, mark) == []
        assert connection.state is S.READY
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking

    # No answer at all and nothing else arriving: a zombie after all.
    gateway_sim.faults.delay(current_time=60)
    await connection_events.wait_for(
        lambda events: any(e.state is S.DISCONNECTED for e in events[mark:]), within=5
    )


async def test_bridge_stopped_while_its_gateway_has_not_answered_the_connect_stops_cleanly(
    bridge_js: JetStreamContext,
) -> None:
    # A gateway that completes the handshake, then answers nothing (still starting up):
    # ib_async is connected, not ready. Stopping the bridge now must close the socket,
    # not fail in ib_async's disconnect ("Not connected").
    answered = asyncio.Event()

    async def handshake_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_handshake(reader)
        writer.write(handshake_reply())
        await writer.drain()
        answered.set()
        await reader.read()  # then silence until the client goes
        writer.close()

    server = await asyncio.start_server(handshake_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = PortfolioConnection(
        portfolio_config("stuck", port),
        bridge_js,
        timings=FAST,
        gateway_type=GatewayType.SIMULATOR,
        rng=random.Random(1),
    )
    task = asyncio.create_task(connection.run())
    try:
        await asyncio.wait_for(answered.wait(), 5)
        await asyncio.sleep(0.1)  # the client reads the handshake: connected, waiting
    finally:
        await connection.stop()
        await asyncio.wait_for(task, 5)  # raised ConnectionError: Not connected
        server.close()
        await server.wait_closed()


async def test_client_id_in_use_is_recovered_with_the_fallback(
    gateway_sim: GatewaySimulator,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    squatter = IB()
    await squatter.connectAsync("127.0.0.1", gateway_sim.port, clientId=21, timeout=5)
    try:
        connection = start_bridge(
            portfolio_config("cid", gateway_sim.port, client_id=21, fallback_client_id=22)
        )
        await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    finally:
        squatter.disconnect()

    events = connection_events.events
    refused = next(e for e in events if e.state is S.DISCONNECTED)
    assert refused.client_id == 21
    assert refused.error_message == "client id in use"
    assert events[-1].client_id == 22
    assert connection.client_id == 22


async def test_client_id_in_use_without_fallback_recovers_once_freed(
    gateway_sim: GatewaySimulator,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    squatter = IB()
    await squatter.connectAsync("127.0.0.1", gateway_sim.port, clientId=31, timeout=5)
    connection = start_bridge(portfolio_config("cid2", gateway_sim.port, client_id=31))
    await connection_events.wait_for(
        lambda events: sum(e.error_message == "client id in use" for e in events) >= 2
    )
    assert connection.state is not S.READY

    squatter.disconnect()

    await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    assert connection_events.events[-1].client_id == 31


async def test_connectivity_lost_1100_then_1101_requests_resubscribe(
    gateway_sim: GatewaySimulator,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("ibloss", gateway_sim.port))
    transitions: list[Transition] = []
    connection.on_transition(transitions.append)
    await connection_events.wait_for(lambda events: _ready_count(events) == 1)
    mark = len(connection_events.events)

    gateway_sim.faults.connectivity_lost()
    await connection_events.wait_for(
        lambda events: any(e.state is S.IB_CONNECTIVITY_LOST for e in events[mark:])
    )
    lost = connection_events.events[mark]
    assert lost.state is S.IB_CONNECTIVITY_LOST
    assert lost.connected, "the socket to the gateway stays up"
    assert lost.error_message is not None
    assert "1100" in lost.error_message
    assert not connection.accepts_orders

    gateway_sim.faults.connectivity_restored(data_lost=True)
    await connection_events.wait_for(lambda events: _ready_count(events) == 2)

    assert _after(connection_events.events, mark) == ["ib_connectivity_lost", "ready"]
    restored = transitions[-1]
    assert (restored.previous, restored.current) == (S.IB_CONNECTIVITY_LOST, S.READY)
    assert restored.resubscribe is True
    assert restored.reconnect is False
    assert connection.accepts_orders


async def test_live_port_is_refused_without_allow_live(
    bridge_js: JetStreamContext,
    start_bridge: Callable[[PortfolioConfig], PortfolioConnection],
    connection_events: ConnectionEvents,
) -> None:
    connection = start_bridge(portfolio_config("live", 4001))

    await connection_events.wait_for(lambda events: len(events) == 1)
    await asyncio.sleep(0.3)  # nothing else may follow: no connection attempt

    [refusal] = connection_events.events
    assert refusal.state is S.DISCONNECTED
    assert refusal.previous_state is None
    assert not refusal.connected
    assert refusal.port == 4001
    assert refusal.error_message is not None
    assert "4001" in refusal.error_message
    assert connection.refusal == refusal.error_message
    assert connection.state is S.DISCONNECTED
    assert not connection.client.connected
    assert (await _stored_state(bridge_js, "live")).error_message == refusal.error_message
