"""The order-manager end to end: real PostgreSQL, real nats-server, the gateway-bridge
service and gateway-sim over TCP, both services in-process."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from ibflow.bus import publish, request, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts import (
    CancelOrder,
    CommandAccepted,
    HaltTrading,
    ModifyOrder,
    OrderPurpose,
    OrderSide,
    OrderType,
    PlaceBrokerOrder,
    Recommendation,
    SessionEventEmitted,
    SubmitOrder,
    SubmitRecommendations,
)
from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow_gateway_bridge.app import SERVICE as BRIDGE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, state_key
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator
from ibflow_order_manager.app import SERVICE as ORDER_MANAGER
from ibflow_order_manager.settings import OrderManagerSettings

ACCOUNT = "DU1234567"
START_CASH = Decimal(1_000_000)


async def wait_for(condition: Callable[[], Any], within: float = 10.0) -> None:
    """Await ``condition()`` (sync or async) until truthy; AssertionError after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    sim: GatewaySimulator
    db: asyncpg.Connection[Any]
    nc: NatsClient

    async def submit(self, coid: str, **fields: Any) -> CommandAccepted:
        body: dict[str, Any] = {
            "portfolio_id": "om",
            "client_order_id": coid,
            "symbol": "AAPL",
            "side": OrderSide.BUY,
            "order_type": OrderType.LMT,
            "quantity": Decimal(10),
            "limit_price": Decimal("101"),
            "purpose": OrderPurpose.MANUAL,
            "requested_by": "user:test",
        }
        body.update(fields)
        cmd = SubmitOrder.model_validate(body)
        return await request(self.nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=15)

    async def order(self, coid: str) -> asyncpg.Record:
        row = await self.db.fetchrow("SELECT * FROM orders WHERE client_order_id = $1", coid)
        assert row is not None
        return row

    async def cash(self) -> tuple[Decimal, Decimal]:
        row = await self.db.fetchrow("SELECT cash, reserved_cash FROM portfolios WHERE id = 'om'")
        assert row is not None
        return row["cash"], row["reserved_cash"]

    def broker_cash(self) -> Decimal:
        return Decimal(self.sim.faults.account_state(ACCOUNT)["cash"])


@pytest.fixture
async def stack(database_url: str, nats_url: str, nc: NatsClient) -> AsyncIterator[Stack]:
    config = SimConfig.model_validate(
        {"matching": {"fill_lot_size": 100}, "market": {"auto_advance": False}}
    )
    sim = GatewaySimulator(config.with_seed(11))
    await sim.start("127.0.0.1", 0)
    sim.faults.freeze(True)
    sim.faults.set_price("AAPL", Decimal(100))
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    db = await asyncpg.connect(database_url)
    await db.execute(
        """
        INSERT INTO portfolios (id, name, broker_port, client_id, account, cash, max_order_value)
        VALUES ('om', 'om', $1, 41, $2, $3, 50000)
        """,
        sim.port,
        ACCOUNT,
        START_CASH,
    )
    await db.execute(
        "INSERT INTO instruments (symbol, currency, primary_exchange)"
        " VALUES ('AAPL', 'USD', 'NASDAQ'), ('MSFT', 'USD', 'NASDAQ')"
    )
    common = {"nats_url": nats_url, "database_url": database_url, "http_port": 0}
    bridge = Runtime(BRIDGE, GatewayBridgeSettings.load(gateway_type="simulator", **common))
    manager = Runtime(ORDER_MANAGER, OrderManagerSettings.load(recovery_interval=0.5, **common))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(rt.serve(stop)) for rt in (bridge, manager)]
    try:
        await wait_for(lambda: bridge.ready and manager.ready)
        await wait_for(lambda: _bridge_ready(nc), within=15)
        yield Stack(sim, db, nc)
    finally:
        stop.set()
        assert [await asyncio.wait_for(t, 20) for t in tasks] == [EXIT_OK, EXIT_OK]
        await db.close()
        await sim.stop()


async def _bridge_ready(nc: NatsClient) -> bool:
    try:
        kv = await nc.jetstream().key_value(STATE_BUCKET)
        entry = await kv.get(state_key("om"))
    except (BucketNotFoundError, KeyNotFoundError):
        return False
    return entry.value is not None and b'"state":"ready"' in entry.value


async def test_partial_fills_and_late_commissions_book_cash_exactly_like_the_broker(
    stack: Stack,
) -> None:
    stack.sim.faults.delay(commissions=0.3)
    accepted = await stack.submit("life-1", quantity=Decimal(250), limit_price=Decimal("100.5"))
    assert accepted.client_order_ids == ("life-1",)
    await wait_for(lambda: _status_is(stack, "life-1", "PARTIALLY_FILLED"))
    stack.sim.advance_market(3)

    async def settled() -> bool:
        order = await stack.order("life-1")
        commissions = await stack.db.fetchval(
            "SELECT count(*) FROM executions WHERE client_order_id = 'life-1'"
            " AND commission IS NOT NULL"
        )
        return order["status"] == "FILLED" and commissions == 3

    await wait_for(settled, within=15)
    order = await stack.order("life-1")
    assert order["filled_quantity"] == Decimal(250)
    executions = await stack.db.fetch("SELECT * FROM executions WHERE client_order_id = 'life-1'")
    notional = sum(e["quantity"] * e["price"] for e in executions)
    assert order["avg_fill_price"] == notional / 250
    assert sorted(e["quantity"] for e in executions) == [Decimal(50), Decimal(100), Decimal(100)]
    transactions = await stack.db.fetch(
        "SELECT * FROM transactions WHERE client_order_id = 'life-1'"
    )
    assert len(transactions) == 3
    assert order["commission"] == sum(e["commission"] for e in executions)
    await wait_for(lambda: _cash_matches(stack), within=10)
    cash, reserved = await stack.cash()
    assert cash == stack.broker_cash()
    assert reserved == 0

    again = await stack.submit("life-1", quantity=Decimal(250), limit_price=Decimal("100.5"))
    assert again.duplicate is True
    assert await stack.db.fetchval("SELECT count(*) FROM orders") == 1


async def _cash_matches(stack: Stack) -> bool:
    cash, _ = await stack.cash()
    return cash == stack.broker_cash()


async def test_cancel_of_a_working_order_releases_its_reservation_after_the_broker_confirms(
    stack: Stack,
) -> None:
    await stack.submit("rest-1", quantity=Decimal(10), limit_price=Decimal("90"))
    await wait_for(lambda: _status_is(stack, "rest-1", "SUBMITTED"))
    _, reserved = await stack.cash()
    assert reserved == Decimal(900)

    cancel = CancelOrder(portfolio_id="om", client_order_id="rest-1", requested_by="user:test")
    await request(stack.nc, subjects.CANCEL_ORDER, cancel, CommandAccepted, timeout=10)
    await wait_for(lambda: _status_is(stack, "rest-1", "CANCELLED"))
    assert await stack.cash() == (START_CASH, Decimal(0))


async def _status_is(stack: Stack, coid: str, status: str) -> bool:
    return bool((await stack.order(coid))["status"] == status)


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"portfolio_id": "nope"}, "not_found", "portfolio_id"),
        ({"symbol": "ZZZZ"}, "invalid_request", "symbol: ZZZZ"),
        ({"limit_price": Decimal("100.001")}, "invalid_request", "limit_price: 100.001"),
        ({"quantity": Decimal(1000)}, "refused", "max_order_value"),
        ({"quantity": Decimal("1.5")}, "refused", "fractional"),
        ({"currency": "EUR"}, "invalid_request", "currency"),
    ],
)
async def test_each_refusal_names_its_field_or_rule(
    stack: Stack, fields: dict[str, Any], code: str, words: str
) -> None:
    with pytest.raises(RemoteError) as refused:
        await stack.submit("bad-1", **fields)
    assert refused.value.code == code
    assert words in refused.value.message
    assert await stack.db.fetchval("SELECT count(*) FROM orders") == 0
    assert await stack.db.fetchval("SELECT count(*) FROM audit_log WHERE result = 'refused'") == 1


@pytest.mark.parametrize(
    ("portfolio_sql", "fields", "rule", "numbers"),
    [
        ("cash = 500", {}, "cash", "500"),
        ("max_position_value = 500", {}, "max_position_value", "500"),
        ("max_daily_loss = 100", {}, None, None),
    ],
)
async def test_risk_limits_refuse_with_the_rule_and_its_numbers(
    stack: Stack,
    portfolio_sql: str,
    fields: dict[str, Any],
    rule: str | None,
    numbers: str | None,
) -> None:
    await stack.db.execute(f"UPDATE portfolios SET {portfolio_sql} WHERE id = 'om'")
    if rule is None:
        # a realized loss beyond the limit today: new entries are refused
        await stack.submit("loss-1", quantity=Decimal(10), limit_price=Decimal("100.5"))
        await wait_for(lambda: _status_is(stack, "loss-1", "FILLED"))
        await stack.db.execute(
            "UPDATE executions SET ib_realized_pnl = -150, commission = coalesce(commission, 1),"
            " commission_currency = 'USD', commission_at = coalesce(commission_at, now())"
        )
        rule, numbers = "daily_loss", "100"
    with pytest.raises(RemoteError) as refused:
        await stack.submit("risk-1", purpose=OrderPurpose.ENTRY, position_id="pos-r", **fields)
    assert refused.value.code == "refused"
    assert refused.value.message.startswith(rule)
    assert numbers in refused.value.message


async def test_open_orders_limit_and_second_day_trade_position_are_refused(stack: Stack) -> None:
    await stack.submit(
        "day-1", purpose=OrderPurpose.ENTRY, position_id="pos-d1", limit_price=Decimal("90")
    )
    with pytest.raises(RemoteError) as twice:
        await stack.submit(
            "day-2", purpose=OrderPurpose.ENTRY, position_id="pos-d2", limit_price=Decimal("90")
        )
    assert twice.value.message.startswith("duplicate_position")
    await stack.db.execute("UPDATE portfolios SET max_open_orders = 1 WHERE id = 'om'")
    with pytest.raises(RemoteError) as full:
        await stack.submit("man-1", symbol="MSFT", limit_price=Decimal("90"))
    assert full.value.message.startswith("max_open_orders")


async def test_halted_portfolio_refuses_entries_but_takes_exits(stack: Stack) -> None:
    halt = HaltTrading(portfolio_id="om", reason="news", requested_by="user:test")
    await request(stack.nc, subjects.HALT_TRADING, halt, CommandAccepted, timeout=10)
    with pytest.raises(RemoteError) as refused:
        await stack.submit("halt-1")
    assert refused.value.code == "refused"
    assert "halted" in refused.value.message
    exit_order = await stack.submit(
        "halt-exit",
        side=OrderSide.SELL,
        purpose=OrderPurpose.EXIT,
        position_id="pos-1",
        exit_reason="manual",
        limit_price=Decimal("99"),
    )
    assert exit_order.duplicate is False


async def test_an_exit_reaches_the_bridge_marked_as_an_exit(stack: Stack) -> None:
    """The bridge paces exits ahead of entries: it must be told which orders are exits."""
    sent: list[PlaceBrokerOrder] = []

    async def spy(msg: Any) -> None:
        sent.append(PlaceBrokerOrder.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(subjects.place_broker_order("om"), cb=spy)
    try:
        await stack.submit("plain-1", limit_price=Decimal("99"))
        await stack.submit(
            "exit-1",
            side=OrderSide.SELL,
            purpose=OrderPurpose.EXIT,
            position_id="pos-1",
            exit_reason="stop",
            limit_price=Decimal("99"),
        )
        await wait_for(lambda: len(sent) == 2)
    finally:
        await sub.unsubscribe()

    assert {cmd.client_order_id: cmd.purpose for cmd in sent} == {
        "plain-1": OrderPurpose.MANUAL,
        "exit-1": OrderPurpose.EXIT,
    }


async def test_stale_sweep_cancels_a_partly_filled_order_releasing_only_the_remainder(
    stack: Stack,
) -> None:
    await stack.submit("stale-1", quantity=Decimal(250), limit_price=Decimal("100.5"))
    await wait_for(lambda: _status_is(stack, "stale-1", "PARTIALLY_FILLED"))
    await wait_for(lambda: _commissions_known(stack, "stale-1", 1))
    _, reserved = await stack.cash()
    assert reserved == Decimal(150) * Decimal("100.5")
    await stack.db.execute(
        "UPDATE orders SET submitted_at = now() - interval '11 minutes'"
        " WHERE client_order_id = 'stale-1'"
    )
    now = dt.datetime.now(dt.UTC)
    sweep = SessionEventEmitted(
        name="stale_order_sweep",
        occurrence_id=f"stale_order_sweep:{now.date().isoformat()}:1",
        session_date=now.date(),
        scheduled_for=now,
        emitted_at=now,
        session_open=now - dt.timedelta(hours=1),
        session_close=now + dt.timedelta(hours=5),
    )
    await publish(stack.nc.jetstream(), subjects.session_event("stale_order_sweep"), sweep)

    await wait_for(lambda: _status_is(stack, "stale-1", "CANCELLED"))
    order = await stack.order("stale-1")
    assert order["filled_quantity"] == Decimal(100)
    assert order["reserved_cash"] == 0
    assert order["cancel_requested_at"] is not None
    cash, reserved = await stack.cash()
    assert reserved == 0
    assert cash == stack.broker_cash()


async def _commissions_known(stack: Stack, coid: str, count: int) -> bool:
    known = await stack.db.fetchval(
        "SELECT count(*) FROM executions WHERE client_order_id = $1 AND commission IS NOT NULL",
        coid,
    )
    return bool(known == count)


async def test_an_order_ib_rejects_on_arrival_is_rejected_and_its_cash_released(
    stack: Stack,
) -> None:
    # ib_async reports IB's 201 for a new order as Cancelled; it never worked at IB
    stack.sim.faults.reject_next(text="Connectivity between IB and the TWS has been lost.")
    await stack.submit("rej-1", quantity=Decimal(10), limit_price=Decimal("90"))
    await wait_for(lambda: _status_is(stack, "rej-1", "REJECTED"))
    order = await stack.order("rej-1")
    assert order["status_message"].startswith("201: ")
    assert "Order rejected" in order["status_message"]
    assert order["reserved_cash"] == 0
    _, reserved = await stack.cash()
    assert reserved == 0


async def test_modify_of_a_partly_filled_order_changes_the_remainder(stack: Stack) -> None:
    await stack.submit("mod-1", quantity=Decimal(250), limit_price=Decimal("100.5"))
    await wait_for(lambda: _status_is(stack, "mod-1", "PARTIALLY_FILLED"))
    modify = ModifyOrder(
        portfolio_id="om", client_order_id="mod-1", quantity=Decimal(180), requested_by="user:t"
    )
    await request(stack.nc, subjects.MODIFY_ORDER, modify, CommandAccepted, timeout=10)
    order = await stack.order("mod-1")
    assert order["quantity"] == Decimal(180)
    engine = stack.sim.engine
    at_broker = [*engine.open_orders(), *engine.completed_orders()]
    assert [o.quantity for o in at_broker if o.request.order_ref == "mod-1"] == [Decimal(180)]

    too_small = ModifyOrder(
        portfolio_id="om", client_order_id="mod-1", quantity=Decimal(50), requested_by="user:t"
    )
    with pytest.raises(RemoteError) as refused:
        await request(stack.nc, subjects.MODIFY_ORDER, too_small, CommandAccepted, timeout=10)
    assert refused.value.code == "refused"
    assert "filled" in refused.value.message.lower()

    await wait_for(lambda: _status_is(stack, "mod-1", "FILLED"))
    order = await stack.order("mod-1")
    assert order["filled_quantity"] == Decimal(180)
    assert order["reserved_cash"] == 0


async def test_recommendations_are_recorded_once_per_symbol(stack: Stack) -> None:
    today = dt.date(2026, 11, 23)
    cmd = SubmitRecommendations(
        portfolio_id="om",
        session_date=today,
        items=(Recommendation(symbol="AAPL", allocation=Decimal("0.1")),),
        requested_by="user:test",
    )
    first = await request(stack.nc, subjects.SUBMIT_RECOMMENDATIONS, cmd, CommandAccepted)
    again = await request(stack.nc, subjects.SUBMIT_RECOMMENDATIONS, cmd, CommandAccepted)
    assert (first.duplicate, again.duplicate) == (False, True)
    rows = await stack.db.fetch("SELECT symbol, status FROM recommendations")
    assert [tuple(r) for r in rows] == [("AAPL", "pending")]


def _session_event(name: str, sequence: int = 0) -> SessionEventEmitted:
    now = dt.datetime.now(dt.UTC)
    return SessionEventEmitted(
        name=name,
        occurrence_id=f"{name}:{now.date().isoformat()}:{sequence}",
        session_date=now.date(),
        scheduled_for=now,
        emitted_at=now,
        manual=sequence > 0,
        session_open=now - dt.timedelta(hours=1),
        session_close=now + dt.timedelta(hours=5),
    )


async def test_duplicated_morning_entry_submits_one_order_per_recommendation(
    stack: Stack,
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    recommend = SubmitRecommendations(
        portfolio_id="om",
        session_date=today,
        items=(
            Recommendation(
                symbol="AAPL",
                allocation=Decimal("0.01"),
                stop_loss=Decimal(95),
                take_profit=Decimal(110),
            ),
            Recommendation(
                symbol="MSFT",
                quantity=Decimal(5),
                entry_type=OrderType.LMT,
                limit_price=Decimal("50"),
            ),
            Recommendation(symbol="ZZZZ", quantity=Decimal(1)),
        ),
        requested_by="user:test",
    )
    await request(stack.nc, subjects.SUBMIT_RECOMMENDATIONS, recommend, CommandAccepted)
    js = stack.nc.jetstream()
    event = _session_event("morning_entry")
    subject = subjects.session_event("morning_entry")
    await publish(js, subject, event)
    await publish(js, subject, event, msg_id="a-redelivered-copy")
    await publish(js, subject, _session_event("morning_entry", sequence=1))

    async def decided() -> bool:
        pending = await stack.db.fetchval(
            "SELECT count(*) FROM recommendations WHERE status = 'pending'"
        )
        return bool(pending == 0)

    await wait_for(decided, within=20)
    await asyncio.sleep(1.0)  # let the duplicates be handled too
    orders = await stack.db.fetch(
        "SELECT client_order_id, symbol, quantity, purpose, stop_loss FROM orders ORDER BY symbol"
    )
    assert [(o["symbol"], o["purpose"]) for o in orders] == [("AAPL", "entry"), ("MSFT", "entry")]
    aapl = orders[0]
    assert aapl["quantity"] == 100  # 1 % of the 1,000,000 cash at the last price, 100
    assert aapl["stop_loss"] == Decimal(95)
    statuses = {
        r["symbol"]: (r["status"], r["skip_reason"])
        for r in await stack.db.fetch("SELECT symbol, status, skip_reason FROM recommendations")
    }
    assert statuses["AAPL"][0] == statuses["MSFT"][0] == "submitted"
    assert statuses["ZZZZ"][0] == "skipped"
    assert "ZZZZ" in (statuses["ZZZZ"][1] or "")
    sim_refs = [
        o.request.order_ref
        for o in [*stack.sim.engine.open_orders(), *stack.sim.engine.completed_orders()]
    ]
    assert sorted(sim_refs) == sorted(o["client_order_id"] for o in orders)


async def test_market_order_is_valued_at_the_market_price_or_refused_without_one(
    stack: Stack,
) -> None:
    accepted = await stack.submit("mkt-1", order_type=OrderType.MKT, limit_price=None)
    assert accepted.duplicate is False
    assert (await stack.order("mkt-1"))["reference_price"] == Decimal(100)

    stack.sim.faults.set_farm("market", up=False)
    with pytest.raises(RemoteError) as refused:
        await stack.submit("mkt-2", symbol="MSFT", order_type=OrderType.MKT, limit_price=None)
    assert refused.value.code == "invalid_request"
    assert "reference_price" in refused.value.message
