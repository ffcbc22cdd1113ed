"""Unrealized P&L of positions from marks, and per-portfolio sums. Exact Decimal.

The mark of a symbol is its **last** trade price when usable, else the **mid** of a
usable, uncrossed bid and ask (:func:`mark_price`); with neither there is no mark (a
position's previous mark stands, and the caller may show its age).

Unrealized P&L is the gross result of the shares still held at the mark, from *our*
entry cost (never IB's ``avgCost``, see :mod:`~ibflow_position_monitor.domain.position`)::

    LONG:  (mark * quantity - held_cost) * multiplier
    SHORT: (held_cost - mark * quantity) * multiplier

``held_cost`` is the entry cost of the shares still held (``entry_notional`` until
anything is sold back), so it is exact for an unexited position. Commissions are not
in it: they are charged to realized P&L when known, so realized + unrealized is the
whole P&L. Marks are for display and metrics, never for exits: a delayed or stale
quote still marks (the :class:`Mark` records ``delayed`` and its time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from ibflow.contracts.enums import PositionSide
from ibflow_position_monitor.domain.position import PositionState
from ibflow_position_monitor.domain.quotes import Quote, is_usable_price

__all__ = [
    "Mark",
    "MarkSource",
    "PortfolioUnrealized",
    "mark_position",
    "mark_price",
    "portfolio_unrealized",
    "unrealized_pnl",
]

_ZERO: Final = Decimal(0)


class MarkSource(StrEnum):
    """Which price a mark came from."""

    LAST = "last"
    MID = "mid"


def mark_price(quote: Quote) -> tuple[Decimal, MarkSource] | None:
    """The quote's mark: the last price when usable, else the mid; ``None`` if neither."""
    if is_usable_price(quote.last):
        return quote.last, MarkSource.LAST
    mid = quote.mid
    if mid is not None:
        return mid, MarkSource.MID
    return None


def unrealized_pnl(position: PositionState, price: Decimal) -> Decimal:
    """Gross P&L of ``position``'s held shares at ``price`` (module docstring); 0 when
    nothing is held."""
    if not is_usable_price(price):
        raise ValueError(f"a mark must be a positive number, got {price}")
    held = position.quantity
    if held == 0:
        return _ZERO
    difference = price * held - position.held_cost
    if position.side is PositionSide.SHORT:
        difference = -difference
    return difference * position.multiplier


@dataclass(frozen=True, slots=True)
class Mark:
    """A position valued at a mark (a ``position_marks`` row)."""

    position_id: str
    portfolio_id: str
    symbol: str
    price: Decimal
    source: MarkSource
    quantity: Decimal
    """The quantity held when marked."""
    unrealized_pnl: Decimal
    marked_at: dt.datetime
    """The quote's time."""
    delayed: bool = False


def mark_position(position: PositionState, quote: Quote) -> Mark | None:
    """``position`` marked at ``quote``'s mark, or ``None`` when the quote has no mark.

    Raises :class:`ValueError` for a quote of another symbol.
    """
    if quote.symbol != position.symbol:
        raise ValueError(
            f"cannot mark {position.position_id} in {position.symbol} with a {quote.symbol} quote"
        )
    found = mark_price(quote)
    if found is None:
        return None
    price, source = found
    return Mark(
        position_id=position.position_id,
        portfolio_id=position.portfolio_id,
        symbol=position.symbol,
        price=price,
        source=source,
        quantity=position.quantity,
        unrealized_pnl=unrealized_pnl(position, price),
        marked_at=quote.at,
        delayed=quote.delayed,
    )


@dataclass(frozen=True, slots=True)
class PortfolioUnrealized:
    """The sum of a portfolio's marks."""

    portfolio_id: str
    unrealized_pnl: Decimal
    positions: int
    """How many marked positions the sum covers."""


def portfolio_unrealized(marks: Iterable[Mark]) -> dict[str, PortfolioUnrealized]:
    """Portfolio id → the exact sum of its marks' unrealized P&L (one mark per position:
    a second mark of the same position raises :class:`ValueError`)."""
    totals: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for mark in marks:
        if mark.position_id in seen:
            raise ValueError(f"position {mark.position_id} is marked twice")
        seen.add(mark.position_id)
        totals[mark.portfolio_id] = totals.get(mark.portfolio_id, _ZERO) + mark.unrealized_pnl
        counts[mark.portfolio_id] = counts.get(mark.portfolio_id, 0) + 1
    return {
        portfolio: PortfolioUnrealized(portfolio, total, counts[portfolio])
        for portfolio, total in sorted(totals.items())
    }
