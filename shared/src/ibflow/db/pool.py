"""asyncpg connection pools with ibflow's codecs, and a transaction helper.

Every connection of a pool made by :func:`create_pool` maps ``json``/``jsonb`` to
Python objects (``dict``, ``list``, ``str``, ...). ``numeric`` keeps asyncpg's own
codec: it is read as :class:`~decimal.Decimal` and Decimals are written exactly.
Money never passes through ``float``.

Pooled connections are handed back without asyncpg's reset query (``SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), which is one more round
trip on every release, and a release is awaited by whoever leaves ``async with
pool.acquire()`` (an order-manager submit pays it before its order leaves). It is safe
because ibflow keeps no session state on pooled connections: advisory locks are
transaction-scoped (``pg_advisory_xact_lock``), nothing runs ``LISTEN``, ``SET`` (other
than ``SET LOCAL``) or opens a cursor outside a transaction; the one session-level lock
(the migrations') is released in a ``finally``. asyncpg still rolls back a transaction
left open and drops listeners on release. Code that needs session state uses its own
connection (:func:`asyncpg.connect` + :func:`init_connection`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Literal, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

_R = TypeVar("_R", bound=asyncpg.Record)

AnyConnection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A plain asyncpg connection or one acquired from a pool: what the helpers here accept."""

IsolationLevel: TypeAlias = Literal[
    "read_committed", "read_uncommitted", "repeatable_read", "serializable"
]


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_dumps(value: object) -> str:
    """Serialise ``value`` to compact JSON as the ``json``/``jsonb`` codec does.

    :class:`~decimal.Decimal` becomes a string (``"12.50"``, exact), datetimes, dates
    and times their ISO 8601 text and UUIDs their canonical string. Anything else that
    :mod:`json` cannot serialise raises :class:`TypeError`.
    """
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)


def json_loads(text: str) -> Any:
    """Parse JSON text from PostgreSQL (numbers stay ``int``/``float``, as :mod:`json` does)."""
    return json.loads(text)


async def init_connection(conn: asyncpg.Connection[Any]) -> None:
    """Register ibflow's codecs on ``conn``: ``json`` and ``jsonb`` to and from Python objects.

    :func:`create_pool` does this for every connection; call it yourself on a
    connection made with :func:`asyncpg.connect`.
    """
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename,
            schema="pg_catalog",
            encoder=json_dumps,
            decoder=json_loads,
            format="text",
        )


class _PooledConnection(asyncpg.Connection):
    """A connection released without a reset query (module docstring)."""

    def get_reset_query(self) -> str:
        """No reset query: ibflow keeps no session state on pooled connections."""
        return ""


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: Callable[[asyncpg.Connection[Any]], Awaitable[None]] | None = None,
    **kw: Any,
) -> asyncpg.Pool[asyncpg.Record]:
    """Open an asyncpg pool on ``url`` whose connections have ibflow's codecs.

    ``init`` (optional) runs on each new connection after the codecs are registered;
    other keyword arguments go to :func:`asyncpg.create_pool` unchanged (e.g.
    ``command_timeout``, ``statement_cache_size``; a ``connection_class`` of your own
    brings asyncpg's reset query back unless it overrides ``get_reset_query``). Close
    the pool with ``await pool.close()`` or use it as ``async with``.
    """

    async def _init(conn: asyncpg.Connection[Any]) -> None:
        await init_connection(conn)
        if init is not None:
            await init(conn)

    kw.setdefault("connection_class", _PooledConnection)
    pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init, **kw
    )
    return pool


@asynccontextmanager
async def transaction(
    pool: asyncpg.Pool[_R],
    *,
    isolation: IsolationLevel | None = None,
    readonly: bool = False,
    deferrable: bool = False,
) -> AsyncIterator[PoolConnectionProxy[_R]]:
    """Acquire a connection from ``pool`` and yield it inside a transaction.

    The transaction commits when the block exits normally and rolls back when it
    raises; the connection then goes back to the pool::

        async with transaction(pool) as conn:
            await conn.execute("INSERT ...")
    """
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation=isolation, readonly=readonly, deferrable=deferrable),
    ):
        yield conn
