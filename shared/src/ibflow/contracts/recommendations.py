"""Trade recommendations for a session's morning entry, and what became of them.

Recommendations are submitted ahead of the session (by the API, an operator, or a
strategy plugged into the order-manager); at ``session.morning_entry`` the order-manager
sizes each one, checks it against the portfolio's cash and risk limits, and submits an
entry order carrying its stop and target, or records why it skipped it. Entry client
order ids are deterministic (portfolio, session date, symbol), so a re-fired session
event never buys twice.
"""

from __future__ import annotations

from datetime import date
from typing import Self

from pydantic import Field, model_validator

from ibflow.contracts.base import (
    Actor,
    ClientOrderId,
    Command,
    Contract,
    Event,
    Money,
    PortfolioId,
    PositiveMoney,
    PositiveQuantity,
    Symbol,
)
from ibflow.contracts.enums import OrderSide, OrderType

_ENTRY_TYPES = frozenset({OrderType.MKT, OrderType.LMT})


class Recommendation(Contract):
    """One symbol to enter at the session's morning entry.

    The size is either ``quantity`` (shares) or ``allocation`` (a fraction of the
    portfolio's equity, ``0 < allocation <= 1``), never both. ``entry_type`` is ``MKT``
    or ``LMT`` (then ``limit_price`` is required). ``stop_loss``/``take_profit`` become
    the position's protective levels.
    """

    symbol: Symbol
    side: OrderSide = OrderSide.BUY
    quantity: PositiveQuantity | None = None
    allocation: Money | None = Field(default=None, gt=0, le=1)
    entry_type: OrderType = OrderType.MKT
    limit_price: PositiveMoney | None = None
    stop_loss: PositiveMoney | None = None
    take_profit: PositiveMoney | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.quantity is None) == (self.allocation is None):
            raise ValueError("give exactly one of quantity, allocation")
        if self.entry_type not in _ENTRY_TYPES:
            raise ValueError("entry_type must be MKT or LMT")
        if (self.entry_type is OrderType.LMT) != (self.limit_price is not None):
            raise ValueError("limit_price is required for LMT entries and refused for MKT")
        if self.stop_loss is not None and self.take_profit is not None:
            long = self.side is OrderSide.BUY
            if (self.stop_loss < self.take_profit) != long:
                raise ValueError("stop_loss must be on the losing side of take_profit")
        return self


class SubmitRecommendations(Command):
    """Record recommendations for a portfolio's session (``ibflow.cmd.v1.recommendations.submit``).

    Idempotent per (portfolio, session date, symbol): a symbol already recommended for
    that session is kept as first recorded and reported as a duplicate. Refused when the
    session's morning entry has already run for the portfolio.
    """

    portfolio_id: PortfolioId
    session_date: date
    items: tuple[Recommendation, ...] = Field(min_length=1, max_length=500)
    source: str = Field(default="api", min_length=1, max_length=128)
    """Where they come from: ``api``, ``operator``, ``strategy:<name>``."""
    requested_by: Actor

    @model_validator(mode="after")
    def _unique_symbols(self) -> Self:
        symbols = [item.symbol for item in self.items]
        if len(set(symbols)) != len(symbols):
            raise ValueError("items: each symbol at most once per session")
        return self


class EntrySkipped(Contract):
    """A recommendation the morning entry did not submit, and why."""

    symbol: Symbol
    reason: str
    """The rule and its numbers, e.g. ``insufficient_cash: needs 5012.00, available 3000.00``."""


class EntrySessionCompleted(Event):
    """The morning entry ran for a portfolio: the orders it submitted and what it skipped.

    One per portfolio and occurrence of ``session.morning_entry`` (a duplicated session
    event yields the same ids, so this event is stored once).
    """

    portfolio_id: PortfolioId
    session_date: date
    occurrence_id: str
    submitted: tuple[ClientOrderId, ...] = ()
    skipped: tuple[EntrySkipped, ...] = ()

    def dedupe_key(self) -> str:
        """``entry:<portfolio_id>:<occurrence_id>``."""
        return f"entry:{self.portfolio_id}:{self.occurrence_id}"
