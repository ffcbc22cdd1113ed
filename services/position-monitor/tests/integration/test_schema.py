"""position-monitor's schema (migration 0001) on real PostgreSQL: it applies without
order-manager's tables, every state the domain produces is stored exactly, and the
constraints refuse rows that contradict the domain's invariants."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
import pytest

from ibflow.contracts.enums import ExitReason, PositionSide, PositionStatus
from ibflow.db import AnyConnection, apply_migrations, create_pool
from ibflow_position_monitor.domain import PositionState, Transition

pytestmark = pytest.mark.integration

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

PACKAGES = ("ibflow.db", "ibflow_position_monitor")
NOW = dt.datetime(2025, 3, 10, 14, 30, tzinfo=dt.UTC)
TODAY = dt.date(2025, 3, 10)
PID = "pos-alpha-20250310-AAPL"
ENTRY = "entry-alpha-20250310-AAPL"
EXIT1 = f"exit:{PID}"
SENTINEL = Decimal("1.7976931348623157E+308")
"""IB's UNSET_DOUBLE (max double): a commission placeholder that must never be stored."""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    applied = await apply_migrations(database_url, *PACKAGES)
    assert "ibflow_position_monitor/0001_positions.sql" in applied
    assert applied[-1].startswith("ibflow_position_monitor/0002_")
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield db
    finally:
        await db.close()


async def insert(db: Pool | AnyConnection, table: str, **values: Any) -> asyncpg.Record:
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row = await db.fetchrow(
        f"INSERT INTO {table} ({columns}) VALUES ({params}) RETURNING *", *values.values()
    )
    assert row is not None
    return row


def position_row(state: PositionState, **values: Any) -> dict[str, Any]:
    """The ``positions`` row of ``state`` (facts and derived figures), as the service
    will write it, overridden by ``values``."""
    status = state.status
    row: dict[str, Any] = {
        "id": state.position_id,
        "portfolio_id": state.portfolio_id,
        "symbol": state.symbol,
        "session_date": TODAY,
        "side": state.side.value,
        "status": status.value,
        "external": state.external,
        "multiplier": state.multiplier,
        "planned_quantity": state.planned_quantity,
        "quantity": state.quantity,
        "entry_quantity": state.entry_quantity,
        "exit_quantity": state.exit_quantity,
        "entry_notional": state.entry_notional,
        "exit_notional": state.exit_notional,
        "avg_entry_price": state.avg_entry_price,
        "avg_exit_price": state.avg_exit_price,
        "stop_loss": state.stop_loss,
        "take_profit": state.take_profit,
        "entry_client_order_id": state.entry_client_order_id,
        "entry_done": state.entry_done,
        "entry_broker_filled": state.entry_broker_filled,
        "exit_client_order_ids": list(state.exit_client_order_ids),
        "exit_client_order_id": state.exit_client_order_id,
        "exit_reason": None if state.exit_reason is None else state.exit_reason.value,
        "exit_working": state.exit_working,
        "exit_broker_filled": state.exit_broker_filled,
        "realized_pnl": state.realized_pnl,
        "commissions": state.commission,
        "commissions_pending": state.commissions_pending,
        "opened_at": NOW if status in _OPENED else None,
        "closed_at": NOW if status is PositionStatus.CLOSED else None,
    }
    return row | values


_OPENED = {PositionStatus.OPEN, PositionStatus.CLOSING, PositionStatus.CLOSED}


def new_position(
    pid: str = PID, symbol: str = "AAPL", entry: str = ENTRY, portfolio: str = "alpha"
) -> PositionState:
    return PositionState.new(
        position_id=pid,
        portfolio_id=portfolio,
        symbol=symbol,
        side=PositionSide.LONG,
        planned_quantity=Decimal(100),
        entry_client_order_id=entry,
        stop_loss=Decimal("9.50"),
        take_profit=Decimal("11.00"),
    )


def opened() -> PositionState:
    state = new_position()
    return state.on_execution(
        "e1", client_order_id=ENTRY, side=state.entry_side, shares=Decimal(100), price=Decimal(10)
    ).state


async def store(db: Pool, state: PositionState, **values: Any) -> asyncpg.Record:
    return await insert(db, "positions", **position_row(state, **values))


# -- migrations ---------------------------------------------------------------------


async def test_migration_applies_once_without_order_managers_tables(
    pool: Pool, database_url: str
) -> None:
    assert await apply_migrations(database_url, *PACKAGES) == []
    tables = {
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {
        "positions",
        "position_executions",
        "position_marks",
        "reconciliation_reports",
    } <= tables
    assert "portfolios" not in tables  # no dependency on another package's migrations


async def test_it_also_applies_alongside_order_manager_in_either_order(database_url: str) -> None:
    applied = await apply_migrations(
        database_url, "ibflow.db", "ibflow_position_monitor", "ibflow_order_manager"
    )
    assert "ibflow_position_monitor/0001_positions.sql" in applied
    assert "ibflow_order_manager/0002_orders_and_money.sql" in applied


async def test_every_constraint_is_named_after_its_table(pool: Pool) -> None:
    rows = await pool.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace AND contype IN ('c', 'f', 'u')"
        " AND conrelid::regclass::text IN"
        " ('positions', 'position_executions', 'position_marks', 'reconciliation_reports')"
    )
    assert len(rows) > 40
    assert [(r["tbl"], r["conname"]) for r in rows if not r["conname"].startswith(r["tbl"])] == []


# -- positions ------------------------------------------------------------------------


async def test_every_status_the_domain_produces_is_stored_exactly(pool: Pool) -> None:
    state = new_position()
    await store(pool, state)
    steps: list[Transition] = []
    steps.append(
        state.on_execution(
            "e1",
            client_order_id=ENTRY,
            side=state.entry_side,
            shares=Decimal(60),
            price=Decimal("10.01"),
            commission=Decimal("0.35"),
        )
    )
    steps.append(steps[-1].state.submit_exit(EXIT1, ExitReason.STOP))
    steps.append(steps[-1].state.exit_ended(EXIT1, broker_filled=Decimal(0)))
    steps.append(steps[-1].state.submit_exit(f"{EXIT1}:2", ExitReason.STOP))
    steps.append(
        steps[-1].state.on_execution(
            "x1",
            client_order_id=f"{EXIT1}:2",
            side=state.exit_side,
            shares=Decimal(60),
            price=Decimal("9.4933"),
        )
    )
    steps.append(steps[-1].state.on_commission("x1", Decimal("0.3512")))
    seen = [PositionStatus.PENDING]
    for revision, step in enumerate(steps, start=2):
        row = position_row(step.state, revision=revision)
        await pool.execute(
            "UPDATE positions SET "
            + ", ".join(f"{column} = ${i}" for i, column in enumerate(row, start=1))
            + f" WHERE id = ${len(row) + 1}",
            *row.values(),
            PID,
        )
        seen.append(step.state.status)
    assert seen == [
        PositionStatus.PENDING, PositionStatus.OPEN, PositionStatus.CLOSING,
        PositionStatus.OPEN, PositionStatus.CLOSING, PositionStatus.CLOSED, PositionStatus.CLOSED,
    ]  # fmt: skip
    stored = await pool.fetchrow("SELECT * FROM positions WHERE id = $1", PID)
    assert stored is not None
    final = steps[-1].state
    # numeric keeps every digit: 60 x (9.4933 - 10.01) - 0.35 - 0.3512
    assert stored["realized_pnl"] == Decimal("-31.7032") == final.realized_pnl
    assert stored["avg_exit_price"] == Decimal("9.4933")
    assert stored["exit_client_order_ids"] == [EXIT1, f"{EXIT1}:2"]
    assert (stored["status"], stored["revision"], stored["commissions_pending"]) == ("CLOSED", 7, 0)


async def test_one_active_position_per_portfolio_symbol_and_session(pool: Pool) -> None:
    await store(pool, new_position())
    second = new_position(pid="pos-2", entry="entry-2")
    with pytest.raises(asyncpg.UniqueViolationError, match="positions_one_active_per_symbol"):
        await store(pool, second)
    # Another session, symbol or portfolio is another position.
    await store(pool, second, session_date=TODAY + dt.timedelta(days=1))
    await store(pool, new_position(pid="pos-3", entry="entry-3", symbol="MSFT"))
    await store(pool, new_position(pid="pos-4", entry="entry-4", portfolio="beta"))
    # Once the first is finished, the symbol may be traded again that session.
    await pool.execute(
        "UPDATE positions SET status = 'CANCELLED', entry_done = true WHERE id = $1", PID
    )
    await store(pool, new_position(pid="pos-5", entry="entry-5"))


async def test_one_position_per_entry_order(pool: Pool) -> None:
    await store(pool, new_position())
    with pytest.raises(
        asyncpg.UniqueViolationError, match="positions_entry_client_order_id_unique"
    ):
        await store(pool, new_position(pid="pos-2", symbol="MSFT"))


_OPEN_FIGURES = {
    "status": "OPEN",
    "quantity": Decimal(100),
    "entry_quantity": Decimal(100),
    "entry_notional": Decimal(1000),
    "avg_entry_price": Decimal(10),
    "opened_at": NOW,
}

_EXIT = {"exit_client_order_ids": [EXIT1], "exit_client_order_id": EXIT1}


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"id": "bad id"}, "positions_id_format"),
        ({"portfolio_id": "_alpha"}, "positions_portfolio_id_slug"),
        ({"symbol": ""}, "positions_symbol_format"),
        ({"side": "BUY", "stop_loss": None}, "positions_side_known"),
        ({"status": "DONE"}, "positions_status_known"),
        ({"multiplier": Decimal(0)}, "positions_multiplier_positive"),
        ({"planned_quantity": Decimal(0)}, "positions_planned_quantity_positive"),
        ({"planned_quantity": Decimal("NaN")}, "positions_planned_quantity_positive"),
        (  # exits beyond the entries
            {
                "exit_quantity": Decimal(10),
                "exit_notional": Decimal(100),
                "avg_exit_price": Decimal(10),
                "quantity": Decimal(-10),
            },
            "positions_quantity_non_negative",
        ),
        (
            {**_OPEN_FIGURES, "entry_notional": Decimal("NaN")},
            "positions_entry_notional_non_negative",
        ),
        ({"stop_loss": Decimal(12)}, "positions_levels_match_side"),
        ({"side": "SHORT"}, "positions_levels_match_side"),
        ({"exit_reason": "panic", **_EXIT}, "positions_exit_reason_known"),
        ({"realized_pnl": Decimal("NaN")}, "positions_realized_pnl_finite"),
        ({"realized_pnl": Decimal("-Infinity")}, "positions_realized_pnl_finite"),
        ({"commissions": SENTINEL}, "positions_commissions_sane"),
        ({"commissions_pending": -1}, "positions_commissions_pending_non_negative"),
        ({"revision": 0}, "positions_revision_positive"),
        ({"entry_client_order_id": "x y"}, "positions_entry_client_order_id_format"),
        # Figures that contradict each other.
        ({**_OPEN_FIGURES, "quantity": Decimal(90)}, "positions_quantity_is_entries_minus_exits"),
        (
            {**_OPEN_FIGURES, "quantity": Decimal(150), "entry_quantity": Decimal(150)},
            "positions_entry_within_planned",
        ),
        ({**_OPEN_FIGURES, "avg_entry_price": None}, "positions_avg_entry_price_iff_entered"),
        ({"entry_notional": Decimal(5)}, "positions_notional_only_with_fills"),
        # A status its quantities contradict.
        ({"status": "OPEN", "opened_at": NOW}, "positions_status_matches_quantities"),
        ({**_OPEN_FIGURES, "status": "PENDING"}, "positions_status_matches_quantities"),
        (
            {**_OPEN_FIGURES, "status": "CLOSED", "closed_at": NOW},
            "positions_status_matches_quantities",
        ),
        ({**_OPEN_FIGURES, "status": "CLOSING"}, "positions_closing_has_exit"),
        ({**_OPEN_FIGURES, "opened_at": None}, "positions_opened_at_once_open"),
        ({"closed_at": NOW}, "positions_closed_at_iff_closed"),
        # The exits.
        ({"exit_client_order_id": EXIT1}, "positions_exit_client_order_id_is_latest"),
        (
            {"exit_client_order_ids": [EXIT1, "exit:2"], "exit_client_order_id": EXIT1},
            "positions_exit_client_order_id_is_latest",
        ),
        ({"exit_reason": "stop"}, "positions_exit_reason_has_exit"),
        ({**_OPEN_FIGURES, **_EXIT, "exit_working": True}, "positions_status_matches_quantities"),
        (
            {"exit_client_order_ids": [ENTRY], "exit_client_order_id": ENTRY},
            "positions_exit_client_order_id_not_entry",
        ),
    ],
)
async def test_positions_that_contradict_the_domain_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await store(pool, new_position(), **values)


async def test_updated_at_follows_every_update(pool: Pool) -> None:
    row = await store(pool, new_position())
    await pool.execute("UPDATE positions SET revision = 2 WHERE id = $1", PID)
    after = await pool.fetchval("SELECT updated_at FROM positions WHERE id = $1", PID)
    assert after >= row["updated_at"]


# -- position_executions --------------------------------------------------------------


def execution_row(exec_id: str = "0000e0d5.67a1b2c3.01.01", **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "exec_id": exec_id,
        "position_id": PID,
        "client_order_id": ENTRY,
        "role": "entry",
        "side": "BUY",
        "quantity": Decimal(40),
        "price": Decimal("190.25"),
        "executed_at": NOW,
    }
    return row | values


_BOOK = (
    "INSERT INTO position_executions"
    " (exec_id, position_id, client_order_id, role, side, quantity, price, executed_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (exec_id) DO UPDATE SET position_id = EXCLUDED.position_id,"
    " client_order_id = EXCLUDED.client_order_id, role = EXCLUDED.role, side = EXCLUDED.side,"
    " quantity = EXCLUDED.quantity, price = EXCLUDED.price, executed_at = EXCLUDED.executed_at"
    " WHERE position_executions.position_id IS NULL"
    " RETURNING commission"
)
"""Book a fill once: a new row, or the completion of a row holding an early commission;
a replayed fill (row already complete) updates nothing and returns no row."""


async def test_a_fill_is_booked_once_by_exec_id(pool: Pool) -> None:
    await store(pool, new_position())
    row = execution_row()
    assert [dict(r) for r in await pool.fetch(_BOOK, *row.values())] == [{"commission": None}]
    assert await pool.fetch(_BOOK, *row.values()) == []  # the replay is recognised
    assert await pool.fetchval("SELECT count(*) FROM position_executions") == 1


async def test_a_commission_before_its_fill_waits_and_is_booked_with_it(pool: Pool) -> None:
    await store(pool, new_position())
    await insert(
        pool, "position_executions", exec_id="early", commission=Decimal("0.35"), commission_at=NOW
    )
    row = execution_row("early")
    booked = [dict(r) for r in await pool.fetch(_BOOK, *row.values())]
    assert booked == [{"commission": Decimal("0.35")}]  # the fill picks its commission up


async def test_a_late_commission_completes_the_fill(pool: Pool) -> None:
    await store(pool, new_position())
    await insert(pool, "position_executions", **execution_row())
    await pool.execute(
        "UPDATE position_executions SET commission = $1, commission_at = $2 WHERE exec_id = $3",
        Decimal("1.0125"),
        NOW,
        "0000e0d5.67a1b2c3.01.01",
    )
    stored = await pool.fetchval("SELECT commission FROM position_executions")
    assert stored == Decimal("1.0125")


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"exec_id": " "}, "position_executions_exec_id_not_blank"),
        ({"role": "hedge"}, "position_executions_role_known"),
        ({"side": "SHORT"}, "position_executions_side_known"),
        ({"quantity": Decimal(0)}, "position_executions_quantity_positive"),
        ({"price": Decimal("NaN")}, "position_executions_price_positive"),
        ({"client_order_id": "bad id"}, "position_executions_client_order_id_format"),
        ({"price": None}, "position_executions_fill_complete"),
        ({"position_id": None}, "position_executions_fill_complete"),
        ({"commission": SENTINEL, "commission_at": NOW}, "position_executions_commission_sane"),
        ({"commission": Decimal(0)}, "position_executions_commission_at_with_commission"),
    ],
)
async def test_bad_execution_rows_are_refused(
    pool: Pool, values: dict[str, Any], constraint: str
) -> None:
    await store(pool, new_position())
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "position_executions", **execution_row(**values))


async def test_a_row_with_neither_fill_nor_commission_is_refused(pool: Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="position_executions_fill_or_commission"):
        await insert(pool, "position_executions", exec_id="nothing")


async def test_a_fill_of_an_unknown_position_is_refused(pool: Pool) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="position_executions_position_fk"):
        await insert(pool, "position_executions", **execution_row())


# -- position_marks ---------------------------------------------------------------------


_MARK = (
    "INSERT INTO position_marks"
    " (position_id, mark_price, source, quantity, unrealized_pnl, marked_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (position_id) DO UPDATE SET mark_price = EXCLUDED.mark_price,"
    " source = EXCLUDED.source, quantity = EXCLUDED.quantity,"
    " unrealized_pnl = EXCLUDED.unrealized_pnl, marked_at = EXCLUDED.marked_at"
    " WHERE position_marks.marked_at <= EXCLUDED.marked_at"
)


async def test_the_newest_mark_wins(pool: Pool) -> None:
    await store(pool, opened(), opened_at=NOW)
    later = NOW + dt.timedelta(seconds=1)
    await pool.execute(_MARK, PID, Decimal("10.10"), "last", Decimal(100), Decimal("10.00"), later)
    await pool.execute(_MARK, PID, Decimal("9.90"), "mid", Decimal(100), Decimal("-10.00"), NOW)
    row = await pool.fetchrow("SELECT * FROM position_marks WHERE position_id = $1", PID)
    assert row is not None
    assert (row["mark_price"], row["unrealized_pnl"], row["marked_at"]) == (
        Decimal("10.10"),
        Decimal("10.00"),
        later,
    )


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"mark_price": Decimal(0)}, "position_marks_mark_price_positive"),
        ({"source": "close"}, "position_marks_source_known"),
        ({"unrealized_pnl": Decimal("NaN")}, "position_marks_unrealized_pnl_finite"),
        ({"quantity": Decimal(0)}, "position_marks_flat_is_zero"),
    ],
)
async def test_bad_marks_are_refused(pool: Pool, values: dict[str, Any], constraint: str) -> None:
    await store(pool, opened())
    row = {
        "position_id": PID,
        "mark_price": Decimal("10.10"),
        "source": "last",
        "quantity": Decimal(100),
        "unrealized_pnl": Decimal(10),
        "marked_at": NOW,
    }
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "position_marks", **(row | values))


# -- reconciliation_reports -------------------------------------------------------------


SNAPSHOT = uuid.UUID("0b8f7c1e-3a52-4d6e-9f0a-1234567890ab")


def report_row(**values: Any) -> dict[str, Any]:
    """An unknown-to-us holding of 30 MSFT short, from SNAPSHOT."""
    row: dict[str, Any] = {
        "portfolio_id": "alpha",
        "symbol": "MSFT",
        "ours": Decimal(0),
        "broker": Decimal(-30),
        "difference": Decimal(-30),
        "kind": "unknown_to_us",
        "snapshot_id": SNAPSHOT,
    }
    return row | values


async def test_each_drift_kind_is_stored(pool: Pool) -> None:
    await insert(pool, "reconciliation_reports", **report_row())
    await insert(
        pool,
        "reconciliation_reports",
        **report_row(
            symbol="AAPL",
            ours=Decimal(100),
            broker=Decimal(0),
            difference=Decimal(-100),
            kind="missing_at_broker",
        ),
    )
    await insert(
        pool,
        "reconciliation_reports",
        **report_row(
            symbol="IBM",
            ours=Decimal(100),
            broker=Decimal(60),
            difference=Decimal(-40),
            kind="quantity_mismatch",
            settling=True,
        ),
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM reconciliation_reports WHERE NOT resolved") == 3
    )


async def test_an_adoption_links_its_report_to_the_position_in_the_same_portfolio(
    pool: Pool,
) -> None:
    adopted = PositionState.adopted(
        position_id="ext-alpha-20250310-MSFT-0b8f7c1e",
        portfolio_id="alpha",
        symbol="MSFT",
        side=PositionSide.SHORT,
        quantity=Decimal(30),
        price=Decimal("410.10"),
    )
    await store(pool, adopted)
    await insert(
        pool,
        "reconciliation_reports",
        **report_row(
            adopted_position_id=adopted.position_id,
            resolved=True,
            resolved_at=NOW,
            resolution="adopted",
        ),
    )
    with pytest.raises(
        asyncpg.ForeignKeyViolationError, match="reconciliation_reports_adopted_position_fk"
    ):
        await insert(
            pool,
            "reconciliation_reports",
            **report_row(portfolio_id="beta", adopted_position_id=adopted.position_id),
        )


async def test_a_snapshot_reports_each_symbol_once(pool: Pool) -> None:
    await insert(pool, "reconciliation_reports", **report_row())
    with pytest.raises(
        asyncpg.UniqueViolationError, match="reconciliation_reports_one_per_snapshot_symbol"
    ):
        await insert(pool, "reconciliation_reports", **report_row())
    # Reports outside a snapshot are not merged.
    await insert(pool, "reconciliation_reports", **report_row(snapshot_id=None))
    await insert(pool, "reconciliation_reports", **report_row(snapshot_id=None))


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"portfolio_id": "a b"}, "reconciliation_reports_portfolio_id_slug"),
        ({"kind": "gone"}, "reconciliation_reports_kind_known"),
        ({"difference": Decimal(30)}, "reconciliation_reports_difference_is_broker_minus_ours"),
        (
            {"broker": Decimal(0), "difference": Decimal(0)},
            "reconciliation_reports_differs",
        ),
        ({"kind": "missing_at_broker"}, "reconciliation_reports_kind_matches_quantities"),
        ({"kind": "quantity_mismatch"}, "reconciliation_reports_kind_matches_quantities"),
        (
            {"ours": Decimal(10), "difference": Decimal(-40)},
            "reconciliation_reports_kind_matches_quantities",
        ),
        ({"broker": Decimal("NaN")}, "reconciliation_reports_broker_finite"),
        ({"resolved": True}, "reconciliation_reports_resolved_at_iff_resolved"),
        ({"resolved_at": NOW}, "reconciliation_reports_resolved_at_iff_resolved"),
        ({"resolution": " "}, "reconciliation_reports_resolution_not_blank"),
        (
            {
                "kind": "quantity_mismatch",
                "ours": Decimal(-10),
                "difference": Decimal(-20),
                "adopted_position_id": "x",
            },
            "reconciliation_reports_adoption_only_when_unknown",
        ),
    ],
)
async def test_bad_reports_are_refused(pool: Pool, values: dict[str, Any], constraint: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await insert(pool, "reconciliation_reports", **report_row(**values))
