"""Plain-SQL schema migrations, owned per Python package.

Each package that owns tables keeps numbered SQL files in a ``migrations`` directory
next to its code (``ibflow/db/migrations/0001_inbox.sql``,
``ibflow_order_manager/migrations/0001_orders.sql``, ...). Files apply in name order,
each in its own transaction together with its row in ``ibflow_schema_migrations``;
the whole run holds a PostgreSQL advisory lock, so services starting at the same
time apply each file exactly once. A file must not contain ``BEGIN``/``COMMIT``.

Applied files are history: changing one makes every later run refuse with
:class:`MigrationChecksumError`, and a new file numbered below one already applied
is refused too. Add a new file instead.

Command line (what ``make run`` calls)::

    python -m ibflow.db.migrations --database-url postgresql://... ibflow.db ibflow_order_manager
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.resources
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import asyncpg

from ibflow.db.errors import MigrationChecksumError, MigrationError
from ibflow.db.pool import AnyConnection

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_TABLE",
    "Migration",
    "apply_migrations",
    "discover",
    "discover_dir",
    "main",
]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE: Final = "ibflow_schema_migrations"
LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"ibflow.migrations").digest()[:8], "big", signed=True
)
"""The ``pg_advisory_lock`` key every migration run holds (first 8 bytes of a sha256)."""

_NAME = re.compile(r"(?P<version>[0-9]+)_[A-Za-z0-9_.-]*\.sql")

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    package    text        NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package, name)
)
"""
_SELECT_APPLIED = f"SELECT package, name, checksum FROM {MIGRATIONS_TABLE}"  # noqa: S608
_INSERT_APPLIED = f"INSERT INTO {MIGRATIONS_TABLE} (package, name, checksum) VALUES ($1, $2, $3)"  # noqa: S608


@dataclass(frozen=True)
class Migration:
    """One SQL file of a package's migrations.

    ``checksum`` is the hex sha256 of the file's bytes; ``sql`` is their UTF-8 text.
    """

    package: str
    name: str
    sql: str = field(repr=False)
    checksum: str

    @classmethod
    def from_bytes(cls, package: str, name: str, data: bytes) -> Migration:
        """Build a migration from a file's name and raw bytes."""
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"migration {package}/{name} is not UTF-8: {exc}") from None
        return cls(package, name, sql, hashlib.sha256(data).hexdigest())

    @property
    def qualified_name(self) -> str:
        """``package/name``, e.g. ``ibflow.db/0001_inbox.sql``."""
        return f"{self.package}/{self.name}"


def _collect(package: str, entries: Iterable[Traversable]) -> list[Migration]:
    """Migrations from the ``*.sql`` files among ``entries``, sorted by name and checked."""
    files = sorted(
        (entry for entry in entries if entry.name.endswith(".sql") and entry.is_file()),
        key=lambda entry: entry.name,
    )
    migrations: list[Migration] = []
    versions: dict[int, str] = {}
    for entry in files:
        match = _NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(
                f"migration {package}/{entry.name}: name must look like 0001_description.sql"
            )
        version = int(match["version"])
        if version in versions:
            raise MigrationError(
                f"migrations {package}/{versions[version]} and {package}/{entry.name} "
                f"share the number {version}"
            )
        if versions and version < max(versions):
            raise MigrationError(
                f"migration {package}/{entry.name} sorts after "
                f"{package}/{versions[max(versions)]} by name but not by number: "
                "pad the numbers to the same width"
            )
        versions[version] = entry.name
        migrations.append(Migration.from_bytes(package, entry.name, entry.read_bytes()))
    return migrations


def discover(package: str, directory: str = "migrations") -> list[Migration]:
    """The migrations shipped in ``directory`` of the importable ``package``, in name order.

    Files are read with :mod:`importlib.resources`, so this works for installed
    wheels too. Only ``*.sql`` files count; names must look like ``0001_x.sql``.
    Raises :class:`MigrationError` if the package or its directory does not exist.
    """
    try:
        root = importlib.resources.files(package)
    except (ImportError, TypeError) as exc:
        raise MigrationError(f"cannot load migrations of {package!r}: {exc}") from exc
    folder = root / directory
    if not folder.is_dir():
        raise MigrationError(f"package {package!r} has no {directory!r} directory")
    return _collect(package, folder.iterdir())


def discover_dir(package: str, path: str | os.PathLike[str]) -> list[Migration]:
    """The migrations in filesystem directory ``path``, recorded as owned by ``package``.

    Same rules as :func:`discover`; for tools and tests whose SQL is not in a package.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MigrationError(f"migrations directory {folder} of {package!r} does not exist")
    return _collect(package, folder.iterdir())


def _gather(sources: Sequence[str | Migration | Iterable[Migration]]) -> list[Migration]:
    migrations: list[Migration] = []
    for source in sources:
        if isinstance(source, str):
            migrations.extend(discover(source))
        elif isinstance(source, Migration):
            migrations.append(source)
        else:
            migrations.extend(source)
    seen: set[tuple[str, str]] = set()
    for migration in migrations:
        key = (migration.package, migration.name)
        if key in seen:
            raise MigrationError(f"migration {migration.qualified_name} is given twice")
        seen.add(key)
    return migrations


def _describe(exc: BaseException, sql: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        details = [f"SQLSTATE {exc.sqlstate}"]
        if exc.position and exc.position.isdigit():
            line = sql[: int(exc.position) - 1].count("\n") + 1
            details.append(f"line {line}")
        if exc.detail:
            details.append(f"detail: {exc.detail}")
        if exc.hint:
            details.append(f"hint: {exc.hint}")
        text += f" ({'; '.join(details)})"
    return text


def _pending(migrations: list[Migration], applied: dict[tuple[str, str], str]) -> list[Migration]:
    """Check ``migrations`` against what ``applied`` records and return the ones to run.

    Every check runs before anything is applied.
    """
    changed = [
        m.qualified_name
        for m in migrations
        if (m.package, m.name) in applied and applied[m.package, m.name] != m.checksum
    ]
    if changed:
        raise MigrationChecksumError(
            f"applied migration(s) changed since they were applied: {', '.join(changed)} "
            "(restore the original file and add a new migration instead)"
        )
    latest: dict[str, str] = {}
    for package, name in applied:
        latest[package] = max(latest.get(package, name), name)
    pending = [m for m in migrations if (m.package, m.name) not in applied]
    late = [
        f"{m.qualified_name} (after {m.package}/{latest[m.package]})"
        for m in pending
        if m.package in latest and m.name < latest[m.package]
    ]
    if late:
        raise MigrationError(
            f"pending migration(s) numbered below one already applied: {', '.join(late)} "
            "(renumber them after the latest applied file)"
        )
    known = {(m.package, m.name) for m in migrations}
    packages = {m.package for m in migrations}
    for package, name in sorted(applied):
        if package in packages and (package, name) not in known:
            log.warning("applied migration %s/%s has no file any more", package, name)
    return pending


def _has_statements(sql: str) -> bool:
    """Whether ``sql`` holds more than comments, whitespace and semicolons.

    Stripping comments naively is exact for this question: a scan can only go wrong
    after a quote character, which is itself a statement character.
    """
    return bool(_COMMENT.sub("", sql).replace(";", "").strip())


async def _apply_one(conn: AnyConnection, migration: Migration) -> None:
    started = time.perf_counter()
    try:
        async with conn.transaction():
            if _has_statements(migration.sql):  # asyncpg fails on an empty query
                await conn.execute(migration.sql)
            if not conn.is_in_transaction():
                raise MigrationError(
                    f"migration {migration.qualified_name} ended the transaction itself "
                    "(what ran before its COMMIT stays committed; it is not recorded as "
                    "applied): remove BEGIN/COMMIT/ROLLBACK from the file"
                )
            await conn.execute(
                _INSERT_APPLIED, migration.package, migration.name, migration.checksum
            )
    except MigrationError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrationError(
            f"migration {migration.qualified_name} failed and was rolled back: "
            f"{_describe(exc, migration.sql)}"
        ) from exc
    log.info(
        "applied migration %s in %.3fs",
        migration.qualified_name,
        time.perf_counter() - started,
    )


async def _run(conn: AnyConnection, migrations: list[Migration]) -> list[str]:
    if conn.is_in_transaction():
        raise MigrationError(
            "apply_migrations() needs a connection outside any transaction: "
            "each file commits on its own"
        )
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch(_SELECT_APPLIED)
        applied = {(row["package"], row["name"]): row["checksum"] for row in rows}
        pending = _pending(migrations, applied)
        for migration in pending:
            await _apply_one(conn, migration)
        return [m.qualified_name for m in pending]
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def apply_migrations(
    target: str | asyncpg.Pool[Any] | AnyConnection,
    *sources: str | Migration | Iterable[Migration],
) -> list[str]:
    """Apply the pending migrations of ``sources``; return their ``package/name`` in order.

    ``target`` is a database URL, a pool or a connection (not inside a transaction).
    Each source is a package name (its ``migrations`` directory, see :func:`discover`),
    a :class:`Migration` or an iterable of them (e.g. from :func:`discover_dir`);
    they apply in the order given, so list ``"ibflow.db"`` before service packages.

    The run holds a session advisory lock (:data:`LOCK_KEY`): a concurrent run waits,
    then finds the files applied. Before applying anything it raises
    :class:`MigrationChecksumError` if an applied file changed, and
    :class:`MigrationError` if a new file is numbered below one already applied. Each
    file runs in its own transaction with its record in ``ibflow_schema_migrations``; a
    failing file rolls back entirely and raises :class:`MigrationError` naming it and
    the PostgreSQL error (files before it stay applied).
    """
    migrations = _gather(sources)
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        try:
            return await _run(conn, migrations)
        finally:
            await conn.close()
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as pooled:
            return await _run(pooled, migrations)
    return await _run(target, migrations)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ibflow.db.migrations",
        description="Apply the SQL migrations of the given packages, in the order given.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("IBFLOW_DATABASE_URL"),
        help="PostgreSQL URL (default: $IBFLOW_DATABASE_URL)",
    )
    parser.add_argument(
        "packages",
        nargs="+",
        metavar="PACKAGE",
        help="importable package owning a 'migrations' directory, e.g. ibflow.db",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url is required when IBFLOW_DATABASE_URL is not set")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 failed, 2 usage)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        applied = asyncio.run(apply_migrations(args.database_url, *args.packages))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot migrate the database: {exc}", file=sys.stderr)
        return 1
    print(f"{len(applied)} migration(s) applied" if applied else "nothing to apply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
