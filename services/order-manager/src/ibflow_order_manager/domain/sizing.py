"""Sizing of the morning entry, and the deterministic ids of entry orders and positions.

:func:`size_entry` turns one :class:`~ibflow.contracts.recommendations.Recommendation`
into a :class:`Sized` order or a :class:`Skipped` one (with a :class:`SkipReason` and
the numbers). Rules:

* **Price**: an ``LMT`` entry is valued at its limit price, a ``MKT`` entry at the
  reference price (last trade or ask); no usable reference price → ``no_price``.
* **Quantity**: the recommendation's ``quantity``, or ``allocation * equity / price``.
  Always rounded **down**: to whole shares, or to 4 decimals when the portfolio allows
  fractional shares (IB's finest fractional increment); rounding down never spends
  more than allocated. An explicit quantity is rounded the same way (a fractional
  quantity in a whole-share portfolio loses its fraction). Nothing left → ``too_small``.
* **Cash**: a buy's estimated cost is the cash its order will reserve
  (:func:`~ibflow_order_manager.domain.pricing.reservation`: the limit, or the
  reference price plus the buffer for ``MKT``), and must fit in the available cash
  (cash minus reservations), else ``insufficient_cash``: the entry is skipped, not
  shrunk, so what is bought is what was recommended. A sell reserves no cash (see
  :mod:`~ibflow_order_manager.domain.pricing`); its estimated cost is its value.

Risk checks (:mod:`~ibflow_order_manager.domain.risk`) come after sizing.

Deterministic ids (:func:`entry_client_order_id`, :func:`entry_position_id`):
``<purpose>-<portfolio>-<yyyymmdd>-<symbol>`` and ``pos-<portfolio>-<yyyymmdd>-<symbol>``,
so a re-fired or duplicated session event produces the same ids and never buys twice.
The symbol keeps letters, digits and ``.``; every other character is escaped as
``_`` plus its UTF-8 bytes in upper-case hex (``"BRK B"`` → ``BRK_20B``, ``_`` itself →
``_5F``). The escaping is reversible and leaves no ``-`` in the symbol, so distinct
inputs never give the same id. An id longer than 64 characters keeps its first 47
characters and appends ``:`` and 16 hex digits of the SHA-256 of the full id (``:``
appears in no unhashed id, so the two kinds cannot collide).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Final

from ibflow.contracts.enums import OrderPurpose, OrderSide, OrderType
from ibflow.contracts.recommendations import Recommendation
from ibflow_order_manager.domain.pricing import (
    DEFAULT_BUFFER_FRACTION,
    format_amount,
    reservation,
)

__all__ = [
    "FRACTIONAL_STEP",
    "MAX_ID_LENGTH",
    "SizeResult",
    "Sized",
    "SkipReason",
    "Skipped",
    "entry_client_order_id",
    "entry_position_id",
    "round_quantity",
    "size_entry",
]

FRACTIONAL_STEP: Final = Decimal("0.0001")
"""The finest fractional share quantity: sizes are rounded down to 4 decimals."""

MAX_ID_LENGTH: Final = 64
"""Longest client order / position id (``ibflow.contracts.base.ClientOrderId``)."""

_WHOLE: Final = Decimal(1)
_ZERO: Final = Decimal(0)
_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_PORTFOLIO_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SYMBOL_KEPT: Final = frozenset(string.ascii_letters + string.digits + ".")
_HASHED_PREFIX: Final = MAX_ID_LENGTH - 17  # ":" + 16 hex digits


class SkipReason(StrEnum):
    """Why the morning entry did not submit a recommendation."""

    NO_PRICE = "no_price"
    """A ``MKT`` entry without a usable reference price."""
    NO_EQUITY = "no_equity"
    """An allocation, but the portfolio's equity is not positive."""
    TOO_SMALL = "too_small"
    """The size rounds down to zero shares."""
    INSUFFICIENT_CASH = "insufficient_cash"
    """The order would reserve more than the available cash."""


@dataclass(frozen=True, slots=True)
class Sized:
    """An entry to submit: its quantity, the price it was valued at, and its estimated
    cost (the cash a buy reserves; a sell's value)."""

    quantity: Decimal
    estimated_price: Decimal
    estimated_cost: Decimal


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry not submitted, why (:class:`SkipReason`) and the numbers (``detail``)."""

    reason: SkipReason
    detail: str

    @property
    def message(self) -> str:
        """``"<reason>: <detail>"``, the ``EntrySkipped.reason`` text."""
        return f"{self.reason.value}: {self.detail}"


SizeResult = Sized | Skipped
"""What :func:`size_entry` returns."""


def round_quantity(quantity: Decimal, fractional_allowed: bool) -> Decimal:
    """``quantity`` rounded down to whole shares, or to 4 decimals if fractional."""
    if not quantity.is_finite():
        raise ValueError(f"quantity must be a finite number, got {quantity}")
    step = FRACTIONAL_STEP if fractional_allowed else _WHOLE
    return quantity.quantize(step, rounding=ROUND_DOWN)


def size_entry(
    recommendation: Recommendation,
    *,
    equity: Decimal,
    available_cash: Decimal,
    reference_price: Decimal | None,
    fractional_allowed: bool,
    buffer_fraction: Decimal = DEFAULT_BUFFER_FRACTION,
) -> Sized | Skipped:
    """Size one recommendation for the morning entry (rules in the module docstring).

    ``available_cash`` is the portfolio's cash minus its reserved cash; ``equity`` its
    cash plus the value of its positions (what ``allocation`` is a fraction of).
    """
    rec = recommendation
    price = _entry_price(rec, reference_price)
    if price is None:
        return Skipped(
            SkipReason.NO_PRICE,
            f"no reference price for {rec.symbol} ({rec.entry_type} entry), got {reference_price}",
        )
    if rec.quantity is not None:
        wanted = rec.quantity
        basis = f"quantity {_shares(rec.quantity)}"
    else:
        allocation = rec.allocation
        assert allocation is not None  # a Recommendation has exactly one of the two
        if equity <= 0:
            return Skipped(
                SkipReason.NO_EQUITY,
                f"allocation {allocation} of equity {format_amount(equity)} buys nothing",
            )
        budget = equity * allocation
        wanted = budget / price
        basis = (
            f"allocation {allocation} of equity {format_amount(equity)} = "
            f"{format_amount(budget)} at {format_amount(price)}"
        )
    quantity = round_quantity(wanted, fractional_allowed)
    if quantity <= 0:
        unit = "4 decimals" if fractional_allowed else "whole shares"
        return Skipped(
            SkipReason.TOO_SMALL, f"{basis} rounds down to 0 shares ({unit}) for {rec.symbol}"
        )
    if rec.side is OrderSide.SELL:
        return Sized(quantity, price, quantity * price)
    cost = reservation(
        rec.side,
        rec.entry_type,
        quantity,
        limit_price=rec.limit_price,
        reference_price=reference_price,
        buffer_fraction=buffer_fraction,
    )
    if cost > available_cash:
        return Skipped(
            SkipReason.INSUFFICIENT_CASH,
            f"{_shares(quantity)} {rec.symbol} needs {format_amount(cost)}, "
            f"available {format_amount(available_cash)}",
        )
    return Sized(quantity, price, cost)


def _shares(quantity: Decimal) -> str:
    return format(quantity.normalize(), "f")


def _entry_price(rec: Recommendation, reference_price: Decimal | None) -> Decimal | None:
    if rec.entry_type is OrderType.LMT:
        return rec.limit_price
    if reference_price is None or not reference_price.is_finite() or reference_price <= 0:
        return None
    return reference_price


# -- deterministic ids -------------------------------------------------------------------


def entry_client_order_id(
    portfolio_id: str,
    session_date: date,
    symbol: str,
    purpose: OrderPurpose = OrderPurpose.ENTRY,
) -> str:
    """The client order id of the session's order for ``symbol``:
    ``entry-<portfolio>-<yyyymmdd>-<symbol>`` (see the module docstring)."""
    return _deterministic_id(purpose.value, portfolio_id, session_date, symbol)


def entry_position_id(portfolio_id: str, session_date: date, symbol: str) -> str:
    """The id of the day-trade position the session's entry opens:
    ``pos-<portfolio>-<yyyymmdd>-<symbol>``."""
    return _deterministic_id("pos", portfolio_id, session_date, symbol)


def _escape_symbol(symbol: str) -> str:
    return "".join(
        char if char in _SYMBOL_KEPT else "".join(f"_{byte:02X}" for byte in char.encode())
        for char in symbol
    )


def _deterministic_id(prefix: str, portfolio_id: str, session_date: date, symbol: str) -> str:
    if not _PORTFOLIO_PATTERN.match(portfolio_id):
        raise ValueError(f"portfolio_id {portfolio_id!r} is not a portfolio slug")
    if not symbol:
        raise ValueError("symbol must not be empty")
    plain = f"{prefix}-{portfolio_id}-{session_date:%Y%m%d}-{_escape_symbol(symbol)}"
    if len(plain) > MAX_ID_LENGTH:
        digest = hashlib.sha256(plain.encode()).hexdigest()[:16]
        plain = f"{plain[:_HASHED_PREFIX]}:{digest}"
    if not _ID_PATTERN.match(plain):  # pragma: no cover - guaranteed by construction
        raise AssertionError(f"generated id {plain!r} does not match the id pattern")
    return plain
