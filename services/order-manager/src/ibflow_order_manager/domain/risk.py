"""Pre-trade risk checks: a pure function of the portfolio's situation and the order.

:func:`check_risk` returns the first :class:`RiskRefusal` (or ``None``: the order may
go); :func:`risk_refusals` returns all of them. The rules, in the order they are
checked (:class:`RiskRule`):

1. ``halted``: trading is halted for the portfolio;
2. ``fractional``: a fractional quantity where the portfolio allows whole shares only;
3. ``cash``: a buy needs more cash than is available (cash minus the cash reserved by
   working buys);
4. ``max_order_value``: the order's value is above the per-order limit;
5. ``max_position_value``: the position in the symbol (including working orders) would
   grow above the per-symbol limit;
6. ``max_open_orders``: the portfolio already has the maximum of open orders;
7. ``daily_loss``: today's realized loss is already at or over the limit;
8. ``duplicate_position``: an entry for a symbol that already has an open or pending
   day-trade position.

**Reductions pass.** An exit (``purpose=exit``) or an order that only reduces the
current position (a sell of at most the long quantity held, a buy of at most the short
quantity) lowers exposure, so none of the exposure rules apply to it: not halted,
cash, the value limits, the open-order limit, the daily loss limit, nor the duplicate
rule. Blocking a stop-loss exit is the most expensive mistake a risk check can make.
Only ``fractional`` applies (IB would refuse the order anyway).

Every message starts with the rule's name and gives the numbers, e.g.
``cash: order needs 10150.00 USD, available 9000.00 USD (cash 12000.00 - reserved
3000.00)``. Amounts are shown exactly, with at least two decimals (never rounded: a
refusal must not show two equal-looking numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Final

from ibflow.contracts.enums import OrderPurpose, OrderSide
from ibflow_order_manager.domain.pricing import format_amount

__all__ = [
    "ProposedOrder",
    "RiskContext",
    "RiskLimits",
    "RiskRefusal",
    "RiskRule",
    "check_risk",
    "crossed_daily_loss",
    "is_reduction",
    "risk_refusals",
]

_ZERO: Final = Decimal(0)


class RiskRule(StrEnum):
    """A pre-trade risk rule; the value is the name used in refusals and metrics."""

    HALTED = "halted"
    FRACTIONAL = "fractional"
    CASH = "cash"
    MAX_ORDER_VALUE = "max_order_value"
    MAX_POSITION_VALUE = "max_position_value"
    MAX_OPEN_ORDERS = "max_open_orders"
    DAILY_LOSS = "daily_loss"
    DUPLICATE_POSITION = "duplicate_position"


@dataclass(frozen=True, slots=True)
class RiskRefusal:
    """The rule an order breaks, and a message naming the rule and the numbers."""

    rule: RiskRule
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """A portfolio's limits; ``None`` means no limit (the ``portfolios`` columns)."""

    max_order_value: Decimal | None = None
    max_position_value: Decimal | None = None
    max_open_orders: int | None = None
    max_daily_loss: Decimal | None = None
    """A loss amount as a positive number: 500 means "stop at a realized loss of 500"."""

    def __post_init__(self) -> None:
        for name in ("max_order_value", "max_position_value", "max_daily_loss"):
            value: Decimal | None = getattr(self, name)
            if value is not None and not (value.is_finite() and value > 0):
                raise ValueError(f"{name} must be positive when set, got {value}")
        if self.max_open_orders is not None and self.max_open_orders <= 0:
            raise ValueError(
                f"max_open_orders must be positive when set, got {self.max_open_orders}"
            )


@dataclass(frozen=True, slots=True)
class RiskContext:
    """The portfolio's situation when an order is proposed (read under its row lock)."""

    cash: Decimal
    reserved_cash: Decimal
    """Cash reserved by working buys."""
    limits: RiskLimits = field(default_factory=RiskLimits)
    trading_halted: bool = False
    realized_pnl_today: Decimal = _ZERO
    """Today's realized P&L (negative = a loss)."""
    open_orders: int = 0
    """The portfolio's orders that are not terminal."""
    position_value: Decimal = _ZERO
    """Exposure in the order's symbol: the value of the position held plus the working
    orders that would grow it, as a magnitude (>= 0)."""
    position_quantity: Decimal = _ZERO
    """Shares held in the symbol: positive long, negative short (decides reductions)."""
    day_trade_position_exists: bool = False
    """An open or pending day-trade position in the symbol already exists."""
    fractional_allowed: bool = False
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("cash", "reserved_cash", "realized_pnl_today", "position_value"):
            value: Decimal = getattr(self, name)
            if not value.is_finite():
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.reserved_cash < 0 or self.position_value < 0 or self.open_orders < 0:
            raise ValueError("reserved_cash, position_value and open_orders must be >= 0")

    @property
    def available_cash(self) -> Decimal:
        """``cash - reserved_cash``: what a new buy may use."""
        return self.cash - self.reserved_cash


@dataclass(frozen=True, slots=True)
class ProposedOrder:
    """The order being checked.

    ``estimated_price`` values the order (its limit price, or a reference price for
    orders without one). ``cash_required`` is the cash the order would reserve
    (:func:`~ibflow_order_manager.domain.pricing.reservation`, buffer included); when
    omitted, a buy needs ``quantity * estimated_price``.
    """

    symbol: str
    side: OrderSide
    quantity: Decimal
    estimated_price: Decimal
    purpose: OrderPurpose
    cash_required: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("quantity", "estimated_price"):
            value: Decimal = getattr(self, name)
            if not (value.is_finite() and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.cash_required is not None and not (
            self.cash_required.is_finite() and self.cash_required >= 0
        ):
            raise ValueError(f"cash_required must be >= 0, got {self.cash_required}")

    @property
    def value(self) -> Decimal:
        """``quantity * estimated_price``."""
        return self.quantity * self.estimated_price

    @property
    def needs_cash(self) -> Decimal:
        """Cash the order would reserve: ``cash_required``, else its value for a buy;
        0 for a sell."""
        if self.side is OrderSide.SELL:
            return _ZERO
        return self.value if self.cash_required is None else self.cash_required


def _qty(value: Decimal) -> str:
    return format(value.normalize(), "f")


def is_reduction(context: RiskContext, order: ProposedOrder) -> bool:
    """An exit, or an order that only reduces the position (see the module docstring)."""
    if order.purpose is OrderPurpose.EXIT:
        return True
    held = context.position_quantity
    if order.side is OrderSide.SELL:
        return held > 0 and order.quantity <= held
    return held < 0 and order.quantity <= -held


def crossed_daily_loss(realized_pnl: Decimal, limit: Decimal | None) -> bool:
    """Whether today's ``realized_pnl`` is a loss at or beyond ``limit`` (a positive
    amount; ``None`` = no limit): the trigger of the automatic halt."""
    if limit is None:
        return False
    if not (limit.is_finite() and limit > 0):
        raise ValueError(f"the daily loss limit must be positive, got {limit}")
    return realized_pnl <= -limit


def risk_refusals(context: RiskContext, order: ProposedOrder) -> tuple[RiskRefusal, ...]:
    """Every rule ``order`` breaks in ``context``, in the order of the module docstring."""
    checks = (
        _halted,
        _fractional,
        _cash,
        _max_order_value,
        _max_position_value,
        _max_open_orders,
        _daily_loss,
        _duplicate_position,
    )
    reduction = is_reduction(context, order)
    found = (check(context, order, reduction) for check in checks)
    return tuple(refusal for refusal in found if refusal is not None)


def check_risk(context: RiskContext, order: ProposedOrder) -> RiskRefusal | None:
    """The first rule ``order`` breaks in ``context``, or ``None`` if it may go."""
    refusals = risk_refusals(context, order)
    return refusals[0] if refusals else None


# -- the rules ------------------------------------------------------------------------


def _halted(context: RiskContext, order: ProposedOrder, reduction: bool) -> RiskRefusal | None:
    if not context.trading_halted or reduction:
        return None
    return RiskRefusal(
        RiskRule.HALTED,
        f"halted: trading is halted for this portfolio; only exits and reductions are "
        f"allowed ({order.side} {_qty(order.quantity)} {order.symbol}, {order.purpose})",
    )


def _fractional(context: RiskContext, order: ProposedOrder, _: bool) -> RiskRefusal | None:
    if context.fractional_allowed or order.quantity == order.quantity.to_integral_value():
        return None
    return RiskRefusal(
        RiskRule.FRACTIONAL,
        f"fractional: quantity {_qty(order.quantity)} is not a whole number of shares and "
        f"the portfolio does not allow fractional shares",
    )


def _cash(context: RiskContext, order: ProposedOrder, reduction: bool) -> RiskRefusal | None:
    needed = order.needs_cash
    available = context.available_cash
    if reduction or needed == 0 or needed <= available:
        return None
    ccy = context.currency
    return RiskRefusal(
        RiskRule.CASH,
        f"cash: order needs {format_amount(needed)} {ccy}, available "
        f"{format_amount(available)} {ccy} (cash {format_amount(context.cash)} - reserved "
        f"{format_amount(context.reserved_cash)})",
    )


def _max_order_value(
    context: RiskContext, order: ProposedOrder, reduction: bool
) -> RiskRefusal | None:
    limit = context.limits.max_order_value
    if reduction or limit is None or order.value <= limit:
        return None
    ccy = context.currency
    return RiskRefusal(
        RiskRule.MAX_ORDER_VALUE,
        f"max_order_value: order value {format_amount(order.value)} {ccy} "
        f"({_qty(order.quantity)} x {format_amount(order.estimated_price)}) is above the "
        f"limit {format_amount(limit)} {ccy}",
    )


def _max_position_value(
    context: RiskContext, order: ProposedOrder, reduction: bool
) -> RiskRefusal | None:
    limit = context.limits.max_position_value
    if reduction or limit is None:
        return None
    after = context.position_value + order.value
    if after <= limit:
        return None
    ccy = context.currency
    return RiskRefusal(
        RiskRule.MAX_POSITION_VALUE,
        f"max_position_value: {order.symbol} would reach {format_amount(after)} {ccy} "
        f"(held and working {format_amount(context.position_value)} + order "
        f"{format_amount(order.value)}), above the limit {format_amount(limit)} {ccy}",
    )


def _max_open_orders(
    context: RiskContext, order: ProposedOrder, reduction: bool
) -> RiskRefusal | None:
    limit = context.limits.max_open_orders
    if reduction or limit is None or context.open_orders < limit:
        return None
    return RiskRefusal(
        RiskRule.MAX_OPEN_ORDERS,
        f"max_open_orders: {context.open_orders} orders already open, the limit is {limit}",
    )


def _daily_loss(context: RiskContext, order: ProposedOrder, reduction: bool) -> RiskRefusal | None:
    limit = context.limits.max_daily_loss
    if reduction or not crossed_daily_loss(context.realized_pnl_today, limit):
        return None
    assert limit is not None  # crossed_daily_loss is False without a limit
    ccy = context.currency
    return RiskRefusal(
        RiskRule.DAILY_LOSS,
        f"daily_loss: realized P&L today {format_amount(context.realized_pnl_today)} {ccy} "
        f"is at or beyond the loss limit of {format_amount(limit)} {ccy}; "
        f"only exits and reductions are allowed",
    )


def _duplicate_position(
    context: RiskContext, order: ProposedOrder, reduction: bool
) -> RiskRefusal | None:
    if reduction or order.purpose is not OrderPurpose.ENTRY:
        return None
    if not context.day_trade_position_exists:
        return None
    return RiskRefusal(
        RiskRule.DUPLICATE_POSITION,
        f"duplicate_position: {order.symbol} already has an open or pending day-trade "
        f"position; one per symbol",
    )
