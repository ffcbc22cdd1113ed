"""``ibflow-migrate``, the one-shot ``migrate`` service of docker-compose.yml."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus.subjects import ALL_STREAMS
from ibflow.db.bootstrap import main, migration_packages

pytestmark = pytest.mark.integration


async def test_migrate_prepares_an_empty_database_and_nats_and_can_run_again(
    nats_url: str, database_url: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IBFLOW_NATS_URL", nats_url)
    monkeypatch.setenv("IBFLOW_DATABASE_URL", database_url)
    argv = ["--demo-portfolio", "gateway-sim:4002"]
    assert await asyncio.to_thread(main, argv) == 0
    assert await asyncio.to_thread(main, argv) == 0  # a second run changes nothing

    assert {"ibflow.db", "ibflow_order_manager", "ibflow_position_monitor"} <= set(
        migration_packages()
    )
    conn = await asyncpg.connect(database_url)
    try:
        portfolio = await conn.fetchrow(
            "SELECT broker_host, broker_port, account, allow_live FROM portfolios WHERE id = 'demo'"
        )
        instruments = await conn.fetchval("SELECT count(*) FROM instruments")
        owners = await conn.fetch("SELECT DISTINCT package FROM ibflow_schema_migrations")
    finally:
        await conn.close()
    assert dict(portfolio) == {
        "broker_host": "gateway-sim",
        "broker_port": 4002,
        "account": "DU1234567",
        "allow_live": False,
    }
    assert instruments == 12
    assert {"ibflow.db", "ibflow_order_manager", "ibflow_position_monitor"} <= {
        row["package"] for row in owners
    }
    js = nc.jetstream()
    for spec in ALL_STREAMS:
        assert (await js.stream_info(spec.name)).config.name == spec.name


def test_migrate_refuses_a_bad_address_and_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--demo-portfolio", "gateway-sim"])
    assert exit_info.value.code == 2
    monkeypatch.setenv("IBFLOW_DATABASE_URL", "mysql://nope")
    assert main([]) == 2
    assert "IBFLOW_DATABASE_URL" in capsys.readouterr().err
