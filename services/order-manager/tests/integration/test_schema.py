"""order-manager's schema (migrations 0001 + 0002) on real PostgreSQL: the constraints
that keep orders, executions, cash and the audit trail consistent refuse bad rows,
and what is valid goes in with exact money."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
import pytest

from ibflow.db import AnyConnection, apply_migrations, create_pool, discover

pytestmark = pytest.mark.integration

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

PACKAGES = ("ibflow.db", "ibflow_order_manager")
NOW = dt.datetime(2025, 3, 10, 14, 30, tzinfo=dt.UTC)
TODAY = dt.date(2025, 3, 10)
SENTINEL = Decimal("1.7976931348623157E+308")
"""IB's UNSET_DOUBLE (max double): a commission placeholder that must never be booked."""
EXACT = decimal.Context(prec=400)
"""Enough digits for arithmetic on SENTINEL without rounding."""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    applied = await apply_migrations(database_url, *PACKAGES)
    assert applied[-4:] == [
        "ibflow_order_manager/0001_portfolios.sql",
        "ibflow_order_manager/0002_orders_and_money.sql",
        "ibflow_order_manager/0003_lock_facts.sql",
        "ibflow_order_manager/0004_submit_context.sql",
    ]
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield db
    finally:
        await db.close()


async def insert(db: Pool | AnyConnection, table: str, **values: Any) -> asyncpg.Record:
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row = await db.fetchrow(
        f"INSERT INTO {table} ({columns}) VALUES ({params}) RETURNING *",
        *values.values(),
    )
    assert row is not None
    return row


async def portfolio(db: Pool, pid: str = "alpha", client_id: int = 10, **values: Any) -> None:
    row: dict[str, Any] = {"id": pid, "name": pid.title(), "broker_port": 4002}
    row["client_id"] = client_id
    await insert(db, "portfolios", **(row | values))


def order_row(coid: str = "alpha:2025-03-10:AAPL:entry", **values: Any) -> dict[str, Any]:
    """A valid MKT entry buy of 10 AAPL in portfolio ``alpha``, overridden by ``values``."""
    row: dict[str, Any] = {
        "client_order_id": coid,
        "portfolio_id": "alpha",
        "symbol": "AAPL",
        "side": "BUY",
        "order_type": "MKT",
        "quantity": Decimal(10),
        "purpose": "entry",
        "position_id": "pos-1",
        "requested_by": "user:alice",
    }
    return row | values


async def order(db: Pool, coid: str = "alpha:2025-03-10:AAPL:entry", **values: Any) -> None:
    await insert(db, "orders", **order_row(coid, **values))


def execution_row(exec_id: str = "0000e0d5.67a1b2c3.01.01", **values: Any) -> dict[str, Any]:
    """A fill of 4 AAPL at 190.25 of the default order, commission unknown."""
    row: dict[str, Any] = {
        "exec_id": exec_id,
        "client_order_id": "alpha:2025-03-10:AAPL:entry",
        "portfolio_id": "alpha",
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": Decimal(4),
        "price": Decimal("190.25"),
        "executed_at": NOW,
        "perm_id": 1_234_567_890,
        "ib_order_id": 7,
        "exchange": "NASDAQ",
    }
    return row | values


async def alpha_with_order(db: Pool) -> None:
    await portfolio(db)
    await order(db)


# ------------------------------------------------------------------ migrations


async def schema_snapshot(database_url: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT 'column', table_name || '.' || column_name,
                   data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
              FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL
            SELECT 'constraint', conrelid::regclass::text || '.' || conname,
                   pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
            UNION ALL
            SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, tgenabled::text
              FROM pg_trigger WHERE NOT tgisinternal
            ORDER BY 1, 2
            """
        )
    finally:
        await conn.close()
    return [tuple(row.values()) for row in rows]


async def test_migrations_apply_twice_without_change(pool: Pool, database_url: str) -> None:
    before = await schema_snapshot(database_url)
    assert await apply_migrations(database_url, *PACKAGES) == []
    assert await schema_snapshot(database_url) == before
    tables = {name for kind, name, _ in before if kind == "column"}
    for table in ("orders", "executions", "transactions", "recommendations", "audit_log"):
        assert any(name.startswith(f"{table}.") for name in tables), table


async def test_every_check_constraint_is_named_after_its_table(database_url: str) -> None:
    await apply_migrations(database_url, *PACKAGES)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace AND contype IN ('c', 'f', 'u')"
        )
    finally:
        await conn.close()
    assert rows
    misnamed = [(r["tbl"], r["conname"]) for r in rows if not r["conname"].startswith(r["tbl"])]
    assert misnamed == []


async def test_existing_portfolios_get_the_new_settings_with_their_defaults(
    database_url: str,
) -> None:
    first = [m for m in discover("ibflow_order_manager") if m.name.startswith("0001_")]
    await apply_migrations(database_url, "ibflow.db", first)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO portfolios (id, name, broker_port, client_id, trading_state)"
            " VALUES ('old', 'Old', 4002, 1, 'halted')"
        )
        applied = await apply_migrations(conn, *PACKAGES)
        assert applied == [
            "ibflow_order_manager/0002_orders_and_money.sql",
            "ibflow_order_manager/0003_lock_facts.sql",
            "ibflow_order_manager/0004_submit_context.sql",
        ]
        row = await conn.fetchrow("SELECT * FROM portfolios WHERE id = 'old'")
    finally:
        await conn.close()
    assert row is not None
    assert row["stale_order_minutes"] == 10
    assert row["reservation_buffer"] == Decimal("0.01")
    assert row["revision"] == 0
    assert row["cancel_entries_on_halt"] is False
    # A halt recorded before 0002 stays a halt, without details.
    assert (row["trading_state"], row["halted_reason"], row["halted_at"]) == ("halted", None, None)


# ------------------------------------------------------------------ portfolios


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"stale_order_minutes": 0}, "portfolios_stale_order_minutes_positive"),
        ({"revision": -1}, "portfolios_revision_non_negative"),
        ({"reservation_buffer": Decimal("-0.01")}, "portfolios_reservation_buffer_fraction"),
        ({"reservation_buffer": Decimal("0.51")}, "portfolios_reservation_buffer_fraction"),
        ({"reservation_buffer": Decimal("NaN")}, "portfolios_reservation_buffer_fraction"),
        ({"halted_reason": "limit"}, "portfolios_halt_details_only_when_halted"),
        ({"halted_at": NOW}, "portfolios_halt_details_only_when_halted"),
    ],
)
async def test_insane_portfolio_settings_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await portfolio(pool, **values)


async def test_resume_must_clear_the_halt_reason(pool: Pool) -> None:
    await portfolio(
        pool,
        trading_state="halted",
        halted_reason="max_daily_loss: lost 1012.50, limit 1000.00",
        halted_at=NOW,
    )
    with pytest.raises(asyncpg.CheckViolationError, match="halt_details_only_when_halted"):
        await pool.execute("UPDATE portfolios SET trading_state = 'active'")
    await pool.execute(
        "UPDATE portfolios SET trading_state = 'active', halted_reason = NULL, halted_at = NULL"
    )


# ------------------------------------------------------------------ instruments


async def test_instrument_defaults_and_reg_nms_tick(pool: Pool) -> None:
    row = await insert(pool, "instruments", symbol="BRK B", primary_exchange="NYSE")
    assert row["tick_size"] is None  # the Reg NMS rule
    assert (row["currency"], row["multiplier"], row["fractional"], row["enabled"]) == (
        "USD",
        Decimal(1),
        False,
        True,
    )


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"symbol": " AAPL"}, "instruments_symbol_format"),
        ({"symbol": ""}, "instruments_symbol_format"),
        ({"tick_size": Decimal(0)}, "instruments_tick_size_positive"),
        ({"multiplier": Decimal("Infinity")}, "instruments_multiplier_positive"),
        ({"currency": "usd"}, "instruments_currency_iso"),
        ({"primary_exchange": " "}, "instruments_primary_exchange_not_blank"),
    ],
)
async def test_insane_instruments_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    row: dict[str, Any] = {"symbol": "AAPL", "primary_exchange": "NASDAQ"}
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "instruments", **(row | values))


# ---------------------------------------------------------------------- orders


async def test_new_order_is_pending_day_smart_usd_with_nothing_filled(pool: Pool) -> None:
    await portfolio(pool)
    row = await insert(pool, "orders", **order_row())
    assert row["status"] == "PENDING"
    assert row["revision"] == 1
    assert (row["tif"], row["exchange"], row["currency"]) == ("DAY", "SMART", "USD")
    assert row["filled_quantity"] == 0
    assert row["avg_fill_price"] is None
    assert row["commission"] == 0
    assert row["reserved_cash"] == 0
    assert row["created_at"] == row["updated_at"]
    assert row["sent_at"] is None


@pytest.mark.parametrize(
    "prices",
    [
        {"order_type": "MKT"},
        {"order_type": "LMT", "limit_price": Decimal("190.01")},
        {"order_type": "STP", "stop_price": Decimal("185")},
        {"order_type": "STP_LMT", "stop_price": Decimal("185"), "limit_price": Decimal("184.5")},
        {"order_type": "TRAIL", "trailing_amount": Decimal("1.5")},
        {
            "order_type": "TRAIL",
            "trailing_percent": Decimal("2.5"),
            "trail_stop_price": Decimal("180"),
        },
    ],
    ids=lambda prices: "-".join(sorted(prices)) + f"-{prices['order_type']}",
)
async def test_each_order_type_with_its_prices_is_accepted(
    pool: Pool, prices: dict[str, Any]
) -> None:
    await portfolio(pool)
    await order(pool, **prices)


async def test_lmt_order_without_limit_price_is_refused(pool: Pool) -> None:
    await portfolio(pool)
    with pytest.raises(asyncpg.CheckViolationError, match="orders_prices_match_type"):
        await order(pool, order_type="LMT")


@pytest.mark.parametrize(
    "prices",
    [
        {"order_type": "MKT", "limit_price": Decimal(190)},
        {"order_type": "LMT", "limit_price": Decimal(190), "stop_price": Decimal(185)},
        {"order_type": "STP"},
        {"order_type": "STP", "stop_price": Decimal(185), "trailing_amount": Decimal(1)},
        {"order_type": "STP_LMT", "stop_price": Decimal(185)},
        {"order_type": "TRAIL"},
        {"order_type": "TRAIL", "trailing_amount": Decimal(1), "trailing_percent": Decimal(1)},
        {"order_type": "TRAIL", "trailing_amount": Decimal(1), "limit_price": Decimal(190)},
    ],
    ids=str,
)
async def test_prices_that_do_not_fit_the_order_type_are_refused(
    pool: Pool, prices: dict[str, Any]
) -> None:
    await portfolio(pool)
    with pytest.raises(asyncpg.CheckViolationError, match="orders_prices_match_type"):
        await order(pool, **prices)


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"client_order_id": "bad id"}, "orders_client_order_id_format"),
        ({"client_order_id": "_x"}, "orders_client_order_id_format"),
        ({"client_order_id": "a" * 65}, "orders_client_order_id_format"),
        ({"side": "BOT"}, "orders_side_known"),
        ({"order_type": "STP LMT"}, "orders_order_type_known"),
        ({"quantity": Decimal(0)}, "orders_quantity_positive"),
        ({"quantity": Decimal("NaN")}, "orders_quantity_positive"),
        ({"tif": "GTD"}, "orders_tif_known"),
        ({"currency": "usd"}, "orders_currency_iso"),
        ({"purpose": "hedge"}, "orders_purpose_known"),
        ({"status": "PartiallyFilled"}, "orders_status_known"),
        ({"revision": 0}, "orders_revision_positive"),
        ({"reserved_cash": Decimal("-0.01")}, "orders_reserved_cash_non_negative"),
        ({"perm_id": 0}, "orders_perm_id_positive"),
        ({"requested_by": " "}, "orders_requested_by_not_blank"),
        ({"order_type": "TRAIL", "trailing_percent": Decimal(100)}, "trailing_percent_range"),
        ({"commission": SENTINEL}, "orders_commission_sane"),
        # Our own orders know their terms.
        ({"symbol": None}, "orders_terms_known"),
        ({"quantity": None}, "orders_terms_known"),
        ({"tif": None}, "orders_terms_known"),
        # Purpose rules of OrderIntent.
        ({"purpose": "manual"}, "orders_position_matches_purpose"),
        ({"position_id": None}, "orders_position_matches_purpose"),
        ({"purpose": "exit"}, "orders_exit_reason_only_on_exits"),
        ({"exit_reason": "stop"}, "orders_exit_reason_only_on_exits"),
        (
            {"purpose": "exit", "exit_reason": "stop", "stop_loss": Decimal(180)},
            "orders_levels_only_on_entries",
        ),
        (
            {"stop_loss": Decimal(200), "take_profit": Decimal(180)},
            "orders_stop_loss_below_take_profit_for_buys",
        ),
        (
            {"side": "SELL", "stop_loss": Decimal(180), "take_profit": Decimal(200)},
            "orders_stop_loss_below_take_profit_for_buys",
        ),
        ({"parent_client_order_id": "alpha:2025-03-10:AAPL:entry"}, "orders_parent_not_self"),
    ],
    ids=str,
)
async def test_insane_orders_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    await portfolio(pool)
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await order(pool, **values)


async def test_order_of_an_unknown_portfolio_is_refused(pool: Pool) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="orders_portfolio_id_fkey"):
        await order(pool)


async def test_duplicate_client_order_id_is_refused_even_in_another_portfolio(
    pool: Pool,
) -> None:
    await portfolio(pool)
    await portfolio(pool, "beta", client_id=11)
    await order(pool, "same-id")
    with pytest.raises(asyncpg.UniqueViolationError, match="orders_pkey"):
        await order(pool, "same-id", portfolio_id="beta")


async def test_external_order_may_lack_terms_and_the_price_rule(pool: Pool) -> None:
    await portfolio(pool)
    # Found through a status report of an order placed in TWS: no symbol, side, type,
    # quantity or TIF known yet; IB's aux price recorded without knowing its meaning.
    row = await insert(
        pool,
        "orders",
        client_order_id="ext-alpha-1234567890",
        portfolio_id="alpha",
        purpose="external",
        requested_by="order-manager",
        symbol=None,
        side=None,
        order_type=None,
        quantity=None,
        tif=None,
        stop_price=Decimal("3.5"),
        perm_id=1234567890,
        ib_order_id=0,
        ib_status="Submitted",
        status="SUBMITTED",
        submitted_at=NOW,
    )
    assert row["order_type"] is None
    # What is present is still checked.
    with pytest.raises(asyncpg.CheckViolationError, match="orders_quantity_positive"):
        await order(pool, "ext-2", purpose="external", position_id=None, quantity=Decimal(0))


async def test_filled_quantity_cannot_exceed_quantity(pool: Pool) -> None:
    await alpha_with_order(pool)
    await pool.execute(
        "UPDATE orders SET filled_quantity = 10, avg_fill_price = 190.25,"
        " status = 'FILLED', filled_at = now()"
    )
    with pytest.raises(asyncpg.CheckViolationError, match="orders_filled_within_quantity"):
        await pool.execute("UPDATE orders SET filled_quantity = 10.5")
    # A modify may not cut the quantity below what already filled either.
    with pytest.raises(asyncpg.CheckViolationError, match="orders_filled_within_quantity"):
        await pool.execute("UPDATE orders SET quantity = 9")


async def test_average_fill_price_exists_exactly_when_something_filled(pool: Pool) -> None:
    await alpha_with_order(pool)
    with pytest.raises(asyncpg.CheckViolationError, match="orders_avg_fill_price_iff_filled"):
        await pool.execute("UPDATE orders SET avg_fill_price = 190.25")
    with pytest.raises(asyncpg.CheckViolationError, match="orders_avg_fill_price_iff_filled"):
        await pool.execute("UPDATE orders SET filled_quantity = 4")
    with pytest.raises(asyncpg.CheckViolationError, match="orders_filled_quantity_non_negative"):
        await pool.execute("UPDATE orders SET filled_quantity = -1")


@pytest.mark.parametrize(
    ("status", "stamp"),
    [
        ("SUBMITTED", "submitted_at"),
        ("PARTIALLY_FILLED", "partially_filled_at"),
        ("FILLED", "filled_at"),
        ("CANCEL_REQUESTED", "cancel_requested_at"),
        ("CANCELLED", "cancelled_at"),
        ("REJECTED", "rejected_at"),
        ("UNKNOWN", "unknown_at"),
    ],
)
async def test_a_status_needs_its_transition_timestamp(pool: Pool, status: str, stamp: str) -> None:
    await alpha_with_order(pool)
    with pytest.raises(asyncpg.CheckViolationError, match="orders_status_timestamp_set"):
        await pool.execute("UPDATE orders SET status = $1", status)
    await pool.execute(f"UPDATE orders SET status = $1, {stamp} = now()", status)


async def test_transition_moves_updated_at_and_keeps_created_at(pool: Pool) -> None:
    await alpha_with_order(pool)
    await pool.execute(
        "UPDATE orders SET status = 'SUBMITTED', submitted_at = now(), revision = revision + 1,"
        " ib_order_id = 7, perm_id = 1234567890, ib_status = 'Submitted'"
    )
    row = await pool.fetchrow("SELECT * FROM orders")
    assert row is not None
    assert row["revision"] == 2
    assert row["updated_at"] > row["created_at"]


async def test_perm_id_unique_per_portfolio(pool: Pool) -> None:
    await portfolio(pool)
    await portfolio(pool, "beta", client_id=11)
    await order(pool, "a-1", perm_id=555)
    await order(pool, "a-2")  # no permId yet: NULLs never collide
    await order(pool, "a-3")
    # Portfolios sharing an account may both record the same broker order.
    await order(pool, "b-1", portfolio_id="beta", perm_id=555)
    with pytest.raises(asyncpg.UniqueViolationError, match="orders_perm_id_unique_per_portfolio"):
        await order(pool, "a-4", perm_id=555)


async def test_bracket_child_must_be_in_its_parents_portfolio(pool: Pool) -> None:
    await portfolio(pool)
    await portfolio(pool, "beta", client_id=11)
    await order(pool, "parent")
    await order(
        pool,
        "child",
        side="SELL",
        order_type="STP",
        stop_price=Decimal(180),
        purpose="exit",
        exit_reason="stop",
        parent_client_order_id="parent",
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="orders_parent_fk"):
        await order(pool, "other", portfolio_id="beta", parent_client_order_id="parent")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="orders_parent_fk"):
        await order(pool, "orphan", parent_client_order_id="missing")


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT count(*) FROM orders WHERE portfolio_id = 'alpha' AND symbol = 'AAPL'"
            " AND status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')",
            "orders_working_by_portfolio",
        ),
        (
            "SELECT count(*) FROM orders WHERE portfolio_id = 'alpha' AND symbol = 'AAPL'"
            " AND status IN ('PENDING', 'SUBMITTED')",
            "orders_working_by_portfolio",
        ),
        (
            "SELECT client_order_id FROM orders WHERE status IN ('SUBMITTED', 'PARTIALLY_FILLED')"
            " AND submitted_at < now() - interval '10 minutes'",
            "orders_stale_sweep",
        ),
        ("SELECT client_order_id FROM orders WHERE status = 'UNKNOWN'", "orders_stale_sweep"),
    ],
    ids=["working-not-terminal", "working-some-statuses", "stale-sweep", "recovery"],
)
async def test_working_order_queries_can_use_the_partial_indexes(
    pool: Pool, query: str, index: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {query}"))
    assert index in plan, plan


# ------------------------------------------------------------------ executions


async def test_execution_commission_is_null_until_reported(pool: Pool) -> None:
    await alpha_with_order(pool)
    row = await insert(pool, "executions", **execution_row())
    assert row["commission"] is None  # unknown, not 0
    assert row["commission_currency"] is None
    assert row["ib_realized_pnl"] is None

    # A commission comes with its currency and arrival time.
    with pytest.raises(asyncpg.CheckViolationError, match="executions_commission_complete"):
        await pool.execute("UPDATE executions SET commission = 1.00")

    await pool.execute(
        "UPDATE executions SET commission = 1.00, commission_currency = 'USD',"
        " commission_at = now()"
    )
    # A zero commission is a real value and stays distinguishable from "unknown".
    await insert(pool, "executions", **execution_row("e-2", quantity=Decimal(1)))
    await pool.execute(
        "UPDATE executions SET commission = 0, commission_currency = 'USD',"
        " commission_at = now() WHERE exec_id = 'e-2'"
    )
    unknown = await pool.fetchval("SELECT count(*) FROM executions WHERE commission IS NULL")
    assert unknown == 0


async def test_ib_unset_commission_sentinel_is_refused(pool: Pool) -> None:
    await alpha_with_order(pool)
    await insert(pool, "executions", **execution_row())
    with pytest.raises(asyncpg.CheckViolationError, match="executions_commission_sane"):
        await pool.execute(
            "UPDATE executions SET commission = $1,"
            " commission_currency = 'USD', commission_at = now()",
            SENTINEL,
        )


async def test_replayed_execution_is_refused_by_exec_id(pool: Pool) -> None:
    await alpha_with_order(pool)
    await insert(pool, "executions", **execution_row())
    with pytest.raises(asyncpg.UniqueViolationError, match="executions_pkey"):
        await insert(pool, "executions", **execution_row())


async def test_execution_needs_an_order_of_the_same_portfolio(pool: Pool) -> None:
    await alpha_with_order(pool)
    await portfolio(pool, "beta", client_id=11)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="executions_order_fk"):
        await insert(pool, "executions", **execution_row(client_order_id="never-recorded"))
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="executions_order_fk"):
        await insert(pool, "executions", **execution_row(portfolio_id="beta"))


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"quantity": Decimal(0)}, "executions_quantity_positive"),
        ({"price": Decimal(0)}, "executions_price_positive"),
        ({"price": Decimal("NaN")}, "executions_price_positive"),
        ({"side": "BOT"}, "executions_side_known"),
        ({"exec_id": " "}, "executions_exec_id_not_blank"),
        ({"perm_id": 0}, "executions_perm_id_positive"),
        ({"exchange": ""}, "executions_exchange_not_blank"),
        (
            {"ib_realized_pnl": Decimal(5)},
            "executions_realized_pnl_with_commission",
        ),
    ],
    ids=str,
)
async def test_insane_executions_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    await alpha_with_order(pool)
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "executions", **execution_row(**values))


async def test_commission_before_its_execution_waits_and_is_consumed(pool: Pool) -> None:
    await alpha_with_order(pool)
    exec_id = "0000e0d5.67a1b2c3.01.01"
    await insert(
        pool,
        "pending_commissions",
        exec_id=exec_id,
        portfolio_id="alpha",
        commission=Decimal("1.0035"),
        currency="USD",
    )
    with pytest.raises(asyncpg.UniqueViolationError, match="pending_commissions_pkey"):
        await insert(
            pool,
            "pending_commissions",
            exec_id=exec_id,
            portfolio_id="alpha",
            commission=Decimal(1),
            currency="USD",
        )
    # The execution's transaction consumes the waiting commission.
    async with pool.acquire() as conn, conn.transaction():
        waiting = await conn.fetchrow(
            "DELETE FROM pending_commissions WHERE exec_id = $1"
            " RETURNING commission, currency, received_at",
            exec_id,
        )
        assert waiting is not None
        await insert(
            conn,
            "executions",
            **execution_row(
                exec_id,
                commission=waiting["commission"],
                commission_currency=waiting["currency"],
                commission_at=waiting["received_at"],
            ),
        )
    assert await pool.fetchval("SELECT count(*) FROM pending_commissions") == 0
    assert await pool.fetchval("SELECT commission FROM executions") == Decimal("1.0035")


# ---------------------------------------------------------------- transactions


async def booked(pool: Pool) -> None:
    await alpha_with_order(pool)
    await insert(pool, "executions", **execution_row())


def transaction_row(**values: Any) -> dict[str, Any]:
    """The cash effect of the default fill (4 x 190.25 bought), commission not yet known."""
    row: dict[str, Any] = {
        "exec_id": "0000e0d5.67a1b2c3.01.01",
        "portfolio_id": "alpha",
        "client_order_id": "alpha:2025-03-10:AAPL:entry",
        "kind": "buy",
        "gross": Decimal("-761.00"),
        "cash_delta": Decimal("-761.00"),
    }
    return row | values


async def test_transaction_cash_delta_must_equal_gross_minus_commission(pool: Pool) -> None:
    await booked(pool)
    with pytest.raises(
        asyncpg.CheckViolationError, match="transactions_cash_delta_is_gross_minus_commission"
    ):
        await insert(
            pool,
            "transactions",
            **transaction_row(commission=Decimal("1.0035"), cash_delta=Decimal("-762.00")),
        )
    row = await insert(pool, "transactions", **transaction_row())
    assert row["commission"] == 0
    # The late commission updates commission and cash_delta together, exactly.
    with pytest.raises(
        asyncpg.CheckViolationError, match="transactions_cash_delta_is_gross_minus_commission"
    ):
        await pool.execute("UPDATE transactions SET commission = 1.0035")
    await pool.execute(
        "UPDATE transactions SET commission = $1, cash_delta = gross - $1", Decimal("1.0035")
    )
    after = await pool.fetchrow("SELECT * FROM transactions")
    assert after is not None
    assert str(after["cash_delta"]) == "-762.0035"
    assert after["updated_at"] > after["created_at"]


async def test_one_transaction_per_execution(pool: Pool) -> None:
    await booked(pool)
    await insert(pool, "transactions", **transaction_row())
    with pytest.raises(asyncpg.UniqueViolationError, match="transactions_exec_id_unique"):
        await insert(pool, "transactions", **transaction_row())


async def test_transaction_must_match_its_execution_order_and_portfolio(pool: Pool) -> None:
    await booked(pool)
    await order(pool, "other-order")
    for values in (
        {"exec_id": "no-such-exec"},
        {"client_order_id": "other-order"},
    ):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="transactions_execution_fk"):
            await insert(pool, "transactions", **transaction_row(**values))


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"gross": Decimal(761), "cash_delta": Decimal(761)}, "gross_sign_matches_kind"),
        ({"kind": "sell"}, "transactions_gross_sign_matches_kind"),
        ({"kind": "deposit"}, "transactions_kind_known"),
        (
            {"gross": Decimal("NaN"), "cash_delta": Decimal("NaN")},
            "transactions_(gross|cash_delta)_finite",
        ),
        (
            {"commission": SENTINEL, "cash_delta": EXACT.subtract(Decimal("-761.00"), SENTINEL)},
            "transactions_commission_sane",
        ),
    ],
    ids=str,
)
async def test_insane_transactions_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    await booked(pool)
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "transactions", **transaction_row(**values))


async def test_cash_sums_exactly_to_the_cent(pool: Pool) -> None:
    await booked(pool)
    await insert(pool, "executions", **execution_row("e-2", quantity=Decimal(3)))
    await insert(pool, "executions", **execution_row("e-3", quantity=Decimal(3)))
    for exec_id, gross in (
        ("0000e0d5.67a1b2c3.01.01", "-0.1"),
        ("e-2", "-0.2"),
        ("e-3", "-0.3"),
    ):
        amount = Decimal(gross)
        await insert(
            pool,
            "transactions",
            **transaction_row(exec_id=exec_id, gross=amount, cash_delta=amount),
        )
    total = await pool.fetchval("SELECT sum(cash_delta) FROM transactions")
    assert total == Decimal("-0.6")  # float: -0.6000000000000001


# -------------------------------------------------------------- recommendations


def recommendation_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "portfolio_id": "alpha",
        "session_date": TODAY,
        "symbol": "AAPL",
        "allocation": Decimal("0.1"),
    }
    return row | values


async def test_recommendation_defaults_to_a_pending_mkt_buy_from_the_api(pool: Pool) -> None:
    await portfolio(pool)
    row = await insert(pool, "recommendations", **recommendation_row())
    assert (row["side"], row["entry_type"], row["source"], row["status"]) == (
        "BUY",
        "MKT",
        "api",
        "pending",
    )
    assert row["decided_at"] is None


async def test_recommendation_takes_quantity_or_allocation_not_both(pool: Pool) -> None:
    await portfolio(pool)
    with pytest.raises(asyncpg.CheckViolationError, match="recommendations_quantity_or_allocation"):
        await insert(pool, "recommendations", **recommendation_row(quantity=Decimal(5)))
    with pytest.raises(asyncpg.CheckViolationError, match="recommendations_quantity_or_allocation"):
        await insert(pool, "recommendations", **recommendation_row(allocation=None))
    await insert(
        pool, "recommendations", **recommendation_row(allocation=None, quantity=Decimal("2.5"))
    )


async def test_second_recommendation_for_symbol_and_day_is_refused(pool: Pool) -> None:
    await portfolio(pool)
    await portfolio(pool, "beta", client_id=11)
    await insert(pool, "recommendations", **recommendation_row())
    await insert(
        pool, "recommendations", **recommendation_row(session_date=TODAY + dt.timedelta(1))
    )
    await insert(pool, "recommendations", **recommendation_row(portfolio_id="beta"))
    with pytest.raises(
        asyncpg.UniqueViolationError, match="recommendations_one_per_symbol_and_session"
    ):
        await insert(
            pool, "recommendations", **recommendation_row(source="strategy:gap", side="SELL")
        )


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"allocation": Decimal("1.01")}, "recommendations_allocation_fraction"),
        ({"allocation": Decimal(0)}, "recommendations_allocation_fraction"),
        ({"entry_type": "LMT"}, "recommendations_limit_price_iff_lmt"),
        ({"limit_price": Decimal(190)}, "recommendations_limit_price_iff_lmt"),
        ({"entry_type": "STP", "limit_price": Decimal(190)}, "entry_type_known"),
        (
            {"stop_loss": Decimal(200), "take_profit": Decimal(180)},
            "recommendations_stop_loss_below_take_profit_for_buys",
        ),
        ({"status": "skipped", "decided_at": NOW}, "skip_reason_iff_skipped_or_failed"),
        ({"skip_reason": "why"}, "skip_reason_iff_skipped_or_failed"),
        (
            {"status": "skipped", "decided_at": NOW, "skip_reason": " "},
            "recommendations_skip_reason_not_blank",
        ),
        ({"status": "failed", "skip_reason": "x"}, "recommendations_decided_at_iff_decided"),
        ({"status": "submitted", "decided_at": NOW}, "recommendations_submitted_has_order"),
        ({"source": ""}, "recommendations_source_not_blank"),
    ],
    ids=str,
)
async def test_insane_recommendations_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    await portfolio(pool)
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "recommendations", **recommendation_row(**values))


async def test_submitted_recommendation_points_at_its_entry_in_the_same_portfolio(
    pool: Pool,
) -> None:
    await alpha_with_order(pool)
    await portfolio(pool, "beta", client_id=11)
    rec = await insert(pool, "recommendations", **recommendation_row())
    await pool.execute(
        "UPDATE recommendations SET status = 'submitted', decided_at = now(),"
        " client_order_id = 'alpha:2025-03-10:AAPL:entry' WHERE id = $1",
        rec["id"],
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="recommendations_order_fk"):
        await insert(
            pool,
            "recommendations",
            **recommendation_row(
                portfolio_id="beta",
                status="submitted",
                decided_at=NOW,
                client_order_id="alpha:2025-03-10:AAPL:entry",
            ),
        )


# -------------------------------------------------------------------- audit_log


async def test_audit_log_rows_cannot_be_updated_or_deleted(pool: Pool) -> None:
    row = await insert(
        pool,
        "audit_log",
        actor="key:ops-1",
        command="order.submit",
        subject="order:alpha-1",
        portfolio_id="alpha",
        client_order_id="alpha-1",
        payload={"quantity": "10"},
        result="refused",
        detail="max_order_value: 25000.00 > 20000.00",
    )
    assert row["at"] is not None
    for statement in (
        "UPDATE audit_log SET result = 'accepted'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await pool.execute(statement)
    assert await pool.fetchval("SELECT result FROM audit_log") == "refused"


async def test_audit_log_records_refusals_about_unknown_portfolios_and_bad_ids(
    pool: Pool,
) -> None:
    # No foreign keys or id formats: the refusal itself must be recordable.
    await insert(
        pool,
        "audit_log",
        actor="user:alice",
        command="order.submit",
        portfolio_id="no such portfolio",
        client_order_id="bad id!",
        result="refused",
        detail="portfolio_id: unknown",
    )


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"actor": " "}, "audit_log_actor_not_blank"),
        ({"command": ""}, "audit_log_command_not_blank"),
        ({"result": "ok"}, "audit_log_result_known"),
    ],
    ids=str,
)
async def test_audit_log_needs_actor_command_and_known_result(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    row: dict[str, Any] = {"actor": "svc:api", "command": "trading.halt", "result": "accepted"}
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "audit_log", **(row | values))
