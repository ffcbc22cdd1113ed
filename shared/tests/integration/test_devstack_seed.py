"""`make run` seeds a demo portfolio on the simulator, its instruments and recommendations,
once, only where the tables exist; and keeps one API key in a 0600 file."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import asyncpg

from ibflow.db import apply_migrations
from ibflow.testing.devstack import (
    ApiKeyOutcome,
    ensure_api_key,
    next_entry_session,
    seed_demo_portfolio,
)


async def test_demo_portfolio_is_seeded_once_on_the_simulator(database_url: str) -> None:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    assert await seed_demo_portfolio(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE portfolios SET name = 'renamed by the user' WHERE id = 'demo'")
        assert await seed_demo_portfolio(database_url)
        rows = await conn.fetch("SELECT name, broker_port, client_id, is_paper FROM portfolios")
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [("renamed by the user", 4002, 1, True)]


async def test_simulator_symbols_are_seeded_as_instruments_once(database_url: str) -> None:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    assert await seed_demo_portfolio(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE instruments SET enabled = false WHERE symbol = 'TSLA'")
        assert await seed_demo_portfolio(database_url)
        rows = await conn.fetch("SELECT symbol, currency, enabled FROM instruments")
    finally:
        await conn.close()
    seeded = {row["symbol"]: (row["currency"], row["enabled"]) for row in rows}
    assert len(seeded) == 12
    assert seeded["AAPL"] == ("USD", True)
    assert seeded["TSLA"] == ("USD", False)


async def test_no_portfolios_table_means_no_seed(database_url: str) -> None:
    assert not await seed_demo_portfolio(database_url)


async def test_demo_recommendations_are_seeded_for_the_next_entry_only_the_first_time(
    database_url: str,
) -> None:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    assert await seed_demo_portfolio(database_url, sim_port=14002)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM recommendations WHERE symbol = 'SPY'")
        assert await seed_demo_portfolio(database_url, sim_port=14002)
        rows = await conn.fetch("SELECT symbol, session_date, status FROM recommendations")
        port = await conn.fetchval("SELECT broker_port FROM portfolios WHERE id = 'demo'")
    finally:
        await conn.close()
    assert port == 14002
    assert sorted(row["symbol"] for row in rows) == ["AAPL", "MSFT"]
    assert {row["session_date"] for row in rows} == {next_entry_session()}
    assert {row["status"] for row in rows} == {"pending"}


def test_api_key_is_created_once_kept_while_valid_and_replaced_when_the_file_is_gone(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(apply_migrations(database_url, "ibflow.db", "ibflow_api"))
    key_file = tmp_path / "api-key"
    first = ensure_api_key(database_url, key_file)
    assert first is not None
    assert first.secret is not None
    assert key_file.read_text().strip() == first.secret
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = ensure_api_key(database_url, key_file)
    assert again == ApiKeyOutcome(key_file, first.key_id, None)

    key_file.unlink()
    replaced = ensure_api_key(database_url, key_file)
    assert replaced is not None
    assert replaced.secret is not None
    assert replaced.key_id != first.key_id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    key_file.write_text("ibf_000000000000_" + "x" * 43 + "\n")
    assert ensure_api_key(database_url, key_file) is not None
    assert key_file.read_text().strip() != "ibf_000000000000_" + "x" * 43
