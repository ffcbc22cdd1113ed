"""API keys, from ``ibflow-api keys`` (the database) and over NATS (the operators' CLI):
shown once at creation, stored hashed, listed without their secret, revocable, audited."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeysListed,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
)
from ibflow_api.keys import verify_key

from .conftest import Stack


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "IBFLOW_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibflow_api", "keys", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_keys_are_created_once_listed_without_secret_and_revoked(database_url: str) -> None:
    status, out, err = await _cli(database_url, "create", "--scope", "trade", "--name", "desk")
    assert status == 0, err
    assert "not shown again" in err
    key = next(line.split()[1] for line in out.splitlines() if line.startswith("key:"))
    key_id = key.split("_")[1]
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        assert stored is not None
        assert key.split("_", 2)[2].encode() not in bytes(stored["secret_hash"])
        found = await verify_key(conn, key)
        assert found is not None
        assert (found.name, found.scope.value) == ("desk", "trade")

        status, listing, _ = await _cli(database_url, "list")
        assert status == 0
        assert key_id in listing
        assert key.split("_", 2)[2] not in listing

        status, _, _ = await _cli(database_url, "revoke", key_id)
        assert status == 0
        assert await verify_key(conn, key) is None
        status, _, err = await _cli(database_url, "revoke", key_id)
        assert status == 1
        assert "no active key" in err
    finally:
        await conn.close()


async def test_a_bad_scope_is_refused_with_usage(database_url: str) -> None:
    status, _, err = await _cli(database_url, "create", "--scope", "root", "--name", "x")
    assert status == 2
    assert "invalid choice: 'root'" in err


async def test_keys_managed_over_nats_work_on_rest_and_never_leak_their_secret(
    stack: Stack,
) -> None:
    created = await request(
        stack.nc,
        subjects.CREATE_API_KEY,
        CreateApiKey(name="ops", scope="trade", requested_by="operator:test"),
        ApiKeyCreated,
    )
    key = created.secret
    assert key.startswith(f"ibf_{created.key.key_id}_")
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"X-API-Key": key}) as http:
        assert (await http.get("/api/v1/portfolios")).status_code == 200
        listed = await request(
            stack.nc,
            subjects.LIST_API_KEYS,
            ListApiKeys(requested_by="operator:test"),
            ApiKeysListed,
        )
        assert created.key.key_id in {k.key_id for k in listed.keys}
        assert key.split("_", 2)[2] not in listed.model_dump_json()
        revoke = RevokeApiKey(key_id=created.key.key_id, requested_by="operator:test")
        revoked = await request(stack.nc, subjects.REVOKE_API_KEY, revoke, ApiKeyRevoked)
        assert revoked.key.revoked_at is not None
        assert (await http.get("/api/v1/portfolios")).status_code == 401
    with pytest.raises(RemoteError) as again:
        await request(stack.nc, subjects.REVOKE_API_KEY, revoke, ApiKeyRevoked)
    assert again.value.code == "not_found"
    rows = await stack.db.fetch(
        "SELECT command, actor, payload::text AS payload FROM audit_log"
        " WHERE command LIKE 'api_key.%' ORDER BY id"
    )
    assert [(r["command"], r["actor"]) for r in rows] == [
        ("api_key.create", "operator:test"),
        ("api_key.revoke", "operator:test"),
    ]
    assert all(key.split("_", 2)[2] not in r["payload"] for r in rows)
