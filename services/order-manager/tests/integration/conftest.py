"""Set-up shared by the integration tests that drive :class:`OrderBook` directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ibflow.contracts import (
    CommissionReported,
    ExecutionReported,
    OrderPurpose,
    OrderSide,
    OrderType,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.db.pool import create_pool
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerClient

START_CASH = Decimal(100_000)
"""Portfolio ``p``'s cash in the :func:`pool` fixture."""


async def seed_working_order(pool: asyncpg.Pool[Any], portfolio_id: str, cash: Decimal) -> None:
    """Portfolio ``portfolio_id`` with ``cash``, instrument AAPL, and order ``o1`` working
    at IB: BUY 100 AAPL LMT 100, ``SUBMITTED``, IB order id 1, permId 1001."""
    await pool.execute(
        "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)"
        " VALUES ($1, $1, 4002, 7, 'DU1', $2)",
        portfolio_id,
        cash,
    )
    await pool.execute(
        "INSERT INTO instruments (symbol, currency, primary_exchange)"
        " VALUES ('AAPL', 'USD', 'NASDAQ')"
    )
    await pool.execute(
        """
        INSERT INTO orders (client_order_id, portfolio_id, symbol, side, order_type,
                            quantity, limit_price, tif, currency, purpose, requested_by,
                            status, acknowledged, submitted_at, ib_order_id, perm_id)
        VALUES ('o1', $1, 'AAPL', 'BUY', 'LMT', 100, 100, 'DAY', 'USD', 'manual',
                'user:test', 'SUBMITTED', true, now(), 1, 1001)
        """,
        portfolio_id,
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """The migrated database with portfolio ``p`` (:data:`START_CASH`) and its working
    order ``o1`` (:func:`seed_working_order`); modules with other needs override it."""
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    async with await create_pool(database_url) as pool:
        await seed_working_order(pool, "p", START_CASH)
        yield pool


@pytest.fixture
async def book(pool: asyncpg.Pool[Any]) -> AsyncIterator[OrderBook]:
    """An order book on the test module's ``pool`` whose broker is never reached (facts,
    halts, and submits refused before IB only)."""
    book = OrderBook(pool, BrokerClient.__new__(BrokerClient), lambda *_: None)
    yield book
    await book.statistics.close()


def buy(coid: str) -> SubmitOrder:
    """A manual BUY 10 AAPL LMT 100 in portfolio ``p``."""
    return SubmitOrder(
        portfolio_id="p",
        client_order_id=coid,
        symbol="AAPL",
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=Decimal(10),
        limit_price=Decimal(100),
        purpose=OrderPurpose.MANUAL,
        requested_by="user:test",
    )


def o1_execution(
    exec_id: str, shares: int, cum: int, *, portfolio_id: str = "p", price: str = "100"
) -> ExecutionReported:
    """A BUY fill of the working order ``o1`` that :func:`seed_working_order` seeds."""
    return ExecutionReported(
        portfolio_id=portfolio_id,
        account_id="DU1",
        exec_id=exec_id,
        order_id=1,
        perm_id=1001,
        client_order_id="o1",
        symbol="AAPL",
        con_id=265598,
        side=OrderSide.BUY,
        shares=Decimal(shares),
        price=Decimal(price),
        cum_qty=Decimal(cum),
        avg_price=Decimal(price),
        exchange="ISLAND",
        executed_at=datetime.now(UTC),
    )


def o1_commission(
    exec_id: str, amount: str, realized_pnl: str | None = None, *, portfolio_id: str = "p"
) -> CommissionReported:
    """IB's commission of the fill ``exec_id`` of ``o1``."""
    return CommissionReported(
        portfolio_id=portfolio_id,
        exec_id=exec_id,
        commission=Decimal(amount),
        currency="USD",
        realized_pnl=None if realized_pnl is None else Decimal(realized_pnl),
    )
