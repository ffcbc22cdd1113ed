"""``ibflow-api keys``: a key is shown once at creation, stored hashed, listed without
its secret and revocable."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncpg

from ibflow_api.keys import verify_key


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
