"""`make run` seeds a demo portfolio on the simulator, once, only where the table exists."""

from __future__ import annotations

import asyncpg

from ibflow.db import apply_migrations
from ibflow.testing.devstack import seed_demo_portfolio


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
