"""The inbox: exactly-once effects for messages delivered at least once.

A handler claims ``(consumer, msg_id)`` in the *same* transaction as its own writes.
Both commit together or not at all, so a message whose effects committed is never
processed again, and a message whose handler failed is not marked as processed::

    async with inbox_transaction(pool, "order-manager", msg_id) as conn:
        if conn is None:
            return  # already processed: just ack the message
        await conn.execute("INSERT INTO orders ...")

A second delivery of a message that is still being processed waits on the first
transaction's row lock, then sees its outcome: no-op if it committed, a fresh claim
if it rolled back. The table comes from the ``ibflow.db`` migrations
(``0001_inbox.sql``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ibflow.db.errors import InboxError
from ibflow.db.pool import AnyConnection

_R = TypeVar("_R", bound=asyncpg.Record)

_CLAIM = "INSERT INTO ibflow_inbox (consumer, msg_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_PRUNE = "DELETE FROM ibflow_inbox WHERE received_at < now() - $1::interval"


def _row_count(status: str) -> int:
    """The row count at the end of a command status such as ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


async def claim(conn: AnyConnection, consumer: str, msg_id: str) -> bool:
    """Mark ``msg_id`` as processed by ``consumer``; ``True`` if this call claimed it.

    ``False`` means the message was already processed (a replay): skip its effects.
    Must run inside the caller's open transaction so that the claim commits or rolls
    back with the handler's writes; raises :class:`InboxError` otherwise. One round
    trip (``INSERT ... ON CONFLICT DO NOTHING``).
    """
    if not conn.is_in_transaction():
        raise InboxError("claim() must run inside the transaction that holds the handler's writes")
    return _row_count(await conn.execute(_CLAIM, consumer, msg_id)) == 1


@asynccontextmanager
async def inbox_transaction(
    pool: asyncpg.Pool[_R], consumer: str, msg_id: str
) -> AsyncIterator[PoolConnectionProxy[_R] | None]:
    """Open a transaction, claim ``msg_id`` for ``consumer`` and yield the connection.

    Yields ``None`` when the message was already processed: the handler returns and
    the message is acked. Otherwise the yielded connection is in an open transaction
    that already holds the claim; it commits when the block exits normally and rolls
    back (claim included, so a retry processes the message) when the block raises.
    """
    async with pool.acquire() as conn, conn.transaction():
        if await claim(conn, consumer, msg_id):
            yield conn
            return
    yield None


async def prune_inbox(pool: asyncpg.Pool[Any] | AnyConnection, older_than: dt.timedelta) -> int:
    """Delete inbox rows received more than ``older_than`` ago; return how many.

    Keep ``older_than`` well beyond the longest time a message can be redelivered
    (stream retention, consumer backoff), or a late replay would be processed again.
    """
    if older_than < dt.timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    return _row_count(await pool.execute(_PRUNE, older_than))
