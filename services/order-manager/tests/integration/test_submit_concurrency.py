"""Two submits to one portfolio at the same moment: the second decides on what the first
committed while it waited for the portfolio's lock (``order_manager_submit_context``
reads after the lock, in statements of their own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.errors import RemoteError
from ibflow.bus.rpc import serve
from ibflow.contracts import (
    CommandAccepted,
    PlaceBrokerOrder,
)
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerClient

from .conftest import buy

pytestmark = pytest.mark.integration


@pytest.fixture
async def book(pool: asyncpg.Pool[Any], nc: NatsClient) -> AsyncIterator[OrderBook]:
    async def bridge(cmd: PlaceBrokerOrder) -> CommandAccepted:
        return CommandAccepted.of(cmd, detail="placed")

    sub = await serve(nc, subjects.place_broker_order("p"), PlaceBrokerOrder, bridge)
    book = OrderBook(pool, BrokerClient(nc), lambda *_: None)
    yield book
    await book.statistics.close()
    await sub.unsubscribe()


async def test_two_submits_waiting_on_the_lock_do_not_both_pass_the_open_orders_limit(
    pool: asyncpg.Pool[Any], database_url: str, book: OrderBook
) -> None:
    # o1 is working: one more order fits under the limit of 2
    await pool.execute("UPDATE portfolios SET max_open_orders = 2 WHERE id = 'p'")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM portfolios WHERE id = 'p' FOR UPDATE")
            submits = [asyncio.create_task(book.submit(buy(c))) for c in ("a", "b")]
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            for _ in range(200):
                if await pool.fetchval(waiting) == 2:
                    break
                await asyncio.sleep(0.01)
            assert await pool.fetchval(waiting) == 2, "both submits wait for the lock"
        outcomes = await asyncio.gather(*submits, return_exceptions=True)
    finally:
        await holder.close()

    accepted = [o for o in outcomes if isinstance(o, CommandAccepted)]
    refused = [o for o in outcomes if isinstance(o, RemoteError)]
    assert (len(accepted), len(refused)) == (1, 1), outcomes
    assert "max_open_orders" in refused[0].message
    assert await pool.fetchval("SELECT count(*) FROM orders") == 2
