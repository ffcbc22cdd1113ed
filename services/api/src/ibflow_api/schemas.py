"""Request and response models of the API (what the OpenAPI document describes).

Two conventions for numbers, on purpose:

* the dashboard routes (``/api/v1/ib/...``) answer money and quantities as JSON
  **numbers** (:data:`Number`), as the NautilusTrader IB dashboard expects; they are
  display values, converted from the exact figures at the last step;
* ibflow's own resources (``/api/v1/portfolios/...``) answer exact decimal
  **strings** (:data:`~ibflow.contracts.base.Money`), like every ibflow message.

Requests accept either (a JSON number is read as the decimal it spells).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from ibflow.contracts.base import Money
from ibflow.contracts.enums import OrderSide, OrderType, TimeInForce

Number = Annotated[
    Decimal,
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema({"type": "number"}, mode="serialization"),
]
"""A display number: exact in Python, a JSON number on the wire."""

OptNumber = Number | None

ClientOrderIdField = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
PositivePrice = Annotated[Decimal, Field(gt=0, lt=Decimal("1e12"), allow_inf_nan=False)]
PositiveSize = Annotated[Decimal, Field(gt=0, lt=Decimal("1e12"), allow_inf_nan=False)]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is a 422 naming it."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- dashboard


class MessageResponse(BaseModel):
    """A plain acknowledgement."""

    message: str


class ConnectionStatus(BaseModel):
    """``GET /api/v1/ib/connection/status``: the bridge's connection to the portfolio's
    gateway (dashboard fields plus ``state``, ``server_version``, ``portfolio_id``)."""

    connected: bool
    gateway_type: str | None
    host: str
    port: int
    client_id: int
    account_id: str | None
    connection_time: dt.datetime | None
    last_heartbeat: dt.datetime | None
    error_message: str | None
    state: str
    server_version: int | None
    portfolio_id: str


class AccountSummary(BaseModel):
    """``GET /api/v1/ib/account``: the account's latest values as IB reported them
    (``null``: IB did not send that figure)."""

    account_id: str
    net_liquidation: OptNumber
    total_cash_value: OptNumber
    buying_power: OptNumber
    maintenance_margin: OptNumber
    initial_margin: OptNumber
    excess_liquidity: OptNumber
    currency: str
    timestamp: dt.datetime


class BrokerPosition(BaseModel):
    """One holding at the broker. ``market_price`` is the latest mark ibflow has for the
    symbol (``null`` when none); the values derived from it are ``null`` too."""

    account_id: str
    contract_id: int
    symbol: str
    position: Number
    avg_cost: Number
    market_price: OptNumber
    market_value: OptNumber
    unrealized_pnl: OptNumber
    realized_pnl: OptNumber
    timestamp: dt.datetime


class PositionsResponse(BaseModel):
    """``GET /api/v1/ib/positions``."""

    positions: list[BrokerPosition]


class DashboardOrder(BaseModel):
    """One order. ``order_id`` is ibflow's client order id (IB's ``orderRef``), the id
    cancel and modify take; IB's own ids are ``ib_order_id`` and ``perm_id``."""

    order_id: str
    client_id: int
    account_id: str | None
    contract_id: int | None
    symbol: str | None
    action: str | None
    order_type: str | None
    total_quantity: OptNumber
    filled_quantity: Number
    remaining_quantity: OptNumber
    limit_price: OptNumber
    stop_price: OptNumber
    status: str
    avg_fill_price: OptNumber
    commission: Number
    timestamp: dt.datetime
    portfolio_id: str
    ib_order_id: int | None
    perm_id: int | None
    ib_status: str | None
    time_in_force: str | None
    purpose: str
    status_message: str | None


class OrdersResponse(BaseModel):
    """``GET /api/v1/ib/orders``."""

    orders: list[DashboardOrder]


class PlaceOrderRequest(Strict):
    """An order ticket. Prices by type: ``MKT`` none, ``LMT`` ``limit_price``, ``STP``
    ``stop_price``, ``STP_LMT`` both, ``TRAIL`` one of ``trailing_amount`` /
    ``trailing_percent``. ``client_order_id`` (or the ``Idempotency-Key`` header) makes
    a retry place nothing new."""

    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    action: OrderSide
    quantity: PositiveSize
    order_type: OrderType = OrderType.MKT
    limit_price: PositivePrice | None = None
    stop_price: PositivePrice | None = None
    trailing_amount: PositivePrice | None = None
    trailing_percent: Annotated[Decimal, Field(gt=0, lt=100)] | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    outside_rth: bool = False
    client_order_id: ClientOrderIdField | None = None
    reference_price: PositivePrice | None = None
    """The market price the user saw (values MKT/TRAIL orders for the cash check)."""


class PlaceOrderResponse(BaseModel):
    """The order was accepted by the order-manager and handed to the broker."""

    order_id: str
    message: str
    duplicate: bool = False


class ModifyOrderRequest(Strict):
    """New total quantity and/or prices; omitted fields keep their value."""

    quantity: PositiveSize | None = None
    limit_price: PositivePrice | None = None
    stop_price: PositivePrice | None = None
    trailing_amount: PositivePrice | None = None
    trailing_percent: Annotated[Decimal, Field(gt=0, lt=100)] | None = None


class PreviewCheck(BaseModel):
    """One check of the ticket: its name, whether it passed, and why."""

    name: str
    ok: bool
    message: str


class OrderPreview(BaseModel):
    """What an order would cost and which checks it passes, without placing it."""

    valid: bool
    checks: list[PreviewCheck]
    market_price: OptNumber
    estimated_price: OptNumber
    estimated_cost: OptNumber
    estimated_commission: OptNumber
    margin_impact: dict[str, Any] | None = None
    """IB's what-if figures (margins before, change and after; commission estimate);
    ``null`` when IB could not be asked (a warning says why)."""
    warnings: list[str]


# ---------------------------------------------------------------------- portfolios

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a listing, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None


class Portfolio(BaseModel):
    """A portfolio: broker settings, money and risk limits (exact decimal strings)."""

    id: str
    name: str
    broker_host: str
    broker_port: int
    client_id: int
    fallback_client_id: int | None
    account: str | None
    is_paper: bool
    allow_live: bool
    currency: str
    cash: Money
    reserved_cash: Money
    fractional_shares: bool
    max_order_value: Money | None
    max_position_value: Money | None
    max_daily_loss: Money | None
    max_open_orders: int | None
    trading_state: str
    halted_reason: str | None
    halted_at: dt.datetime | None
    enabled: bool
    stale_order_minutes: int
    created_at: dt.datetime
    updated_at: dt.datetime


PortfolioIdField = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
ClientId = Annotated[int, Field(ge=1, le=999)]
Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:_-]+$")]
Account = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,32}$")]
PositiveLimit = Annotated[Decimal, Field(gt=0, lt=Decimal("1e15"), allow_inf_nan=False)]


class PortfolioCreate(Strict):
    """A new portfolio. ``client_id`` (1-999) must be unused on the same gateway host
    and port; ``allow_live`` needs the admin scope."""

    id: PortfolioIdField
    name: Annotated[str, Field(min_length=1, max_length=200)]
    broker_host: Host = "127.0.0.1"
    broker_port: Port = 4002
    client_id: ClientId
    account: Account | None = None
    is_paper: bool = True
    allow_live: bool = False
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    cash: Annotated[Decimal, Field(ge=0, lt=Decimal("1e15"), allow_inf_nan=False)] = Decimal(0)
    enabled: bool = True


class PortfolioUpdate(Strict):
    """Changes to a portfolio's settings; omitted fields are kept."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    broker_host: Host | None = None
    broker_port: Port | None = None
    client_id: ClientId | None = None
    account: Account | None = None
    is_paper: bool | None = None
    allow_live: bool | None = None
    enabled: bool | None = None


class RiskLimits(Strict):
    """A portfolio's risk limits; ``null`` removes a limit."""

    max_order_value: PositiveLimit | None = None
    max_position_value: PositiveLimit | None = None
    max_daily_loss: PositiveLimit | None = None
    max_open_orders: Annotated[int, Field(gt=0, le=100_000)] | None = None


class HaltRequest(Strict):
    """Why trading is halted or resumed."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class FlattenRequest(Strict):
    """Close the portfolio's day-trade positions (all, or these symbols)."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]
    symbols: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=500
    )


class CommandResponse(BaseModel):
    """A command was accepted (the outcome follows as events)."""

    command_id: str
    duplicate: bool
    client_order_ids: list[str]
    detail: str | None


class Order(BaseModel):
    """An order as the order-manager records it."""

    client_order_id: str
    portfolio_id: str
    symbol: str | None
    side: str | None
    order_type: str | None
    quantity: Money | None
    limit_price: Money | None
    stop_price: Money | None
    tif: str | None
    purpose: str
    position_id: str | None
    status: str
    filled_quantity: Money
    avg_fill_price: Money | None
    commission: Money
    ib_order_id: int | None
    perm_id: int | None
    ib_status: str | None
    status_message: str | None
    requested_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class Execution(BaseModel):
    """A fill, keyed by IB's execId (commission ``null`` until IB reports it)."""

    exec_id: str
    client_order_id: str
    portfolio_id: str
    symbol: str
    side: str
    quantity: Money
    price: Money
    executed_at: dt.datetime
    exchange: str
    commission: Money | None
    ib_realized_pnl: Money | None


class Transaction(BaseModel):
    """The cash effect of one execution."""

    id: int
    exec_id: str
    client_order_id: str
    portfolio_id: str
    kind: str
    gross: Money
    commission: Money
    cash_delta: Money
    created_at: dt.datetime


class DayPosition(BaseModel):
    """A day-trade position (position-monitor's) with its latest mark."""

    id: str
    portfolio_id: str
    symbol: str
    session_date: dt.date
    side: str
    status: str
    external: bool
    quantity: Money
    planned_quantity: Money
    avg_entry_price: Money | None
    avg_exit_price: Money | None
    stop_loss: Money | None
    take_profit: Money | None
    exit_reason: str | None
    realized_pnl: Money
    commissions: Money
    mark_price: Money | None
    unrealized_pnl: Money | None
    marked_at: dt.datetime | None
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None


class RecommendationIn(Strict):
    """One recommendation: ``quantity`` or ``allocation`` (a fraction of equity)."""

    symbol: Annotated[str, Field(min_length=1, max_length=32)]
    side: OrderSide = OrderSide.BUY
    quantity: PositiveSize | None = None
    allocation: Annotated[Decimal, Field(gt=0, le=1)] | None = None
    entry_type: Literal["MKT", "LMT"] = "MKT"
    limit_price: PositivePrice | None = None
    stop_loss: PositivePrice | None = None
    take_profit: PositivePrice | None = None


class RecommendationsSubmit(Strict):
    """Recommendations for a session's morning entry."""

    session_date: dt.date
    items: list[RecommendationIn] = Field(min_length=1, max_length=500)
    source: Annotated[str, Field(min_length=1, max_length=128)] = "api"


class RecommendationOut(BaseModel):
    """A recommendation and what became of it."""

    id: int
    portfolio_id: str
    session_date: dt.date
    symbol: str
    side: str
    quantity: Money | None
    allocation: Money | None
    entry_type: str
    limit_price: Money | None
    stop_loss: Money | None
    take_profit: Money | None
    source: str
    status: str
    skip_reason: str | None
    client_order_id: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


class ReconciliationReport(BaseModel):
    """A difference between our book and the broker's positions."""

    id: int
    portfolio_id: str
    symbol: str
    ours: Money
    broker: Money
    difference: Money
    kind: str
    settling: bool
    adopted_position_id: str | None
    detected_at: dt.datetime
    resolved: bool
    resolved_at: dt.datetime | None
    resolution: str | None


class PerformanceBucket(BaseModel):
    """Results of closed positions in one day or week."""

    period_start: dt.date
    trades: int
    wins: int
    losses: int
    win_rate: Money | None
    realized_pnl: Money
    commissions: Money


class PerformanceSummary(BaseModel):
    """A portfolio's closed day-trade results: totals, by day and by week."""

    portfolio_id: str
    since: dt.date
    until: dt.date
    total: PerformanceBucket
    by_day: list[PerformanceBucket]
    by_week: list[PerformanceBucket]


class PositionLevels(Strict):
    """A position's new stop loss and/or take profit (watched by position-monitor)."""

    stop_loss: PositivePrice | None = None
    take_profit: PositivePrice | None = None


class TriggerRequest(Strict):
    """Emit a session event now (admin): why, for which session, and whether to force it
    outside the session."""

    reason: Annotated[str, Field(min_length=1, max_length=500)]
    session_date: dt.date | None = None
    force: bool = False
