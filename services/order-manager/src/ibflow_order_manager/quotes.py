"""Reference prices from the gateway-bridge's market data, for valuing ``MKT`` orders
and sizing morning entries.

:class:`Quotes` keeps, per symbol, the latest usable price seen on core NATS
(``subjects.market_data(symbol)``, published by the bridge's ``MarketDataFeed``) and
when it arrived. :meth:`Quotes.reference_price` answers from that cache when the price
is fresh (arrived at most ``max_age`` seconds ago, default 10); otherwise it listens
on the symbol's subject, asks the bridge for the symbol (``SubscribeMarketData``,
requester ``order-manager``) and waits up to ``wait`` seconds (default 2) for the first
usable tick. ``None`` means "no price": the caller decides (a ``MKT`` order without a
price is refused, a ``MKT`` entry skipped as ``no_price``); nothing here raises for
missing data.

**Which price** (:func:`tick_price`): the last trade, else the bid/ask midpoint. A
tick is not a price at all when it is delayed (``delayed``: not real-time data) or its
book is crossed (bid above ask: inconsistent or stale data, usually a moment of a fast
market, so its last trade is not trusted either); non-positive prices are ignored. An
unusable tick does not erase a usable price seen before; that one simply ages out.

**Freshness** is measured from when the tick *arrived* here (monotonic clock), not
from IB's timestamp: the bridge publishes a tick for every change of the top of book
or last trade, so a live symbol ticks often. A symbol that does not change for
``max_age`` seconds has no fresh price; asking again re-subscribes (renewing the
bridge's lease) and waits for a change, and yields ``None`` if none comes within
``wait``.

**Subscriptions.** The bridge leases each subscription for 60 s, renewed by
subscribing again. Symbols asked for within the last ``keep_for`` seconds (default
300) stay subscribed: a background task renews them every ``renew_interval`` seconds
(default 20) and drops (core NATS unsubscribe + ``UnsubscribeMarketData``) the ones
nobody asked for since. :meth:`Quotes.close` drops everything.

**Errors.** A refused or failed subscribe (``no_responders`` when no bridge runs,
``not_ready``, ``not_found`` for a portfolio no bridge serves, ``invalid_request`` for
an unknown symbol) is logged and gives ``None`` at once. A ``timeout`` (no answer
within ``request_timeout`` seconds, default 2) is logged too, but the bridge may still
be working on it (qualifying many new contracts at the open is slow), so its ticks are
waited for like an accepted subscribe's. :meth:`Quotes.prices` asks for all its
symbols in one command and, when the bridge refuses the batch (one unknown symbol
refuses the whole command, all or nothing), asks for each symbol on its own so the
others still get their prices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from ibflow.bus.errors import RequestError
from ibflow.bus.rpc import request
from ibflow.bus.subjects import SUBSCRIBE_MARKET_DATA, UNSUBSCRIBE_MARKET_DATA, market_data
from ibflow.contracts.market_data import MarketDataTick, SubscribeMarketData, UnsubscribeMarketData
from ibflow.contracts.replies import INVALID_REQUEST, REFUSED, CommandAccepted
from ibflow.runtime.cancellation import raise_if_cancelled, wait_event

__all__ = [
    "DEFAULT_KEEP_FOR",
    "DEFAULT_MAX_AGE",
    "DEFAULT_RENEW_INTERVAL",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_WAIT",
    "REQUESTER",
    "Quotes",
    "tick_price",
]

log = logging.getLogger("ibflow.order_manager.quotes")

REQUESTER: Final = "order-manager"
"""The ``requested_by`` of our market data subscriptions (the bridge counts holders by it)."""
DEFAULT_MAX_AGE: Final = 10.0
"""Seconds a cached price stays usable after its tick arrived."""
DEFAULT_WAIT: Final = 2.0
"""Seconds to wait for the first usable tick after subscribing."""
DEFAULT_REQUEST_TIMEOUT: Final = 2.0
"""Seconds to wait for the bridge's answer to a subscribe command."""
DEFAULT_KEEP_FOR: Final = 300.0
"""Seconds a symbol stays subscribed after it was last asked for."""
DEFAULT_RENEW_INTERVAL: Final = 20.0
"""Seconds between lease renewals (the bridge's lease is 60 s)."""

_RETRY_ONE_BY_ONE: Final = frozenset({INVALID_REQUEST, REFUSED})
"""Batch refusals that may be caused by one symbol: ask for each symbol on its own."""
_UNKNOWN_OUTCOME: Final = frozenset({"timeout"})
"""Failures after which the bridge may hold the subscription anyway."""


def tick_price(tick: MarketDataTick) -> Decimal | None:
    """The reference price a tick gives, or ``None`` when it gives none.

    The last trade, else the midpoint of bid and ask; never from a delayed tick or a
    crossed book (bid above ask). Non-positive prices count as missing.
    """
    if tick.delayed:
        return None
    bid, ask, last = _positive(tick.bid), _positive(tick.ask), _positive(tick.last)
    if bid is not None and ask is not None and bid > ask:
        return None
    if last is not None:
        return last
    if bid is not None and ask is not None:
        return (bid + ask) / 2
    return None


def _positive(value: Decimal | None) -> Decimal | None:
    if value is None or not value.is_finite() or value <= 0:
        return None
    return value


def _normalise(symbol: str) -> str:
    return symbol.strip().upper()


@dataclass(eq=False)
class _Line:
    """One symbol: its NATS subscription, latest usable price, and who holds it at the bridge."""

    symbol: str
    asked_at: float
    subscription: Subscription | None = None
    price: Decimal | None = None
    received_at: float = float("-inf")
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced) when a usable tick arrives."""
    listening: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the NATS subscription is being made (one per line)."""
    held: dict[str | None, float] = field(default_factory=dict)
    """Portfolio (``None``: any connection) → when the bridge last accepted our subscribe."""

    def got(self, price: Decimal, now: float) -> None:
        self.price = price
        self.received_at = now
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class Quotes:
    """Reference prices from live market data (see the module docstring).

    ``clock`` (monotonic seconds) is for tests of freshness and expiry; waits use the
    event loop's time.
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        requested_by: str = REQUESTER,
        max_age: float = DEFAULT_MAX_AGE,
        wait: float = DEFAULT_WAIT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keep_for: float = DEFAULT_KEEP_FOR,
        renew_interval: float = DEFAULT_RENEW_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_age, request_timeout, keep_for, renew_interval) <= 0 or wait < 0:
            raise ValueError(
                "max_age, request_timeout, keep_for and renew_interval must be > 0, wait >= 0"
            )
        self._nc = nc
        self._requested_by = requested_by
        self._max_age = max_age
        self._wait = wait
        self._request_timeout = request_timeout
        self._keep_for = keep_for
        self._renew_interval = renew_interval
        self._clock = clock
        self._lines: dict[str, _Line] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    async def reference_price(
        self, symbol: str, *, portfolio_id: str | None = None
    ) -> Decimal | None:
        """A fresh price of ``symbol`` (cached, else after subscribing), or ``None``.

        ``portfolio_id`` picks the bridge connection to subscribe through (``None``:
        any ready one). Waits at most about ``request_timeout + wait`` seconds.
        """
        return (await self.prices((symbol,), portfolio_id=portfolio_id))[symbol]

    async def prices(
        self, symbols: Iterable[str], *, portfolio_id: str | None = None
    ) -> dict[str, Decimal | None]:
        """:meth:`reference_price` of several symbols at once, keyed by the symbols as given.

        Cached fresh prices are answered at once; the others are subscribed with one
        command (each on its own if the bridge refuses the batch) and waited for
        concurrently, for at most ``wait`` seconds in all.
        """
        wanted = list(dict.fromkeys(symbols))
        keys = {symbol: _normalise(symbol) for symbol in wanted}
        found: dict[str, Decimal | None] = {}
        if self._closed:
            log.warning("quotes closed: no price for %s", ", ".join(wanted))
            return dict.fromkeys(wanted)
        now = self._clock()
        missing: dict[str, _Line] = {}
        for key in dict.fromkeys(keys.values()):
            if not key:
                found[key] = None
                continue
            line = self._lines.get(key)
            if line is None:
                line = self._lines[key] = _Line(key, asked_at=now)
            line.asked_at = now
            price = self._fresh(line, now)
            if price is not None:
                found[key] = price
            else:
                missing[key] = line
        if missing:
            self._start_renewer()
            listening = [key for key, line in missing.items() if await self._listen(line)]
            accepted = await self._subscribe(listening, portfolio_id)
            found.update(dict.fromkeys(set(missing) - set(accepted)))
            found.update(await self._await_prices(accepted))
        return {symbol: found.get(keys[symbol]) for symbol in wanted}

    def cached(self, symbol: str) -> Decimal | None:
        """The fresh cached price of ``symbol``, without any I/O (``None`` if none)."""
        line = self._lines.get(_normalise(symbol))
        return None if line is None else self._fresh(line, self._clock())

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols currently listened to (normalised), in the order first asked."""
        return tuple(key for key, line in self._lines.items() if line.subscription is not None)

    async def close(self) -> None:
        """Stop renewing, unsubscribe every symbol (NATS and, best effort, the bridge);
        later calls answer ``None``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        lines, self._lines = list(self._lines.values()), {}
        await self._drop(lines)

    # ------------------------------------------------------------------ internals

    def _fresh(self, line: _Line, now: float) -> Decimal | None:
        if line.price is not None and now - line.received_at <= self._max_age:
            return line.price
        return None

    async def _listen(self, line: _Line) -> bool:
        """Subscribe (core NATS) to the line's ticks, before asking the bridge, so the
        bridge's first tick cannot be missed."""

        async def on_tick(msg: Msg) -> None:
            self._on_tick(line, msg)

        async with line.listening:
            if line.subscription is not None:
                return True
            try:
                subject = market_data(line.symbol)
                line.subscription = await self._nc.subscribe(subject, cb=on_tick)
            except (nats.errors.Error, ValueError) as exc:
                log.warning("cannot listen to market data of %s: %r", line.symbol, exc)
                return False
            return True

    def _on_tick(self, line: _Line, msg: Msg) -> None:
        try:
            tick = MarketDataTick.model_validate_json(msg.data)
        except ValidationError as exc:
            log.debug("unparsable tick on %s ignored: %s", msg.subject, exc)
            return
        if _normalise(tick.symbol) != line.symbol:
            return  # another symbol sharing the (lossy) subject token
        price = tick_price(tick)
        if price is not None:
            line.got(price, self._clock())

    async def _subscribe(self, keys: list[str], portfolio_id: str | None) -> list[str]:
        """Ask the bridge for ``keys``; returns those it accepted (or may have)."""
        if not keys:
            return []
        code = await self._send_subscribe(keys, portfolio_id)
        if code is None or code in _UNKNOWN_OUTCOME:
            return keys
        if code in _RETRY_ONE_BY_ONE and len(keys) > 1:
            codes = await asyncio.gather(*(self._send_subscribe([k], portfolio_id) for k in keys))
            return [
                key
                for key, one in zip(keys, codes, strict=True)
                if one is None or one in _UNKNOWN_OUTCOME
            ]
        return []

    async def _send_subscribe(self, keys: list[str], portfolio_id: str | None) -> str | None:
        """One ``SubscribeMarketData``; ``None`` when accepted, else the error code."""
        cmd = SubscribeMarketData(
            symbols=tuple(keys), portfolio_id=portfolio_id, requested_by=self._requested_by
        )
        try:
            await request(
                self._nc, SUBSCRIBE_MARKET_DATA, cmd, CommandAccepted, timeout=self._request_timeout
            )
        except RequestError as exc:
            log.warning(
                "market data of %s (portfolio %s) not subscribed: %s",
                ", ".join(keys),
                portfolio_id or "any",
                exc,
            )
            if exc.code in _UNKNOWN_OUTCOME:
                self._hold(keys, portfolio_id)
            return exc.code
        self._hold(keys, portfolio_id)
        return None

    def _hold(self, keys: Iterable[str], portfolio_id: str | None) -> None:
        now = self._clock()
        for key in keys:
            line = self._lines.get(key)
            if line is not None:
                line.held[portfolio_id] = now

    async def _await_prices(self, keys: list[str]) -> dict[str, Decimal | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait

        async def one(key: str) -> Decimal | None:
            line = self._lines.get(key)
            while line is not None:
                changed = line.changed
                price = self._fresh(line, self._clock())
                remaining = deadline - loop.time()
                if price is not None or remaining <= 0:
                    return price
                await wait_event(changed, remaining)
                line = self._lines.get(key)
            return None

        results = await asyncio.gather(*(one(key) for key in keys))
        for key, price in zip(keys, results, strict=True):
            if price is None:
                log.info("no usable market data for %s within %gs", key, self._wait)
        return dict(zip(keys, results, strict=True))

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="quotes-renew")

    async def _renew_loop(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self._renew_interval)
            try:
                await self._renew_once()
            except Exception:
                log.exception("renewing market data subscriptions failed")

    async def _renew_once(self) -> None:
        """Drop the symbols nobody asked for within ``keep_for``; renew the others' leases."""
        now = self._clock()
        stale = [line for line in self._lines.values() if now - line.asked_at > self._keep_for]
        for line in stale:
            del self._lines[line.symbol]
        await self._drop(stale)
        due: dict[str | None, list[str]] = {}
        for line in self._lines.values():
            for portfolio_id, at in line.held.items():
                if now - at >= self._renew_interval * 0.9:
                    due.setdefault(portfolio_id, []).append(line.symbol)
        for portfolio_id, keys in due.items():
            await self._subscribe(keys, portfolio_id)

    async def _drop(self, lines: list[_Line]) -> None:
        """Unsubscribe ``lines`` from NATS and release them at the bridge (best effort)."""
        released: dict[str | None, list[str]] = {}
        for line in lines:
            if line.subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await line.subscription.unsubscribe()
                line.subscription = None
            for portfolio_id in line.held:
                released.setdefault(portfolio_id, []).append(line.symbol)
            line.held.clear()
        if self._nc.is_closed:
            return
        for portfolio_id, keys in released.items():
            cmd = UnsubscribeMarketData(
                symbols=tuple(keys), portfolio_id=portfolio_id, requested_by=self._requested_by
            )
            try:
                await request(
                    self._nc,
                    UNSUBSCRIBE_MARKET_DATA,
                    cmd,
                    CommandAccepted,
                    timeout=self._request_timeout,
                )
            except RequestError as exc:
                log.info("market data of %s not released (the lease ends it): %s", keys, exc)
