"""Broker events through the bridge: REAL gateway-sim over TCP, REAL nats-server.

Orders are sent through the bridge's own IbClient; what JetStream stored is read back
from the events stream (``js.get_msg``), so the assertions are about the stored facts
and their ``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from ibflow.bus import subjects
from ibflow.contracts.account import AccountValuesReported
from ibflow.contracts.enums import GatewayType
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged
from ibflow_gateway_bridge.events import BrokerEventPublisher
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, PortfolioConnection, state_key
from ibflow_gateway_sim.config import MatchingConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Bridge, StoredEvent, portfolio_config, wait_stored

pytestmark = pytest.mark.integration


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[[SimConfig], Awaitable[GatewaySimulator]]]:
    """``await make_sim(config)`` → a running simulator (market frozen), stopped after."""
    started: list[GatewaySimulator] = []

    async def _make(config: SimConfig) -> GatewaySimulator:
        simulator = GatewaySimulator(config.with_seed(7))
        await simulator.start("127.0.0.1", 0)
        simulator.faults.freeze(True)
        started.append(simulator)
        return simulator

    yield _make
    for simulator in started:
        await simulator.stop()


def _statuses(stored: list[StoredEvent]) -> list[OrderStatusChanged]:
    return [OrderStatusChanged.from_json(s.data) for s in stored]


async def test_place_publishes_status_execution_and_commission_with_deterministic_ids(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "evt1"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port))
    await bridge.wait_ready()

    order_id = await bridge.client.place_order(
        symbol="AAPL", action="BUY", quantity=100, order_type="MKT", order_ref="coid-1"
    )

    [execution] = [
        ExecutionReported.from_json(s.data)
        for s in await wait_stored(bridge_js, subjects.execution(p), lambda found: len(found) == 1)
    ]
    commissions = await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) == 1)
    statuses = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.ib_status == "Filled" for s in _statuses(found)),
    )
    assert execution.client_order_id == "coid-1"
    assert execution.order_id == order_id
    assert execution.shares == Decimal(100)
    stored_exec = await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) == 1)
    assert stored_exec[0].msg_id == f"exec:{execution.exec_id}"
    [commission_msg] = commissions
    commission = CommissionReported.from_json(commission_msg.data)
    assert commission_msg.msg_id == f"comm:{execution.exec_id}"
    assert commission.exec_id == execution.exec_id
    assert commission.client_order_id == "coid-1"
    assert commission.commission == Decimal("1.00")
    filled = [s for s in _statuses(statuses) if s.ib_status == "Filled"][-1]
    assert filled.client_order_id == "coid-1"
    assert filled.perm_id == execution.perm_id
    assert filled.perm_id is not None
    assert filled.filled == Decimal(100)
    assert [m.msg_id for m in statuses] == [s.dedupe_key() for s in _statuses(statuses)]
    assert len({m.msg_id for m in statuses}) == len(statuses)
    sample = REGISTRY.get_sample_value(
        "ibflow_bridge_events_published_total", {"portfolio": p, "kind": "execution"}
    )
    assert sample is not None
    assert sample >= 1

    # account values and positions: published and kept in the KV bucket
    accounts = await wait_stored(bridge_js, subjects.account_values(p), lambda f: len(f) >= 1)
    latest = AccountValuesReported.from_json(accounts[-1].data)
    assert latest.account_id == "DU1234567"
    assert latest.net_liquidation is not None
    await wait_stored(bridge_js, subjects.broker_position(p), lambda f: len(f) >= 1)
    kv = await bridge_js.key_value(STATE_BUCKET)
    stored_account = json.loads((await kv.get(state_key(p, "account"))).value or b"[]")
    assert stored_account[0]["account_id"] == "DU1234567"
    positions = json.loads((await kv.get(state_key(p, "positions"))).value or b"[]")
    assert any(pos["symbol"] == "AAPL" and Decimal(pos["position"]) == 100 for pos in positions)


async def test_partial_fills_are_separate_executions(
    make_sim: Callable[[SimConfig], Awaitable[GatewaySimulator]],
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    sim = await make_sim(
        SimConfig(matching=MatchingConfig(fill_lot_size=30, executions_per_check=None))
    )
    p = "evt2"
    bridge = start_portfolio(portfolio_config(p, sim.port))
    await bridge.wait_ready()

    await bridge.client.place_order(
        symbol="MSFT", action="BUY", quantity=100, order_type="MKT", order_ref="coid-2"
    )

    stored = await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) == 4)
    executions = [ExecutionReported.from_json(s.data) for s in stored]
    assert [e.shares for e in executions] == [Decimal(30), Decimal(30), Decimal(30), Decimal(10)]
    assert sum(e.shares for e in executions) == Decimal(100)
    assert len({e.exec_id for e in executions}) == 4
    assert {e.client_order_id for e in executions} == {"coid-2"}
    assert [s.msg_id for s in stored] == [f"exec:{e.exec_id}" for e in executions]
    commissions = await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) == 4)
    assert {c.msg_id for c in commissions} == {f"comm:{e.exec_id}" for e in executions}


async def test_cancel_of_a_remainder(
    make_sim: Callable[[SimConfig], Awaitable[GatewaySimulator]],
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    sim = await make_sim(SimConfig(matching=MatchingConfig(fill_lot_size=30)))
    p = "evt3"
    bridge = start_portfolio(portfolio_config(p, sim.port))
    await bridge.wait_ready()
    order_id = await bridge.client.place_order(
        symbol="AAPL",
        action="BUY",
        quantity=100,
        order_type="LMT",
        lmt_price=Decimal("180.00"),
        order_ref="coid-3",
    )
    await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.ib_status == "Submitted" for s in _statuses(found)),
    )

    sim.faults.set_price("AAPL", "179.00")  # one lot of 30 executes...
    sim.faults.set_price("AAPL", "200.00")  # ...and the market moves away before the next
    await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) == 1)
    bridge.client.cancel_order(order_id)

    stored = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.ib_status == "Cancelled" for s in _statuses(found)),
    )
    final = _statuses(stored)[-1]
    assert final.ib_status == "Cancelled"
    assert final.client_order_id == "coid-3"
    assert final.filled == Decimal(30)
    [execution] = [
        ExecutionReported.from_json(s.data)
        for s in await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) == 1)
    ]
    assert execution.shares == Decimal(30)


async def test_modify_publishes_new_status(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "evt4"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port))
    await bridge.wait_ready()
    order_id = await bridge.client.place_order(
        symbol="AAPL",
        action="BUY",
        quantity=100,
        order_type="LMT",
        lmt_price=Decimal("180.00"),
        order_ref="coid-4",
    )
    await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.ib_status == "Submitted" for s in _statuses(found)),
    )

    bridge.client.modify_order(order_id, quantity=Decimal(150), lmt_price=Decimal("185.00"))

    await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.remaining == 150 for s in _statuses(found)),
    )
    gateway_sim.faults.set_price("AAPL", "184.00")
    stored = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(s.ib_status == "Filled" for s in _statuses(found)),
    )
    filled = next(s for s in _statuses(stored) if s.ib_status == "Filled")
    assert filled.filled == Decimal(150)
    assert filled.client_order_id == "coid-4"
    [execution] = [
        ExecutionReported.from_json(s.data)
        for s in await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) == 1)
    ]
    assert execution.price <= Decimal("185.00")
    assert execution.shares == Decimal(150)


async def test_publisher_and_connection_stopped_before_they_ran_return_at_once(
    bridge_js: JetStreamContext,
) -> None:
    # A portfolio stopped while it was still starting (a fleet reload, then shutdown):
    # its run() must not wait for a stop that already came.
    config = portfolio_config("early-stop", 1, client_id=61)
    connection = PortfolioConnection(
        config, bridge_js, gateway_type=GatewayType.SIMULATOR, rng=random.Random(1)
    )
    events = BrokerEventPublisher(config.id, bridge_js, connection)
    events.stop()
    await connection.stop()
    await asyncio.wait_for(events.run(), 5)
    await asyncio.wait_for(connection.run(), 5)
