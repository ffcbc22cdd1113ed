"""Live prices: subscription commands to the gateway-bridge and the ticks it publishes."""

from __future__ import annotations

from pydantic import Field

from ibflow.contracts.base import (
    Actor,
    Command,
    Contract,
    Event,
    Money,
    PortfolioId,
    Quantity,
    Symbol,
)


class MarketDataRequest(Contract):
    """Which symbols, through which portfolio's connection, for whom."""

    portfolio_id: PortfolioId | None = None
    """The connection to use; ``None``: any ready one."""
    symbols: tuple[Symbol, ...] = Field(min_length=1)
    requested_by: Actor
    """Subscriptions are counted per requester: a symbol stays subscribed while anyone wants it."""


class SubscribeMarketData(MarketDataRequest, Command):
    """Ask the bridge to stream ticks for these symbols (idempotent per requester)."""

    refresh: bool = False
    """Also re-request the lines already streaming (cancel, then request again), for a
    requester whose ticks stopped although IB reported no outage (a stale line)."""


class UnsubscribeMarketData(MarketDataRequest, Command):
    """Withdraw this requester's interest in these symbols."""


class MarketDataTick(Event):
    """A change of a symbol's top of book or last trade (market data, not a persisted
    event); ``ts_event`` is IB's time of the tick. Prices IB does not have are ``None``."""

    symbol: Symbol
    con_id: int | None = None
    bid: Money | None = None
    ask: Money | None = None
    last: Money | None = None
    bid_size: Quantity | None = None
    ask_size: Quantity | None = None
    last_size: Quantity | None = None
    delayed: bool = False
    """Delayed (not real-time) data: stop/target exits must not act on it."""
