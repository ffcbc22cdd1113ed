"""The position-monitor hands the outbox rows of each commit to its relay (published
from memory, not read back): every ``PositionChanged`` it enqueues, in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.contracts import OrderPurpose, OrderSide
from ibflow.contracts.enums import OrderStatus
from ibflow.db import StagedRow
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.orders import OrderClient

from .test_lock_order import ENTRY, Pool, fill, order_update, pool

__all__ = ["pool"]

pytestmark = pytest.mark.integration


async def test_each_commit_hands_its_position_changed_rows_to_the_relay(
    pool: Pool, nc: NatsClient
) -> None:
    handed: list[list[StagedRow]] = []

    def notify(staged: Sequence[StagedRow] = ()) -> None:
        handed.append(list(staged))

    book = PositionBook(pool, OrderClient(nc, timeout=1), notify)
    await book.on_order_updated(
        order_update(ENTRY, OrderPurpose.ENTRY, OrderSide.BUY, OrderStatus.FILLED, 1), "o", "o1"
    )
    await book.on_execution(fill("E1", ENTRY, OrderSide.BUY, "100"), "x", "exec:E1")

    rows = await pool.fetch("SELECT id, subject FROM ibflow_outbox ORDER BY id")
    assert len(handed) == 2  # one hand-over per commit: the PENDING position, then OPEN
    assert all(batch for batch in handed)
    assert [(r.id, r.subject) for batch in handed for r in batch] == [
        (row["id"], row["subject"]) for row in rows
    ]
    assert {r.subject for batch in handed for r in batch} == {subjects.position_changed("pa")}
