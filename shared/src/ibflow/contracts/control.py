"""The halt switch and risk limits, both owned by the order-manager.

A halt stops new entry and manual orders; exits (and cancels) still go through, since
they reduce risk. A halt with ``portfolio_id=None`` covers every portfolio, including
ones added later, and is published on the ``_all`` scope of the subject.
"""

from __future__ import annotations

from pydantic import Field

from ibflow.contracts.base import (
    Actor,
    ClientOrderId,
    Command,
    Contract,
    Event,
    Money,
    PortfolioId,
    Symbol,
)
from ibflow.contracts.enums import RiskAction


class TradingScope(Contract):
    """Which portfolio a halt or resume is about (``None``: all), why and who asked."""

    portfolio_id: PortfolioId | None = None
    reason: str = Field(min_length=1)
    requested_by: Actor
    """A user, or ``order-manager`` for a halt caused by a risk limit."""


class HaltTrading(TradingScope, Command):
    """Ask the order-manager to stop new entry and manual orders (idempotent)."""


class ResumeTrading(TradingScope, Command):
    """Ask the order-manager to lift a halt (idempotent)."""


class TradingHalted(TradingScope, Event):
    """New entry and manual orders are refused from now on."""


class TradingResumed(TradingScope, Event):
    """A halt was lifted."""


class RiskLimitBreached(Event):
    """A risk limit was or would have been exceeded, and what the order-manager did."""

    portfolio_id: PortfolioId
    limit: str = Field(min_length=1)
    """The limit's name, e.g. ``max_daily_loss`` or ``max_position_value``."""
    threshold: Money
    observed: Money
    """The value that crossed ``threshold`` (with the refused order, for a refusal)."""
    action: RiskAction
    client_order_id: ClientOrderId | None = None
    symbol: Symbol | None = None
    message: str
