"""Market data for open positions: leases at the bridge, stop/target on every tick,
the stale-data guard, and throttled marks.

:class:`MarketWatch` keeps, per symbol, the positions holding shares (``OPEN`` and
``CLOSING``; told by the book after every commit and re-read from the database every
``refresh_interval``, which picks up other replicas' changes) and the symbol's latest
:class:`~.domain.Quote` (ticks merged: a tick carries only what changed).

* **Leases.** For every symbol held it listens on core NATS ``ibflow.md.v1.<symbol>``
  and holds a lease at the bridge (``SubscribeMarketData``, requester
  ``position-monitor:<instance>``, renewed every ``lease_renew_interval``; a refused
  subscribe is retried every ``refresh_interval``). When no position holds the symbol any
  more the lease is released (``UnsubscribeMarketData``) and the subject dropped.
* **Every tick** is evaluated against every ``OPEN`` position of its symbol
  (:func:`~.domain.evaluate`). A hit goes to :meth:`PositionBook.exit`, which decides
  again on the locked row and sends at most one exit (``exit:<position>``); an exit in
  flight for a position is not started twice by this replica, and a second replica's
  attempt finds the position ``CLOSING``.
* **Stale data** (failure mode 4): a symbol without a tick for ``stale_after`` seconds
  is stale; it is counted, logged once, and a fresh quote is requested (a subscribe
  with ``refresh``: the bridge re-requests the line at IB). A stale,
  delayed, crossed or unusable quote is never acted on (each counted by reason).
  Prices that are present but unusable (zero, negative) are dropped from the tick and
  counted; a tick that does not decode is counted.
* **Marks** (:mod:`~.domain.marks`): each tick marks its symbol's positions; at most
  every ``marks_interval`` the changed portfolios' marks are written to
  ``position_marks``, published as ``PositionMarksUpdated`` and exported as
  ``ibflow_portfolio_unrealized_pnl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from pydantic import ValidationError

from ibflow.bus import publish, request, subjects
from ibflow.bus.errors import PublishError, RequestError
from ibflow.contracts import (
    INVALID_REQUEST,
    CommandAccepted,
    MarketDataTick,
    PositionMark,
    PositionMarksUpdated,
    SubscribeMarketData,
    UnsubscribeMarketData,
)
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import PositionStatus
from ibflow.runtime.cancellation import raise_if_cancelled, wait_event
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.domain import (
    ExitDecision,
    Mark,
    NoExit,
    PositionState,
    PriceSource,
    Quote,
    evaluate,
    is_usable_price,
    mark_position,
)
from ibflow_position_monitor.metrics import (
    OPEN_POSITIONS,
    SNAPSHOT_REQUESTS,
    STALE_SYMBOLS,
    TICKS,
    UNREALIZED_PNL,
    UNUSABLE_QUOTES,
)
from ibflow_position_monitor.orders import REQUESTER
from ibflow_position_monitor.settings import PositionMonitorSettings

__all__ = ["MarketWatch", "instance_requester"]

log = logging.getLogger("ibflow.position_monitor.watch")

_HELD: Final = frozenset({PositionStatus.OPEN, PositionStatus.CLOSING})
_REQUEST_TIMEOUT: Final = 5.0


def instance_requester() -> str:
    """``position-monitor:<host>-<pid>-<random>``: this replica's market data holder (a
    replica that stops releases only its own leases)."""
    host = socket.gethostname().split(".")[0][:24] or "host"
    return f"{REQUESTER}:{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _clean(tick: MarketDataTick) -> tuple[Quote, int]:
    """The tick's quote with unusable prices dropped, and how many were dropped."""
    dropped = 0
    prices: dict[str, Decimal | None] = {}
    for name in ("bid", "ask", "last"):
        value: Decimal | None = getattr(tick, name)
        if value is not None and not is_usable_price(value):
            dropped += 1
            value = None
        prices[name] = value
    quote = Quote(symbol=tick.symbol, at=tick.ts_event, delayed=tick.delayed, **prices)
    return quote, dropped


class MarketWatch:
    """Leases, tick evaluation, staleness and marks (module docstring); a runtime worker."""

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        pool: asyncpg.Pool[Any],
        book: PositionBook,
        settings: PositionMonitorSettings,
        *,
        requester: str | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._pool = pool
        self._book = book
        self._settings = settings
        self.requester = requester or instance_requester()
        self._max_age = dt.timedelta(seconds=settings.stale_after)
        self._positions: dict[str, dict[str, PositionState]] = {}
        self._quotes: dict[str, Quote] = {}
        self._last_tick: dict[str, float] = {}
        self._watch_since: dict[str, float] = {}
        self._refreshed_at: dict[str, float] = {}
        self._stale: set[str] = set()
        self._subs: dict[str, Subscription] = {}
        self._leased: set[str] = set()
        self._inflight: set[str] = set()
        self._refused: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty: set[str] = set()
        self._portfolios: set[str] = set()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._sync_lock = asyncio.Lock()

    # ------------------------------------------------------------------ positions

    def update(self, stored: repo.Stored) -> None:
        """A committed position (from the book): watch it while it holds shares."""
        self._apply(stored.state)
        self._note_refusal(stored)
        self._changed.set()

    def _note_refusal(self, stored: repo.Stored) -> None:
        if stored.exit_refusal:
            self._refused.add(stored.position_id)
        else:
            self._refused.discard(stored.position_id)

    def _apply(self, state: PositionState) -> None:
        symbol = state.symbol
        held = state.status in _HELD and state.quantity > 0
        by_id = self._positions.get(symbol)
        if held:
            self._positions.setdefault(symbol, {})[state.position_id] = state
            self._portfolios.add(state.portfolio_id)
        elif by_id is not None:
            by_id.pop(state.position_id, None)
            if not by_id:
                del self._positions[symbol]
        self._dirty.add(state.portfolio_id)

    async def reload(self) -> None:
        """Re-read the positions holding shares (other replicas' changes)."""
        async with self._pool.acquire() as conn:
            stored = await repo.active_positions(conn, statuses=[s.value for s in _HELD])
        fresh: dict[str, dict[str, PositionState]] = {}
        self._refused = {item.position_id for item in stored if item.exit_refusal}
        for item in stored:
            if item.state.quantity > 0:
                fresh.setdefault(item.state.symbol, {})[item.position_id] = item.state
                self._portfolios.add(item.state.portfolio_id)
        self._positions = fresh
        self._dirty.update(self._portfolios)

    def positions(self, symbol: str | None = None) -> list[PositionState]:
        """The watched positions (of ``symbol``)."""
        if symbol is not None:
            return list(self._positions.get(symbol, {}).values())
        return [s for by_id in self._positions.values() for s in by_id.values()]

    def quote(self, symbol: str) -> Quote | None:
        """The latest merged quote of ``symbol`` (possibly stale)."""
        return self._quotes.get(symbol)

    def reference_price(self, symbol: str) -> Decimal | None:
        """The latest usable last (else mid) price of ``symbol``, however old."""
        quote = self._quotes.get(symbol)
        if quote is None:
            return None
        if is_usable_price(quote.last):
            return quote.last
        return quote.mid

    # ------------------------------------------------------------------ ticks

    async def _on_msg(self, msg: Msg) -> None:
        received = time.perf_counter()
        try:
            tick = MarketDataTick.model_validate_json(msg.data)
        except ValidationError as exc:
            TICKS.labels("undecodable").inc()
            log.warning("undecodable tick on %s ignored: %s", msg.subject, exc.errors()[:1])
            return
        quote, dropped = _clean(tick)
        if dropped:
            TICKS.labels("unusable_price").inc(dropped)
        symbol = quote.symbol
        previous = self._quotes.get(symbol)
        self._quotes[symbol] = quote if previous is None else previous.updated(quote)
        self._last_tick[symbol] = time.monotonic()
        if symbol in self._stale:
            self._stale.discard(symbol)
            STALE_SYMBOLS.set(len(self._stale))
            log.info("%s: ticks again, no longer stale", symbol)
        TICKS.labels("used").inc()
        self.evaluate_symbol(symbol, tick_at=received)

    def evaluate_symbol(self, symbol: str, *, tick_at: float | None = None) -> int:
        """Evaluate every OPEN position of ``symbol`` on its latest quote; how many exits
        were started. Unusable data is counted by reason, never acted on."""
        by_id = self._positions.get(symbol)
        quote = self._quotes.get(symbol)
        if not by_id:
            return 0
        started = 0
        for state in list(by_id.values()):
            self._dirty.add(state.portfolio_id)
            if quote is None:
                if state.status is PositionStatus.OPEN:
                    UNUSABLE_QUOTES.labels("missing_price").inc()
                continue
            if state.status is not PositionStatus.OPEN:
                continue
            if self._decide(state, quote) is None:
                continue
            if state.position_id in self._inflight or state.position_id in self._refused:
                continue
            self._start_exit(state.position_id, quote, tick_at)
            started += 1
        return started

    def _decide(self, state: PositionState, quote: Quote) -> ExitDecision | None:
        decision = evaluate(
            state,
            quote,
            price_source=self._settings.price_source,
            now=utc_now(),
            max_age=self._max_age,
        )
        if isinstance(decision, NoExit):
            if decision.reason.is_bad_data:
                UNUSABLE_QUOTES.labels(decision.reason.value).inc()
                log.debug("no exit for %s: %s", state.position_id, decision.detail)
            return None
        return decision

    def _start_exit(self, position_id: str, quote: Quote, tick_at: float | None) -> None:
        self._inflight.add(position_id)
        source: PriceSource = self._settings.price_source
        max_age = self._max_age

        def decide(state: PositionState) -> ExitDecision | NoExit:
            return evaluate(state, quote, price_source=source, now=utc_now(), max_age=max_age)

        async def run() -> None:
            try:
                await self._book.exit(position_id, decide, tick_at=tick_at)
            except Exception:
                log.exception("exit of %s failed", position_id)
            finally:
                self._inflight.discard(position_id)

        self._spawn(run())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ leases

    async def sync(self) -> None:
        """Listen to and lease the symbols held; release the others."""
        async with self._sync_lock:
            wanted = {s for s, by_id in self._positions.items() if by_id}
            now = time.monotonic()
            for symbol in sorted(wanted - set(self._subs)):
                self._subs[symbol] = await self._nc.subscribe(
                    subjects.market_data(symbol), cb=self._on_msg
                )
                self._watch_since[symbol] = now
            gone = set(self._subs) - wanted
            for symbol in sorted(gone):
                with contextlib.suppress(Exception):
                    await self._subs.pop(symbol).unsubscribe()
                for table in (self._quotes, self._last_tick, self._watch_since):
                    table.pop(symbol, None)
                self._stale.discard(symbol)
            released = sorted(gone & self._leased)
            if released:
                await self._unsubscribe(released)
                self._leased.difference_update(released)
            missing = sorted(wanted - self._leased)
            if missing:
                await self._subscribe(missing)
            STALE_SYMBOLS.set(len(self._stale))
            counts: dict[str, int] = dict.fromkeys(self._portfolios, 0)
            for state in self.positions():
                counts[state.portfolio_id] = counts.get(state.portfolio_id, 0) + 1
            for portfolio, count in counts.items():
                OPEN_POSITIONS.labels(portfolio).set(count)

    async def _subscribe(self, symbols: list[str], *, refresh: bool = False) -> None:
        cmd = SubscribeMarketData(
            symbols=tuple(symbols), requested_by=self.requester, refresh=refresh
        )
        try:
            await request(
                self._nc,
                subjects.SUBSCRIBE_MARKET_DATA,
                cmd,
                CommandAccepted,
                timeout=_REQUEST_TIMEOUT,
            )
        except RequestError as exc:
            if exc.code == INVALID_REQUEST and len(symbols) > 1:
                for symbol in symbols:
                    await self._subscribe([symbol], refresh=refresh)
                return
            log.warning(
                "market data for %s not subscribed (%s: %s): retried",
                ", ".join(symbols),
                exc.code,
                exc.message,
            )
            return
        self._leased.update(symbols)

    async def _unsubscribe(self, symbols: list[str]) -> None:
        cmd = UnsubscribeMarketData(symbols=tuple(symbols), requested_by=self.requester)
        try:
            await request(
                self._nc,
                subjects.UNSUBSCRIBE_MARKET_DATA,
                cmd,
                CommandAccepted,
                timeout=_REQUEST_TIMEOUT,
            )
        except RequestError as exc:
            log.info("release of %s not confirmed (%s): the lease expires", symbols, exc.code)

    async def renew(self) -> None:
        """Renew every lease (the bridge's lease runs out otherwise)."""
        held = sorted(self._leased)
        if held:
            self._leased.difference_update(held)
            await self._subscribe(held)

    # ------------------------------------------------------------------ staleness

    async def check_staleness(self) -> list[str]:
        """Mark symbols without a tick for ``stale_after`` as stale and request a fresh
        quote for each (at most once per ``stale_after``); the stale symbols."""
        now = time.monotonic()
        limit = self._settings.stale_after
        stale: list[str] = []
        for symbol in sorted(self._subs):
            since = self._last_tick.get(symbol, self._watch_since.get(symbol, now))
            if now - since <= limit:
                continue
            stale.append(symbol)
            if symbol not in self._stale:
                self._stale.add(symbol)
                log.warning(
                    "%s: no tick for %.1fs: stale, not acted on; requesting a fresh quote",
                    symbol,
                    now - since,
                )
            if now - self._refreshed_at.get(symbol, 0.0) > limit:
                await self.refresh([symbol])
        STALE_SYMBOLS.set(len(self._stale))
        return stale

    async def refresh(self, symbols: Iterable[str]) -> None:
        """Ask the bridge for fresh quotes of ``symbols``: a subscribe with ``refresh``,
        which renews the lease and re-requests the streaming lines at IB."""
        wanted = sorted(set(symbols) & set(self._subs))
        if not wanted:
            return
        now = time.monotonic()
        for symbol in wanted:
            self._refreshed_at[symbol] = now
        SNAPSHOT_REQUESTS.inc(len(wanted))
        self._leased.difference_update(wanted)
        await self._subscribe(wanted, refresh=True)

    async def check_all(self, wait: float = 1.0) -> int:
        """``position_check``: fresh quotes for every watched symbol, then every OPEN
        position evaluated (stale or missing data is counted, not acted on)."""
        await self.reload()
        await self.sync()
        symbols = sorted(self._positions)
        before = {s: self._last_tick.get(s) for s in symbols}
        await self.refresh(symbols)
        deadline = time.monotonic() + wait
        # bounded poll: a farm that is down sends nothing, and that must not block
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
            self._last_tick.get(s) == before[s] for s in symbols
        ):
            await asyncio.sleep(0.05)
        return sum(self.evaluate_symbol(symbol) for symbol in symbols)

    # ------------------------------------------------------------------ marks

    async def flush_marks(self) -> int:
        """Write and publish the marks of the portfolios that changed; how many portfolios."""
        dirty, self._dirty = self._dirty, set()
        published = 0
        for portfolio in sorted(dirty):
            marks: list[Mark] = []
            contract_marks: list[PositionMark] = []
            for state in self.positions():
                if state.portfolio_id != portfolio:
                    continue
                quote = self._quotes.get(state.symbol)
                mark = None if quote is None else mark_position(state, quote)
                if mark is not None:
                    marks.append(mark)
                    contract_marks.append(_contract_mark(mark, state))
            total = sum((m.unrealized_pnl for m in marks), Decimal(0))
            UNREALIZED_PNL.labels(portfolio).set(float(total))
            try:
                async with self._pool.acquire() as conn:
                    await repo.upsert_marks(conn, marks)
            except asyncpg.ForeignKeyViolationError:
                continue
            event = PositionMarksUpdated(
                portfolio_id=portfolio,
                marks=tuple(contract_marks),
                unrealized_pnl=total,
            )
            try:
                await publish(self._js, subjects.position_marks(portfolio), event)
            except PublishError as exc:
                log.warning("marks of %s not published: %s", portfolio, exc)
                continue
            published += 1
        return published

    # ------------------------------------------------------------------ worker

    async def run(self) -> None:
        """Keep leases, staleness, the positions cache and marks up to date until stopped."""
        loop = asyncio.get_running_loop()
        next_refresh = next_renew = next_marks = loop.time()
        settings = self._settings
        while not self._stop.is_set():
            raise_if_cancelled()
            now = loop.time()
            try:
                if now >= next_refresh:
                    next_refresh = now + settings.refresh_interval
                    await self.reload()
                    await self._book.resend_unacknowledged(
                        dt.timedelta(seconds=settings.exit_resend_after)
                    )
                    for symbol in sorted(self._positions):
                        self.evaluate_symbol(symbol)
                self._changed.clear()
                await self.sync()
                if now >= next_renew:
                    next_renew = now + settings.lease_renew_interval
                    await self.renew()
                await self.check_staleness()
                if now >= next_marks:
                    next_marks = now + settings.marks_interval
                    await self.flush_marks()
            except Exception:
                log.exception("market watch pass failed")
            wait = max(0.0, min(next_refresh, next_marks, next_renew) - loop.time())
            wait = min(wait, settings.stale_after / 4)
            await wait_event(self._changed, wait)

    async def stop(self) -> None:
        """Stop the loop, release the leases and unsubscribe."""
        self._stop.set()
        self._changed.set()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await asyncio.shield(task)
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._leased:
            with contextlib.suppress(Exception):
                await self._unsubscribe(sorted(self._leased))
        self._subs.clear()
        self._leased.clear()


def _contract_mark(mark: Mark, state: PositionState) -> PositionMark:
    return PositionMark(
        position_id=mark.position_id,
        symbol=mark.symbol,
        side=state.side,
        quantity=mark.quantity,
        mark_price=mark.price,
        unrealized_pnl=mark.unrealized_pnl,
        marked_at=mark.marked_at,
        delayed=mark.delayed,
    )
