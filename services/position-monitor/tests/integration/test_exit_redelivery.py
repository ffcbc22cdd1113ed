"""An exit no order-manager receives (NATS: no responders, e.g. while the order-manager
reconnects after a nats-server restart) is sent again with the same client order id:
one exit per position, not a new attempt per tick (book.py, exit ordering)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.rpc import serve
from ibflow.contracts import CommandAccepted, OrderPurpose, OrderSide, SubmitOrder
from ibflow.contracts.enums import OrderStatus
from ibflow_position_monitor.book import _REDELIVERY_DELAYS, PositionBook
from ibflow_position_monitor.domain import ExitDecision, close_out_decision
from ibflow_position_monitor.orders import OrderClient

from .conftest import wait_for
from .test_lock_order import ENTRY, EXIT, PID, Pool, fill, order_update, pool

__all__ = ["pool"]

pytestmark = pytest.mark.integration


async def open_position(book: PositionBook) -> None:
    await book.on_order_updated(
        order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.FILLED, 1), "o", "o1"
    )
    await book.on_execution(fill("E1", ENTRY, OrderSide.BUY, "100"), "x", "exec:E1")


async def exit_row(pool: Pool) -> tuple[str, list[str], bool]:
    row = await pool.fetchrow(
        "SELECT status, exit_client_order_ids, exit_accepted FROM positions WHERE id = $1", PID
    )
    assert row is not None
    return row["status"], row["exit_client_order_ids"], row["exit_accepted"]


async def test_an_exit_no_order_manager_received_is_sent_again_with_the_same_id(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=2), lambda *_: None)
    await open_position(book)
    received: list[str] = []

    async def order_manager(cmd: SubmitOrder) -> CommandAccepted:
        received.append(cmd.client_order_id)
        return CommandAccepted.of(cmd, client_order_ids=(cmd.client_order_id,))

    decision = await book.exit(PID, close_out_decision)  # nobody listens: undelivered

    assert isinstance(decision, ExitDecision)
    assert decision.client_order_id == EXIT
    assert await exit_row(pool) == ("CLOSING", [EXIT], False)
    subscription = await serve(nc, subjects.SUBMIT_ORDER, SubmitOrder, order_manager)
    try:
        await wait_for(lambda: received == [EXIT])
        await wait_for(lambda: _accepted(pool))
    finally:
        await subscription.unsubscribe()
    assert await exit_row(pool) == ("CLOSING", [EXIT], True)
    assert received == [EXIT]


async def _accepted(pool: Pool) -> bool:
    return (await exit_row(pool))[2]


async def test_an_exit_still_undelivered_is_left_to_the_periodic_resend_with_its_id(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=2), lambda *_: None)
    await open_position(book)
    received: list[str] = []

    async def order_manager(cmd: SubmitOrder) -> CommandAccepted:
        received.append(cmd.client_order_id)
        return CommandAccepted.of(cmd, client_order_ids=(cmd.client_order_id,))

    await book.exit(PID, close_out_decision)
    await asyncio.sleep(sum(_REDELIVERY_DELAYS) + 0.5)  # every re-send undelivered too
    assert await exit_row(pool) == ("CLOSING", [EXIT], False)

    subscription = await serve(nc, subjects.SUBMIT_ORDER, SubmitOrder, order_manager)
    try:
        assert await book.resend_unacknowledged(dt.timedelta(0)) == 1
    finally:
        await subscription.unsubscribe()
    assert received == [EXIT]
    assert await exit_row(pool) == ("CLOSING", [EXIT], True)
