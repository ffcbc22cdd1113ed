"""Broker facts booked a batch per transaction (``OrderBook.on_facts``) against a real
PostgreSQL: everything a batch may hold at once — an execution with its commission, a
replayed execution, a status, a commission before its execution — is booked once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ibflow.contracts import OrderSide, OrderStatusChanged
from ibflow_order_manager.book import OrderBook

from .conftest import START_CASH
from .conftest import o1_commission as commission
from .conftest import o1_execution as execution

pytestmark = pytest.mark.integration


def status(ib_status: str, filled: int, remaining: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        portfolio_id="p",
        client_order_id="o1",
        order_id=1,
        perm_id=1001,
        ib_status=ib_status,
        filled=Decimal(filled),
        remaining=Decimal(remaining),
    )


async def test_execution_its_commission_and_a_replay_in_one_batch_move_cash_once(
    pool: asyncpg.Pool[Any], book: OrderBook
) -> None:
    await book.on_facts(
        [
            execution("e1", 40, 40),
            commission("e1", "1.25"),
            execution("e1", 40, 40),
            status("Submitted", 40, 60),
            commission("e1", "1.25"),
        ]
    )
    order = await pool.fetchrow("SELECT * FROM orders WHERE client_order_id = 'o1'")
    assert order is not None
    assert (order["status"], order["filled_quantity"], order["commission"]) == (
        "PARTIALLY_FILLED",
        40,
        Decimal("1.25"),
    )
    assert order["revision"] == 2
    rows = await pool.fetch("SELECT exec_id, commission FROM executions")
    assert [(r["exec_id"], r["commission"]) for r in rows] == [("e1", Decimal("1.25"))]
    delta = await pool.fetchval("SELECT sum(cash_delta) FROM transactions")
    assert delta == Decimal("-4001.25")
    assert await pool.fetchval("SELECT cash FROM portfolios") == START_CASH + delta


async def test_commission_before_its_execution_is_parked_then_booked_with_it(
    pool: asyncpg.Pool[Any], book: OrderBook
) -> None:
    await book.on_facts([commission("e2", "0.50")])
    assert await pool.fetchval("SELECT count(*) FROM pending_commissions") == 1
    assert await pool.fetchval("SELECT cash FROM portfolios") == START_CASH
    await book.on_facts([execution("e2", 10, 10, price="99.5"), commission("e2", "0.50")])
    assert await pool.fetchval("SELECT count(*) FROM pending_commissions") == 0
    row = await pool.fetchrow("SELECT commission, cash_delta FROM transactions")
    assert row is not None
    assert (row["commission"], row["cash_delta"]) == (Decimal("0.50"), Decimal("-995.50"))
    assert await pool.fetchval("SELECT cash FROM portfolios") == START_CASH - Decimal("995.50")


async def test_order_filled_within_one_batch_stamps_every_status_it_went_through(
    pool: asyncpg.Pool[Any], book: OrderBook
) -> None:
    await book.on_facts(
        [execution("e3", 60, 60), execution("e4", 40, 100), status("Filled", 100, 0)]
    )
    order = await pool.fetchrow(
        "SELECT status, filled_quantity, avg_fill_price, reserved_cash, partially_filled_at,"
        " filled_at FROM orders WHERE client_order_id = 'o1'"
    )
    assert order is not None
    assert (order["status"], order["filled_quantity"], order["reserved_cash"]) == (
        "FILLED",
        100,
        0,
    )
    assert order["partially_filled_at"] is not None
    assert order["filled_at"] is not None
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ibflow_outbox WHERE subject LIKE '%order.updated%'"
        )
        == 1
    )


async def test_commission_of_an_execution_booked_in_an_earlier_batch_adjusts_it(
    pool: asyncpg.Pool[Any], book: OrderBook
) -> None:
    await book.on_facts([execution("e5", 10, 10)])
    await book.on_facts([commission("e5", "0.35"), commission("e5", "0.35")])
    row = await pool.fetchrow(
        "SELECT commission, cash_delta FROM transactions WHERE exec_id = 'e5'"
    )
    assert row is not None
    assert (row["commission"], row["cash_delta"]) == (Decimal("0.35"), Decimal("-1000.35"))
    assert await pool.fetchval("SELECT commission FROM orders") == Decimal("0.35")
    assert await pool.fetchval("SELECT cash FROM portfolios") == START_CASH - Decimal("1000.35")


async def test_a_batch_over_two_portfolios_moves_each_portfolios_cash_once(
    pool: asyncpg.Pool[Any], book: OrderBook
) -> None:
    await pool.execute(
        "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)"
        " VALUES ('q', 'q', 4002, 8, 'DU2', $1)",
        START_CASH,
    )
    await pool.execute(
        """
        INSERT INTO orders (client_order_id, portfolio_id, symbol, side, order_type,
                            quantity, limit_price, tif, currency, purpose, requested_by,
                            status, acknowledged, submitted_at, ib_order_id, perm_id)
        VALUES ('q1', 'q', 'AAPL', 'SELL', 'LMT', 10, 100, 'DAY', 'USD', 'manual',
                'user:test', 'SUBMITTED', true, now(), 2, 2002)
        """
    )
    sold = execution("e6", 10, 10).model_copy(
        update={
            "portfolio_id": "q",
            "account_id": "DU2",
            "client_order_id": "q1",
            "order_id": 2,
            "perm_id": 2002,
            "side": OrderSide.SELL,
        }
    )
    await book.on_facts([sold, execution("e7", 10, 10), commission("e7", "0.35")])
    cash = await pool.fetch("SELECT id, cash, revision FROM portfolios ORDER BY id")
    assert [(r["id"], r["cash"]) for r in cash] == [
        ("p", START_CASH - Decimal("1000.35")),
        ("q", START_CASH + 1000),
    ]
    changed = await pool.fetch(
        "SELECT subject FROM ibflow_outbox WHERE subject LIKE '%portfolio%' ORDER BY id"
    )
    assert len(changed) == 2
