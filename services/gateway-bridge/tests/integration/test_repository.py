"""The portfolios table (order-manager's migration) as the bridge reads it, on real
PostgreSQL: loading, constraints, exact money."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
import pytest

from ibflow.db import apply_migrations, create_pool
from ibflow_gateway_bridge.repository import (
    PortfolioConfig,
    load_enabled_portfolios,
    load_portfolio,
)

pytestmark = pytest.mark.integration

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    applied = await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    assert "ibflow_order_manager/0001_portfolios.sql" in applied
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield db
    finally:
        await db.close()


async def insert(pool: Pool, **values: Any) -> None:
    row: dict[str, Any] = {"name": values.get("id", "p").title(), "broker_port": 4002}
    row.update(values)
    columns = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await pool.execute(f"INSERT INTO portfolios ({columns}) VALUES ({params})", *row.values())


async def test_enabled_portfolios_load_with_their_connection_settings(pool: Pool) -> None:
    await insert(
        pool,
        id="growth",
        name="Growth",
        broker_host="ib-gateway",
        broker_port=4004,
        client_id=11,
        fallback_client_id=111,
        account="DU1234567",
    )
    await insert(pool, id="alpha", client_id=10)
    await insert(pool, id="old", client_id=12, enabled=False)

    loaded = await load_enabled_portfolios(pool)

    assert loaded == [
        PortfolioConfig(
            id="alpha",
            name="Alpha",
            host="127.0.0.1",
            port=4002,
            client_id=10,
            fallback_client_id=None,
            account=None,
            is_paper=True,
            allow_live=False,
            enabled=True,
        ),
        PortfolioConfig(
            id="growth",
            name="Growth",
            host="ib-gateway",
            port=4004,
            client_id=11,
            fallback_client_id=111,
            account="DU1234567",
            is_paper=True,
            allow_live=False,
            enabled=True,
        ),
    ]
    assert all(p.live_refusal() is None for p in loaded)


async def test_no_portfolios_loads_an_empty_list(pool: Pool) -> None:
    assert await load_enabled_portfolios(pool) == []


async def test_one_portfolio_loads_by_id_even_when_disabled(pool: Pool) -> None:
    await insert(pool, id="old", client_id=12, enabled=False)
    old = await load_portfolio(pool, "old")
    assert old is not None
    assert old.id == "old"
    assert not old.enabled
    assert await load_portfolio(pool, "missing") is None


async def test_loaders_work_on_a_connection_too(pool: Pool) -> None:
    await insert(pool, id="alpha", client_id=10)
    async with pool.acquire() as conn:
        assert [p.id for p in await load_enabled_portfolios(conn)] == ["alpha"]
        assert await load_portfolio(conn, "alpha") is not None


async def test_live_portfolio_without_allow_live_is_flagged_after_loading(pool: Pool) -> None:
    await insert(pool, id="live", client_id=20, broker_port=4001, account="U7654321")
    await insert(
        pool,
        id="live-ok",
        client_id=21,
        broker_port=4001,
        account="U7654321",
        is_paper=False,
        allow_live=True,
    )
    live = await load_portfolio(pool, "live")
    allowed = await load_portfolio(pool, "live-ok")
    assert live is not None
    assert allowed is not None
    refusal = live.live_refusal()
    assert refusal is not None
    assert "port 4001" in refusal
    assert allowed.live_refusal() is None
    # The account the Gateway reports once connected overrides the configured one.
    assert "'U9'" in (live.live_refusal(account="U9") or "")
    assert "'U7654321'" in refusal


async def test_duplicate_client_id_is_refused(pool: Pool) -> None:
    await insert(pool, id="alpha", client_id=10)
    with pytest.raises(asyncpg.UniqueViolationError, match="portfolios_client_id_unique"):
        await insert(pool, id="beta", client_id=10)


async def test_duplicate_fallback_client_id_is_refused(pool: Pool) -> None:
    await insert(pool, id="alpha", client_id=10, fallback_client_id=100)
    with pytest.raises(asyncpg.UniqueViolationError, match="fallback_client_id_unique"):
        await insert(pool, id="beta", client_id=11, fallback_client_id=100)


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"id": "bad id"}, "portfolios_id_slug"),
        ({"id": "_hidden"}, "portfolios_id_slug"),
        ({"name": "  "}, "portfolios_name_not_blank"),
        ({"broker_port": 0}, "portfolios_broker_port_range"),
        ({"broker_port": 65536}, "portfolios_broker_port_range"),
        ({"client_id": -1}, "portfolios_client_id_non_negative"),
        ({"fallback_client_id": 10}, "portfolios_fallback_differs"),
        ({"account": "DU 123"}, "portfolios_account_format"),
        ({"currency": "usd"}, "portfolios_currency_iso"),
        ({"cash": Decimal("-Infinity")}, "portfolios_cash_finite"),
        ({"cash": Decimal("NaN")}, "portfolios_cash_finite"),
        ({"cash": Decimal("Infinity")}, "portfolios_cash_finite"),
        ({"reserved_cash": Decimal("-0.01")}, "portfolios_reserved_cash_non_negative"),
        ({"max_order_value": Decimal(0)}, "portfolios_max_order_value_positive"),
        ({"max_position_value": Decimal(-5)}, "portfolios_max_position_value_positive"),
        ({"max_daily_loss": Decimal(0)}, "portfolios_max_daily_loss_positive"),
        ({"max_open_orders": 0}, "portfolios_max_open_orders_positive"),
        ({"trading_state": "paused"}, "portfolios_trading_state_known"),
    ],
)
async def test_insane_values_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    row: dict[str, Any] = {"id": "alpha", "client_id": 10, **values}
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, **row)


async def test_defaults_are_paper_active_usd_and_no_limits(pool: Pool) -> None:
    await insert(pool, id="alpha", client_id=10)
    row = await pool.fetchrow("SELECT * FROM portfolios WHERE id = 'alpha'")
    assert row is not None
    assert row["broker_host"] == "127.0.0.1"
    assert row["is_paper"] is True
    assert row["allow_live"] is False
    assert row["currency"] == "USD"
    assert row["cash"] == Decimal(0)
    assert row["reserved_cash"] == Decimal(0)
    assert row["fractional_shares"] is False
    assert row["trading_state"] == "active"
    assert row["enabled"] is True
    limits = ("max_order_value", "max_position_value", "max_daily_loss", "max_open_orders")
    assert [row[name] for name in limits] == [None, None, None, None]
    assert row["created_at"] is not None
    assert row["created_at"] == row["updated_at"]


async def test_money_round_trips_exactly_without_float(pool: Pool) -> None:
    cash = Decimal("1234567890.123456789")  # float would give 1234567890.1234567
    reserved = Decimal("0.10")
    limit = Decimal("25000.005")
    assert float(cash) != cash
    await insert(
        pool,
        id="alpha",
        client_id=10,
        cash=cash,
        reserved_cash=reserved,
        max_order_value=limit,
        max_daily_loss=Decimal("0.3"),
    )
    await pool.execute(
        "UPDATE portfolios SET reserved_cash = reserved_cash + $1 WHERE id = 'alpha'",
        Decimal("0.20"),
    )
    row = await pool.fetchrow(
        "SELECT cash, reserved_cash, max_order_value, max_daily_loss,"
        " cash - reserved_cash AS available FROM portfolios WHERE id = 'alpha'"
    )
    assert row is not None
    assert all(type(value) is Decimal for value in row.values())
    assert row["cash"] == cash
    assert str(row["cash"]) == "1234567890.123456789"
    assert str(row["reserved_cash"]) == "0.30"  # 0.1 + 0.2, exactly
    assert row["max_order_value"] == limit
    assert row["available"] == Decimal("1234567889.823456789")


async def test_update_moves_updated_at(pool: Pool) -> None:
    await insert(pool, id="alpha", client_id=10)
    await pool.execute("UPDATE portfolios SET trading_state = 'halted' WHERE id = 'alpha'")
    row = await pool.fetchrow(
        "SELECT created_at, updated_at, trading_state FROM portfolios WHERE id = 'alpha'"
    )
    assert row is not None
    assert row["trading_state"] == "halted"
    assert row["updated_at"] > row["created_at"]


async def test_migration_is_applied_once(pool: Pool, database_url: str) -> None:
    assert await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager") == []
