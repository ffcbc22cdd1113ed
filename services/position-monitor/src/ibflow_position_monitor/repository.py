"""SQL of the position-monitor: positions and their executions, parked broker facts,
broker snapshots' holdings, reconciliation reports and marks.

A position is stored as the facts :class:`~.domain.PositionState` is rebuilt from (the
``positions`` row plus its ``position_executions``) and the figures derived from them,
written together by :func:`save` so that the row's CHECKs see a consistent picture.
Every function takes a connection; the caller owns the transaction (and the row lock:
``lock=True`` reads with ``FOR UPDATE``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import asyncpg

from ibflow.contracts import PositionChanged
from ibflow.contracts.enums import ExitReason, OrderSide, PositionSide, PositionStatus
from ibflow.db.pool import AnyConnection
from ibflow_position_monitor.domain import (
    BookedExecution,
    Drift,
    FillRole,
    Mark,
    PositionState,
    Transition,
)

__all__ = [
    "Stored",
    "active_positions",
    "delete_parked",
    "insert_position",
    "insert_reconciliation_report",
    "load",
    "load_by_order",
    "lock_execution",
    "lock_positions",
    "park_commission",
    "park_fact",
    "parked_commission",
    "parked_for",
    "record_broker_position",
    "save",
    "snapshot_holdings",
    "to_event",
    "upsert_marks",
]

_BY_ID: Final = "SELECT p.* FROM positions p WHERE p.id = $1"
_BY_ID_LOCKED: Final = _BY_ID + " FOR UPDATE"
_BY_ORDER: Final = (
    "SELECT p.* FROM positions p WHERE p.entry_client_order_id = $1"
    " OR p.exit_client_order_ids @> ARRAY[$1]::text[] ORDER BY p.created_at DESC LIMIT 1"
)
_ACTIVE: Final = ("PENDING", "OPEN", "CLOSING")


@dataclass(frozen=True, slots=True)
class Stored:
    """A position as stored: its domain state plus what only the table holds."""

    state: PositionState
    session_date: dt.date
    revision: int
    opened_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    exit_order: Mapping[str, Any] | None = None
    """The exact ``SubmitOrder`` body of the current exit (re-sent if unacknowledged)."""
    exit_accepted: bool = False
    """The order-manager acknowledged the current exit (it has the order)."""
    exit_sent_at: dt.datetime | None = None
    exit_refusal: str | None = None
    """Why the order-manager refused the last exit for good (tick exits then wait)."""
    executed_at: Mapping[str, dt.datetime] = field(default_factory=dict)

    @property
    def position_id(self) -> str:
        """The position's id."""
        return self.state.position_id

    @property
    def status(self) -> PositionStatus:
        """The derived status."""
        return self.state.status


def _exec_id_hash(exec_id: str) -> str:
    return f"pm-exec:{exec_id}"


async def lock_execution(conn: AnyConnection, exec_id: str) -> None:
    """Serialise the booking of ``exec_id`` and of its commission (transaction-scoped
    advisory lock): the commission is then either parked before the fill reads it, or
    applied after the fill is booked, never lost in between."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _exec_id_hash(exec_id))


def _order_hash(client_order_id: str) -> str:
    return f"pm-order:{client_order_id}"


async def lock_order_facts(conn: AnyConnection, client_order_id: str) -> None:
    """Serialise parking a fact of ``client_order_id`` and draining the facts parked for
    it (transaction-scoped advisory lock): a fact is then either parked before a drain
    reads the parked facts, or parked after the draining transaction committed, when the
    position that knows the order is visible (and the fact is applied to it instead)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _order_hash(client_order_id))


def _state(row: asyncpg.Record, executions: Sequence[asyncpg.Record]) -> PositionState:
    side = PositionSide(row["side"])
    return PositionState(
        position_id=row["id"],
        portfolio_id=row["portfolio_id"],
        symbol=row["symbol"],
        side=side,
        planned_quantity=row["planned_quantity"],
        entry_client_order_id=row["entry_client_order_id"],
        multiplier=row["multiplier"],
        stop_loss=row["stop_loss"],
        take_profit=row["take_profit"],
        external=row["external"],
        executions=tuple(
            BookedExecution(
                exec_id=e["exec_id"],
                client_order_id=e["client_order_id"],
                role=FillRole(e["role"]),
                shares=e["quantity"],
                price=e["price"],
                commission=e["commission"],
            )
            for e in executions
        ),
        entry_done=row["entry_done"],
        entry_broker_filled=row["entry_broker_filled"],
        exit_client_order_ids=tuple(row["exit_client_order_ids"]),
        exit_reason=None if row["exit_reason"] is None else ExitReason(row["exit_reason"]),
        exit_working=row["exit_working"],
        exit_broker_filled=row["exit_broker_filled"],
    )


def _stored(row: asyncpg.Record, executions: Sequence[asyncpg.Record]) -> Stored:
    order = row["exit_order"]
    return Stored(
        state=_state(row, executions),
        session_date=row["session_date"],
        revision=row["revision"],
        opened_at=row["opened_at"],
        closed_at=row["closed_at"],
        exit_order=json.loads(order) if isinstance(order, str) else order,
        exit_accepted=row["exit_accepted"],
        exit_sent_at=row["exit_sent_at"],
        exit_refusal=row["exit_refusal"],
        executed_at={e["exec_id"]: e["executed_at"] for e in executions},
    )


async def _executions(conn: AnyConnection, position_ids: Sequence[str]) -> dict[str, list[Any]]:
    rows = await conn.fetch(
        "SELECT * FROM position_executions WHERE position_id = ANY($1::text[])"
        " ORDER BY received_at, exec_id",
        list(position_ids),
    )
    by_position: dict[str, list[Any]] = {pid: [] for pid in position_ids}
    for row in rows:
        by_position[row["position_id"]].append(row)
    return by_position


async def load(conn: AnyConnection, position_id: str, *, lock: bool = False) -> Stored | None:
    """The position ``position_id`` (locked with ``lock``), or ``None``.

    Row and executions are read in one snapshot (outside a transaction, a read-only
    repeatable-read one), so a fill committed in between cannot pair a new execution
    with an old row."""
    if not conn.is_in_transaction():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await load(conn, position_id, lock=lock)
    sql = _BY_ID_LOCKED if lock else _BY_ID
    row = await conn.fetchrow(sql, position_id)
    if row is None:
        return None
    executions = await _executions(conn, [position_id])
    return _stored(row, executions[position_id])


async def load_by_order(
    conn: AnyConnection, client_order_id: str, *, lock: bool = False
) -> Stored | None:
    """The position whose entry or one of whose exits is ``client_order_id``."""
    sql = _BY_ORDER + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, client_order_id)
    if row is None:
        return None
    executions = await _executions(conn, [row["id"]])
    return _stored(row, executions[row["id"]])


async def order_known(conn: AnyConnection, client_order_id: str) -> bool:
    """Whether a position knows ``client_order_id`` (as :func:`load_by_order` finds it;
    no lock taken, nothing waited for)."""
    return await conn.fetchval(f"SELECT EXISTS ({_BY_ORDER})", client_order_id) is True


async def lock_positions(conn: AnyConnection, position_ids: Sequence[str]) -> bool:
    """Lock the positions of ``position_ids`` that exist (waiting for a transaction that
    holds one); whether any exists."""
    rows = await conn.fetch(
        "SELECT id FROM positions WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        list(position_ids),
    )
    return bool(rows)


async def active_positions(
    conn: AnyConnection,
    *,
    portfolio_id: str | None = None,
    statuses: Iterable[str] = _ACTIVE,
) -> list[Stored]:
    """Positions in ``statuses`` (default: the active ones), of one portfolio or all,
    read in one snapshot (see :func:`load`)."""
    if not conn.is_in_transaction():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await active_positions(conn, portfolio_id=portfolio_id, statuses=statuses)
    rows = await conn.fetch(
        "SELECT p.* FROM positions p WHERE p.status = ANY($1::text[])"
        " AND ($2::text IS NULL OR p.portfolio_id = $2) ORDER BY p.portfolio_id, p.symbol, p.id",
        list(statuses),
        portfolio_id,
    )
    executions = await _executions(conn, [r["id"] for r in rows])
    return [_stored(r, executions[r["id"]]) for r in rows]


def _figures(state: PositionState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "quantity": state.quantity,
        "entry_quantity": state.entry_quantity,
        "exit_quantity": state.exit_quantity,
        "entry_notional": state.entry_notional,
        "exit_notional": state.exit_notional,
        "avg_entry_price": state.avg_entry_price,
        "avg_exit_price": state.avg_exit_price,
        "stop_loss": state.stop_loss,
        "take_profit": state.take_profit,
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
        "planned_quantity": state.planned_quantity,
    }


async def insert_position(
    conn: AnyConnection,
    state: PositionState,
    *,
    session_date: dt.date,
    now: dt.datetime,
    executed_at: Mapping[str, dt.datetime] | None = None,
) -> Stored:
    """Insert a new position (revision 1) and its executions (an adopted position's
    stand-in). Raises :class:`asyncpg.UniqueViolationError` when the portfolio already
    has an active position in the symbol for the session, or the entry order is taken."""
    figures = _figures(state)
    status = state.status
    opened_at = now if status in (PositionStatus.OPEN, PositionStatus.CLOSING) else None
    columns = {
        "id": state.position_id,
        "portfolio_id": state.portfolio_id,
        "symbol": state.symbol,
        "session_date": session_date,
        "side": state.side.value,
        "external": state.external,
        "multiplier": state.multiplier,
        "entry_client_order_id": state.entry_client_order_id,
        "opened_at": opened_at,
        **figures,
    }
    names = ", ".join(columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    # column names are this module's constants, values are parameters
    sql = f"INSERT INTO positions ({names}) VALUES ({params})"  # noqa: S608
    await conn.execute(sql, *columns.values())
    await _write_executions(conn, state, (), executed_at or {}, now)
    stored = await load(conn, state.position_id)
    assert stored is not None
    return stored


async def _write_executions(
    conn: AnyConnection,
    state: PositionState,
    previous: Sequence[BookedExecution],
    executed_at: Mapping[str, dt.datetime],
    now: dt.datetime,
) -> None:
    before = {e.exec_id: e for e in previous}
    for execution in state.executions:
        if before.get(execution.exec_id) == execution:
            continue
        side = state.entry_side if execution.role is FillRole.ENTRY else state.exit_side
        await conn.execute(
            """
            INSERT INTO position_executions (exec_id, position_id, client_order_id, role, side,
                quantity, price, executed_at, commission, commission_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                    CASE WHEN $9::numeric IS NULL THEN NULL ELSE $10::timestamptz END)
            ON CONFLICT (exec_id) DO UPDATE SET
                position_id = EXCLUDED.position_id,
                client_order_id = EXCLUDED.client_order_id,
                role = EXCLUDED.role,
                side = EXCLUDED.side,
                quantity = EXCLUDED.quantity,
                price = EXCLUDED.price,
                executed_at = EXCLUDED.executed_at,
                commission = COALESCE(EXCLUDED.commission, position_executions.commission),
                commission_at = COALESCE(EXCLUDED.commission_at, position_executions.commission_at)
            """,
            execution.exec_id,
            state.position_id,
            execution.client_order_id,
            execution.role.value,
            side.value,
            execution.shares,
            execution.price,
            executed_at.get(execution.exec_id, now),
            execution.commission,
            now,
        )


async def save(
    conn: AnyConnection,
    stored: Stored,
    transition: Transition,
    *,
    now: dt.datetime,
    executed_at: Mapping[str, dt.datetime] | None = None,
    exit_order: Mapping[str, Any] | None = None,
    exit_accepted: bool | None = None,
    exit_refusal: str | bool | None = False,
) -> Stored:
    """Write ``transition.state`` over ``stored`` (revision + 1) with its new executions.

    ``exit_order``: the ``SubmitOrder`` body of a new exit (sets ``exit_sent_at``);
    ``exit_accepted``: the order-manager's acknowledgement; ``exit_refusal``: a string
    sets it, ``None`` clears it, ``False`` (default) keeps it.
    """
    state = transition.state
    await _write_executions(conn, state, transition.previous.executions, executed_at or {}, now)
    figures = _figures(state)
    status = state.status
    opened_at = stored.opened_at
    if opened_at is None and status in (
        PositionStatus.OPEN,
        PositionStatus.CLOSING,
        PositionStatus.CLOSED,
    ):
        opened_at = now
    closed_at = (stored.closed_at or now) if status is PositionStatus.CLOSED else None
    extra: dict[str, Any] = {"opened_at": opened_at, "closed_at": closed_at}
    if exit_order is not None:
        extra["exit_order"] = json.dumps(dict(exit_order), default=str)
        extra["exit_sent_at"] = now
        extra["exit_accepted"] = False
    if exit_accepted is not None:
        extra["exit_accepted"] = exit_accepted
    if exit_refusal is not False:
        extra["exit_refusal"] = exit_refusal
    columns = {**figures, **extra}
    sets = ", ".join(
        f"{name} = ${i}::jsonb" if name == "exit_order" else f"{name} = ${i}"
        for i, name in enumerate(columns, start=2)
    )
    # column names are this module's constants, values are parameters
    sql = f"UPDATE positions SET {sets}, revision = revision + 1 WHERE id = $1"  # noqa: S608
    await conn.execute(
        sql,
        state.position_id,
        *columns.values(),
    )
    reloaded = await load(conn, state.position_id)
    assert reloaded is not None
    return reloaded


def to_event(stored: Stored) -> PositionChanged:
    """The ``PositionChanged`` of ``stored`` at its revision."""
    state = stored.state
    return PositionChanged(
        portfolio_id=state.portfolio_id,
        position_id=state.position_id,
        revision=stored.revision,
        symbol=state.symbol,
        side=state.side,
        status=state.status,
        planned_quantity=state.planned_quantity,
        quantity=state.quantity,
        entry_client_order_id=state.entry_client_order_id,
        exit_client_order_id=state.exit_client_order_id,
        avg_entry_price=state.avg_entry_price,
        avg_exit_price=state.avg_exit_price,
        stop_loss=state.stop_loss,
        take_profit=state.take_profit,
        exit_reason=state.exit_reason,
        realized_pnl=state.realized_pnl,
        commission=state.commission,
        opened_at=stored.opened_at,
        closed_at=stored.closed_at,
    )


# -- commissions that overtook their fill ------------------------------------------


async def parked_commission(conn: AnyConnection, exec_id: str) -> Decimal | None:
    """The commission stored for ``exec_id`` before its fill was booked, if any."""
    value: Decimal | None = await conn.fetchval(
        "SELECT commission FROM position_executions WHERE exec_id = $1 AND position_id IS NULL",
        exec_id,
    )
    return value


async def booked_position_of(conn: AnyConnection, exec_id: str) -> str | None:
    """The position ``exec_id`` is booked against, if it is."""
    value: str | None = await conn.fetchval(
        "SELECT position_id FROM position_executions WHERE exec_id = $1", exec_id
    )
    return value


async def park_commission(
    conn: AnyConnection, exec_id: str, commission: Decimal, now: dt.datetime
) -> None:
    """Keep a commission whose fill is not booked against a position (yet)."""
    await conn.execute(
        """
        INSERT INTO position_executions (exec_id, commission, commission_at) VALUES ($1, $2, $3)
        ON CONFLICT (exec_id) DO UPDATE SET commission = EXCLUDED.commission,
            commission_at = EXCLUDED.commission_at
        """,
        exec_id,
        commission,
        now,
    )


# -- broker facts about orders no position knows yet -------------------------------


async def park_fact(
    conn: AnyConnection, client_order_id: str, kind: str, msg_id: str, payload: str
) -> None:
    """Keep a status or execution of ``client_order_id`` until a position claims it."""
    await conn.execute(
        "INSERT INTO position_parked_facts (client_order_id, kind, msg_id, payload)"
        " VALUES ($1, $2, $3, $4::text::jsonb) ON CONFLICT (msg_id) DO NOTHING",
        client_order_id,
        kind,
        msg_id,
        payload,
    )


async def parked_for(conn: AnyConnection, client_order_id: str) -> list[asyncpg.Record]:
    """The facts parked for ``client_order_id``, oldest first (locked)."""
    return list(
        await conn.fetch(
            "SELECT id, kind, msg_id, payload::text AS payload FROM position_parked_facts"
            " WHERE client_order_id = $1 ORDER BY id FOR UPDATE",
            client_order_id,
        )
    )


async def delete_parked(conn: AnyConnection, ids: Sequence[int]) -> None:
    """Forget parked facts once applied."""
    if ids:
        await conn.execute(
            "DELETE FROM position_parked_facts WHERE id = ANY($1::bigint[])", list(ids)
        )


# -- the broker's holdings and reconciliation ---------------------------------------


async def record_broker_position(
    conn: AnyConnection,
    *,
    snapshot_id: uuid.UUID,
    portfolio_id: str,
    account_id: str,
    con_id: int,
    symbol: str,
    position: Decimal,
    avg_cost: Decimal,
) -> None:
    """Keep one holding of a broker snapshot (idempotent)."""
    await conn.execute(
        """
        INSERT INTO broker_positions (snapshot_id, portfolio_id, account_id, con_id, symbol,
            position, avg_cost)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
        """,
        snapshot_id,
        portfolio_id,
        account_id,
        con_id,
        symbol,
        position,
        avg_cost,
    )


@dataclass(frozen=True, slots=True)
class Holdings:
    """A snapshot's holdings: how many rows, and per symbol the signed quantity and
    IB's average cost."""

    rows: int
    quantities: dict[str, Decimal]
    avg_costs: dict[str, Decimal]


async def snapshot_holdings(
    conn: AnyConnection, snapshot_id: uuid.UUID, account_id: str | None = None
) -> Holdings:
    """The holdings recorded for ``snapshot_id`` (``rows`` counts every account's; the
    quantities are ``account_id``'s only, when given)."""
    rows = await conn.fetch(
        "SELECT account_id, symbol, position, avg_cost FROM broker_positions"
        " WHERE snapshot_id = $1",
        snapshot_id,
    )
    quantities: dict[str, Decimal] = {}
    costs: dict[str, Decimal] = {}
    for row in rows:
        if account_id is not None and row["account_id"] != account_id:
            continue
        quantities[row["symbol"]] = quantities.get(row["symbol"], Decimal(0)) + row["position"]
        costs[row["symbol"]] = row["avg_cost"]
    return Holdings(len(rows), quantities, costs)


async def insert_reconciliation_report(
    conn: AnyConnection,
    portfolio_id: str,
    drift: Drift,
    *,
    snapshot_id: uuid.UUID | None,
    adopted_position_id: str | None,
) -> bool:
    """One drift row (once per snapshot and symbol); ``True`` if it was new."""
    status = await conn.execute(
        """
        INSERT INTO reconciliation_reports (portfolio_id, symbol, ours, broker, difference,
            kind, settling, snapshot_id, adopted_position_id, resolved, resolved_at, resolution)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                CASE WHEN $10 THEN now() ELSE NULL END,
                CASE WHEN $10 THEN 'adopted as ' || $9 ELSE NULL END)
        ON CONFLICT (portfolio_id, snapshot_id, symbol) DO NOTHING
        """,
        portfolio_id,
        drift.symbol,
        drift.ours,
        drift.broker,
        drift.difference,
        drift.kind.value,
        drift.settling,
        snapshot_id,
        adopted_position_id,
        adopted_position_id is not None,
    )
    return status.endswith(" 1")


async def resolve_reports(
    conn: AnyConnection, portfolio_id: str, still_drifting: Iterable[str]
) -> None:
    """Mark open drift rows of symbols no longer drifting as resolved."""
    await conn.execute(
        """
        UPDATE reconciliation_reports SET resolved = true, resolved_at = now(),
            resolution = 'in sync at a later reconciliation'
        WHERE portfolio_id = $1 AND NOT resolved AND NOT (symbol = ANY($2::text[]))
        """,
        portfolio_id,
        list(still_drifting),
    )


async def open_drift_counts(conn: AnyConnection) -> dict[str, int]:
    """Unresolved drift rows per portfolio."""
    rows = await conn.fetch(
        "SELECT portfolio_id, count(*) AS n FROM reconciliation_reports WHERE NOT resolved"
        " GROUP BY portfolio_id"
    )
    return {row["portfolio_id"]: row["n"] for row in rows}


# -- marks ---------------------------------------------------------------------------


async def upsert_marks(conn: AnyConnection, marks: Iterable[Mark]) -> None:
    """Keep the newest mark of each position.

    One atomic ``executemany``: it holds each row it wrote until the end, so rows are
    written in ``position_id`` order. Two replicas flush the same positions (listed in
    the order each learnt of them): in any other order they could each hold a row the
    other waits for (a deadlock)."""
    rows = [
        (
            m.position_id,
            m.price,
            m.source.value,
            m.quantity,
            m.unrealized_pnl,
            m.delayed,
            m.marked_at,
        )
        for m in sorted(marks, key=lambda m: m.position_id)
    ]
    if not rows:
        return
    await conn.executemany(
        """
        INSERT INTO position_marks (position_id, mark_price, source, quantity, unrealized_pnl,
            delayed, marked_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (position_id) DO UPDATE SET mark_price = EXCLUDED.mark_price,
            source = EXCLUDED.source, quantity = EXCLUDED.quantity,
            unrealized_pnl = EXCLUDED.unrealized_pnl, delayed = EXCLUDED.delayed,
            marked_at = EXCLUDED.marked_at
        WHERE position_marks.marked_at <= EXCLUDED.marked_at
        """,
        rows,
    )


def side_of_entry(side: OrderSide) -> PositionSide:
    """The position an entry on ``side`` opens: BUY → LONG, SELL → SHORT."""
    return PositionSide.LONG if side is OrderSide.BUY else PositionSide.SHORT
