"""The ibflow.db inbox against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from ibflow.db import (
    InboxError,
    apply_migrations,
    claim,
    create_pool,
    inbox_transaction,
    prune_inbox,
    transaction,
)

pytestmark = pytest.mark.integration

CONSUMER = "fills-writer"


class HandlerFailedError(Exception):
    pass


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    await apply_migrations(database_url, "ibflow.db")
    pool = await create_pool(database_url, max_size=4)
    try:
        await pool.execute("CREATE TABLE fills (msg_id text NOT NULL, qty numeric NOT NULL)")
        yield pool
    finally:
        await pool.close()


async def handle_fill(
    pool: asyncpg.Pool[asyncpg.Record], msg_id: str, qty: Decimal, *, fail: bool = False
) -> bool:
    """A handler as a service writes it: returns whether it did any work."""
    async with inbox_transaction(pool, CONSUMER, msg_id) as conn:
        if conn is None:
            return False
        await conn.execute("INSERT INTO fills (msg_id, qty) VALUES ($1, $2)", msg_id, qty)
        if fail:
            raise HandlerFailedError(msg_id)
        return True


async def fills(pool: asyncpg.Pool[asyncpg.Record]) -> list[tuple[str, Decimal]]:
    rows = await pool.fetch("SELECT msg_id, qty FROM fills ORDER BY msg_id")
    return [(r["msg_id"], r["qty"]) for r in rows]


async def inbox_rows(pool: asyncpg.Pool[asyncpg.Record]) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT consumer, msg_id FROM ibflow_inbox ORDER BY consumer, msg_id")
    return [(r["consumer"], r["msg_id"]) for r in rows]


async def test_inbox_makes_replayed_message_a_no_op_inside_same_transaction(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    assert await handle_fill(pool, "m1", Decimal("100"))
    assert not await handle_fill(pool, "m1", Decimal("100"))  # replay
    assert await fills(pool) == [("m1", Decimal("100"))]

    # The handler fails after claiming: claim and writes roll back together...
    with pytest.raises(HandlerFailedError):
        await handle_fill(pool, "m2", Decimal("5"), fail=True)
    assert await fills(pool) == [("m1", Decimal("100"))]
    assert await inbox_rows(pool) == [(CONSUMER, "m1")]
    # ...so the redelivered message is processed, once.
    assert await handle_fill(pool, "m2", Decimal("5"))
    assert not await handle_fill(pool, "m2", Decimal("5"))
    assert await fills(pool) == [("m1", Decimal("100")), ("m2", Decimal("5"))]

    # claim() inside the caller's own transaction: same rules, per consumer.
    async with transaction(pool) as conn:
        assert await claim(conn, "other-consumer", "m1")
        assert not await claim(conn, "other-consumer", "m1")

    async def claim_then_fail() -> None:
        async with transaction(pool) as conn:
            assert await claim(conn, "other-consumer", "m3")
            raise HandlerFailedError("m3")

    with pytest.raises(HandlerFailedError):
        await claim_then_fail()
    assert await inbox_rows(pool) == [
        (CONSUMER, "m1"),
        (CONSUMER, "m2"),
        ("other-consumer", "m1"),
    ]


async def test_concurrent_delivery_waits_for_the_first_and_follows_its_outcome(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    async def second_delivery(msg_id: str) -> bool:
        async with transaction(pool) as conn:
            return await claim(conn, CONSUMER, msg_id)

    # The first delivery rolls back: the waiting second one then claims the message.
    async with pool.acquire() as first:
        tx = first.transaction()
        await tx.start()
        assert await claim(first, CONSUMER, "m1")
        waiting = asyncio.create_task(second_delivery("m1"))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "the second claim should wait for the first transaction"
        await tx.rollback()
    assert await asyncio.wait_for(waiting, 5)

    # The first delivery commits: the waiting second one sees a processed message.
    async with pool.acquire() as first:
        tx = first.transaction()
        await tx.start()
        assert await claim(first, CONSUMER, "m2")
        waiting = asyncio.create_task(second_delivery("m2"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await tx.commit()
    assert not await asyncio.wait_for(waiting, 5)


async def test_claim_outside_a_transaction_is_refused(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(InboxError, match="inside the transaction"):
            await claim(conn, CONSUMER, "m1")
    assert await inbox_rows(pool) == []


async def test_prune_inbox_deletes_only_entries_older_than_given(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    now = dt.datetime.now(dt.UTC)
    await pool.executemany(
        "INSERT INTO ibflow_inbox (consumer, msg_id, received_at) VALUES ($1, $2, $3)",
        [
            (CONSUMER, "ancient", now - dt.timedelta(days=30)),
            (CONSUMER, "old", now - dt.timedelta(days=8)),
            (CONSUMER, "recent", now - dt.timedelta(days=6)),
        ],
    )
    async with transaction(pool) as conn:
        assert await claim(conn, CONSUMER, "fresh")

    assert await prune_inbox(pool, dt.timedelta(days=7)) == 2
    assert await inbox_rows(pool) == [(CONSUMER, "fresh"), (CONSUMER, "recent")]
    assert await prune_inbox(pool, dt.timedelta(days=7)) == 0
    with pytest.raises(ValueError, match="negative"):
        await prune_inbox(pool, dt.timedelta(seconds=-1))
