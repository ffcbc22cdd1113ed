"""Broker facts of manual orders, on real PostgreSQL: once the order-manager's update has
said an order is manual, its status, fills and commissions are skipped without a
transaction (no claim, nothing parked); a fact that comes before that update is parked,
as any fact of an order no position knows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.contracts import CommissionReported, OrderBookUpdated, OrderPurpose, OrderSide
from ibflow.contracts.enums import IbOrderStatus, OrderStatus, OrderType
from ibflow.contracts.execution import OrderStatusChanged
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.orders import OrderClient

from .test_lock_order import NOW, Pool, fill, pool

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, shared with test_lock_order

MANUAL = "api-manual-1"


def manual_update(coid: str = MANUAL) -> OrderBookUpdated:
    return OrderBookUpdated(
        portfolio_id="pa",
        client_order_id=coid,
        symbol="AAPL",
        side=OrderSide.BUY,
        order_type=OrderType.MKT,
        quantity=Decimal(100),
        purpose=OrderPurpose.MANUAL,
        requested_by="user:test",
        revision=1,
        status=OrderStatus.SUBMITTED,
        created_at=NOW,
    )


def filled(coid: str = MANUAL) -> OrderStatusChanged:
    return OrderStatusChanged(
        portfolio_id="pa",
        order_id=1,
        perm_id=1,
        client_order_id=coid,
        ib_status=IbOrderStatus.FILLED.value,
        filled=Decimal(100),
        remaining=Decimal(0),
        avg_fill_price=Decimal(100),
    )


def commission(exec_id: str, coid: str | None = MANUAL) -> CommissionReported:
    return CommissionReported(
        portfolio_id="pa",
        exec_id=exec_id,
        commission=Decimal(1),
        currency="USD",
        client_order_id=coid,
    )


async def facts_kept(pool: Pool) -> tuple[int, int, int]:
    """(facts parked, commissions parked, messages claimed)."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM position_parked_facts) AS parked,"
        " (SELECT count(*) FROM position_executions) AS commissions,"
        " (SELECT count(*) FROM ibflow_inbox) AS claimed"
    )
    assert row is not None
    return row["parked"], row["commissions"], row["claimed"]


async def deliver_all(book: PositionBook, exec_id: str, coid: str = MANUAL) -> None:
    """A status, a fill and its commission of ``coid``, each as its consumer hands it."""
    status = filled(coid)
    await book.on_status(status, "s", status.msg_id())
    execution = fill(exec_id, coid, OrderSide.BUY, "100")
    await book.on_execution(execution, "x", execution.msg_id())
    charge = commission(exec_id, coid)
    await book.on_commission(charge, "c", charge.msg_id())


async def test_facts_of_an_order_recorded_as_manual_are_skipped_without_a_transaction(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=1), lambda *_: None)
    await book.on_order_updated(manual_update(), "o", "o1")

    await deliver_all(book, "M1")

    assert await facts_kept(pool) == (0, 0, 0)


async def test_facts_of_a_manual_order_before_its_update_are_parked(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=1), lambda *_: None)

    await deliver_all(book, "M1")
    await book.on_order_updated(manual_update(), "o", "o1")
    await deliver_all(book, "M2")

    # M1's status and fill parked, its commission kept for its fill, 3 claims; M2 skipped
    assert await facts_kept(pool) == (2, 1, 3)


async def test_a_manual_update_does_not_hide_the_facts_of_an_exit_id(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=1), lambda *_: None)
    await book.on_order_updated(manual_update("exit:lock-p1"), "o", "o1")

    await deliver_all(book, "M1", "exit:lock-p1")

    assert await facts_kept(pool) == (2, 1, 3)
