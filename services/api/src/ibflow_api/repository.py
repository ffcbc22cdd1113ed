"""The SQL of the API: reads of order-manager's and position-monitor's tables, the
portfolio writes (with their ``PortfolioChanged`` in the outbox) and the audit log.

Listings are keyset-paginated, newest first: the cursor is the last row's sort key,
so a page is one index range scan however deep the caller goes, and rows inserted
meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg

from ibflow.bus import subjects
from ibflow.contracts import PortfolioChanged
from ibflow.db import AnyConnection, enqueue
from ibflow_api.errors import ApiError
from ibflow_api.schemas import (
    DayPosition,
    Execution,
    Order,
    PerformanceBucket,
    Portfolio,
    RecommendationOut,
    ReconciliationReport,
    Transaction,
)

NEW_YORK: Final = ZoneInfo("America/New_York")
MAX_PAGE: Final = 500


# ------------------------------------------------------------------ cursors


def encode_cursor(ts: dt.datetime, key: str | int) -> str:
    """An opaque cursor for the row sorted at ``(ts, key)``."""
    raw = json.dumps([ts.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, Any]:
    """``(ts, key)`` of a cursor; a 422 naming ``cursor`` when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = dt.datetime.fromisoformat(ts)
        if when.tzinfo is None or not isinstance(key, str | int):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_request", "cursor: not a cursor from this API") from exc
    return when, key


# ------------------------------------------------------------------ portfolios

_PORTFOLIO_COLUMNS: Final = ", ".join(Portfolio.model_fields)


def _portfolio(row: asyncpg.Record | None) -> Portfolio | None:
    return None if row is None else Portfolio.model_validate(dict(row))


async def get_portfolio(conn: AnyConnection, portfolio_id: str) -> Portfolio | None:
    """One portfolio, or ``None``."""
    row = await conn.fetchrow(
        f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios WHERE id = $1",  # noqa: S608 - constant columns
        portfolio_id,
    )
    return _portfolio(row)


async def default_portfolio(conn: AnyConnection, configured: str | None) -> Portfolio | None:
    """The configured default portfolio, else the first enabled one by id."""
    if configured is not None:
        return await get_portfolio(conn, configured)
    row = await conn.fetchrow(
        f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios WHERE enabled ORDER BY id LIMIT 1"  # noqa: S608
    )
    return _portfolio(row)


async def list_portfolios(conn: AnyConnection) -> list[Portfolio]:
    """Every portfolio, by id."""
    rows = await conn.fetch(f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios ORDER BY id")  # noqa: S608
    return [Portfolio.model_validate(dict(row)) for row in rows]


async def _check_client_id(
    conn: AnyConnection, host: str, port: int, client_id: int, portfolio_id: str
) -> None:
    other = await conn.fetchval(
        """
        SELECT id FROM portfolios
        WHERE broker_host = $1 AND broker_port = $2 AND id <> $4
          AND (client_id = $3 OR fallback_client_id = $3)
        """,
        host,
        port,
        client_id,
        portfolio_id,
    )
    if other is not None:
        raise ApiError(
            409,
            "conflict",
            f"client_id: {client_id} is already used by portfolio {other!r} on {host}:{port}",
        )


async def _announce(conn: AnyConnection, row: asyncpg.Record) -> None:
    """Bump the revision and put ``PortfolioChanged`` in the outbox (same transaction)."""
    revision = await conn.fetchval(
        "UPDATE portfolios SET revision = revision + 1 WHERE id = $1 RETURNING revision",
        row["id"],
    )
    event = PortfolioChanged(
        portfolio_id=row["id"],
        revision=revision,
        session_date=dt.datetime.now(NEW_YORK).date(),
        currency=row["currency"],
        cash_balance=row["cash"],
        trading_halted=row["trading_state"] == "halted",
    )
    await enqueue(conn, subjects.portfolio_changed(row["id"]), event)


async def insert_portfolio(conn: AnyConnection, values: dict[str, Any], actor: str) -> Portfolio:
    """Create a portfolio (409 when the id or the client id is taken)."""
    await _check_client_id(
        conn, values["broker_host"], values["broker_port"], values["client_id"], values["id"]
    )
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    try:
        row = await conn.fetchrow(
            f"INSERT INTO portfolios ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608 - columns from a model
            f" RETURNING *",
            *values.values(),
        )
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(409, "conflict", _unique_message(exc, values)) from None
    assert row is not None
    await _announce(conn, row)
    created = await get_portfolio(conn, row["id"])
    assert created is not None
    return created


async def update_portfolio(
    conn: AnyConnection, portfolio_id: str, changes: dict[str, Any], actor: str
) -> Portfolio:
    """Apply ``changes`` to a portfolio (404 unknown, 409 client id taken)."""
    current = await conn.fetchrow("SELECT * FROM portfolios WHERE id = $1 FOR UPDATE", portfolio_id)
    if current is None:
        raise ApiError(404, "not_found", f"portfolio {portfolio_id!r} does not exist")
    if changes:
        merged = {**dict(current), **changes}
        await _check_client_id(
            conn, merged["broker_host"], merged["broker_port"], merged["client_id"], portfolio_id
        )
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
        try:
            row = await conn.fetchrow(
                f"UPDATE portfolios SET {sets} WHERE id = $1 RETURNING *",  # noqa: S608 - columns from a model
                portfolio_id,
                *changes.values(),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ApiError(409, "conflict", _unique_message(exc, merged)) from None
        except asyncpg.CheckViolationError as exc:
            raise ApiError(422, "invalid_request", f"{exc.constraint_name}: {exc}") from None
        assert row is not None
        await _announce(conn, row)
    updated = await get_portfolio(conn, portfolio_id)
    assert updated is not None
    return updated


def _unique_message(exc: asyncpg.UniqueViolationError, values: dict[str, Any]) -> str:
    constraint = exc.constraint_name or ""
    if "client_id" in constraint:
        return f"client_id: {values.get('client_id')} is already used by another portfolio"
    if constraint == "portfolios_pkey":
        return f"id: portfolio {values.get('id')!r} already exists"
    return f"{constraint}: already exists"


# ------------------------------------------------------------------ audit


async def audit(
    conn: AnyConnection,
    *,
    actor: str,
    command: str,
    result: str,
    subject: str | None = None,
    portfolio_id: str | None = None,
    client_order_id: str | None = None,
    payload: Any = None,
    detail: str | None = None,
) -> None:
    """Append a row to ``audit_log`` (order-manager's append-only table)."""
    await conn.execute(
        """
        INSERT INTO audit_log
            (actor, command, subject, portfolio_id, client_order_id, payload, result, detail)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        actor,
        command,
        subject,
        portfolio_id,
        client_order_id,
        payload,
        result,
        detail,
    )


# ------------------------------------------------------------------ orders


_DASHBOARD_ORDERS: Final = """
SELECT o.*, p.client_id AS p_client_id, p.account AS p_account, i.con_id
FROM orders o
JOIN portfolios p ON p.id = o.portfolio_id
LEFT JOIN instruments i ON i.symbol = o.symbol
WHERE o.portfolio_id = $1 AND ($2::boolean OR o.status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')
      OR o.updated_at >= $3)
ORDER BY o.created_at DESC, o.client_order_id DESC
LIMIT $4
"""


async def dashboard_orders(
    conn: AnyConnection, portfolio_id: str, *, include_all: bool, since: dt.datetime, limit: int
) -> list[asyncpg.Record]:
    """Working orders plus those changed since ``since`` (or all), newest first."""
    return await conn.fetch(_DASHBOARD_ORDERS, portfolio_id, include_all, since, limit)


async def find_order(conn: AnyConnection, client_order_id: str) -> asyncpg.Record | None:
    """The order with this client order id, in whatever portfolio."""
    return await conn.fetchrow(
        "SELECT client_order_id, portfolio_id, status FROM orders WHERE client_order_id = $1",
        client_order_id,
    )


def _filters(base: Sequence[str], args: list[Any], **wanted: Any) -> list[str]:
    clauses = list(base)
    for column, value in wanted.items():
        if value is None:
            continue
        args.append(value)
        operator = ">=" if column.endswith("_from") else "<" if column.endswith("_to") else "="
        name = column.removesuffix("_from").removesuffix("_to")
        clauses.append(f"{name} {operator} ${len(args)}")
    return clauses


async def _page(
    conn: AnyConnection,
    *,
    table: str,
    ts_column: str,
    key_column: str,
    portfolio_id: str,
    cursor: str | None,
    limit: int,
    **filters: Any,
) -> tuple[list[asyncpg.Record], str | None]:
    args: list[Any] = [portfolio_id]
    clauses = _filters(["portfolio_id = $1"], args, **filters)
    if cursor is not None:
        ts, key = decode_cursor(cursor)
        args.extend([ts, key if isinstance(key, str) or key_column != "id" else int(key)])
        clauses.append(f"({ts_column}, {key_column}) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT * FROM {table} WHERE {' AND '.join(clauses)}"  # noqa: S608 - names are constants
        f" ORDER BY {ts_column} DESC, {key_column} DESC LIMIT ${len(args)}",
        *args,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][ts_column], rows[-1][key_column]) if more else None
    return rows, next_cursor


async def orders_page(
    conn: AnyConnection,
    portfolio_id: str,
    *,
    cursor: str | None,
    limit: int,
    status: str | None = None,
    symbol: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> tuple[list[Order], str | None]:
    """A page of a portfolio's orders, newest first."""
    rows, nxt = await _page(
        conn,
        table="orders",
        ts_column="created_at",
        key_column="client_order_id",
        portfolio_id=portfolio_id,
        cursor=cursor,
        limit=limit,
        status=status,
        symbol=symbol,
        created_at_from=created_from,
        created_at_to=created_to,
    )
    return [Order.model_validate(dict(r)) for r in rows], nxt


async def executions_page(
    conn: AnyConnection,
    portfolio_id: str,
    *,
    cursor: str | None,
    limit: int,
    symbol: str | None = None,
    client_order_id: str | None = None,
) -> tuple[list[Execution], str | None]:
    """A page of a portfolio's executions, newest first."""
    rows, nxt = await _page(
        conn,
        table="executions",
        ts_column="executed_at",
        key_column="exec_id",
        portfolio_id=portfolio_id,
        cursor=cursor,
        limit=limit,
        symbol=symbol,
        client_order_id=client_order_id,
    )
    return [Execution.model_validate(dict(r)) for r in rows], nxt


async def transactions_page(
    conn: AnyConnection, portfolio_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Transaction], str | None]:
    """A page of a portfolio's cash transactions, newest first."""
    rows, nxt = await _page(
        conn,
        table="transactions",
        ts_column="created_at",
        key_column="id",
        portfolio_id=portfolio_id,
        cursor=cursor,
        limit=limit,
    )
    return [Transaction.model_validate(dict(r)) for r in rows], nxt


# ------------------------------------------------------------------ positions


_TABLES_SEEN: set[str] = set()
"""Tables of other packages found to exist (they are never dropped, so once is enough)."""


async def _has_table(conn: AnyConnection, name: str) -> bool:
    if name in _TABLES_SEEN:
        return True
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        _TABLES_SEEN.add(name)
        return True
    return False


async def day_positions(
    conn: AnyConnection, portfolio_id: str, *, session_date: dt.date | None, active_only: bool
) -> list[DayPosition]:
    """Day-trade positions with their marks (empty when position-monitor's tables are
    absent: that service owns them)."""
    if not await _has_table(conn, "positions"):
        return []
    rows = await conn.fetch(
        """
        SELECT p.*, m.mark_price, m.unrealized_pnl, m.marked_at
        FROM positions p LEFT JOIN position_marks m ON m.position_id = p.id
        WHERE p.portfolio_id = $1 AND ($2::date IS NULL OR p.session_date = $2)
          AND (NOT $3 OR p.status IN ('PENDING', 'OPEN', 'CLOSING'))
        ORDER BY p.created_at DESC, p.id DESC
        LIMIT 1000
        """,
        portfolio_id,
        session_date,
        active_only,
    )
    return [DayPosition.model_validate(dict(r)) for r in rows]


async def symbol_figures(
    conn: AnyConnection, portfolio_id: str, session_date: dt.date
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Per symbol, among the portfolio's positions (position-monitor's figures): the
    latest mark price, and the session's realized P&L."""
    if not await _has_table(conn, "position_marks"):
        return {}, {}
    rows = await conn.fetch(
        """
        SELECT p.symbol,
               (SELECT m.mark_price FROM position_marks m JOIN positions q ON q.id = m.position_id
                WHERE q.portfolio_id = $1 AND q.symbol = p.symbol
                ORDER BY m.marked_at DESC LIMIT 1) AS mark,
               sum(p.realized_pnl) FILTER (WHERE p.session_date = $2) AS pnl
        FROM positions p WHERE p.portfolio_id = $1
        GROUP BY p.symbol
        """,
        portfolio_id,
        session_date,
    )
    marks = {r["symbol"]: r["mark"] for r in rows if r["mark"] is not None}
    realized = {r["symbol"]: r["pnl"] for r in rows if r["pnl"] is not None}
    return marks, realized


# ------------------------------------------------------------------ recommendations etc.


async def recommendations(
    conn: AnyConnection, portfolio_id: str, session_date: dt.date | None, status: str | None
) -> list[RecommendationOut]:
    """A portfolio's recommendations (of one session, one status), newest session first."""
    rows = await conn.fetch(
        """
        SELECT * FROM recommendations
        WHERE portfolio_id = $1 AND ($2::date IS NULL OR session_date = $2)
          AND ($3::text IS NULL OR status = $3)
        ORDER BY session_date DESC, symbol LIMIT 1000
        """,
        portfolio_id,
        session_date,
        status,
    )
    return [RecommendationOut.model_validate(dict(r)) for r in rows]


async def reconciliation_reports(
    conn: AnyConnection, portfolio_id: str, *, unresolved_only: bool, limit: int
) -> list[ReconciliationReport]:
    """A portfolio's reconciliation differences, newest first."""
    if not await _has_table(conn, "reconciliation_reports"):
        return []
    rows = await conn.fetch(
        """
        SELECT * FROM reconciliation_reports
        WHERE portfolio_id = $1 AND (NOT $2 OR NOT resolved)
        ORDER BY detected_at DESC, id DESC LIMIT $3
        """,
        portfolio_id,
        unresolved_only,
        limit,
    )
    return [ReconciliationReport.model_validate(dict(r)) for r in rows]


_PERFORMANCE: Final = """
SELECT date_trunc($4, session_date)::date AS period_start,
       count(*) AS trades,
       count(*) FILTER (WHERE realized_pnl > 0) AS wins,
       count(*) FILTER (WHERE realized_pnl < 0) AS losses,
       coalesce(sum(realized_pnl), 0) AS realized_pnl,
       coalesce(sum(commissions), 0) AS commissions
FROM positions
WHERE portfolio_id = $1 AND status = 'CLOSED' AND session_date BETWEEN $2 AND $3
GROUP BY 1 ORDER BY 1
"""


def _bucket(row: asyncpg.Record | dict[str, Any]) -> PerformanceBucket:
    trades = int(row["trades"])
    win_rate = (Decimal(int(row["wins"])) / trades).quantize(Decimal("0.0001")) if trades else None
    return PerformanceBucket(
        period_start=row["period_start"],
        trades=trades,
        wins=int(row["wins"]),
        losses=int(row["losses"]),
        win_rate=win_rate,
        realized_pnl=row["realized_pnl"],
        commissions=row["commissions"],
    )


async def performance(
    conn: AnyConnection, portfolio_id: str, since: dt.date, until: dt.date
) -> tuple[PerformanceBucket, list[PerformanceBucket], list[PerformanceBucket]]:
    """Closed positions' results: the total, by day and by week (weeks start Monday)."""
    if not await _has_table(conn, "positions"):
        days: list[asyncpg.Record] = []
        weeks: list[asyncpg.Record] = []
    else:
        days = await conn.fetch(_PERFORMANCE, portfolio_id, since, until, "day")
        weeks = await conn.fetch(_PERFORMANCE, portfolio_id, since, until, "week")
    total = {
        "period_start": since,
        "trades": sum(int(r["trades"]) for r in days),
        "wins": sum(int(r["wins"]) for r in days),
        "losses": sum(int(r["losses"]) for r in days),
        "realized_pnl": sum((r["realized_pnl"] for r in days), Decimal(0)),
        "commissions": sum((r["commissions"] for r in days), Decimal(0)),
    }
    return _bucket(total), [_bucket(r) for r in days], [_bucket(r) for r in weeks]
