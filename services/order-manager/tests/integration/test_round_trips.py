"""The database round trips of the hot paths, counted against a real PostgreSQL and a
real nats-server: everything ``OrderBook.submit`` says to the database before the
``PlaceBrokerOrder`` leaves is latency of every order, and every statement of
``OrderBook.on_facts`` is latency of every execution (and of the consumer's throughput),
so their counts are pinned here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.rpc import serve
from ibflow.contracts import (
    CommandAccepted,
    CommissionReported,
    ExecutionReported,
    OrderSide,
    OrderStatusChanged,
    PlaceBrokerOrder,
)
from ibflow.db import StagedRow, apply_migrations
from ibflow.db.pool import create_pool
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerAnswer, BrokerClient
from ibflow_order_manager.facts import BrokerFact

from .conftest import buy

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

    # one connection: statements are prepared (and their types introspected) once per
    # connection, so a second one opened by a background read during the warm-up would
    # add its own preparation to a counted batch
    async with await create_pool(database_url, init=count, min_size=1, max_size=1) as pool:
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
def handed() -> list[StagedRow]:
    """The outbox rows the book handed to its relay (``notify``), in order."""
    return []


@pytest.fixture
async def book(
    pool: asyncpg.Pool[Any], nc: NatsClient, statements: Statements, handed: list[StagedRow]
) -> AsyncIterator[OrderBook]:
    async def bridge(cmd: PlaceBrokerOrder) -> CommandAccepted:
        return CommandAccepted.of(cmd, detail="placed")

    class CountingBroker(BrokerClient):
        async def place(self, cmd: PlaceBrokerOrder) -> BrokerAnswer:
            statements.at_place[cmd.client_order_id] = len(statements.sent)
            return await super().place(cmd)

    sub = await serve(nc, subjects.place_broker_order("p"), PlaceBrokerOrder, bridge)

    def notify(staged: Sequence[StagedRow] = ()) -> None:
        handed.extend(staged)

    book = OrderBook(pool, CountingBroker(nc), notify)
    yield book
    await book.statistics.close()
    await sub.unsubscribe()


async def test_accepted_submit_reaches_the_bridge_after_at_most_5_statements(
    pool: asyncpg.Pool[Any], book: OrderBook, statements: Statements, handed: list[StagedRow]
) -> None:
    # the first submit prepares the statements and introspects the types: not counted
    await book.submit(buy("warm-up"))
    outbox = await pool.fetchval("SELECT max(id) FROM ibflow_outbox")
    handed.clear()
    before = len(statements.sent)
    accepted = await book.submit(buy("counted"))
    assert not accepted.duplicate
    sent = statements.sent[before : statements.at_place["counted"]]
    assert len(sent) <= 5, "\n".join(sent)
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
    # its events were handed to the relay (published without reading them back)
    rows = await pool.fetch(
        "SELECT id, subject FROM ibflow_outbox WHERE id > $1 ORDER BY id", outbox
    )
    assert [(r.id, r.subject) for r in handed[:2]] == [(r["id"], r["subject"]) for r in rows[:2]]
    assert [r.subject for r in handed[:2]] == [
        subjects.order_updated("p"),
        subjects.portfolio_changed("p"),
    ]


# ---------------------------------------------------------------------- broker facts


PERM_IDS = {"warm-up": 1000, "o1": 1001}


async def known_order(pool: asyncpg.Pool[Any], coid: str) -> None:
    """A submitted BUY LMT 100 AAPL @ 100 with its reservation (IB's permId: ``PERM_IDS``)."""
    await pool.execute(
        """
        INSERT INTO orders (client_order_id, portfolio_id, symbol, side, order_type,
                            quantity, limit_price, tif, currency, purpose, requested_by,
                            status, acknowledged, submitted_at, ib_order_id, perm_id,
                            reserved_cash)
        VALUES ($1, 'p', 'AAPL', 'BUY', 'LMT', 100, 100, 'DAY', 'USD', 'manual',
                'user:test', 'SUBMITTED', true, now(), 1, $2, 10000)
        """,
        coid,
        PERM_IDS[coid],
    )
    await pool.execute("UPDATE portfolios SET reserved_cash = reserved_cash + 10000")


def execution(coid: str, exec_id: str, cum: int) -> ExecutionReported:
    return ExecutionReported(
        portfolio_id="p",
        account_id="DU1",
        exec_id=exec_id,
        order_id=1,
        perm_id=PERM_IDS[coid],
        client_order_id=coid,
        symbol="AAPL",
        con_id=265598,
        side=OrderSide.BUY,
        shares=Decimal(20),
        price=Decimal(100),
        cum_qty=Decimal(cum),
        avg_price=Decimal(100),
        exchange="ISLAND",
        executed_at=datetime.now(UTC),
    )


def commission(exec_id: str) -> CommissionReported:
    return CommissionReported(
        portfolio_id="p", exec_id=exec_id, commission=Decimal("0.35"), currency="USD"
    )


def status(coid: str, filled: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        portfolio_id="p",
        client_order_id=coid,
        order_id=1,
        perm_id=PERM_IDS[coid],
        ib_status="Submitted",
        filled=Decimal(filled),
        remaining=Decimal(100 - filled),
    )


def listed(sent: list[str]) -> str:
    return f"{len(sent)} statements:\n" + "\n".join(" ".join(s.split())[:80] for s in sent)


async def counted(
    book: OrderBook, statements: Statements, facts: Sequence[BrokerFact]
) -> list[str]:
    before = len(statements.sent)
    await book.on_facts(facts)
    return statements.sent[before:]


async def test_facts_are_booked_in_at_most_5_statements_a_batch(
    pool: asyncpg.Pool[Any], book: OrderBook, statements: Statements, handed: list[StagedRow]
) -> None:
    # the first batches prepare the statements, introspect the types and read the
    # multiplier, and the statistics keeper reads its first row estimate in the
    # background, on another connection (waited for: it is no part of the batches)
    await known_order(pool, "warm-up")
    await book.on_facts([execution("warm-up", "w1", 20)])
    await book.on_facts([commission("w1")])
    await book.on_facts([execution("warm-up", "w2", 40), commission("w2"), status("warm-up", 40)])
    await book.statistics.close()
    await known_order(pool, "o1")
    cash = await pool.fetchval("SELECT cash FROM portfolios WHERE id = 'p'")
    outbox = await pool.fetchval("SELECT count(*) FROM ibflow_outbox")
    handed.clear()

    # (a) one execution of a known order
    sent = await counted(book, statements, [execution("o1", "e1", 20)])
    assert len(sent) <= 5, listed(sent)
    # (b) that execution's commission
    sent = await counted(book, statements, [commission("e1")])
    assert len(sent) <= 5, listed(sent)
    # (c) an execution, its commission and a status in one batch
    sent = await counted(
        book, statements, [execution("o1", "e2", 40), commission("e2"), status("o1", 40)]
    )
    assert len(sent) <= 5, listed(sent)

    # what those statements did is all there: the executions with their commissions, the
    # order, the cash and reservation, and one OrderBookUpdated + PortfolioChanged a batch
    rows = await pool.fetch(
        "SELECT exec_id, commission FROM executions WHERE client_order_id = 'o1' ORDER BY 1"
    )
    assert [(r["exec_id"], r["commission"]) for r in rows] == [
        ("e1", Decimal("0.35")),
        ("e2", Decimal("0.35")),
    ]
    order = await pool.fetchrow(
        "SELECT status, filled_quantity, commission, reserved_cash, revision FROM orders"
        " WHERE client_order_id = 'o1'"
    )
    assert order is not None
    assert dict(order) == {
        "status": "PARTIALLY_FILLED",
        "filled_quantity": 40,
        "commission": Decimal("0.70"),
        "reserved_cash": 6000,
        "revision": 4,
    }
    portfolio = await pool.fetchrow("SELECT cash, reserved_cash FROM portfolios WHERE id = 'p'")
    assert portfolio is not None
    assert portfolio["cash"] == cash - Decimal("4000.70")
    assert await pool.fetchval("SELECT count(*) FROM ibflow_outbox") == outbox + 6
    # and all six were handed to the relay after their commits, in order
    rows = await pool.fetch("SELECT id FROM ibflow_outbox ORDER BY id DESC LIMIT 6")
    assert [r.id for r in handed] == sorted(r["id"] for r in rows)
