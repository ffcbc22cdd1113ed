"""The order-manager's per-portfolio metrics against a real PostgreSQL: the halted gauge,
executions and commissions booked (counted after the commit, once), today's realized
P&L and the daily loss limit. Each test has its own portfolio id: the registry is the
process's, shared by every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from ibflow.bus.errors import Reject, RemoteError
from ibflow.contracts import (
    CommissionReported,
    ExecutionReported,
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


def execution(pid: str, exec_id: str, shares: int, cum: int) -> ExecutionReported:
    return ExecutionReported(
        portfolio_id=pid,
        account_id="DU1",
        exec_id=exec_id,
        order_id=1,
        perm_id=1001,
        client_order_id="o1",
        symbol="AAPL",
        con_id=265598,
        side=OrderSide.BUY,
        shares=Decimal(shares),
        price=Decimal(100),
        cum_qty=Decimal(cum),
        avg_price=Decimal(100),
        exchange="ISLAND",
        executed_at=datetime.now(UTC),
    )


def commission(
    pid: str, exec_id: str, amount: str, realized_pnl: str | None = None
) -> CommissionReported:
    return CommissionReported(
        portfolio_id=pid,
        exec_id=exec_id,
        commission=Decimal(amount),
        currency="USD",
        realized_pnl=None if realized_pnl is None else Decimal(realized_pnl),
    )


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
    await book.on_facts([execution(pid, "e1", 40, 40), commission(pid, "e1", "1.25")])
    assert booked(pid) == 1
    assert commissions(pid) == 1.25
    # a commission reported later for an execution booked earlier counts too
    await book.on_facts([execution(pid, "e2", 10, 50)])
    await book.on_facts([commission(pid, "e2", "0.75")])
    assert (booked(pid), commissions(pid)) == (2, 2.0)


async def test_a_replayed_execution_does_not_count_twice_in_executions_booked(
    book: OrderBook, pid: str
) -> None:
    facts = [execution(pid, "e1", 40, 40), commission(pid, "e1", "1.25")]
    await book.on_facts([*facts, *facts])
    await book.on_facts(facts)
    assert booked(pid) == 1
    assert commissions(pid) == 1.25


async def test_a_parked_commission_counts_when_its_execution_books_it(
    book: OrderBook, pid: str
) -> None:
    await book.on_facts([commission(pid, "e3", "0.50")])
    assert commissions(pid) == 0
    await book.on_facts([execution(pid, "e3", 10, 10)])
    assert (booked(pid), commissions(pid)) == (1, 0.5)


async def test_a_batch_rolled_back_counts_none_of_its_executions(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    with pytest.raises(Reject, match="e5"):
        await book.on_facts(
            [
                execution(pid, "e4", 40, 40),
                commission(pid, "e4", "1"),
                execution(pid, "e5", 90, 130),
            ]
        )
    assert await pool.fetchval("SELECT count(*) FROM executions") == 0
    assert (booked(pid), commissions(pid)) == (0, 0)


async def test_a_fill_sets_realized_pnl_today_and_crossing_the_limit_sets_halted(
    pool: asyncpg.Pool[Any], book: OrderBook, pid: str
) -> None:
    await pool.execute("UPDATE portfolios SET max_daily_loss = 100 WHERE id = $1", pid)
    await book.on_facts([execution(pid, "e6", 10, 10), commission(pid, "e6", "1", "-90")])
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -90
    assert sample("ibflow_om_max_daily_loss", portfolio=pid) == 100
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 0
    await book.on_facts([execution(pid, "e7", 10, 20), commission(pid, "e7", "1", "-20")])
    assert sample("ibflow_om_realized_pnl_today", portfolio=pid) == -110
    assert sample("ibflow_om_trading_halted", portfolio=pid) == 1
    assert await pool.fetchval("SELECT trading_state FROM portfolios WHERE id = $1", pid) == (
        "halted"
    )


async def test_a_submit_refreshes_realized_pnl_today_from_its_risk_context(
    book: OrderBook, pid: str
) -> None:
    # no daily loss limit: booking runs no daily loss check, so sets no P&L
    await book.on_facts([execution(pid, "e8", 10, 10), commission(pid, "e8", "1", "-30")])
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
    await book.on_facts([execution(pid, "e9", 10, 10), commission(pid, "e9", "1", "-40")])
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
