"""Stops and targets on ticks, end to end: the simulator's price moves through a level,
the monitor sends one exit through the order-manager, the simulator fills it, and the
position's realized P&L is the simulator's fills and commissions to the cent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ibflow.contracts import OrderSide
from ibflow_position_monitor.domain import exit_client_order_id

from .conftest import Stack, wait_for


async def _closed(stack: Stack, position_id: str) -> bool:
    row = await stack.position(position_id)
    return bool(row["status"] == "CLOSED" and row["commissions_pending"] == 0)


@pytest.mark.parametrize(
    ("price", "reason"),
    [(Decimal("94.50"), "stop"), (Decimal("110.25"), "target")],
)
async def test_a_price_through_a_level_closes_the_position_once_with_the_brokers_pnl(
    stack: Stack, price: Decimal, reason: str
) -> None:
    await stack.open_position("p1")
    stack.sim.faults.set_price("AAPL", Decimal("99.00"))  # a tick inside the levels
    stack.sim.faults.set_price("AAPL", price)
    stack.sim.faults.set_price("AAPL", price)  # duplicate ticks through the level
    stack.sim.faults.set_price("AAPL", price - Decimal("0.10"))

    await wait_for(lambda: _closed(stack, "p1"))
    row = await stack.position("p1")
    assert row["exit_reason"] == reason
    assert row["exit_client_order_ids"] == [exit_client_order_id("p1")]

    executions = stack.sim_orders()
    sells = [e for e in executions if e["side"] == "SLD"]
    buys = [e for e in executions if e["side"] == "BOT"]
    assert sum(Decimal(e["shares"]) for e in sells) == Decimal(100), "exactly one exit filled"
    assert len({e["order_id"] for e in sells}) == 1
    gross = sum(Decimal(e["shares"]) * Decimal(e["price"]) for e in sells) - sum(
        Decimal(e["shares"]) * Decimal(e["price"]) for e in buys
    )
    commissions = sum(Decimal(e["commission"]) for e in executions)
    assert row["realized_pnl"] == gross - commissions
    assert row["commissions"] == commissions
    assert row["quantity"] == 0
    orders = await stack.db.fetchval(
        "SELECT count(*) FROM orders WHERE position_id = 'p1' AND purpose = 'exit'"
    )
    assert orders == 1


async def test_an_exit_the_broker_rejects_is_retried_with_the_next_id_on_the_next_tick(
    stack: Stack,
) -> None:
    await stack.open_position("p2", quantity=Decimal(20))
    stack.sim.faults.reject_next(text="Simulated reject of the first exit")
    stack.sim.faults.set_price("AAPL", Decimal("94.90"))

    async def first_exit_ended() -> bool:
        row = await stack.position("p2")
        return bool(row["status"] == "OPEN" and row["exit_client_order_ids"] == ["exit:p2"])

    await wait_for(first_exit_ended)
    stack.sim.faults.set_price("AAPL", Decimal("94.80"))
    await wait_for(lambda: _closed(stack, "p2"))
    row = await stack.position("p2")
    assert row["exit_client_order_ids"] == ["exit:p2", "exit:p2:2"]
    assert row["exit_reason"] == "stop"
    sells = [e for e in stack.sim_orders() if e["side"] == "SLD"]
    assert sum(Decimal(e["shares"]) for e in sells) == Decimal(20)


async def test_a_short_position_exits_with_a_buy_when_the_price_rises_through_its_stop(
    stack: Stack,
) -> None:
    await stack.open_position(
        "sh1",
        side=OrderSide.SELL,
        quantity=Decimal(25),
        stop_loss=Decimal(105),
        take_profit=Decimal(90),
        limit_price=Decimal("99.50"),
    )
    stack.sim.faults.set_price("AAPL", Decimal("105.20"))
    await wait_for(lambda: _closed(stack, "sh1"))
    row = await stack.position("sh1")
    assert (row["side"], row["exit_reason"]) == ("SHORT", "stop")
    executions = stack.sim_orders()
    sold = sum(Decimal(e["shares"]) * Decimal(e["price"]) for e in executions if e["side"] == "SLD")
    bought = sum(
        Decimal(e["shares"]) * Decimal(e["price"]) for e in executions if e["side"] == "BOT"
    )
    commissions = sum(Decimal(e["commission"]) for e in executions)
    assert row["realized_pnl"] == sold - bought - commissions
    assert stack.sim.faults.account_state("DU1234567")["positions"] == []
