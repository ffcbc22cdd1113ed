"""A modification IB answers after it already filled part of the new remainder: the
executions booked in between and the recorded answer agree, whichever came first.

The stand-in bridge (served on a real nats-server) books the fills through the order
book's fact path before it answers, as IB's executions overtake the modify's answer
when the simulator fills the new remainder at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.rpc import serve
from ibflow.contracts import CommandAccepted, ModifyBrokerOrder, ModifyOrder, OrderStatusChanged
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerClient
from ibflow_order_manager.facts import BrokerFact

from .conftest import START_CASH, o1_execution

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def reserved(pool: asyncpg.Pool[Any]) -> None:
    """``o1``'s cash reservation: 100 shares at its limit of 100."""
    await pool.execute(
        "UPDATE orders SET reserved_cash = 10000 WHERE client_order_id = 'o1';"
        " UPDATE portfolios SET reserved_cash = 10000 WHERE id = 'p'"
    )


class FillingBridge:
    """Answers every modify as placed, after booking ``fills`` (IB's executions of the
    modified order that reached us first)."""

    def __init__(self) -> None:
        self.fills: list[BrokerFact] = []
        self.book: OrderBook | None = None

    async def modify(self, cmd: ModifyBrokerOrder) -> CommandAccepted:
        assert self.book is not None
        await self.book.on_facts(self.fills)
        return CommandAccepted.of(cmd, detail="modified")


@pytest.fixture
async def bridge(pool: asyncpg.Pool[Any], nc: NatsClient) -> AsyncIterator[FillingBridge]:
    bridge = FillingBridge()
    sub = await serve(nc, subjects.modify_broker_order("p"), ModifyBrokerOrder, bridge.modify)
    bridge.book = OrderBook(pool, BrokerClient(nc), lambda *_: None)
    yield bridge
    await bridge.book.statistics.close()
    await sub.unsubscribe()


def modify(quantity: int) -> ModifyOrder:
    return ModifyOrder(
        portfolio_id="p", client_order_id="o1", quantity=Decimal(quantity), requested_by="user:t"
    )


def filled_status(filled: int, remaining: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        portfolio_id="p",
        client_order_id="o1",
        order_id=1,
        perm_id=1001,
        ib_status="Filled" if remaining == 0 else "Submitted",
        filled=Decimal(filled),
        remaining=Decimal(remaining),
    )


async def books(pool: asyncpg.Pool[Any]) -> dict[str, Any]:
    order = await pool.fetchrow(
        "SELECT status, quantity, filled_quantity, reserved_cash FROM orders"
        " WHERE client_order_id = 'o1'"
    )
    portfolio = await pool.fetchrow("SELECT cash, reserved_cash FROM portfolios WHERE id = 'p'")
    executions = await pool.fetchval("SELECT count(*) FROM executions")
    assert order is not None
    assert portfolio is not None
    return {
        **dict(order),
        "portfolio_reserved": portfolio["reserved_cash"],
        "cash": portfolio["cash"],
        "executions": executions,
    }


async def book_first(bridge: FillingBridge, facts: Sequence[BrokerFact]) -> None:
    assert bridge.book is not None
    await bridge.book.on_facts(facts)


async def test_a_cut_whose_remainder_filled_before_the_answer_ends_filled_with_nothing_reserved(
    pool: asyncpg.Pool[Any], bridge: FillingBridge
) -> None:
    await book_first(bridge, [o1_execution("e1", 40, 40), filled_status(40, 60)])
    bridge.fills = [o1_execution("e2", 30, 70), filled_status(70, 0)]

    assert bridge.book is not None
    await bridge.book.modify(modify(70))

    assert await books(pool) == {
        "status": "FILLED",
        "quantity": 70,
        "filled_quantity": 70,
        "reserved_cash": 0,
        "portfolio_reserved": 0,
        "cash": START_CASH - 7000,
        "executions": 2,
    }


async def test_a_raise_whose_fills_pass_the_old_quantity_before_the_answer_books_them_all(
    pool: asyncpg.Pool[Any], bridge: FillingBridge
) -> None:
    await book_first(bridge, [o1_execution("e1", 60, 60)])
    bridge.fills = [o1_execution("e2", 40, 100), o1_execution("e3", 20, 120)]

    assert bridge.book is not None
    await bridge.book.modify(modify(150))

    found = await books(pool)
    assert found["executions"] == 3
    assert found["cash"] == START_CASH - 12000
    assert (found["status"], found["quantity"], found["filled_quantity"]) == (
        "PARTIALLY_FILLED",
        150,
        120,
    )
    # the open 30 shares at the limit of 100, plus the portfolio's buffer
    assert 3000 <= found["reserved_cash"] == found["portfolio_reserved"] < 3300
