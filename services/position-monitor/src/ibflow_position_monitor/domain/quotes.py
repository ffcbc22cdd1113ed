"""A symbol's latest prices as the domain sees them, and what makes a price usable.

:class:`Quote` is the domain's view of a :class:`~ibflow.contracts.market_data.MarketDataTick`
(or of a snapshot): bid, ask and last, whether the data is delayed, and when it was
true. It accepts whatever arrived, bad prices included, so the evaluation can *name*
what was wrong (and the caller count it) instead of failing on it.

A price is usable when it is present, a finite number (not NaN, not infinite) and above
zero. IB's "no price" markers (``-1``, ``0``) and ib_async's ``nan`` are all unusable.
Comparisons go through :func:`is_usable_price` first: comparing a NaN ``Decimal`` with
``<`` raises ``InvalidOperation``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeGuard

from ibflow.contracts.market_data import MarketDataTick

__all__ = ["Quote", "is_usable_price"]

_TWO: Final = Decimal(2)


def is_usable_price(price: Decimal | None) -> TypeGuard[Decimal]:
    """Present, finite and above zero."""
    return price is not None and price.is_finite() and price > 0


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest top of book and last trade of ``symbol``, true at ``at`` (UTC-aware).

    ``at`` is the tick's time (IB's, where it gives one): staleness is measured from it.
    """

    symbol: str
    at: dt.datetime
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None
    delayed: bool = False
    """Delayed (not real-time) data: never acted on for exits."""

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("Quote.at must be timezone-aware")
        if not self.symbol:
            raise ValueError("Quote.symbol must not be empty")

    @classmethod
    def from_tick(cls, tick: MarketDataTick) -> Quote:
        """The quote a tick carries, timed at its ``ts_event`` (IB's time of the tick).

        A tick carries only what changed; to keep a symbol's full top of book, merge
        ticks with :meth:`updated`.
        """
        return cls(
            symbol=tick.symbol,
            at=tick.ts_event,
            bid=tick.bid,
            ask=tick.ask,
            last=tick.last,
            delayed=tick.delayed,
        )

    def updated(self, newer: Quote) -> Quote:
        """This quote with ``newer``'s prices where it has them, timed at ``newer.at``.

        (Staleness then measures the last tick of any kind: a quote whose bid has not
        moved for minutes is still current if asks and trades keep arriving.)
        """
        if newer.symbol != self.symbol:
            raise ValueError(f"cannot merge a {newer.symbol} quote into a {self.symbol} quote")
        return Quote(
            symbol=self.symbol,
            at=newer.at,
            bid=self.bid if newer.bid is None else newer.bid,
            ask=self.ask if newer.ask is None else newer.ask,
            last=self.last if newer.last is None else newer.last,
            delayed=newer.delayed,
        )

    def age(self, now: dt.datetime) -> dt.timedelta:
        """How old the quote is at ``now`` (negative if ``at`` is ahead of our clock)."""
        return now - self.at

    @property
    def crossed(self) -> bool:
        """Bid above ask (both usable): the quote is wrong or mid-update; never act on it.
        A locked quote (bid == ask) is not crossed."""
        bid, ask = self.bid, self.ask
        return is_usable_price(bid) and is_usable_price(ask) and bid > ask

    @property
    def mid(self) -> Decimal | None:
        """``(bid + ask) / 2`` when both are usable and not crossed (exact: halves terminate)."""
        bid, ask = self.bid, self.ask
        if not (is_usable_price(bid) and is_usable_price(ask)) or bid > ask:
            return None
        return (bid + ask) / _TWO
