"""ibflow.db pools and codecs against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from ibflow.db import create_pool, init_connection, transaction

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await create_pool(database_url, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_numeric_round_trips_as_decimal(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    await pool.execute(
        "CREATE TABLE money (id int PRIMARY KEY, amount numeric, price numeric(40, 8))"
    )
    values = [
        Decimal("0.1"),
        Decimal("1.50"),  # the scale is kept, not just the value
        Decimal("-12345678901234567890.123456789012345678"),
        Decimal("1E-30"),
    ]
    for i, value in enumerate(values):
        await pool.execute("INSERT INTO money VALUES ($1, $2, $2)", i, value)

    rows = await pool.fetch("SELECT amount, price FROM money ORDER BY id")
    assert [type(r["amount"]) for r in rows] == [Decimal] * len(values)
    assert [str(r["amount"]) for r in rows] == [str(v) for v in values]
    assert [r["price"] for r in rows] == [
        Decimal("0.10000000"),
        Decimal("1.50000000"),
        Decimal("-12345678901234567890.12345679"),
        Decimal("0E-8"),
    ]
    # Arithmetic happens in numeric: 0.1 + 0.2 is exactly 0.3, unlike float.
    total = await pool.fetchval("SELECT $1::numeric + $2::numeric", Decimal("0.1"), Decimal("0.2"))
    assert (type(total), total) == (Decimal, Decimal("0.3"))


async def test_jsonb_round_trips_python_objects(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    await pool.execute("CREATE TABLE docs (id int PRIMARY KEY, b jsonb, j json)")
    document = {
        "symbol": "AAPL",
        "qty": 100,
        "ratio": 0.25,
        "flags": [True, False, None],
        "nested": {"legs": [{"side": "BUY"}, {"side": "SELL"}], "empty": {}},
        "text": 'quote " and unicode é',
    }
    await pool.execute("INSERT INTO docs VALUES (1, $1, $2)", document, document)
    row = await pool.fetchrow("SELECT b, j, jsonb_typeof(b) AS kind FROM docs WHERE id = 1")
    assert row is not None
    assert row["b"] == document
    assert row["j"] == document
    assert row["kind"] == "object"

    # Scalars and arrays at the top level too.
    for value in ([1, "two", None], "plain", 42, None, True):
        assert await pool.fetchval("SELECT $1::jsonb", value) == value

    # Types JSON lacks are written as strings: Decimal exactly, datetime ISO, UUID canonical.
    when = dt.datetime(2024, 5, 6, 14, 30, 0, 123456, tzinfo=dt.UTC)
    order_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    stored = await pool.fetchval(
        "SELECT $1::jsonb",
        {"price": Decimal("189.10"), "at": when, "day": when.date(), "id": order_id},
    )
    assert stored == {
        "price": "189.10",
        "at": "2024-05-06T14:30:00.123456+00:00",
        "day": "2024-05-06",
        "id": "12345678-1234-5678-1234-567812345678",
    }
    assert await pool.fetchval(
        "SELECT ($1::jsonb ->> 'price')::numeric", {"price": Decimal("189.10")}
    ) == Decimal("189.10")

    with pytest.raises(asyncpg.DataError, match="not JSON serializable"):
        await pool.fetchval("SELECT $1::jsonb", {"bad": object()})


async def test_init_connection_gives_a_plain_connection_the_codecs(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        assert await conn.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}
    finally:
        await conn.close()


async def test_create_pool_runs_the_callers_init_after_the_codecs(database_url: str) -> None:
    seen: list[object] = []

    async def init(conn: asyncpg.Connection[asyncpg.Record]) -> None:
        seen.append(await conn.fetchval("SELECT '[1]'::jsonb"))

    pool = await create_pool(database_url, min_size=1, max_size=1, init=init)
    try:
        assert seen == [[1]]
    finally:
        await pool.close()


async def test_transaction_commits_on_success_and_rolls_back_on_error(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    await pool.execute("CREATE TABLE t (v int)")
    async with transaction(pool) as conn:
        await conn.execute("INSERT INTO t VALUES (1)")
        assert conn.is_in_transaction()

    async def insert_then_fail() -> None:
        async with transaction(pool) as conn:
            await conn.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await insert_then_fail()
    async with transaction(pool, isolation="serializable", readonly=True) as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "serializable"
        assert await conn.fetchval("SHOW transaction_read_only") == "on"
    assert [r["v"] for r in await pool.fetch("SELECT v FROM t")] == [1]


async def test_a_released_connection_is_not_sent_a_reset_query(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    observer = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SELECT 'last statement before release'")
        last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await observer.close()
        await pool.close()

    assert last == "SELECT 'last statement before release'"


async def test_a_transaction_left_open_is_still_rolled_back_on_release(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    await pool.execute("CREATE TABLE IF NOT EXISTS released_rows (n int)")
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO released_rows VALUES (1)")

    assert await pool.fetchval("SELECT count(*) FROM released_rows") == 0
