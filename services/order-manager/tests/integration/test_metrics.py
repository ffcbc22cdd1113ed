"""The order-manager's per-portfolio metrics against a real PostgreSQL: the halted gauge,
executions and commissions booked (counted after the commit, once), today's realized
P&L and the daily loss limit. Each test has its own portfolio id: the registry is the
process's, shared by every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from ibflow.bus.errors import Reject, RemoteError
from ibflow.contracts import (
    HaltTrading,
    OrderPurpose,
    OrderSide,
    OrderType,
    ResumeTrading,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.db.pool import create_pool
from ibflow_order_manager.book import OrderBook

from .conftest import o1_commission as commission
from .conftest import o1_execution as execution
from .conftest import seed_working_order

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def booked(pid: str) -> float:
    return sample("ibflow_om_executions_booked_total", portfolio=pid) or 0.0


def commissions(pid: str) -> float:
    return sample("ibflow_om_commissions_total", portfolio=pid, currency="USD") or 0.0


@pytest.fixture
def pid() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pool(database_url: str, pid: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    async with await create_pool(database_url) as pool:
        await seed_working_order(pool, pid, Decimal(100000))
        yield pool


async def test_halting_sets_the_halted_gauge_and_resuming_clears_it(
    book: OrderBook, pid: str
) -> None:
    await book.halt(HaltTrading(portfolio_id=pid, reason="news", requested_by="user:test"))
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 1
    await book.resume(ResumeTrading(portfolio_id=pid, reason="cleared", requested_by="user:test"))
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 0


async def test_halting_every_portfolio_sets_the_gauge_of_each(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    other = f"{pid}x"
    await pool.execute(
        "INSERT INTO portfolios (id, name, broker_port, client_id, account)"
        " VALUES ($1, $1, 4002, 8, 'DU2')",
        other,
    )
    await book.halt(HaltTrading(portfolio_id=None, reason="kill", requested_by="user:test"))
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 1
    assert sample("ibflow_om_trading_halted", portfolio=other) == 1


async def test_an_execution_and_its_commission_are_counted_once_booked(
    book: OrderBook, pid: str
) -> None:
    await book.on_facts(
        [execution("e1", 40, 40, portfolio_id=pid), commission("e1", "1.25", portfolio_id=pid)]
    )
    assert booked(pid) == 1
    assert commissions(pid) == 1.25
    # a commission reported later for an execution booked earlier counts too
    await book.on_facts([execution("e2", 10, 50, portfolio_id=pid)])
    await book.on_facts([commission("e2", "0.75", portfolio_id=pid)])
    assert (booked(pid), commissions(pid)) == (2, 2.0)


async def test_a_replayed_execution_does_not_count_twice_in_executions_booked(
    book: OrderBook, pid: str
) -> None:
    facts = [execution("e1", 40, 40, portfolio_id=pid), commission("e1", "1.25", portfolio_id=pid)]
    await book.on_facts([*facts, *facts])
    await book.on_facts(facts)
    assert booked(pid) == 1
    assert commissions(pid) == 1.25


async def test_a_parked_commission_counts_when_its_execution_books_it(
    book: OrderBook, pid: str
) -> None:
    await book.on_facts([commission("e3", "0.50", portfolio_id=pid)])
    assert commissions(pid) == 0
    await book.on_facts([execution("e3", 10, 10, portfolio_id=pid)])
    assert (booked(pid), commissions(pid)) == (1, 0.5)


async def test_a_batch_rolled_back_counts_none_of_its_executions(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    with pytest.raises(Reject, match="e5"):
        await book.on_facts(
            [
                execution("e4", 40, 40, portfolio_id=pid),
                commission("e4", "1", portfolio_id=pid),
                # 130 of an order of 100, which IB's own count (100) does not vouch for
                execution("e5", 90, 100, portfolio_id=pid),
            ]
        )
    assert await pool.fetchval("SELECT count(*) FROM executions") == 0
    assert (booked(pid), commissions(pid)) == (0, 0)


async def test_a_fill_sets_realized_pnl_today_and_crossing_the_limit_sets_halted(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    await pool.execute("UPDATE portfolios SET max_daily_loss = 100 WHERE id = $1", pid)
    await book.on_facts(
        [execution("e6", 10, 10, portfolio_id=pid), commission("e6", "1", "-90", portfolio_id=pid)]
    )
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -90
    assert sample("ibflow_om_max_daily_loss", portfolio=pid) == 100
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 0
    await book.on_facts(
        [execution("e7", 10, 20, portfolio_id=pid), commission("e7", "1", "-20", portfolio_id=pid)]
    )
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -110
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 1
    assert await pool.fetchval("SELECT trading_state FROM portfolios WHERE id = $1", pid) == (
        "halted"
    )


async def test_a_submit_refreshes_realized_pnl_today_from_its_risk_context(
    book: OrderBook, pid: str
) -> None:
    # no daily loss limit: booking runs no daily loss check, so sets no P&L
    await book.on_facts(
        [execution("e8", 10, 10, portfolio_id=pid), commission("e8", "1", "-30", portfolio_id=pid)]
    )
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) is None
    cmd = SubmitOrder(
        portfolio_id=pid,
        client_order_id=f"{pid}-s1",
        symbol="MSFT",
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=Decimal(1),
        limit_price=Decimal(100),
        purpose=OrderPurpose.MANUAL,
        requested_by="user:test",
    )
    with pytest.raises(RemoteError, match="symbol"):
        await book.submit(cmd)
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -30


async def test_the_refresh_exports_every_portfolio_as_stored(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    await book.on_facts(
        [execution("e9", 10, 10, portfolio_id=pid), commission("e9", "1", "-40", portfolio_id=pid)]
    )
    await pool.execute(
        "UPDATE portfolios SET trading_state = 'halted', halted_reason = 'by hand',"
        " halted_at = now(), max_daily_loss = 500 WHERE id = $1",
        pid,
    )
    await book.refresh_metrics()
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 1
    assert sample("ibflow_om_max_daily_loss", portfolio=pid) == 500
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -40
    assert sample("ibflow_portfolio_cash", portfolio=pid) == 100000 - 1001
    await pool.execute("UPDATE portfolios SET max_daily_loss = NULL WHERE id = $1", pid)
    await book.refresh_metrics()
    assert sample("ibflow_om_max_daily_loss", portfolio=pid) is None
