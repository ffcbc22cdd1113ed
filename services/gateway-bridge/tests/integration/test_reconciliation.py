"""Reconciliation after every (re)connect: REAL gateway-sim over TCP, REAL nats-server.

A fill that happens while the bridge is away is found by the snapshot after the
reconnect and stored exactly once (same contract → same ``Nats-Msg-Id``), however
many times the bridge reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from ibflow.bus import subjects
from ibflow.contracts.enums import BrokerQuery, ConnectionState
from ibflow.contracts.execution import ExecutionReported
from ibflow.contracts.gateway import BrokerSnapshotCompleted
from ibflow_gateway_bridge.domain.connection import Transition
from ibflow_gateway_bridge.supervisor import ConnectionTimings
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Bridge, StoredEvent, portfolio_config, wait_stored

pytestmark = pytest.mark.integration


def _snapshots(stored: list[StoredEvent]) -> list[BrokerSnapshotCompleted]:
    return [BrokerSnapshotCompleted.from_json(s.data) for s in stored]


def _reconnected(count: int) -> Callable[[list[StoredEvent]], bool]:
    def check(stored: list[StoredEvent]) -> bool:
        done = [s for s in _snapshots(stored) if s.reason == "reconnected" and s.complete]
        return len(done) >= count

    return check


async def _resting_buy(bridge: Bridge, js: JetStreamContext, p: str, ref: str) -> None:
    await bridge.client.place_order(
        symbol="AAPL",
        action="BUY",
        quantity=100,
        order_type="LMT",
        lmt_price=Decimal("180.00"),
        order_ref=ref,
    )
    await wait_stored(js, subjects.order_status(p), lambda found: len(found) >= 1)


async def test_fill_during_disconnect_is_published_once_after_reconnect(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "rec1"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port))
    await bridge.wait_ready()
    first = await wait_stored(bridge_js, subjects.broker_snapshot(p), lambda f: len(f) == 1)
    assert _snapshots(first)[0].reason == "connected"
    assert _snapshots(first)[0].complete
    await _resting_buy(bridge, bridge_js, p, "coid-r1")

    assert gateway_sim.faults.drop_connections() == 1
    gateway_sim.faults.set_price("AAPL", "179.00")  # fills while the bridge is away

    snapshots = await wait_stored(bridge_js, subjects.broker_snapshot(p), _reconnected(1))
    summary = next(s for s in _snapshots(snapshots) if s.reason == "reconnected")
    assert summary.complete
    assert summary.failed_queries == ()
    assert summary.execution_count == 1
    assert summary.position_count == 1
    assert summary.open_order_count == 0
    executions = await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) >= 1)
    commissions = await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) >= 1)
    [execution_msg] = executions
    execution = ExecutionReported.from_json(execution_msg.data)
    assert execution.client_order_id == "coid-r1"
    assert execution.snapshot_id == summary.snapshot_id
    assert execution_msg.msg_id == f"exec:{execution.exec_id}"
    assert [c.msg_id for c in commissions] == [f"comm:{execution.exec_id}"]
    statuses = await wait_stored(bridge_js, subjects.order_status(p), lambda f: len(f) >= 2)
    assert any(":Filled:100:0" in s.msg_id for s in statuses)


async def test_reconnect_replay_is_deduplicated(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "rec2"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port))
    await bridge.wait_ready()
    await bridge.client.place_order(
        symbol="AAPL", action="BUY", quantity=100, order_type="MKT", order_ref="coid-r2"
    )
    await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) == 1)
    statuses_before = await stored_status_ids(bridge_js, p)

    for count in (1, 2):
        gateway_sim.faults.drop_connections()
        await wait_stored(bridge_js, subjects.broker_snapshot(p), _reconnected(count))

    executions = await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) >= 1)
    commissions = await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) >= 1)
    assert len(executions) == 1
    assert len(commissions) == 1
    assert await stored_status_ids(bridge_js, p) == statuses_before


async def stored_status_ids(js: JetStreamContext, p: str) -> list[str]:
    stored = await wait_stored(js, subjects.order_status(p), lambda f: len(f) >= 1)
    return [s.msg_id for s in stored]


async def test_failed_query_is_unknown_not_empty(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "rec3"
    slow_heartbeat = ConnectionTimings(
        heartbeat_interval=30.0, connect_timeout=1.0, reconnect_base=0.05, reconnect_cap=0.2
    )
    bridge = start_portfolio(
        portfolio_config(p, gateway_sim.port, client_id=41),
        timings=slow_heartbeat,
        query_timeout=0.3,
    )
    silenced: list[bool] = []

    def silence_once(transition: Transition) -> None:
        # runs before the snapshot task sends its first query
        if transition.current is ConnectionState.READY and not silenced:
            silenced.append(True)
            gateway_sim.faults.silence(True, client_id=41)

    bridge.connection.on_transition(silence_once)

    stored = await wait_stored(bridge_js, subjects.broker_snapshot(p), lambda f: len(f) == 1)
    gateway_sim.faults.silence(False, client_id=41)
    assert bridge.reconciler.known_order("anything") == (False, None), "orders are unknown"

    [summary] = _snapshots(stored)
    assert not summary.complete
    assert set(summary.failed_queries) == {
        BrokerQuery.POSITIONS,
        BrokerQuery.ORDERS,
        BrokerQuery.EXECUTIONS,
    }
    assert summary.position_count is None
    assert summary.open_order_count is None
    assert summary.execution_count is None

    again = await bridge.reconciler.reconcile_now()
    assert bridge.reconciler.known_order("anything") == (True, None)
    assert again.complete
    assert again.reason == "requested"
    assert again.position_count == 0
    assert again.execution_count == 0


async def test_orders_snapshot_is_trusted_only_on_the_connection_it_was_taken_on(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "rec4"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=42))
    await wait_stored(bridge_js, subjects.broker_snapshot(p), lambda f: len(f) == 1)
    assert bridge.reconciler.known_order("x") == (True, None)

    seen: list[tuple[bool, object]] = []

    def on_ready(transition: Transition) -> None:
        if transition.current is ConnectionState.READY:
            seen.append(bridge.reconciler.known_order("x"))

    bridge.connection.on_transition(on_ready)
    assert gateway_sim.faults.drop_connections() == 1
    await wait_stored(bridge_js, subjects.broker_snapshot(p), lambda f: len(f) == 2)
    assert seen == [(False, None)], "a new connection does not trust the old snapshot"
    assert bridge.reconciler.known_order("x") == (True, None)
