"""PostgreSQL for ibflow services: pools, plain-SQL migrations and the inbox.

* :func:`create_pool` / :func:`transaction`: asyncpg pools whose ``json``/``jsonb``
  columns map to Python objects and whose ``numeric`` stays :class:`~decimal.Decimal`;
* :func:`apply_migrations`, :func:`discover`, :func:`discover_dir`: numbered SQL files
  per owning package, applied once each under an advisory lock
  (CLI: ``python -m ibflow.db.migrations``);
* :func:`claim`, :func:`inbox_transaction`, :func:`prune_inbox`: exactly-once effects
  for messages delivered at least once (tables from the ``ibflow.db`` migrations);
* :func:`enqueue`, :func:`enqueue_many`, :class:`OutboxRelay`, :class:`StagedRow`: the
  transactional outbox, messages committed with the writes they announce, then
  published to JetStream (handed over to the relay in memory on the hot path).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ibflow.db.errors import DbError, InboxError, MigrationChecksumError, MigrationError
from ibflow.db.inbox import claim, inbox_transaction, prune_inbox
from ibflow.db.outbox import OutboxError, OutboxRelay, StagedRow, enqueue, enqueue_many
from ibflow.db.pool import (
    AnyConnection,
    IsolationLevel,
    create_pool,
    init_connection,
    json_dumps,
    json_loads,
    transaction,
)

if TYPE_CHECKING:
    from ibflow.db.migrations import (
        LOCK_KEY,
        MIGRATIONS_TABLE,
        Migration,
        apply_migrations,
        discover,
        discover_dir,
    )

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_TABLE",
    "AnyConnection",
    "DbError",
    "InboxError",
    "IsolationLevel",
    "Migration",
    "MigrationChecksumError",
    "MigrationError",
    "OutboxError",
    "OutboxRelay",
    "StagedRow",
    "apply_migrations",
    "claim",
    "create_pool",
    "discover",
    "discover_dir",
    "enqueue",
    "enqueue_many",
    "inbox_transaction",
    "init_connection",
    "json_dumps",
    "json_loads",
    "prune_inbox",
    "transaction",
]

_FROM_MIGRATIONS = frozenset(
    {"LOCK_KEY", "MIGRATIONS_TABLE", "Migration", "apply_migrations", "discover", "discover_dir"}
)


if not TYPE_CHECKING:  # hidden from type checkers, which would then accept any name

    def __getattr__(name: str) -> Any:
        # The migration names load on first use, not at import: ``python -m
        # ibflow.db.migrations`` imports this package first, and an eagerly imported
        # ``ibflow.db.migrations`` would make runpy warn that it runs a module twice.
        if name in _FROM_MIGRATIONS:
            return getattr(importlib.import_module("ibflow.db.migrations"), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
