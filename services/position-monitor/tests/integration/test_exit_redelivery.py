"""An exit no order-manager receives (NATS: no responders, e.g. while the order-manager
reconnects after a nats-server restart) is sent again with the same client order id:
one exit per position, not a new attempt per tick (book.py, exit ordering)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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


@pytest.fixture
async def book(pool: Pool, nc: NatsClient) -> PositionBook:
    """A position-monitor's book with the position ``PID`` OPEN (100 AAPL)."""
    book = PositionBook(pool, OrderClient(nc, timeout=2), lambda *_: None)
    await book.on_order_updated(
        order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.FILLED, 1), "o", "o1"
    )
    await book.on_execution(fill("E1", ENTRY, OrderSide.BUY, "100"), "x", "exec:E1")
    return book


@dataclass
class OrderManager:
    """A stand-in order-manager that accepts every SubmitOrder while it listens."""

    nc: NatsClient
    received: list[str] = field(default_factory=list)

    async def accept(self, cmd: SubmitOrder) -> CommandAccepted:
        self.received.append(cmd.client_order_id)
        return CommandAccepted.of(cmd, client_order_ids=(cmd.client_order_id,))

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        subscription = await serve(self.nc, subjects.SUBMIT_ORDER, SubmitOrder, self.accept)
        try:
            yield
        finally:
            await subscription.unsubscribe()


async def exit_row(pool: Pool) -> tuple[str, list[str], bool]:
    row = await pool.fetchrow(
        "SELECT status, exit_client_order_ids, exit_accepted FROM positions WHERE id = $1", PID
    )
    assert row is not None
    return row["status"], row["exit_client_order_ids"], row["exit_accepted"]


async def _accepted(pool: Pool) -> bool:
    return (await exit_row(pool))[2]


async def test_an_exit_no_order_manager_received_is_sent_again_with_the_same_id(
    pool: Pool, nc: NatsClient, book: PositionBook
) -> None:
    order_manager = OrderManager(nc)

    decision = await book.exit(PID, close_out_decision)  # nobody listens: undelivered

    assert isinstance(decision, ExitDecision)
    assert decision.client_order_id == EXIT
    assert await exit_row(pool) == ("CLOSING", [EXIT], False)
    async with order_manager.listening():
        await wait_for(lambda: order_manager.received == [EXIT])
        await wait_for(lambda: _accepted(pool))
    assert await exit_row(pool) == ("CLOSING", [EXIT], True)
    assert order_manager.received == [EXIT]


async def test_an_exit_still_undelivered_is_left_to_the_periodic_resend_with_its_id(
    pool: Pool, nc: NatsClient, book: PositionBook
) -> None:
    order_manager = OrderManager(nc)

    await book.exit(PID, close_out_decision)
    await asyncio.sleep(sum(_REDELIVERY_DELAYS) + 0.5)  # every re-send undelivered too
    assert await exit_row(pool) == ("CLOSING", [EXIT], False)

    async with order_manager.listening():
        assert await book.resend_unacknowledged(dt.timedelta(0)) == 1
    assert order_manager.received == [EXIT]
    assert await exit_row(pool) == ("CLOSING", [EXIT], True)
