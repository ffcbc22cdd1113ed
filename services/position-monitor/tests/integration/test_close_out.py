"""The session close-out: every open position of every portfolio is exited, working
entries are cancelled, and a repeated close-out sends nothing more."""

from __future__ import annotations

from decimal import Decimal

from ibflow.bus import request, subjects
from ibflow.contracts import CommandAccepted, OrderPurpose, OrderSide, OrderType, SubmitOrder

from .conftest import Stack, session_consumer_done, wait_for

ACCOUNT_B = "DU7654321"


async def _all_closed(stack: Stack) -> bool:
    statuses = await stack.db.fetch("SELECT id, status FROM positions ORDER BY id")
    return {r["id"]: r["status"] for r in statuses} == {
        "a-aapl": "CLOSED",
        "a-msft": "CLOSED",
        "b-aapl": "CLOSED",
        "b-wait": "CANCELLED",
    }


async def test_close_out_flattens_two_portfolios_and_a_repeat_sends_nothing(
    stack: Stack,
) -> None:
    await stack.open_position("a-aapl", portfolio="pa", symbol="AAPL")
    await stack.open_position("a-msft", portfolio="pa", symbol="MSFT", quantity=Decimal(50))
    await stack.open_position("b-aapl", portfolio="pb", symbol="AAPL", quantity=Decimal(30))
    waiting = SubmitOrder(
        portfolio_id="pb",
        client_order_id="entry:b-wait",
        symbol="MSFT",
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=Decimal(10),
        limit_price=Decimal(90),
        purpose=OrderPurpose.ENTRY,
        position_id="b-wait",
        stop_loss=Decimal(85),
        requested_by="user:test",
    )
    await request(stack.nc, subjects.SUBMIT_ORDER, waiting, CommandAccepted, timeout=15)
    await wait_for(lambda: stack.status_is("b-wait", "PENDING"))

    await stack.session("close_out", 1)
    await wait_for(lambda: _all_closed(stack), within=20)
    reasons = await stack.db.fetch("SELECT exit_reason FROM positions WHERE status = 'CLOSED'")
    assert {r["exit_reason"] for r in reasons} == {"close_out"}
    for account in ("DU1234567", ACCOUNT_B):
        held = stack.sim.faults.account_state(account)["positions"]
        assert held == [], f"{account} still holds {held}"
    orders_before = await stack.db.fetchval("SELECT count(*) FROM orders")
    executions_before = len(stack.sim_orders()) + len(stack.sim_orders(ACCOUNT_B))

    await stack.session("close_out", 2)
    await wait_for(lambda: session_consumer_done(stack, 2))
    assert await stack.db.fetchval("SELECT count(*) FROM orders") == orders_before
    assert len(stack.sim_orders()) + len(stack.sim_orders(ACCOUNT_B)) == executions_before
    assert await _all_closed(stack)
