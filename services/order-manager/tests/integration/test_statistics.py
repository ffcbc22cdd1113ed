"""The booking tables' planner statistics are refreshed by the order-manager itself as
they grow (see ``ibflow_order_manager.stats``), against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ibflow.db import apply_migrations
from ibflow.db.pool import create_pool
from ibflow_order_manager.stats import FIRST_ANALYZE_AT, TABLES, StatisticsKeeper

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    async with await create_pool(database_url) as pool:
        yield pool


async def analyze_count(pool: asyncpg.Pool[Any], table: str) -> int:
    value = await pool.fetchval(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1", table
    )
    return int(value or 0)


async def settle(keeper: StatisticsKeeper) -> None:
    await keeper.close()
    await asyncio.sleep(0.3)  # the statistics collector's view lags a little


async def test_booking_tables_are_analyzed_once_the_first_executions_are_booked(
    pool: asyncpg.Pool[Any],
) -> None:
    keeper = StatisticsKeeper(pool)
    keeper.booked(FIRST_ANALYZE_AT - 1)
    await settle(keeper)
    assert keeper.analyzed == 0
    keeper.booked(1)
    await settle(keeper)
    assert keeper.analyzed == 1
    for table in TABLES:
        assert await analyze_count(pool, table) >= 1, table


async def test_tables_are_analyzed_again_only_after_they_doubled(pool: asyncpg.Pool[Any]) -> None:
    keeper = StatisticsKeeper(pool)
    keeper.booked(FIRST_ANALYZE_AT)
    await settle(keeper)
    keeper.booked(FIRST_ANALYZE_AT // 2)
    await settle(keeper)
    assert keeper.analyzed == 1
    keeper.booked(FIRST_ANALYZE_AT)
    await settle(keeper)
    assert keeper.analyzed == 2
