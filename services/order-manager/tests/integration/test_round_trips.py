"""The submit path's database round trips, counted against a real PostgreSQL and a real
nats-server: everything ``OrderBook.submit`` says to the database before the
``PlaceBrokerOrder`` leaves is latency of every order, so its count is pinned here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.rpc import serve
from ibflow.contracts import (
    CommandAccepted,
    OrderPurpose,
    OrderSide,
    OrderType,
    PlaceBrokerOrder,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.db.pool import create_pool
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerAnswer, BrokerClient

pytestmark = pytest.mark.integration


@dataclass
class Statements:
    """Every statement the pool's connections sent and got the answer of (BEGIN, COMMIT
    and the pool's resets included)."""

    sent: list[str] = field(default_factory=list)
    at_place: dict[str, int] = field(default_factory=dict)
    """How many had been answered when each ``PlaceBrokerOrder`` was sent."""

    def log(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.sent.append(record.query)


@pytest.fixture
async def statements() -> Statements:
    return Statements()


@pytest.fixture
async def pool(database_url: str, statements: Statements) -> AsyncIterator[asyncpg.Pool[Any]]:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")

    async def count(conn: asyncpg.Connection[Any]) -> None:
        conn.add_query_logger(statements.log)

    async with await create_pool(database_url, init=count) as pool:
        await pool.execute(
            "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)"
            " VALUES ('p', 'p', 4002, 7, 'DU1', 100000)"
        )
        await pool.execute(
            "INSERT INTO instruments (symbol, currency, primary_exchange)"
            " VALUES ('AAPL', 'USD', 'NASDAQ')"
        )
        yield pool


@pytest.fixture
async def book(
    pool: asyncpg.Pool[Any], nc: NatsClient, statements: Statements
) -> AsyncIterator[OrderBook]:
    async def bridge(cmd: PlaceBrokerOrder) -> CommandAccepted:
        return CommandAccepted.of(cmd, detail="placed")

    class CountingBroker(BrokerClient):
        async def place(self, cmd: PlaceBrokerOrder) -> BrokerAnswer:
            statements.at_place[cmd.client_order_id] = len(statements.sent)
            return await super().place(cmd)

    sub = await serve(nc, subjects.place_broker_order("p"), PlaceBrokerOrder, bridge)
    book = OrderBook(pool, CountingBroker(nc), lambda: None)
    yield book
    await book.statistics.close()
    await sub.unsubscribe()


def buy(coid: str) -> SubmitOrder:
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


async def test_accepted_submit_reaches_the_bridge_after_at_most_6_statements(
    pool: asyncpg.Pool[Any], book: OrderBook, statements: Statements
) -> None:
    # the first submit prepares the statements and introspects the types: not counted
    await book.submit(buy("warm-up"))
    before = len(statements.sent)
    accepted = await book.submit(buy("counted"))
    assert not accepted.duplicate
    sent = statements.sent[before : statements.at_place["counted"]]
    assert len(sent) <= 6, "\n".join(sent)
    # what those statements did is all there: the order, its reservation, the audit row
    # and the outbox rows
    order = await pool.fetchrow(
        "SELECT status, reserved_cash FROM orders WHERE client_order_id = 'counted'"
    )
    assert order is not None
    assert order["status"] == "SUBMITTED"
    assert order["reserved_cash"] > 0
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_order_id = 'counted' AND result = 'accepted'"
    )
    assert audited == 1
