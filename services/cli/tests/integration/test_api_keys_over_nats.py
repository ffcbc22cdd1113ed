"""``ibflow api-key create|list|revoke`` against the api service in-process (real
nats-server and PostgreSQL): the key is printed once and works on the REST API, is
listed without its secret, is refused once revoked; the creation and revocation are
audited without the secret; a second revoke is ``not_found`` (exit 1)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow_api.app import SERVICE as API
from ibflow_api.settings import ApiSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def ibflow(nats_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ibflow_cli",
        "--nats-url",
        nats_url,
        "--actor",
        "operator:test",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def api(database_url: str, nats_url: str) -> AsyncIterator[Runtime[ApiSettings]]:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager", "ibflow_api")
    settings = ApiSettings.load(
        nats_url=nats_url, database_url=database_url, http_port=0, key_cache_seconds=0
    )
    runtime = Runtime(API, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.serve(stop))
    try:
        for _ in range(200):
            if runtime.ready:
                break
            await asyncio.sleep(0.05)
        assert runtime.ready
        yield runtime
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == EXIT_OK


async def test_api_key_created_over_nats_works_then_is_revoked_and_audited(
    api: Runtime[ApiSettings], nats_url: str, database_url: str
) -> None:
    base = f"http://127.0.0.1:{api.http_port}"
    code, out, err = await ibflow(nats_url, "api-key", "create", "--name", "grafana")
    assert code == 0, err
    assert "Store the key now" in err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    key_id, secret = fields["id"].strip(), fields["key"].strip()
    assert secret.startswith(f"ibf_{key_id}_")
    assert fields["scope"].strip() == "read"

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        ok = await client.get("/api/v1/portfolios", headers={"X-API-Key": secret})
        assert ok.status_code == 200

        code, out, _ = await ibflow(nats_url, "api-key", "list")
        assert code == 0
        assert key_id in out
        assert "grafana" in out
        assert secret not in out

        code, out, _ = await ibflow(nats_url, "api-key", "revoke", key_id, "--reason", "t")
        assert code == 0
        assert f"revoked {key_id} (grafana, read)" in out
        refused = await client.get("/api/v1/portfolios", headers={"X-API-Key": secret})
        assert refused.status_code == 401

    code, _, err = await ibflow(nats_url, "api-key", "revoke", key_id)
    assert code == 1
    assert "not_found" in err
    assert key_id in err
    code, _, err = await ibflow(nats_url, "api-key", "revoke", "not-an-id")
    assert code == 2
    assert "key_id" in err
    code, out, _ = await ibflow(nats_url, "api-key", "list", "--all")
    assert key_id in out

    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT actor, command, subject, payload::text AS payload FROM audit_log"
            " WHERE command LIKE 'api_key.%' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["command"], r["subject"]) for r in rows] == [
        ("operator:test", "api_key.create", f"api_key:{key_id}"),
        ("operator:test", "api_key.revoke", f"api_key:{key_id}"),
    ]
    assert all(secret.split("_")[-1] not in row["payload"] for row in rows)
