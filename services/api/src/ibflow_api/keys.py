"""API keys: creation, listing, revocation and verification.

A key reads ``ibf_<id>_<secret>``: ``id`` is 12 hex characters (public, shown in
listings and written to the audit log), ``secret`` 43 URL-safe characters (256
random bits). Only the SHA-256 of the secret is stored; the whole key is returned
once, by :func:`create_key`, and cannot be recovered afterwards. Scopes are ordered:
``read`` < ``trade`` < ``admin``, each including the ones before it.

The operator CLI reuses this module; ``ibflow-api keys create|list|revoke`` is its
console form (:func:`cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import asyncpg

from ibflow.db import AnyConnection, apply_migrations

KEY_PREFIX: Final = "ibf_"
_KEY_PATTERN: Final = re.compile(r"^ibf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    """What a key may do: read everything, also trade, or also administer."""

    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in ``read < trade < admin``."""
        return _RANKS[self]

    def allows(self, needed: Scope) -> bool:
        """True when a key of this scope may do what needs ``needed``."""
        return self.rank >= needed.rank


_RANKS: Final = {Scope.READ: 0, Scope.TRADE: 1, Scope.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scope: Scope
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @property
    def actor(self) -> str:
        """The identity written to the audit log and into commands: ``key:<id>:<name>``."""
        return f"key:{self.id}:{self.name}"[:128]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key and its secret form, to be shown once."""

    key: ApiKey
    secret: str


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY_PATTERN.match(presented.strip())
    if match is None:
        return None
    return match.group(1), match.group(2)


def _row_to_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


async def create_key(
    conn: AnyConnection, name: str, scope: Scope, *, created_by: str = "cli"
) -> CreatedKey:
    """Store a new key named ``name`` with ``scope``; the returned secret is never stored."""
    if not name.strip() or len(name) > 100:
        raise ValueError("name: 1 to 100 characters, not blank")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        """
        INSERT INTO api_keys (id, name, scope, secret_hash, created_by)
        VALUES ($1, $2, $3, $4, $5) RETURNING *
        """,
        key_id,
        name,
        scope.value,
        _hash(secret),
        created_by,
    )
    assert row is not None
    return CreatedKey(_row_to_key(row), f"{KEY_PREFIX}{key_id}_{secret}")


async def list_keys(conn: AnyConnection, *, include_revoked: bool = False) -> list[ApiKey]:
    """Every key (without secrets), oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id",
        include_revoked,
    )
    return [_row_to_key(row) for row in rows]


async def revoke_key(conn: AnyConnection, key_id: str) -> bool:
    """Revoke ``key_id``; False when there is no such active key."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


async def get_key(conn: AnyConnection, key_id: str) -> ApiKey | None:
    """The key with this id (revoked or not), or ``None``."""
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    return None if row is None else _row_to_key(row)


async def verify_key(conn: AnyConnection, presented: str) -> ApiKey | None:
    """The active key ``presented`` is, or ``None`` (malformed, unknown, wrong, revoked)."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        return None
    return _row_to_key(row)


# ---------------------------------------------------------------------- console


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibflow-api keys", description="Manage the API keys (IBFLOW_DATABASE_URL)."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.READ.value)
    listing = sub.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


async def _run(args: argparse.Namespace, database_url: str) -> int:
    await apply_migrations(database_url, "ibflow_api")
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        if args.action == "create":
            created = await create_key(conn, args.name, Scope(args.scope))
            print(f"id:    {created.key.id}\nscope: {created.key.scope}")
            print(f"key:   {created.secret}")
            print("Store the key now: it is not shown again.", file=sys.stderr)
            return 0
        if args.action == "list":
            for key in await list_keys(conn, include_revoked=args.all):
                revoked = f"  revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
                print(f"{key.id}  {key.scope:<5}  {key.name}{revoked}")
            return 0
        if await revoke_key(conn, args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    finally:
        await conn.close()


def cli(argv: Sequence[str]) -> int:
    """``ibflow-api keys create --scope trade --name NAME | list [--all] | revoke ID``."""
    from ibflow.settings import CommonSettings, SettingsError  # noqa: PLC0415

    args = _parser().parse_args(argv)
    try:
        url = CommonSettings.load().database_url.get_secret_value()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, url))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
