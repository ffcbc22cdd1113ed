"""SQL of the order-manager: portfolios, instruments, orders, executions, transactions,
recommendations and the audit log (tables of this package's migrations).

Plain asyncpg; every function takes the connection of the caller's transaction, so the
caller decides what commits together. Rows come back as frozen dataclasses; an order's
lifecycle facts are rebuilt as a :class:`~ibflow_order_manager.domain.OrderState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ibflow.contracts import (
    OrderBookUpdated,
    OrderIntent,
    OrderPurpose,
    OrderSide,
    OrderStatus,
    OrderType,
    Recommendation,
    TimeInForce,
)
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import ExitReason
from ibflow.db.pool import AnyConnection
from ibflow_order_manager.domain import BrokerOutcome, OrderState, RiskLimits, Transition
from ibflow_order_manager.domain.lifecycle import timestamp_column

ZERO = Decimal(0)

WORKING_STATUSES: tuple[str, ...] = (
    OrderStatus.PENDING,
    OrderStatus.SUBMITTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.CANCEL_REQUESTED,
    OrderStatus.UNKNOWN,
)
"""Statuses of orders that may still trade (not terminal)."""


# ---------------------------------------------------------------------- portfolios


@dataclass(frozen=True, slots=True)
class Portfolio:
    """The order-manager's columns of a ``portfolios`` row."""

    id: str
    currency: str
    cash: Decimal
    reserved_cash: Decimal
    fractional_shares: bool
    limits: RiskLimits
    halted: bool
    halted_reason: str | None
    enabled: bool
    stale_order_minutes: int
    revision: int
    reservation_buffer: Decimal
    cancel_entries_on_halt: bool

    @property
    def available_cash(self) -> Decimal:
        """Cash not reserved by working buys."""
        return self.cash - self.reserved_cash


_PORTFOLIO_COLUMNS = """
    id, currency, cash, reserved_cash, fractional_shares, max_order_value,
    max_position_value, max_open_orders, max_daily_loss, trading_state, halted_reason,
    enabled, stale_order_minutes, revision, reservation_buffer, cancel_entries_on_halt
"""


_PORTFOLIO_NAMES = tuple(name.strip() for name in _PORTFOLIO_COLUMNS.split(","))


def _portfolio(row: asyncpg.Record, prefix: str = "") -> Portfolio:
    def col(name: str) -> Any:
        return row[prefix + name]

    return Portfolio(
        id=col("id"),
        currency=col("currency"),
        cash=col("cash"),
        reserved_cash=col("reserved_cash"),
        fractional_shares=col("fractional_shares"),
        limits=RiskLimits(
            max_order_value=col("max_order_value"),
            max_position_value=col("max_position_value"),
            max_open_orders=col("max_open_orders"),
            max_daily_loss=col("max_daily_loss"),
        ),
        halted=col("trading_state") == "halted",
        halted_reason=col("halted_reason"),
        enabled=col("enabled"),
        stale_order_minutes=col("stale_order_minutes"),
        revision=col("revision"),
        reservation_buffer=col("reservation_buffer"),
        cancel_entries_on_halt=col("cancel_entries_on_halt"),
    )


async def get_portfolio(
    conn: AnyConnection, portfolio_id: str, *, lock: bool = False
) -> Portfolio | None:
    """The portfolio, locked ``FOR UPDATE`` (cash, reservations) when ``lock``."""
    sql = f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios WHERE id = $1"  # noqa: S608
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), portfolio_id)
    return None if row is None else _portfolio(row)


async def list_portfolios(conn: AnyConnection, *, enabled_only: bool = True) -> list[Portfolio]:
    """Every (enabled) portfolio, by id."""
    where = "WHERE enabled" if enabled_only else ""
    rows = await conn.fetch(
        f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios {where} ORDER BY id"  # noqa: S608
    )
    return [_portfolio(row) for row in rows]


async def move_money(
    conn: AnyConnection, portfolio_id: str, *, cash: Decimal = ZERO, reserved: Decimal = ZERO
) -> Portfolio:
    """Add ``cash`` and ``reserved`` (signed) to the portfolio and bump its revision.

    Reserved cash never goes below zero: a release larger than what is reserved (an
    order reserved before a manual correction) floors at 0.
    """
    row = await conn.fetchrow(
        f"""
        UPDATE portfolios
           SET cash = cash + $2,
               reserved_cash = greatest(reserved_cash + $3, 0),
               revision = revision + 1
         WHERE id = $1
        RETURNING {_PORTFOLIO_COLUMNS}
        """,  # noqa: S608
        portfolio_id,
        cash,
        reserved,
    )
    if row is None:
        raise LookupError(f"portfolio {portfolio_id!r} does not exist")
    return _portfolio(row)


async def set_trading_state(
    conn: AnyConnection, portfolio_id: str | None, *, halted: bool, reason: str | None
) -> list[Portfolio]:
    """Halt or resume one portfolio (or all with ``None``); returns those that changed."""
    rows = await conn.fetch(
        f"""
        UPDATE portfolios
           SET trading_state = CASE WHEN $2 THEN 'halted' ELSE 'active' END,
               halted_reason = CASE WHEN $2 THEN $3 END,
               halted_at = CASE WHEN $2 THEN now() END,
               revision = revision + 1
         WHERE ($1::text IS NULL OR id = $1)
           AND (trading_state = 'halted') IS DISTINCT FROM $2
        RETURNING {_PORTFOLIO_COLUMNS}
        """,  # noqa: S608
        portfolio_id,
        halted,
        reason,
    )
    return [_portfolio(row) for row in rows]


# ---------------------------------------------------------------------- instruments


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable symbol (``instruments`` row)."""

    symbol: str
    currency: str
    primary_exchange: str
    tick_size: Decimal | None
    multiplier: Decimal
    fractional: bool
    enabled: bool


async def get_instrument(conn: AnyConnection, symbol: str) -> Instrument | None:
    """The instrument ``symbol``, or ``None`` if unknown."""
    row = await conn.fetchrow(
        "SELECT symbol, currency, primary_exchange, tick_size, multiplier, fractional, enabled"
        " FROM instruments WHERE symbol = $1",
        symbol,
    )
    if row is None:
        return None
    return Instrument(
        symbol=row["symbol"],
        currency=row["currency"],
        primary_exchange=row["primary_exchange"],
        tick_size=row["tick_size"],
        multiplier=row["multiplier"],
        fractional=row["fractional"],
        enabled=row["enabled"],
    )


# ---------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class Order:
    """One of our orders: its intent (terms, purpose), its lifecycle facts and IB's ids."""

    intent: OrderIntent
    state: OrderState
    revision: int
    reserved_cash: Decimal
    reference_price: Decimal | None
    commission: Decimal
    ib_order_id: int | None
    perm_id: int | None
    external: bool
    created_at: datetime
    submitted_at: datetime | None

    @property
    def client_order_id(self) -> str:
        """Our id of the order (IB's ``orderRef``)."""
        return self.intent.client_order_id

    @property
    def portfolio_id(self) -> str:
        """The portfolio the order belongs to."""
        return self.intent.portfolio_id

    @property
    def status(self) -> OrderStatus:
        """The order's lifecycle status (derived from its facts)."""
        return self.state.status

    def book_event(self, **envelope: Any) -> OrderBookUpdated:
        """This record as the ``OrderBookUpdated`` of its revision."""
        return OrderBookUpdated.model_validate(
            {
                **self.intent.model_dump(exclude={"event_id", "ts_event", "ts_init"}),
                **envelope,
                "revision": self.revision,
                "status": self.status,
                "order_id": self.ib_order_id,
                "perm_id": self.perm_id,
                "ib_status": self.state.ib_status,
                "filled_quantity": self.state.filled_quantity,
                "avg_fill_price": self.state.avg_fill_price,
                "commission": self.commission,
                "status_message": self.state.reason,
                "created_at": self.created_at,
            }
        )


_ORDER_COLUMNS = """
    client_order_id, portfolio_id, symbol, side, order_type, quantity, limit_price,
    stop_price, trailing_amount, trailing_percent, trail_stop_price, tif, outside_rth,
    exchange, currency, purpose, position_id, exit_reason, stop_loss, take_profit,
    reference_price, requested_by, status, revision, filled_quantity, filled_notional,
    commission, reserved_cash, broker_filled, broker_remaining, broker_outcome,
    acknowledged, cancel_requested, unknown, ib_order_id, perm_id, ib_status,
    status_message, created_at, submitted_at
"""


def _order(row: asyncpg.Record) -> Order:
    external = row["purpose"] == "external"
    intent = OrderIntent.model_construct(
        portfolio_id=row["portfolio_id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"] or "?",
        side=OrderSide(row["side"] or "BUY"),
        order_type=OrderType(row["order_type"] or "MKT"),
        quantity=row["quantity"],
        limit_price=row["limit_price"],
        stop_price=row["stop_price"],
        trailing_amount=row["trailing_amount"],
        trailing_percent=row["trailing_percent"],
        trail_stop_price=row["trail_stop_price"],
        tif=TimeInForce(row["tif"] or "DAY"),
        outside_rth=row["outside_rth"],
        exchange=row["exchange"],
        currency=row["currency"],
        purpose=OrderPurpose.MANUAL if external else OrderPurpose(row["purpose"]),
        position_id=row["position_id"],
        exit_reason=None if row["exit_reason"] is None else ExitReason(row["exit_reason"]),
        stop_loss=row["stop_loss"],
        take_profit=row["take_profit"],
        requested_by=row["requested_by"],
    )
    state = OrderState(
        quantity=row["quantity"],
        filled_quantity=row["filled_quantity"],
        filled_notional=row["filled_notional"],
        acknowledged=row["acknowledged"],
        cancel_requested=row["cancel_requested"],
        outcome=BrokerOutcome(row["broker_outcome"]),
        unknown=row["unknown"],
        ib_status=row["ib_status"],
        broker_filled=row["broker_filled"] or ZERO,
        broker_remaining=row["broker_remaining"],
        reason=row["status_message"],
    )
    return Order(
        intent=intent,
        state=state,
        revision=row["revision"],
        reserved_cash=row["reserved_cash"],
        reference_price=row["reference_price"],
        commission=row["commission"],
        ib_order_id=row["ib_order_id"],
        perm_id=row["perm_id"],
        external=external,
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
    )


async def get_order(
    conn: AnyConnection, client_order_id: str, *, lock: bool = False
) -> Order | None:
    """The order ``client_order_id`` (locked ``FOR UPDATE`` when ``lock``)."""
    sql = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_order_id = $1"  # noqa: S608
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), client_order_id)
    return None if row is None else _order(row)


async def find_order_by_perm_id(
    conn: AnyConnection, portfolio_id: str, perm_id: int, *, lock: bool = False
) -> Order | None:
    """The order IB knows as ``perm_id`` in this portfolio."""
    sql = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE portfolio_id = $1 AND perm_id = $2"  # noqa: S608
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), portfolio_id, perm_id)
    return None if row is None else _order(row)


_INSERT_ORDER = """
    INSERT INTO orders (
        client_order_id, portfolio_id, symbol, side, order_type, quantity, limit_price,
        stop_price, trailing_amount, trailing_percent, trail_stop_price, tif,
        outside_rth, exchange, currency, purpose, position_id, exit_reason, stop_loss,
        take_profit, reference_price, requested_by, reserved_cash
    ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
              $17, $18, $19, $20, $21, $22, $23)
"""


def _insert_order_args(
    intent: OrderIntent, reserved_cash: Decimal, reference_price: Decimal | None
) -> list[Any]:
    return [
        intent.client_order_id,
        intent.portfolio_id,
        intent.symbol,
        intent.side.value,
        intent.order_type.value,
        intent.quantity,
        intent.limit_price,
        intent.stop_price,
        intent.trailing_amount,
        intent.trailing_percent,
        intent.trail_stop_price,
        intent.tif.value,
        intent.outside_rth,
        intent.exchange,
        intent.currency,
        intent.purpose.value,
        intent.position_id,
        None if intent.exit_reason is None else intent.exit_reason.value,
        intent.stop_loss,
        intent.take_profit,
        reference_price,
        intent.requested_by,
        reserved_cash,
    ]


async def insert_order(
    conn: AnyConnection,
    intent: OrderIntent,
    *,
    reserved_cash: Decimal,
    reference_price: Decimal | None,
) -> Order:
    """Record a new order ``PENDING`` (revision 1) with its cash reservation."""
    row = await conn.fetchrow(
        f"{_INSERT_ORDER} RETURNING {_ORDER_COLUMNS}",
        *_insert_order_args(intent, reserved_cash, reference_price),
    )
    assert row is not None
    return _order(row)


async def insert_order_reserving(
    conn: AnyConnection,
    intent: OrderIntent,
    *,
    reserved_cash: Decimal,
    reference_price: Decimal | None,
    audit: AuditEntry,
) -> tuple[Order, Portfolio]:
    """:func:`insert_order`, :func:`move_money` of its reservation and the :func:`audit`
    row, in one statement. Returns the order and the portfolio as stored."""
    row = await conn.fetchrow(
        f"""
        WITH o AS (
            {_INSERT_ORDER}
            RETURNING {_ORDER_COLUMNS}
        ), p AS (
            UPDATE portfolios
               SET reserved_cash = greatest(reserved_cash + $23, 0), revision = revision + 1
             WHERE id = $2
            RETURNING {_PORTFOLIO_COLUMNS}
        ), a AS (
            {_audit_insert(first=24)}
        )
        SELECT o.*, {", ".join(f"p.{name} AS p_{name}" for name in _PORTFOLIO_NAMES)}
          FROM o, p
        """,  # noqa: S608
        *_insert_order_args(intent, reserved_cash, reference_price),
        *audit.args(),
    )
    if row is None:
        raise LookupError(f"portfolio {intent.portfolio_id!r} does not exist")
    return _order(row), _portfolio(row, "p_")


async def insert_external_order(
    conn: AnyConnection,
    *,
    client_order_id: str,
    portfolio_id: str,
    symbol: str | None,
    side: OrderSide | None,
    quantity: Decimal | None,
    perm_id: int | None,
    ib_order_id: int | None,
) -> Order:
    """Record an order placed outside ibflow (from TWS), found in broker events.

    Idempotent: returns the existing row if one with this id exists.
    """
    await conn.execute(
        """
        INSERT INTO orders (client_order_id, portfolio_id, symbol, side, order_type, quantity,
                            tif, purpose, requested_by, perm_id, ib_order_id, acknowledged,
                            status, submitted_at)
        VALUES ($1, $2, $3, $4, 'MKT', $5, 'DAY', 'external', 'broker', $6, $7, true,
                'SUBMITTED', now())
        ON CONFLICT (client_order_id) DO NOTHING
        """,
        client_order_id,
        portfolio_id,
        symbol,
        None if side is None else side.value,
        quantity,
        perm_id,
        ib_order_id,
    )
    order = await get_order(conn, client_order_id, lock=True)
    assert order is not None
    return order


async def save_order(
    conn: AnyConnection,
    order: Order,
    transition: Transition,
    *,
    reserved_cash: Decimal | None = None,
    commission: Decimal | None = None,
    ib_order_id: int | None = None,
    perm_id: int | None = None,
    quantity: Decimal | None = None,
    prices: dict[str, Decimal | None] | None = None,
    sent: bool = False,
) -> Order:
    """Store ``transition``'s new state (and any new ids, money or terms) as the next
    revision; stamps the column of the status it entered. Returns the stored order."""
    state = transition.state
    entered = transition.entered
    stamp = timestamp_column(entered) if entered is not None else None
    sets = [
        "status = $2",
        "revision = revision + 1",
        "filled_quantity = $3",
        "filled_notional = $4",
        "avg_fill_price = $5",
        "broker_filled = $6",
        "broker_remaining = $7",
        "broker_outcome = $8",
        "acknowledged = $9",
        "cancel_requested = $10",
        "unknown = $11",
        "ib_status = $12",
        "status_message = $13",
        "quantity = $14",
        "reserved_cash = $15",
        "commission = $16",
        "ib_order_id = coalesce($17, ib_order_id)",
        "perm_id = coalesce($18, perm_id)",
    ]
    if stamp is not None:
        sets.append(f"{stamp} = coalesce({stamp}, now())")
    if sent:
        sets.append("sent_at = coalesce(sent_at, now())")
    args: list[Any] = [
        order.client_order_id,
        state.status.value,
        state.filled_quantity,
        state.filled_notional,
        state.avg_fill_price,
        state.broker_filled,
        state.broker_remaining,
        state.outcome.value,
        state.acknowledged,
        state.cancel_requested,
        state.unknown,
        state.ib_status,
        state.reason,
        quantity if quantity is not None else state.quantity,
        order.reserved_cash if reserved_cash is None else reserved_cash,
        order.commission if commission is None else commission,
        ib_order_id,
        perm_id,
    ]
    for name, value in (prices or {}).items():
        args.append(value)
        sets.append(f"{_PRICE_COLUMN[name]} = ${len(args)}")
    row = await conn.fetchrow(
        f"UPDATE orders SET {', '.join(sets)} WHERE client_order_id = $1"  # noqa: S608
        f" RETURNING {_ORDER_COLUMNS}",
        *args,
    )
    assert row is not None
    return _order(row)


_PRICE_COLUMN = {
    name: name
    for name in (
        "limit_price",
        "stop_price",
        "trailing_amount",
        "trailing_percent",
        "trail_stop_price",
    )
}


async def orders_in(
    conn: AnyConnection, statuses: Sequence[str], *, portfolio_id: str | None = None
) -> list[Order]:
    """Orders in any of ``statuses`` (of one portfolio or all), oldest first."""
    rows = await conn.fetch(
        f"""
        SELECT {_ORDER_COLUMNS} FROM orders
         WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR portfolio_id = $2)
         ORDER BY created_at
        """,  # noqa: S608
        list(statuses),
        portfolio_id,
    )
    return [_order(row) for row in rows]


async def unconfirmed_orders(conn: AnyConnection, sent_before: datetime) -> list[Order]:
    """Orders the bridge accepted (``SUBMITTED`` or ``CANCEL_REQUESTED``) before
    ``sent_before`` that IB has never reported on (no IB status, nothing filled), oldest
    first."""
    rows = await conn.fetch(
        f"""
        SELECT {_ORDER_COLUMNS} FROM orders
         WHERE status = ANY($1::text[]) AND ib_status IS NULL AND filled_quantity = 0
           AND coalesce(broker_filled, 0) = 0 AND sent_at < $2
         ORDER BY created_at
        """,  # noqa: S608
        [OrderStatus.SUBMITTED.value, OrderStatus.CANCEL_REQUESTED.value],
        sent_before,
    )
    return [_order(row) for row in rows]


async def stale_orders(conn: AnyConnection, now: datetime) -> list[Order]:
    """Working orders acknowledged longer ago than their portfolio's stale limit."""
    rows = await conn.fetch(
        f"""
        SELECT {", ".join("o." + c.strip() for c in _ORDER_COLUMNS.split(","))}
          FROM orders o JOIN portfolios p ON p.id = o.portfolio_id
         WHERE o.status IN ('SUBMITTED', 'PARTIALLY_FILLED')
           AND o.purpose <> 'external'
           AND o.submitted_at < $1::timestamptz - make_interval(mins => p.stale_order_minutes)
         ORDER BY o.submitted_at
        """,  # noqa: S608
        now,
    )
    return [_order(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Exposure:
    """What the risk checks need to know about a portfolio and one symbol."""

    open_orders: int
    position_quantity: Decimal
    """Net shares held in the symbol from our executions (long positive)."""
    working_buy_quantity: Decimal
    working_sell_quantity: Decimal
    realized_pnl_today: Decimal
    day_trade_position_exists: bool


def _exposure(row: asyncpg.Record) -> Exposure:
    return Exposure(
        open_orders=row["open_orders"],
        position_quantity=row["position_quantity"],
        working_buy_quantity=row["working_buy"],
        working_sell_quantity=row["working_sell"],
        realized_pnl_today=row["realized_pnl"],
        day_trade_position_exists=row["day_trade"],
    )


@dataclass(frozen=True, slots=True)
class SubmitContext:
    """What a submit decides on: the portfolio (locked), the order already recorded under
    its client order id, the instrument and the portfolio's exposure in the symbol."""

    portfolio: Portfolio | None
    existing: Order | None
    instrument: Instrument | None
    exposure: Exposure


_INSTRUMENT_NAMES = (
    "symbol",
    "currency",
    "primary_exchange",
    "tick_size",
    "multiplier",
    "fractional",
    "enabled",
)

_SUBMIT_CONTEXT = f"""
    SELECT {", ".join(f"(f.portfolio).{name} AS p_{name}" for name in _PORTFOLIO_NAMES)},
           {", ".join(f"(f.instrument).{name} AS i_{name}" for name in _INSTRUMENT_NAMES)},
           f.open_orders, f.position_quantity, f.working_buy, f.working_sell,
           f.realized_pnl, f.day_trade, (f.existing).*
      FROM order_manager_submit_context($1, $2, $3, $4::text[], $5) AS f
"""  # noqa: S608


async def submit_context(
    conn: AnyConnection,
    portfolio_id: str,
    client_order_id: str,
    symbol: str,
    session_start: datetime,
) -> SubmitContext:
    """Lock the portfolio ``FOR UPDATE``, then read it, :func:`get_order`,
    :func:`get_instrument` and the portfolio's :class:`Exposure` in ``symbol`` (open
    orders, position and working quantity in it, today's realized P&L: IB's, net of
    commissions), all in one round trip (migration ``0004_submit_context.sql``).

    The reads see what was committed before the lock was granted (the function's
    statements take their own snapshots): an order a concurrent submit of the same
    portfolio committed while this one waited is counted (or, under the same client
    order id, answered as a duplicate).
    """
    row = await conn.fetchrow(
        _SUBMIT_CONTEXT,
        portfolio_id,
        symbol,
        session_start,
        list(WORKING_STATUSES),
        client_order_id,
    )
    assert row is not None
    instrument = None
    if row["i_symbol"] is not None:
        instrument = Instrument(**{name: row[f"i_{name}"] for name in _INSTRUMENT_NAMES})
    return SubmitContext(
        portfolio=None if row["p_id"] is None else _portfolio(row, "p_"),
        existing=None if row["client_order_id"] is None else _order(row),
        instrument=instrument,
        exposure=_exposure(row),
    )


async def realized_pnl_since(conn: AnyConnection, portfolio_id: str, since: datetime) -> Decimal:
    """IB's realized P&L (net of commissions) of the portfolio's executions since ``since``."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(ib_realized_pnl), 0) FROM executions"
        " WHERE portfolio_id = $1 AND executed_at >= $2",
        portfolio_id,
        since,
    )
    assert isinstance(value, Decimal)
    return value


async def portfolios_with_pnl(
    conn: AnyConnection, since: datetime
) -> list[tuple[Portfolio, Decimal]]:
    """Every portfolio, by id, with :func:`realized_pnl_since` ``since``, in one statement
    (the periodic refresh of the metrics)."""
    rows = await conn.fetch(
        f"""
        SELECT {_PORTFOLIO_COLUMNS},
               (SELECT coalesce(sum(e.ib_realized_pnl), 0) FROM executions e
                 WHERE e.portfolio_id = portfolios.id AND e.executed_at >= $1)
                 AS realized_pnl_today
          FROM portfolios
         ORDER BY id
        """,  # noqa: S608
        since,
    )
    return [(_portfolio(row), row["realized_pnl_today"]) for row in rows]


# ---------------------------------------------------------------------- executions
# Booked a batch of the bridge's events at a time, in one transaction with a fixed
# number of statements (the consumer's hot path).


@dataclass(slots=True)
class BookedExecution:
    """What a batch needs to know of an execution already booked: its order and whether
    its commission is known."""

    exec_id: str
    client_order_id: str
    commission_known: bool


@dataclass(slots=True)
class NewExecution:
    """An execution to book, with its transaction; ``commission`` stays ``None`` until
    known (it may arrive later in the same batch)."""

    exec_id: str
    order: Order
    side: OrderSide
    quantity: Decimal
    price: Decimal
    executed_at: datetime
    perm_id: int | None
    ib_order_id: int | None
    exchange: str
    gross: Decimal
    commission: tuple[Decimal, str, Decimal | None] | None


@dataclass(frozen=True, slots=True)
class OrderChange:
    """An order's new state after a batch, and every status it entered on the way."""

    before: Order
    state: OrderState
    entered: tuple[OrderStatus, ...]
    reserved_cash: Decimal
    commission: Decimal
    ib_order_id: int | None
    perm_id: int | None


_STAMP_COLUMNS = tuple(
    timestamp_column(status) for status in OrderStatus if status is not OrderStatus.PENDING
)


def _stamped(column: str) -> str:
    return (
        f"CASE WHEN position(',{column},' in ',' || n.stamps || ',') > 0"
        f" THEN coalesce(o.{column}, now()) ELSE o.{column} END"
    )


ParkedCommission = tuple[str, str, Decimal, str, Decimal | None]
"""``(exec_id, portfolio_id, commission, currency, IB realized P&L)``."""


@dataclass(frozen=True, slots=True)
class LockedFacts:
    """What a batch of facts reads before its lifecycle runs (:func:`lock_facts`)."""

    booked: dict[str, BookedExecution]
    """The batch's executions already booked, by execution id."""
    parked: dict[str, ParkedCommission]
    """The commissions parked for the others, taken out of the table, by execution id."""
    orders: list[Order]
    """The orders locked ``FOR UPDATE``, in id order."""


async def lock_facts(
    conn: AnyConnection,
    exec_ids: Sequence[str],
    commission_exec_ids: Sequence[str],
    client_order_ids: Sequence[str],
) -> LockedFacts:
    """Lock what a batch of facts is about and read it, in one round trip (migration
    ``0003_lock_facts.sql``): the executions' advisory locks, in ``exec_ids``' order (pass
    them sorted, so two transactions never wait in a cycle); the executions already
    booked and the commissions parked for the others (removed: the caller books them
    with their executions or parks them again); then the orders ``client_order_ids`` and
    those of the booked executions of ``commission_exec_ids``, locked ``FOR UPDATE`` in
    id order.

    The advisory locks serialise the transactions about the same executions (their
    booking and their commissions) until the caller's transaction ends: without them,
    with two replicas, a commission could look for its execution just before the
    execution commits and park itself just after the execution looked for a parked
    commission. The reads after the locks see what the transactions waited for
    committed (the function's statements take their own snapshots).
    """
    rows = await conn.fetch(
        "SELECT f.fact_kind, f.fact_exec_id, f.fact_client_order_id, f.fact_known,"
        " f.fact_portfolio_id, f.fact_commission, f.fact_currency, f.fact_realized_pnl,"
        " (f.locked).*"
        " FROM order_manager_lock_facts($1::text[], $2::text[], $3::text[]) AS f",
        list(exec_ids),
        list(commission_exec_ids),
        list(client_order_ids),
    )
    booked: dict[str, BookedExecution] = {}
    parked: dict[str, ParkedCommission] = {}
    orders: list[Order] = []
    for row in rows:
        kind = row["fact_kind"]
        if kind == "order":
            orders.append(_order(row))
        elif kind == "booked":
            booked[row["fact_exec_id"]] = BookedExecution(
                row["fact_exec_id"], row["fact_client_order_id"], row["fact_known"]
            )
        else:
            parked[row["fact_exec_id"]] = (
                row["fact_exec_id"],
                row["fact_portfolio_id"],
                row["fact_commission"],
                row["fact_currency"],
                row["fact_realized_pnl"],
            )
    return LockedFacts(booked, parked, orders)


MoneyMove = tuple[str, Decimal, Decimal]
"""``(portfolio_id, cash, reserved)``: signed amounts to add (:func:`move_money`)."""


_WRITE_FACTS = f"""
    WITH f AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::numeric[], $7::numeric[], $8::timestamptz[], $9::bigint[],
                             $10::bigint[], $11::text[], $12::numeric[], $13::text[],
                             $14::numeric[], $15::numeric[], $16::text[])
            AS f(exec_id, client_order_id, portfolio_id, symbol, side, quantity, price,
                 executed_at, perm_id, ib_order_id, exchange, commission, currency,
                 realized_pnl, gross, kind)
    ), e AS (
        INSERT INTO executions (exec_id, client_order_id, portfolio_id, symbol, side,
                                quantity, price, executed_at, perm_id, ib_order_id,
                                exchange, commission, commission_currency,
                                ib_realized_pnl, commission_at)
        SELECT exec_id, client_order_id, portfolio_id, symbol, side, quantity, price,
               executed_at, perm_id, ib_order_id, exchange, commission, currency,
               realized_pnl, CASE WHEN commission IS NULL THEN NULL ELSE now() END
          FROM f
        RETURNING exec_id
    ), ft AS (
        INSERT INTO transactions (exec_id, portfolio_id, client_order_id, kind, gross,
                                  commission, cash_delta)
        SELECT f.exec_id, f.portfolio_id, f.client_order_id, f.kind, f.gross,
               coalesce(f.commission, 0), f.gross - coalesce(f.commission, 0)
          FROM f JOIN e USING (exec_id)
    ), c AS (
        SELECT * FROM unnest($17::text[], $18::numeric[], $19::text[], $20::numeric[])
            AS c(exec_id, commission, currency, realized_pnl)
    ), ce AS (
        UPDATE executions x
           SET commission = c.commission, commission_currency = c.currency,
               ib_realized_pnl = c.realized_pnl, commission_at = now()
          FROM c
         WHERE x.exec_id = c.exec_id AND x.commission IS NULL
        RETURNING x.exec_id
    ), ct AS (
        UPDATE transactions t
           SET commission = t.commission + c.commission, cash_delta = t.cash_delta - c.commission
          FROM c JOIN ce USING (exec_id)
         WHERE t.exec_id = c.exec_id
    ), pk AS (
        INSERT INTO pending_commissions (exec_id, portfolio_id, commission, currency,
                                         realized_pnl)
        SELECT * FROM unnest($21::text[], $22::text[], $23::numeric[], $24::text[],
                             $25::numeric[])
        ON CONFLICT (exec_id) DO NOTHING
    ), so AS (
        UPDATE orders o
           SET status = n.status, revision = o.revision + 1,
               filled_quantity = n.filled_quantity, filled_notional = n.filled_notional,
               avg_fill_price = n.avg_fill_price, broker_filled = n.broker_filled,
               broker_remaining = n.broker_remaining, broker_outcome = n.broker_outcome,
               acknowledged = n.acknowledged, cancel_requested = n.cancel_requested,
               unknown = n.unknown, ib_status = n.ib_status,
               status_message = n.status_message, quantity = n.quantity,
               reserved_cash = n.reserved_cash, commission = n.commission,
               ib_order_id = coalesce(n.ib_order_id, o.ib_order_id),
               perm_id = coalesce(n.perm_id, o.perm_id),
               {", ".join(f"{c} = {_stamped(c)}" for c in _STAMP_COLUMNS)}
          FROM unnest($26::text[], $27::text[], $28::numeric[], $29::numeric[], $30::numeric[],
                      $31::numeric[], $32::numeric[], $33::text[], $34::boolean[],
                      $35::boolean[], $36::boolean[], $37::text[], $38::text[],
                      $39::numeric[], $40::numeric[], $41::numeric[], $42::bigint[],
                      $43::bigint[], $44::text[])
            AS n(coid, status, filled_quantity, filled_notional, avg_fill_price,
                 broker_filled, broker_remaining, broker_outcome, acknowledged,
                 cancel_requested, unknown, ib_status, status_message, quantity,
                 reserved_cash, commission, ib_order_id, perm_id, stamps)
         WHERE o.client_order_id = n.coid
        RETURNING 1
    ), m AS (
        SELECT * FROM unnest($45::text[], $46::numeric[], $47::numeric[])
            AS m(id, cash, reserved)
    ), lk AS MATERIALIZED (
        -- the portfolio rows locked last, in id order, whatever plan the update gets
        SELECT id FROM portfolios WHERE id = ANY($45::text[]) ORDER BY id FOR NO KEY UPDATE
    ), mp AS (
        UPDATE portfolios p
           SET cash = p.cash + m.cash,
               reserved_cash = greatest(p.reserved_cash + m.reserved, 0),
               revision = p.revision + 1
          FROM lk JOIN m USING (id)
         WHERE p.id = lk.id
        RETURNING {", ".join(f"p.{name}" for name in _PORTFOLIO_NAMES)}
    )
    SELECT (SELECT count(*) FROM so) AS saved_orders, mp.*
      FROM (SELECT 1) AS one LEFT JOIN mp ON true
     ORDER BY mp.id
"""  # noqa: S608


async def write_facts(
    conn: AnyConnection,
    *,
    fills: Sequence[NewExecution],
    commissions: Sequence[tuple[str, Decimal, str, Decimal | None]],
    parks: Sequence[ParkedCommission],
    changes: Sequence[OrderChange],
    money: Sequence[MoneyMove],
) -> list[Portfolio]:
    """Write what a batch of facts decided, in one statement (data-modifying CTEs):

    * ``fills``: the executions and their transactions. The caller holds the
      executions' locks and checked they are new: a duplicate fails the transaction;
    * ``commissions`` ``(exec_id, commission, currency, realized_pnl)``: set on booked
      executions whose commission is unknown, and on their transactions;
    * ``parks``: commissions whose execution is not booked, parked (once per execution);
    * ``changes``: each order's new facts, money and ids as its next revision, every
      status it entered stamped (the rows are locked by the caller:
      :func:`stored_orders` tells what they became);
    * ``money``: :func:`move_money` of each portfolio, its row locked in id order after
      everything else the transaction locked.

    Returns the moved portfolios as stored, by id.
    """
    fill_columns: list[list[Any]] = [[] for _ in range(16)]
    for fill in fills:
        amount, currency, pnl = fill.commission or (None, None, None)
        for column, value in zip(
            fill_columns,
            (
                fill.exec_id,
                fill.order.client_order_id,
                fill.order.portfolio_id,
                fill.order.intent.symbol,
                fill.side.value,
                fill.quantity,
                fill.price,
                fill.executed_at,
                fill.perm_id,
                fill.ib_order_id,
                fill.exchange,
                amount,
                currency,
                pnl,
                fill.gross,
                "buy" if fill.side is OrderSide.BUY else "sell",
            ),
            strict=True,
        ):
            column.append(value)
    states = [change.state for change in changes]
    rows = await conn.fetch(
        _WRITE_FACTS,
        *fill_columns,
        *_columns(commissions, 4),
        *_columns(parks, 5),
        [change.before.client_order_id for change in changes],
        [state.status.value for state in states],
        [state.filled_quantity for state in states],
        [state.filled_notional for state in states],
        [state.avg_fill_price for state in states],
        [state.broker_filled for state in states],
        [state.broker_remaining for state in states],
        [state.outcome.value for state in states],
        [state.acknowledged for state in states],
        [state.cancel_requested for state in states],
        [state.unknown for state in states],
        [state.ib_status for state in states],
        [state.reason for state in states],
        [state.quantity for state in states],
        [change.reserved_cash for change in changes],
        [change.commission for change in changes],
        [change.ib_order_id for change in changes],
        [change.perm_id for change in changes],
        [",".join(timestamp_column(status) for status in change.entered) for change in changes],
        *_columns(money, 3),
    )
    if rows[0]["saved_orders"] != len(changes):
        raise LookupError(f"saving {len(changes)} orders: {rows[0]['saved_orders']} saved")
    moved = [_portfolio(row) for row in rows if row["id"] is not None]
    if len(moved) != len(money):
        missing = sorted({m[0] for m in money} - {p.id for p in moved})
        raise LookupError(f"portfolios {missing} do not exist")
    return moved


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """``rows`` of ``width`` values as ``width`` columns (the arrays ``unnest`` takes)."""
    return [[row[i] for row in rows] for i in range(width)]


def stored_orders(changes: Sequence[OrderChange]) -> list[Order]:
    """The orders of ``changes`` as :func:`write_facts` stores them (the rows are locked
    by the caller, so the revision is the previous one plus one)."""
    return [
        replace(
            change.before,
            state=change.state,
            revision=change.before.revision + 1,
            reserved_cash=change.reserved_cash,
            commission=change.commission,
            ib_order_id=change.ib_order_id or change.before.ib_order_id,
            perm_id=change.perm_id or change.before.perm_id,
            submitted_at=change.before.submitted_at
            or (utc_now() if OrderStatus.SUBMITTED in change.entered else None),
        )
        for change in changes
    ]


# ---------------------------------------------------------------------- recommendations


@dataclass(frozen=True, slots=True)
class StoredRecommendation:
    """A recorded recommendation and what became of it."""

    id: int
    portfolio_id: str
    session_date: date
    item: Recommendation
    status: str
    client_order_id: str | None


async def insert_recommendations(
    conn: AnyConnection,
    portfolio_id: str,
    session_date: date,
    items: Sequence[Recommendation],
    source: str,
) -> list[str]:
    """Record recommendations; returns the symbols that were new (others existed)."""
    rows = await conn.fetch(
        """
        INSERT INTO recommendations (portfolio_id, session_date, symbol, side, quantity,
                                     allocation, entry_type, limit_price, stop_loss,
                                     take_profit, source)
        SELECT $1, $2, r.symbol, r.side, r.quantity, r.allocation, r.entry_type,
               r.limit_price, r.stop_loss, r.take_profit, $3
          FROM jsonb_to_recordset($4::jsonb) AS r(symbol text, side text, quantity numeric,
               allocation numeric, entry_type text, limit_price numeric, stop_loss numeric,
               take_profit numeric)
        ON CONFLICT (portfolio_id, session_date, symbol) DO NOTHING
        RETURNING symbol
        """,
        portfolio_id,
        session_date,
        source,
        [item.model_dump(mode="json") for item in items],
    )
    return [row["symbol"] for row in rows]


_SELECT_RECOMMENDATIONS = """
    SELECT id, portfolio_id, session_date, symbol, side, quantity, allocation, entry_type,
           limit_price, stop_loss, take_profit, status, client_order_id
      FROM recommendations WHERE portfolio_id = $1 AND session_date = $2 ORDER BY id
"""


async def recommendations_for(
    conn: AnyConnection, portfolio_id: str, session_date: date, *, lock: bool = False
) -> list[StoredRecommendation]:
    """The portfolio's recommendations of a session, by id."""
    lock_clause = " FOR UPDATE" if lock else ""
    rows = await conn.fetch(f"{_SELECT_RECOMMENDATIONS}{lock_clause}", portfolio_id, session_date)
    return [
        StoredRecommendation(
            id=row["id"],
            portfolio_id=row["portfolio_id"],
            session_date=row["session_date"],
            item=Recommendation(
                symbol=row["symbol"],
                side=OrderSide(row["side"]),
                quantity=row["quantity"],
                allocation=row["allocation"],
                entry_type=OrderType(row["entry_type"]),
                limit_price=row["limit_price"],
                stop_loss=row["stop_loss"],
                take_profit=row["take_profit"],
            ),
            status=row["status"],
            client_order_id=row["client_order_id"],
        )
        for row in rows
    ]


async def decide_recommendation(
    conn: AnyConnection,
    recommendation_id: int,
    *,
    status: str,
    skip_reason: str | None = None,
    client_order_id: str | None = None,
) -> None:
    """Record what the morning entry did with a recommendation."""
    await conn.execute(
        """
        UPDATE recommendations
           SET status = $2, skip_reason = $3, client_order_id = $4, decided_at = now()
         WHERE id = $1
        """,
        recommendation_id,
        status,
        skip_reason,
        client_order_id,
    )


# ---------------------------------------------------------------------- audit


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One command for the audit log (:func:`audit`)."""

    actor: str
    command: str
    subject: str
    result: str
    payload: dict[str, Any]
    portfolio_id: str | None = None
    client_order_id: str | None = None
    detail: str | None = None

    def args(self) -> tuple[Any, ...]:
        """The parameters of :func:`_audit_insert`'s statement, in order."""
        return (
            self.actor,
            self.command,
            self.subject,
            self.portfolio_id,
            self.client_order_id,
            self.payload,
            self.result,
            self.detail,
        )


def _audit_insert(first: int = 1) -> str:
    """The ``INSERT`` of an :class:`AuditEntry` whose parameters start at ``$first``."""
    values = ", ".join(f"${n}" for n in range(first, first + 8))
    columns = "actor, command, subject, portfolio_id, client_order_id, payload, result, detail"
    return f"INSERT INTO audit_log ({columns}) VALUES ({values})"  # noqa: S608


async def audit(
    conn: AnyConnection,
    *,
    actor: str,
    command: str,
    subject: str,
    result: str,
    payload: dict[str, Any],
    portfolio_id: str | None = None,
    client_order_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Append one command to the audit log."""
    await append_audit(
        conn,
        AuditEntry(actor, command, subject, result, payload, portfolio_id, client_order_id, detail),
    )


async def append_audit(conn: AnyConnection, entry: AuditEntry) -> None:
    """Append ``entry`` to the audit log."""
    await conn.execute(_audit_insert(), *entry.args())


def with_state(order: Order, state: OrderState) -> Order:
    """``order`` with another state (for in-memory previews)."""
    return replace(order, state=state)
