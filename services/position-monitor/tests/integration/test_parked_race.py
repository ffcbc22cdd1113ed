"""A fact parked while the transaction that creates its position has drained but not
committed (the book's module docstring, *Locks*): parking and draining take the order's
lock, so the fill is either parked before the drain reads the parked facts, or finds the
position once it is committed; never parked after the drain, with nothing left to drain
it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.contracts import OrderPurpose, OrderSide
from ibflow.contracts.enums import OrderStatus
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.orders import OrderClient

from .conftest import wait_for
from .test_lock_order import ENTRY, PID, Pool, fill, order_update, pool, waiting_on

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, shared with test_lock_order

GATE = "test-commit-gate"


@pytest.fixture
async def commit_gate(pool: Pool) -> AsyncIterator[None]:
    """A transaction that inserts a position waits at its COMMIT (a deferred constraint
    trigger, run after everything else the transaction did) for the advisory lock
    ``GATE``, while the test holds it."""
    await pool.execute(
        f"""
        CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('{GATE}'));
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON positions
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate();
        """
    )
    yield
    await pool.execute(
        "DROP TRIGGER test_commit_gate ON positions; DROP FUNCTION test_commit_gate()"
    )


@pytest.mark.usefixtures("commit_gate")
async def test_fill_parked_while_its_position_is_being_created_is_applied(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=1), lambda *_: None)
    holder = await pool.acquire()
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT pg_advisory_xact_lock(hashtext($1))", GATE)
    # A: the entry's update creates the position, drains (nothing parked yet) and stops
    # at its commit
    created = asyncio.create_task(
        book.on_order_updated(
            order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.SUBMITTED, 1),
            "o",
            "o1",
        )
    )
    booked: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: waiting_on(pool, "advisory"))
        # B: the entry's fill does not see the uncommitted position; it parks only once
        # A's drain is over (it waits for A's order lock), then finds the position
        entry_fill = fill("E1", ENTRY, OrderSide.BUY, "100")
        booked = asyncio.create_task(book.on_execution(entry_fill, "x", entry_fill.msg_id()))

        async def parked_or_waiting() -> bool:
            assert booked is not None
            return booked.done() or await waiting_on(pool, "advisory", 2)

        await wait_for(parked_or_waiting)
    finally:
        await tx.rollback()
        await pool.release(holder)
    await asyncio.wait_for(asyncio.gather(created, booked), 10)

    assert await pool.fetchval("SELECT count(*) FROM position_parked_facts") == 0
    row = await pool.fetchrow("SELECT status, quantity FROM positions WHERE id = $1", PID)
    assert row is not None
    assert (row["status"], row["quantity"]) == ("OPEN", 100)
    executions = await pool.fetch("SELECT exec_id, position_id FROM position_executions")
    assert [tuple(e) for e in executions] == [("E1", PID)]
