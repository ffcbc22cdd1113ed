"""When to exit a position: stop / target on each tick, and the session close-out.

:func:`evaluate` looks at one OPEN position and the latest :class:`Quote` of its symbol
and answers :class:`ExitDecision` (send this exit) or :class:`NoExit` (with a reason the
caller logs and counts). :func:`close_out_decision` answers the same for the session's
close-out, where every OPEN position exits whatever the price.

The price watched:

* ``price_source=last``: the last trade, for both sides;
* ``price_source=bid_ask``: the price the exit would trade at: a LONG (which sells)
  watches the **bid**, a SHORT (which buys) the **ask**.

A LONG's stop is hit when the price is at or below it, its target at or above it; a
SHORT's the mirror (stop at or above, target at or below). (Both cannot hit at once:
levels on the wrong side of each other are refused by the position.)

Never acted on, each with its own :class:`NoExitReason` (failure mode 4: no tick for a
while is *stale data*, never "price unchanged"):

* delayed data (``delayed``), a quote older than ``max_age`` (``stale``);
* a crossed quote, bid above ask (``crossed``), whichever price is watched;
* the watched price missing (``missing_price``), or NaN / infinite / zero / negative
  (``invalid_price``).

Exactly one exit per position: the decision carries the position's next deterministic
client order id (``exit:<position_id>``, see :mod:`~ibflow_position_monitor.domain.ids`);
the caller records it with :meth:`PositionState.submit_exit` (the position becomes
``CLOSING``, so the next tick answers ``not_open``) and submits it through order-manager,
which keeps the first order per client order id: a duplicate tick, a redelivered event
or a second replica can only produce the same id again.

Exits are market orders, except that the close-out may use a *marketable limit*: a
sell at the bid minus ``offset_ticks`` ticks, a buy at the ask plus ``offset_ticks``
ticks, rounded outwards (down for a sell, up for a buy) to the tick size of the
resulting price (Reg NMS: 0.01 at or above $1.00, 0.0001 below, unless the instrument
has its own). Without a usable, fresh, uncrossed quote the close-out falls back to a
market order (and says why): the close-out never skips a position for lack of a price.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Final

from ibflow.contracts.enums import ExitReason, OrderSide, OrderType, PositionSide, PositionStatus
from ibflow_position_monitor.domain.position import PositionState
from ibflow_position_monitor.domain.quotes import Quote, is_usable_price

__all__ = [
    "DEFAULT_CLOSE_OUT_OFFSET_TICKS",
    "PENNY",
    "SUB_PENNY",
    "CloseOutStyle",
    "ExitDecision",
    "NoExit",
    "NoExitReason",
    "PriceSource",
    "close_out_decision",
    "evaluate",
    "marketable_limit",
    "round_to_tick",
    "tick_size",
]

_ONE: Final = Decimal(1)

PENNY: Final = Decimal("0.01")
"""Reg NMS minimum price increment at or above $1.00."""

SUB_PENNY: Final = Decimal("0.0001")
"""Reg NMS minimum price increment below $1.00."""

DEFAULT_CLOSE_OUT_OFFSET_TICKS: Final = 5
"""How far through the quote a close-out marketable limit is placed, in ticks."""


class PriceSource(StrEnum):
    """Which price stop and target are compared with."""

    LAST = "last"
    BID_ASK = "bid_ask"


class CloseOutStyle(StrEnum):
    """The order type of close-out exits."""

    MARKET = "market"
    MARKETABLE_LIMIT = "marketable_limit"


class NoExitReason(StrEnum):
    """Why a position was not exited on this quote."""

    NOT_OPEN = "not_open"
    """The position is not OPEN (PENDING, already CLOSING, CLOSED or CANCELLED)."""
    WRONG_SYMBOL = "wrong_symbol"
    """The quote is for another symbol (a routing bug upstream)."""
    NO_LEVELS = "no_levels"
    """The position has neither a stop nor a target."""
    DELAYED = "delayed"
    STALE = "stale"
    CROSSED = "crossed"
    MISSING_PRICE = "missing_price"
    INVALID_PRICE = "invalid_price"
    NOT_HIT = "not_hit"
    """Everything in order; neither level is hit."""

    @property
    def is_bad_data(self) -> bool:
        """The quote was unusable (delayed, stale, crossed, a missing or invalid
        price): log and count it, and treat the position as unwatched until good data
        returns."""
        return self in _BAD_DATA


_BAD_DATA: Final = frozenset(
    {
        NoExitReason.DELAYED,
        NoExitReason.STALE,
        NoExitReason.CROSSED,
        NoExitReason.MISSING_PRICE,
        NoExitReason.INVALID_PRICE,
    }
)


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """Send this exit for the position (then record it with ``submit_exit``)."""

    position_id: str
    portfolio_id: str
    symbol: str
    client_order_id: str
    """Deterministic: the position's next exit id (``exit:<position_id>`` first)."""
    reason: ExitReason
    side: OrderSide
    """SELL for a LONG position, BUY for a SHORT one."""
    quantity: Decimal
    """Everything held now."""
    order_type: OrderType = OrderType.MKT
    limit_price: Decimal | None = None
    """Only for ``LMT`` (a close-out marketable limit)."""
    trigger_price: Decimal | None = None
    """The price that hit the level (stop / target exits)."""
    level: Decimal | None = None
    """The stop or target that was hit."""
    cancel_entry_remainder: bool = False
    """The entry order still works: cancel its rest along with the exit."""
    fallback: NoExitReason | None = None
    """Close-out only: why a marketable limit became a market order."""


@dataclass(frozen=True, slots=True)
class NoExit:
    """Nothing to send; ``reason`` is the metric label, ``detail`` the log text."""

    reason: NoExitReason
    detail: str = ""


# -- ticks -------------------------------------------------------------------------


def tick_size(price: Decimal, instrument_tick: Decimal | None = None) -> Decimal:
    """The minimum price increment at ``price``: the instrument's own tick when known,
    else Reg NMS (0.01 at or above $1.00, 0.0001 below)."""
    if not (price.is_finite() and price > 0):
        raise ValueError(f"price must be a positive number, got {price}")
    if instrument_tick is not None:
        if not (instrument_tick.is_finite() and instrument_tick > 0):
            raise ValueError(f"instrument_tick must be positive, got {instrument_tick}")
        return instrument_tick
    return PENNY if price >= _ONE else SUB_PENNY


def round_to_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    """``price`` rounded to a multiple of ``tick`` with the :mod:`decimal` ``rounding``."""
    if not (tick.is_finite() and tick > 0):
        raise ValueError(f"tick must be positive, got {tick}")
    if not price.is_finite():
        raise ValueError(f"price must be a finite number, got {price}")
    return (price / tick).quantize(_ONE, rounding=rounding) * tick


def marketable_limit(
    side: OrderSide,
    reference: Decimal,
    *,
    offset_ticks: int = DEFAULT_CLOSE_OUT_OFFSET_TICKS,
    instrument_tick: Decimal | None = None,
) -> Decimal:
    """A limit price that trades at once: a BUY ``offset_ticks`` ticks above
    ``reference`` (the ask), rounded up; a SELL that far below it (the bid), rounded
    down, never below one tick. The offset uses the tick at ``reference``; the rounding
    the tick at the result (so 0.9999 + 2 ticks becomes 1.01, never sub-penny 1.0001).
    """
    if offset_ticks < 0:
        raise ValueError(f"offset_ticks must be >= 0, got {offset_ticks}")
    offset = offset_ticks * tick_size(reference, instrument_tick)
    if side is OrderSide.BUY:
        candidate = reference + offset
        return round_to_tick(candidate, tick_size(candidate, instrument_tick), ROUND_CEILING)
    floor = instrument_tick if instrument_tick is not None else SUB_PENNY
    candidate = reference - offset
    if candidate <= 0:
        return floor
    rounded = round_to_tick(candidate, tick_size(candidate, instrument_tick), ROUND_FLOOR)
    return rounded if rounded > 0 else floor


# -- evaluation ----------------------------------------------------------------------


def _watched_price(
    position: PositionState, quote: Quote, price_source: PriceSource
) -> tuple[str, Decimal | None]:
    if price_source is PriceSource.LAST:
        return "last", quote.last
    if position.side is PositionSide.LONG:
        return "bid", quote.bid
    return "ask", quote.ask


def _quote_problem(
    quote: Quote, now: dt.datetime | None, max_age: dt.timedelta | None
) -> NoExit | None:
    """Why ``quote`` may not be acted on at all (delayed, stale, crossed), if it may not."""
    if quote.delayed:
        return NoExit(NoExitReason.DELAYED, f"{quote.symbol}: delayed market data")
    if now is not None and max_age is not None:
        age = quote.age(now)
        if age > max_age:
            return NoExit(
                NoExitReason.STALE,
                f"{quote.symbol}: last tick {age.total_seconds():.3f}s old, "
                f"limit {max_age.total_seconds():.3f}s",
            )
    if quote.crossed:
        return NoExit(
            NoExitReason.CROSSED, f"{quote.symbol}: crossed quote bid {quote.bid} > ask {quote.ask}"
        )
    return None


def _bad_price(symbol: str, name: str, price: Decimal | None) -> NoExit:
    """Why ``price`` (known to be unusable) cannot be acted on."""
    if price is None:
        return NoExit(NoExitReason.MISSING_PRICE, f"{symbol}: no {name} price")
    return NoExit(NoExitReason.INVALID_PRICE, f"{symbol}: unusable {name} price {price}")


def _check_clock(now: dt.datetime, max_age: dt.timedelta) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if max_age <= dt.timedelta(0):
        raise ValueError(f"max_age must be positive, got {max_age}")


def _not_watchable(position: PositionState, quote: Quote) -> NoExit | None:
    """Why ``position`` is not watched on ``quote`` whatever its prices, if it is not."""
    status = position.status
    if status is not PositionStatus.OPEN:
        return NoExit(NoExitReason.NOT_OPEN, f"{position.position_id} is {status.value}")
    if quote.symbol != position.symbol:
        return NoExit(
            NoExitReason.WRONG_SYMBOL,
            f"a {quote.symbol} quote for {position.position_id} in {position.symbol}",
        )
    if position.stop_loss is None and position.take_profit is None:
        return NoExit(NoExitReason.NO_LEVELS, f"{position.position_id} has no stop or target")
    return None


def _hit(position: PositionState, price: Decimal) -> tuple[ExitReason, Decimal] | None:
    stop, target = position.stop_loss, position.take_profit
    if position.side is PositionSide.LONG:
        if stop is not None and price <= stop:
            return ExitReason.STOP, stop
        if target is not None and price >= target:
            return ExitReason.TARGET, target
        return None
    if stop is not None and price >= stop:
        return ExitReason.STOP, stop
    if target is not None and price <= target:
        return ExitReason.TARGET, target
    return None


def _decision(
    position: PositionState,
    reason: ExitReason,
    *,
    order_type: OrderType = OrderType.MKT,
    limit_price: Decimal | None = None,
    trigger_price: Decimal | None = None,
    level: Decimal | None = None,
    fallback: NoExitReason | None = None,
) -> ExitDecision:
    return ExitDecision(
        position_id=position.position_id,
        portfolio_id=position.portfolio_id,
        symbol=position.symbol,
        client_order_id=position.next_exit_client_order_id,
        reason=reason,
        side=position.exit_side,
        quantity=position.quantity,
        order_type=order_type,
        limit_price=limit_price,
        trigger_price=trigger_price,
        level=level,
        cancel_entry_remainder=position.entry_working,
        fallback=fallback,
    )


def evaluate(
    position: PositionState,
    quote: Quote,
    *,
    price_source: PriceSource,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> ExitDecision | NoExit:
    """Whether ``quote`` hits ``position``'s stop or target (module docstring).

    ``now`` (timezone-aware) and ``max_age`` (positive) decide staleness: a quote
    older than ``max_age`` at ``now`` is never acted on.
    """
    _check_clock(now, max_age)
    problem = _not_watchable(position, quote) or _quote_problem(quote, now, max_age)
    if problem is not None:
        return problem
    name, price = _watched_price(position, quote, price_source)
    if not is_usable_price(price):
        return _bad_price(quote.symbol, name, price)
    hit = _hit(position, price)
    if hit is None:
        return NoExit(
            NoExitReason.NOT_HIT,
            f"{position.position_id}: {name} {price} within stop {position.stop_loss} "
            f"/ target {position.take_profit}",
        )
    reason, level = hit
    return _decision(position, reason, trigger_price=price, level=level)


def close_out_decision(
    position: PositionState,
    quote: Quote | None = None,
    *,
    style: CloseOutStyle = CloseOutStyle.MARKET,
    offset_ticks: int = DEFAULT_CLOSE_OUT_OFFSET_TICKS,
    now: dt.datetime | None = None,
    max_age: dt.timedelta | None = None,
    instrument_tick: Decimal | None = None,
) -> ExitDecision | NoExit:
    """The session close-out's exit for ``position`` (reason ``close_out``).

    Every OPEN position exits; anything else answers ``not_open`` (so a repeated
    close-out, finding the positions CLOSING, sends nothing more; PENDING positions
    are the caller's to cancel). ``style=market``: a market order.
    ``style=marketable_limit``: a limit from the quote's bid (a sell) or ask (a buy)
    and ``offset_ticks`` (:func:`marketable_limit`), or a market order with
    :attr:`ExitDecision.fallback` set when the quote is missing, delayed, stale (given
    ``now`` and ``max_age``), crossed, for another symbol, or lacks that price.
    """
    if offset_ticks < 0:
        raise ValueError(f"offset_ticks must be >= 0, got {offset_ticks}")
    if now is not None and max_age is not None:
        _check_clock(now, max_age)
    status = position.status
    if status is not PositionStatus.OPEN:
        return NoExit(NoExitReason.NOT_OPEN, f"{position.position_id} is {status.value}")
    if style is CloseOutStyle.MARKET:
        return _decision(position, ExitReason.CLOSE_OUT)
    reference = _limit_reference(position, quote, now, max_age)
    if isinstance(reference, NoExitReason):
        return _decision(position, ExitReason.CLOSE_OUT, fallback=reference)
    limit = marketable_limit(
        position.exit_side, reference, offset_ticks=offset_ticks, instrument_tick=instrument_tick
    )
    return _decision(position, ExitReason.CLOSE_OUT, order_type=OrderType.LMT, limit_price=limit)


def _limit_reference(
    position: PositionState,
    quote: Quote | None,
    now: dt.datetime | None,
    max_age: dt.timedelta | None,
) -> Decimal | NoExitReason:
    """The bid (for a sell) or ask (for a buy) to place a marketable limit from, or why
    there is none."""
    if quote is None:
        return NoExitReason.MISSING_PRICE
    if quote.symbol != position.symbol:
        return NoExitReason.WRONG_SYMBOL
    problem = _quote_problem(quote, now, max_age)
    if problem is not None:
        return problem.reason
    name, price = ("bid", quote.bid) if position.exit_side is OrderSide.SELL else ("ask", quote.ask)
    if not is_usable_price(price):
        return _bad_price(quote.symbol, name, price).reason
    return price
