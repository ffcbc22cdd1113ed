"""Money math of orders: ticks, notionals, cash reservations and cash deltas.

Decimal only, and **no rounding**: cash, reservations and deltas are kept exact
(``numeric`` columns hold them as they are), so the sum of an order's cash deltas is
exactly what the broker charged, and a reservation released piece by piece returns
exactly what was reserved. Rounding to the cent is for display only. The one inexact
operation is a division that does not terminate (an average, a proportional release
of a reservation that was not ``quantity * price``); it is carried to the default
decimal context's 28 significant digits.

Choices:

* **Reservations are for buys only.** ibflow's portfolios are long-only cash
  accounts: a sell closes (part of) a position we hold, it never needs cash, so it
  reserves 0. (A short sale in a cash account is refused by IB anyway.)
* **A buy reserves the most it may pay**: ``LMT`` and ``STP_LMT`` their limit price;
  ``STP`` its stop price plus the buffer (a triggered stop is a market order and can
  fill above the stop); ``MKT`` and ``TRAIL`` a reference price (the last trade or
  ask) plus the buffer, default 1 %.
* **Releases are proportional and telescoping**: the reservation still held is
  ``reserved * (quantity - filled) / quantity`` (:func:`remaining_reservation`),
  exactly 0 once fully filled; what a fill releases is the difference
  (:func:`release_for_fill`), so the releases always add up to the reservation.
  The fill's actual cost is a separate :func:`cash_delta`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from ibflow.contracts.enums import OrderSide, OrderType

__all__ = [
    "DEFAULT_BUFFER_FRACTION",
    "PENNY",
    "SUB_PENNY",
    "cash_delta",
    "commission_cash_delta",
    "format_amount",
    "is_on_tick",
    "order_notional",
    "release_for_fill",
    "remaining_reservation",
    "reservation",
    "reservation_price",
    "round_to_tick",
    "tick_size",
]

_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)

PENNY: Final = Decimal("0.01")
"""Reg NMS minimum price increment for prices at or above $1.00."""

SUB_PENNY: Final = Decimal("0.0001")
"""Reg NMS minimum price increment for prices below $1.00."""

DEFAULT_BUFFER_FRACTION: Final = Decimal("0.01")
"""Head-room reserved above the reference price for orders without a price cap (1 %)."""


def _check_positive(value: Decimal, name: str) -> None:
    if not (value.is_finite() and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")


def _check_non_negative(value: Decimal, name: str) -> None:
    if not (value.is_finite() and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {value}")


def format_amount(value: Decimal) -> str:
    """``value`` exactly, for messages: plain notation, at least two decimals, never
    rounded (``10150`` → ``"10150.00"``, ``0.1250`` → ``"0.125"``), so a refusal never
    shows two equal-looking amounts."""
    if not value.is_finite():
        return str(value)
    value = value.quantize(PENNY) if value == value.quantize(PENNY) else value.normalize()
    return format(value, "f")


def tick_size(price: Decimal, instrument_tick: Decimal | None = None) -> Decimal:
    """The minimum price increment at ``price``.

    The instrument's own tick (IB's ``minTick``) when known; otherwise the US Reg NMS
    rule: 0.01 at or above $1.00, 0.0001 below.
    """
    _check_positive(price, "price")
    if instrument_tick is not None:
        _check_positive(instrument_tick, "instrument_tick")
        return instrument_tick
    return PENNY if price >= _ONE else SUB_PENNY


def is_on_tick(price: Decimal, tick: Decimal) -> bool:
    """Whether ``price`` is a whole multiple of ``tick`` (exact, no tolerance)."""
    _check_positive(tick, "tick")
    if not price.is_finite():
        return False
    return price % tick == 0


def round_to_tick(price: Decimal, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """``price`` rounded to a multiple of ``tick`` with the given :mod:`decimal`
    rounding mode (e.g. ``ROUND_FLOOR`` for a buy limit that must not pay more)."""
    _check_positive(tick, "tick")
    if not price.is_finite():
        raise ValueError(f"price must be a finite number, got {price}")
    steps = (price / tick).quantize(_ONE, rounding=rounding)
    return steps * tick


def order_notional(quantity: Decimal, price: Decimal, multiplier: Decimal = _ONE) -> Decimal:
    """``quantity * price * multiplier``, exact (the multiplier is 1 for stocks)."""
    _check_non_negative(quantity, "quantity")
    _check_non_negative(price, "price")
    _check_positive(multiplier, "multiplier")
    return quantity * price * multiplier


def reservation_price(
    order_type: OrderType,
    *,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    reference_price: Decimal | None = None,
    buffer_fraction: Decimal = DEFAULT_BUFFER_FRACTION,
) -> Decimal:
    """The per-share price a working buy of ``order_type`` reserves (module docstring).

    Raises :class:`ValueError` when the price the type needs is missing (``LMT``/
    ``STP_LMT`` a limit, ``STP`` a stop, ``MKT``/``TRAIL`` a reference price).
    """
    _check_non_negative(buffer_fraction, "buffer_fraction")
    if order_type in (OrderType.LMT, OrderType.STP_LMT):
        return _need(limit_price, "limit_price", order_type)
    if order_type is OrderType.STP:
        return _need(stop_price, "stop_price", order_type) * (_ONE + buffer_fraction)
    return _need(reference_price, "reference_price", order_type) * (_ONE + buffer_fraction)


def _need(price: Decimal | None, name: str, order_type: OrderType) -> Decimal:
    if price is None:
        raise ValueError(f"{name} is required to reserve cash for a {order_type} buy")
    _check_positive(price, name)
    return price


def reservation(
    side: OrderSide,
    order_type: OrderType,
    quantity: Decimal,
    *,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    reference_price: Decimal | None = None,
    buffer_fraction: Decimal = DEFAULT_BUFFER_FRACTION,
    multiplier: Decimal = _ONE,
) -> Decimal:
    """Cash reserved while an order works: ``quantity * reservation_price * multiplier``
    for a buy, 0 for a sell (long-only cash accounts; see the module docstring)."""
    _check_positive(quantity, "quantity")
    if side is OrderSide.SELL:
        return _ZERO
    price = reservation_price(
        order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        reference_price=reference_price,
        buffer_fraction=buffer_fraction,
    )
    return order_notional(quantity, price, multiplier)


def remaining_reservation(reserved: Decimal, quantity: Decimal, filled: Decimal) -> Decimal:
    """The part of ``reserved`` still held once ``filled`` of ``quantity`` has filled:
    ``reserved * (quantity - filled) / quantity``; exactly 0 when fully filled.

    Exact whenever ``reserved`` is ``quantity * a price`` (every :func:`reservation`).
    A terminal order releases all of what is left (its remainder no longer works).
    """
    _check_non_negative(reserved, "reserved")
    _check_positive(quantity, "quantity")
    _check_non_negative(filled, "filled")
    if filled > quantity:
        raise ValueError(f"filled {filled} is above quantity {quantity}")
    if filled == quantity:
        return _ZERO
    if filled == 0:
        return reserved
    return reserved * (quantity - filled) / quantity


def release_for_fill(
    reserved: Decimal, quantity: Decimal, filled_before: Decimal, shares: Decimal
) -> Decimal:
    """The cash a fill of ``shares`` releases from an order's reservation ``reserved``
    (made for its ``quantity``), ``filled_before`` having filled already.

    The difference of :func:`remaining_reservation` before and after, so the releases
    of all fills add up to exactly ``reserved`` when the order fills completely.
    """
    _check_positive(shares, "shares")
    before = remaining_reservation(reserved, quantity, filled_before)
    return before - remaining_reservation(reserved, quantity, filled_before + shares)


def cash_delta(
    side: OrderSide,
    shares: Decimal,
    price: Decimal,
    commission: Decimal = _ZERO,
    multiplier: Decimal = _ONE,
) -> Decimal:
    """The change of cash an execution causes, exact.

    Buy: ``-(shares * price * multiplier) - commission``; sell:
    ``+(shares * price * multiplier) - commission``. The commission usually arrives
    later (failure mode 10): book the execution with 0 here and the commission with
    :func:`commission_cash_delta` when it is known.
    """
    _check_positive(shares, "shares")
    _check_positive(price, "price")
    if not commission.is_finite():
        raise ValueError(f"commission must be a finite number, got {commission}")
    gross = order_notional(shares, price, multiplier)
    return (-gross if side is OrderSide.BUY else gross) - commission


def commission_cash_delta(commission: Decimal) -> Decimal:
    """The change of cash a commission report causes: ``-commission`` (a rebate, a
    negative commission, adds cash)."""
    if not commission.is_finite():
        raise ValueError(f"commission must be a finite number, got {commission}")
    return -commission
