"""An exit no order-manager receives (NATS: no responders, e.g. while the order-manager
reconnects after a nats-server restart) is sent again with the same client order id:
one exit per position, not a new attempt per tick (book.py, exit ordering)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.rpc import serve
from ibflow.contracts import CommandAccepted, OrderPurpose, OrderSide, SubmitOrder
from ibflow.contracts.enums import OrderStatus
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.domain import ExitDecision, close_out_decision
from ibflow_position_monitor.orders import OrderClient

from .test_lock_order import ENTRY, EXIT, PID, Pool, fill, order_update, pool

__all__ = ["pool"]

pytestmark = pytest.mark.integration


async def open_position(book: PositionBook) -> None:
    await book.on_order_updated(
        order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.FILLED, 1), "o", "o1"
    )
    await book.on_execution(fill("E1", ENTRY, OrderSide.BUY, "100"), "x", "exec:E1")


async def test_an_exit_no_order_manager_received_is_sent_again_with_the_same_id(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=2), lambda *_: None)
    await open_position(book)
    received: list[str] = []

    async def order_manager(cmd: SubmitOrder) -> CommandAccepted:
        received.append(cmd.client_order_id)
        return CommandAccepted.of(cmd, client_order_ids=(cmd.client_order_id,))

    async def order_manager_comes_back() -> Any:
        await asyncio.sleep(0.3)  # after the first send and a re-send or two
        return await serve(nc, subjects.SUBMIT_ORDER, SubmitOrder, order_manager)

    coming_back = asyncio.create_task(order_manager_comes_back())
    decision = await book.exit(PID, close_out_decision)
    subscription = await coming_back
    await subscription.unsubscribe()

    assert isinstance(decision, ExitDecision)
    assert decision.client_order_id == EXIT
    assert received == [EXIT]
    row = await pool.fetchrow(
        "SELECT status, exit_client_order_ids, exit_accepted FROM positions WHERE id = $1", PID
    )
    assert row is not None
    assert (row["status"], row["exit_client_order_ids"], row["exit_accepted"]) == (
        "CLOSING",
        [EXIT],
        True,
    )


async def test_an_exit_still_undelivered_stays_recorded_for_the_periodic_resend(
    pool: Pool, nc: NatsClient
) -> None:
    book = PositionBook(pool, OrderClient(nc, timeout=2), lambda *_: None)
    await open_position(book)

    decision = await book.exit(PID, close_out_decision)

    assert isinstance(decision, ExitDecision)
    row = await pool.fetchrow(
        "SELECT status, exit_client_order_ids, exit_accepted, exit_order IS NOT NULL AS kept"
        " FROM positions WHERE id = $1",
        PID,
    )
    assert row is not None
    assert (row["status"], row["exit_client_order_ids"]) == ("CLOSING", [EXIT])
    assert (row["exit_accepted"], row["kept"]) == (False, True)
