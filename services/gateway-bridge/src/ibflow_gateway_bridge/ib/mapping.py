"""Pure functions from ib_async objects to ibflow contracts.

Rules applied everywhere:

* numbers go through ``Decimal(str(x))``: the float's shortest repr, never its binary
  expansion, and never a float in a contract;
* IB's "no value" sentinels (``UNSET_DOUBLE`` = ``sys.float_info.max``, infinities,
  NaN) become ``None``; a commission of ``UNSET_DOUBLE`` or ``-1`` is *pending*, so
  :func:`commission_reported` returns ``None`` rather than a zero commission;
* times become timezone-aware UTC (a naive time from IB is taken as UTC).

Input that cannot become a valid contract raises :class:`MappingError` (a
``ValueError``); callers log it and carry on, nothing is guessed.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar

from ib_async import AccountValue, CommissionReport, Fill, Position, Trade
from pydantic import ValidationError

from ibflow.contracts.account import AccountValuesReported, BrokerPositionReported
from ibflow.contracts.enums import OrderSide
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged

__all__ = [
    "ACCOUNT_VALUE_FIELDS",
    "UNSET_DOUBLE",
    "MappingError",
    "account_values_reported",
    "broker_position_reported",
    "commission_reported",
    "decimal_or_none",
    "execution_reported",
    "order_status_changed",
    "to_utc",
]

UNSET_DOUBLE: Final = sys.float_info.max
"""IB's "no value" double (``Double.MAX_VALUE``)."""
_PENDING_COMMISSION: Final = -1.0

ACCOUNT_VALUE_FIELDS: Final = {
    "NetLiquidation": "net_liquidation",
    "TotalCashValue": "total_cash_value",
    "BuyingPower": "buying_power",
    "MaintMarginReq": "maintenance_margin",
    "InitMarginReq": "initial_margin",
    "ExcessLiquidity": "excess_liquidity",
}
"""IB account tags → :class:`AccountValuesReported` fields."""

_T = TypeVar("_T")

_SIDES: Final = {"BOT": OrderSide.BUY, "BUY": OrderSide.BUY, "SLD": OrderSide.SELL}
_SIDES_SELL: Final = {"SELL": OrderSide.SELL, "SSHORT": OrderSide.SELL}


class MappingError(ValueError):
    """An ib_async object that cannot be expressed as the contract (named in the text)."""


def decimal_or_none(value: float | int | str | Decimal | None) -> Decimal | None:
    """``value`` as an exact Decimal, or ``None`` for IB's sentinels, NaN, infinities and
    empty or non-numeric strings."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value) or value >= UNSET_DOUBLE:
            return None
        return Decimal(str(value))
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not result.is_finite() or abs(result) >= Decimal(str(UNSET_DOUBLE)):
        return None
    return result


def _quantity(value: float | Decimal, what: str) -> Decimal:
    result = decimal_or_none(value)
    if result is None:
        raise MappingError(f"{what}: IB sent no value")
    return result


def to_utc(value: datetime) -> datetime:
    """``value`` as a timezone-aware UTC datetime (naive means UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _side(value: str) -> OrderSide:
    side = _SIDES.get(value.upper()) or _SIDES_SELL.get(value.upper())
    if side is None:
        raise MappingError(f"side: unknown IB execution side {value!r}")
    return side


def _build(factory: type[_T], **fields: object) -> _T:
    try:
        return factory(**fields)
    except ValidationError as exc:
        raise MappingError(f"{factory.__name__}: {exc}") from exc


def order_status_changed(
    portfolio_id: str, trade: Trade, *, snapshot_id: uuid.UUID | None = None
) -> OrderStatusChanged:
    """The order's current status as IB reported it (``orderStatus`` / ``openOrder``).

    ``client_order_id`` is the order's ``orderRef`` (``None`` when empty: an order placed
    outside ibflow); ``perm_id`` is ``None`` while IB has not assigned one (``0``);
    average and last fill prices are ``None`` until something filled. The error text
    is the latest log entry with an IB error code for this same status.
    """
    order, status = trade.order, trade.orderStatus
    filled = _quantity(status.filled, "filled")
    remaining = _quantity(status.remaining, "remaining")
    avg_fill = decimal_or_none(status.avgFillPrice) if filled > 0 else None
    last_fill = decimal_or_none(status.lastFillPrice) or None
    error_message: str | None = None
    ts_event: datetime | None = None
    if trade.log:
        latest = trade.log[-1]
        ts_event = to_utc(latest.time)
        if latest.errorCode and latest.status == status.status:
            error_message = f"{latest.errorCode}: {latest.message}"
    fields: dict[str, object] = {
        "portfolio_id": portfolio_id,
        "account_id": order.account or None,
        "client_order_id": order.orderRef or None,
        "order_id": status.orderId or order.orderId,
        "perm_id": status.permId or order.permId or None,
        "client_id": status.clientId or order.clientId or None,
        "ib_status": status.status,
        "filled": filled,
        "remaining": remaining,
        "avg_fill_price": avg_fill,
        "last_fill_price": last_fill,
        "why_held": status.whyHeld or None,
        "error_message": error_message,
        "snapshot_id": snapshot_id,
        "limit_price": _positive_or_none(order.lmtPrice),
        "aux_price": _positive_or_none(order.auxPrice),
    }
    if ts_event is not None:
        fields["ts_event"] = ts_event
    return _build(OrderStatusChanged, **fields)


def _positive_or_none(value: float | Decimal | None) -> Decimal | None:
    """An order price IB reports, or ``None`` when unset (its sentinel, or ``0``)."""
    price = decimal_or_none(value)
    return price if price is not None and price > 0 else None


def execution_reported(
    portfolio_id: str,
    fill: Fill,
    *,
    trade: Trade | None = None,
    snapshot_id: uuid.UUID | None = None,
) -> ExecutionReported:
    """One execution (``execDetails``); ``orderRef`` from the execution, else the trade.

    ``BOT``/``SLD`` become ``BUY``/``SELL``; ``executed_at`` (also ``ts_event``) is the
    execution's time in UTC.
    """
    execution, contract = fill.execution, fill.contract
    executed_at = to_utc(execution.time)
    return _build(
        ExecutionReported,
        portfolio_id=portfolio_id,
        account_id=execution.acctNumber,
        exec_id=execution.execId,
        order_id=execution.orderId,
        perm_id=execution.permId,
        client_order_id=_order_ref(fill, trade),
        symbol=contract.symbol or contract.localSymbol,
        con_id=contract.conId,
        side=_side(execution.side),
        shares=_quantity(execution.shares, "shares"),
        price=_quantity(execution.price, "price"),
        cum_qty=_quantity(execution.cumQty, "cum_qty"),
        avg_price=_quantity(execution.avgPrice, "avg_price"),
        exchange=execution.exchange,
        executed_at=executed_at,
        liquidation=bool(execution.liquidation),
        snapshot_id=snapshot_id,
        ts_event=executed_at,
    )


def commission_reported(
    portfolio_id: str,
    report: CommissionReport,
    *,
    fill: Fill | None = None,
    trade: Trade | None = None,
) -> CommissionReported | None:
    """The commission of one execution, or ``None`` while it is pending; the client order
    id from the ``orderRef`` of ``fill``'s execution, else of ``trade``'s order.

    Pending means IB has not given a real figure yet: the commission is
    ``UNSET_DOUBLE`` (or another non-finite value) or ``-1``, or the report is
    ib_async's empty placeholder (no execId or no currency). A pending commission is
    never reported as zero. ``realized_pnl`` is ``None`` for IB's sentinel (opening fills).
    """
    commission = decimal_or_none(report.commission)
    if (
        commission is None
        or report.commission == _PENDING_COMMISSION
        or not report.execId
        or not report.currency
    ):
        return None
    return _build(
        CommissionReported,
        portfolio_id=portfolio_id,
        exec_id=report.execId,
        commission=commission,
        currency=report.currency,
        realized_pnl=decimal_or_none(report.realizedPNL),
        client_order_id=_order_ref(fill, trade),
    )


def _order_ref(fill: Fill | None, trade: Trade | None) -> str | None:
    if fill is not None and fill.execution.orderRef:
        return fill.execution.orderRef
    if trade is not None and trade.order.orderRef:
        return trade.order.orderRef
    return None


def broker_position_reported(
    portfolio_id: str, position: Position, *, snapshot_id: uuid.UUID | None = None
) -> BrokerPositionReported:
    """The account's holding of one contract (signed: short is negative)."""
    contract = position.contract
    avg_cost = decimal_or_none(position.avgCost)
    if avg_cost is None:
        raise MappingError(f"avg_cost: IB sent no average cost for {contract.symbol}")
    return _build(
        BrokerPositionReported,
        portfolio_id=portfolio_id,
        account_id=position.account,
        con_id=contract.conId,
        symbol=contract.symbol or contract.localSymbol,
        position=_quantity(position.position, "position"),
        avg_cost=avg_cost,
        snapshot_id=snapshot_id,
    )


def account_values_reported(
    portfolio_id: str,
    values: Iterable[AccountValue],
    *,
    currency: str = "USD",
    snapshot_id: uuid.UUID | None = None,
) -> list[AccountValuesReported]:
    """One :class:`AccountValuesReported` per account found in ``values``.

    The named figures are read from their tag in ``currency`` (an account value IB did
    not send, or sent as a sentinel or a non-number, is ``None``, never zero);
    ``values`` keeps every tag as ``Tag`` or ``Tag:CUR`` → IB's string. Accounts come
    out in the order first seen.
    """
    by_account: dict[str, dict[str, str]] = {}
    figures: dict[str, dict[str, Decimal | None]] = {}
    for value in values:
        if not value.account:
            continue
        raw = by_account.setdefault(value.account, {})
        key = f"{value.tag}:{value.currency}" if value.currency else value.tag
        raw[key] = value.value
        field = ACCOUNT_VALUE_FIELDS.get(value.tag)
        if field is not None and value.currency == currency:
            figures.setdefault(value.account, {})[field] = decimal_or_none(value.value)
    return [
        _build(
            AccountValuesReported,
            portfolio_id=portfolio_id,
            account_id=account,
            currency=currency,
            values=raw,
            snapshot_id=snapshot_id,
            **figures.get(account, {}),
        )
        for account, raw in by_account.items()
    ]
