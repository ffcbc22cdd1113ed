"""The order in which the position-monitor's transactions take their locks, on real
PostgreSQL (the book's module docstring, *Locks*): a fill is booked under its execution
lock, then the position's row lock; draining parked facts takes the row lock first, then
the execution locks of the parked fills. Neither waits for the other: a parked fill's
message is claimed, so its redelivery stops at the claim. Marks are written in
``position_id`` order, so two replicas flushing the same positions do not deadlock."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TypeAlias

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.contracts import (
    CommissionReported,
    ExecutionReported,
    OrderBookUpdated,
    OrderPurpose,
    OrderSide,
    OrderType,
)
from ibflow.contracts.enums import ExitReason, OrderStatus, PositionSide
from ibflow.db import apply_migrations, create_pool
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.domain import Mark, MarkSource, PositionState
from ibflow_position_monitor.orders import OrderClient

from .conftest import wait_for

pytestmark = pytest.mark.integration

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

NOW = dt.datetime(2025, 3, 10, 14, 30, tzinfo=dt.UTC)
PID = "lock-p1"
ENTRY = f"entry:{PID}"
EXIT = f"exit:{PID}"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await apply_migrations(database_url, "ibflow.db", "ibflow_position_monitor")
    db = await create_pool(database_url, min_size=1, max_size=6)
    try:
        yield db
    finally:
        await db.close()


def order_update(
    coid: str, purpose: OrderPurpose, side: OrderSide, status: OrderStatus, revision: int
) -> OrderBookUpdated:
    """The order-manager's record of an entry or exit of ``PID`` (100 AAPL)."""
    return OrderBookUpdated(
        portfolio_id="pa",
        client_order_id=coid,
        symbol="AAPL",
        side=side,
        order_type=OrderType.MKT,
        quantity=Decimal(100),
        purpose=purpose,
        position_id=PID,
        exit_reason=ExitReason.STOP if purpose is OrderPurpose.EXIT else None,
        requested_by="user:test",
        revision=revision,
        status=status,
        filled_quantity=Decimal(100) if status is OrderStatus.FILLED else Decimal(0),
        created_at=NOW,
    )


def fill(exec_id: str, coid: str, side: OrderSide, price: str) -> ExecutionReported:
    """A whole fill (100 AAPL) of order ``coid``."""
    return ExecutionReported(
        portfolio_id="pa",
        account_id="DU1234567",
        exec_id=exec_id,
        order_id=1,
        perm_id=1,
        client_order_id=coid,
        symbol="AAPL",
        con_id=265598,
        side=side,
        shares=Decimal(100),
        price=Decimal(price),
        cum_qty=Decimal(100),
        avg_price=Decimal(price),
        exchange="SMART",
        executed_at=NOW,
    )


async def waiting_on(pool: Pool, wait_event: str, count: int = 1) -> bool:
    """``count`` backends of this database wait for a lock of kind ``wait_event``."""
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND wait_event = $1",
        wait_event,
    )
    return bool(waiting >= count)


async def test_a_parked_exit_fill_drained_while_redelivered_and_charged_is_booked_once(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=1), lambda *_: None)
    await book.on_order_updated(
        order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.FILLED, 1), "o", "o1"
    )
    await book.on_execution(fill("E1", ENTRY, OrderSide.BUY, "100"), "x", "exec:E1")
    # the exit's fill overtakes the exit's record (its commit failed): parked
    exit_fill = fill("E2", EXIT, OrderSide.SELL, "105")
    await book.on_execution(exit_fill, "x", exit_fill.msg_id())
    assert await pool.fetchval("SELECT count(*) FROM position_parked_facts") == 1

    # hold E2's execution lock, so that the drain stops between the row and that lock
    holder = await pool.acquire()
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT pg_advisory_xact_lock(hashtext('pm-exec:E2'))")
    recorded = asyncio.create_task(
        book.on_order_updated(
            order_update(EXIT, OrderPurpose.EXIT, OrderSide.SELL, OrderStatus.SUBMITTED, 1),
            "o",
            "o2",
        )
    )
    charged: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: waiting_on(pool, "advisory"))
        with pytest.raises(asyncpg.LockNotAvailableError):  # the drain holds the row
            await pool.fetchval("SELECT 1 FROM positions WHERE id = $1 FOR UPDATE NOWAIT", PID)
        # the fill's redelivery stops at its claim: it takes neither lock
        await asyncio.wait_for(book.on_execution(exit_fill, "x", exit_fill.msg_id()), 5)
        commission = CommissionReported(
            portfolio_id="pa", exec_id="E2", commission=Decimal("1.25"), currency="USD"
        )
        charged = asyncio.create_task(book.on_commission(commission, "c", commission.msg_id()))
        await wait_for(lambda: waiting_on(pool, "advisory", 2))
    finally:
        await tx.rollback()
        await pool.release(holder)
    await asyncio.wait_for(asyncio.gather(recorded, charged), 10)

    row = await pool.fetchrow("SELECT * FROM positions WHERE id = $1", PID)
    assert row is not None
    assert (row["status"], row["quantity"], row["exit_quantity"]) == ("CLOSED", 0, 100)
    assert row["commissions"] == Decimal("1.25")
    assert row["realized_pnl"] == Decimal(500) - Decimal("1.25")
    executions = await pool.fetch(
        "SELECT exec_id, position_id, commission FROM position_executions ORDER BY exec_id"
    )
    assert [tuple(e) for e in executions] == [
        ("E1", PID, None),
        ("E2", PID, Decimal("1.25")),
    ]
    assert await pool.fetchval("SELECT count(*) FROM position_parked_facts") == 0


def _mark(position_id: str, symbol: str, price: str) -> Mark:
    return Mark(
        position_id=position_id,
        portfolio_id="pa",
        symbol=symbol,
        price=Decimal(price),
        source=MarkSource.LAST,
        quantity=Decimal(100),
        unrealized_pnl=Decimal(0),
        marked_at=NOW,
    )


async def test_two_replicas_flushing_the_same_marks_in_other_orders_do_not_deadlock(
    pool: Pool,
) -> None:
    for position_id, symbol in (("m1", "AAPL"), ("m2", "MSFT")):
        state = PositionState.new(
            position_id=position_id,
            portfolio_id="pa",
            symbol=symbol,
            side=PositionSide.LONG,
            planned_quantity=Decimal(100),
            entry_client_order_id=f"entry:{position_id}",
        )
        async with pool.acquire() as conn:
            await repo.insert_position(conn, state, session_date=NOW.date(), now=NOW)
    await _flush(pool, [_mark("m1", "AAPL", "100"), _mark("m2", "MSFT", "200")])

    # replica A is half-way through its flush (m1 written, m2 next)
    other = await pool.acquire()
    tx = other.transaction()
    await tx.start()
    failure: BaseException | None = None
    flush: asyncio.Task[None] | None = None
    try:
        await repo.upsert_marks(other, [_mark("m1", "AAPL", "101")])
        # replica B knows the positions in the other order
        flush = asyncio.create_task(
            _flush(pool, [_mark("m2", "MSFT", "202"), _mark("m1", "AAPL", "102")])
        )
        await wait_for(lambda: waiting_on(pool, "transactionid"))
        await asyncio.wait_for(repo.upsert_marks(other, [_mark("m2", "MSFT", "201")]), 10)
        await tx.commit()
    except BaseException as exc:
        failure = exc
        await tx.rollback()
    finally:
        await pool.release(other)
    assert flush is not None
    (outcome,) = await asyncio.gather(flush, return_exceptions=True)
    assert failure is None, f"replica A: {failure!r}"
    assert outcome is None, f"replica B: {outcome!r}"
    marks = await pool.fetch("SELECT position_id, mark_price FROM position_marks ORDER BY 1")
    assert [tuple(m) for m in marks] == [("m1", Decimal(102)), ("m2", Decimal(202))]


async def _flush(pool: Pool, marks: list[Mark]) -> None:
    async with pool.acquire() as conn:
        await repo.upsert_marks(conn, marks)
