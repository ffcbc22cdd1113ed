"""Live prices of one portfolio's connection: subscription commands and tick publishing.

:class:`MarketDataFeed` answers :class:`SubscribeMarketData` and
:class:`UnsubscribeMarketData` on ``ibflow.bus.subjects.SUBSCRIBE_MARKET_DATA`` /
``UNSUBSCRIBE_MARKET_DATA`` with ``ibflow.bus.serve`` (queue group ``gateway-bridge``)
and publishes every tick as a :class:`MarketDataTick` on core NATS
``subjects.market_data(symbol)`` (market data, not persisted: no JetStream).

* **Who holds what** is a :class:`SubscriptionRegistry`: the holder is the command's
  ``requested_by``; each (re)subscription leases the symbol for ``lease_seconds``
  (60 s by default: the contracts carry no lease, so a requester renews by sending
  the same subscribe again). IB is asked for a symbol (``reqMktData``, paced) when its
  first holder arrives. When its last one leaves, by unsubscribing or by letting the
  lease run out (checked every ``expire_interval`` seconds), the line **lingers** for
  ``linger_seconds`` (30 s by default, ``IBFLOW_MARKET_DATA_LINGER_SECONDS``) and is
  only then told to stop (``cancelMktData``, paced). A holder coming back meanwhile
  gets the streaming line with nothing sent to IB: the position-monitor releases a
  symbol when its last position there closes and subscribes again when the next one
  opens, often within a second, and each cancel/re-request pair spent two of the
  connection's pacer tokens (IB allows 50 messages per second per connection, we
  pace at 40, shared with the orders, which waited behind them). Ticks of a lingering
  line are still published (core NATS, harmless without a subscriber). At the line
  limit a new symbol evicts the lingering line that would end first (cancelled before
  the new one is requested). ``linger_seconds=0`` cancels at once.
* Refusals: ``not_ready`` with the connection state while it does not accept orders;
  ``not_found`` for another portfolio; ``invalid_request`` naming an unknown symbol;
  ``refused`` with the registry's reason at the line limit. A refused or failed
  command leaves no new subscription behind.
* **Replay** (ib-failure-modes #4): after a (re)connect reaches ``ready``/``degraded``
  the old lines are dead (forgotten without a message to IB) and after a 1101 or a
  data farm coming back (``transition.resubscribe``) IB dropped them (cancelled, then
  requested again): every :meth:`SubscriptionRegistry.active` symbol is requested
  anew, no new subscribe command needed. Lingering lines are not replayed: the replay
  drops them from the registry (forgotten when dead, cancelled after a 1101), so a
  later subscribe requests them anew rather than finding a dead line "active". A line
  cancelled while dead (not yet replayed) is only forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from ibflow.bus import serve
from ibflow.bus.errors import Reject, RemoteError
from ibflow.bus.subjects import SUBSCRIBE_MARKET_DATA, UNSUBSCRIBE_MARKET_DATA, market_data
from ibflow.contracts.enums import ConnectionState
from ibflow.contracts.market_data import (
    MarketDataRequest,
    MarketDataTick,
    SubscribeMarketData,
    UnsubscribeMarketData,
)
from ibflow.contracts.replies import INVALID_REQUEST, NOT_FOUND, NOT_READY, TIMEOUT, CommandAccepted
from ibflow.runtime.cancellation import raise_if_cancelled
from ibflow_gateway_bridge.domain.connection import Transition
from ibflow_gateway_bridge.domain.subscriptions import (
    DEFAULT_LINGER_SECONDS,
    SubscribeOutcome,
    SubscriptionRegistry,
    normalise_symbol,
)
from ibflow_gateway_bridge.ib import IbClient, IbOrderError
from ibflow_gateway_bridge.ib.adapter import MarketTick, TickHandle
from ibflow_gateway_bridge.pacing import Pacer, PacerClosed, Priority
from ibflow_gateway_bridge.supervisor import PortfolioConnection

__all__ = ["DEFAULT_LEASE_SECONDS", "DEFAULT_LINGER_SECONDS", "MarketDataFeed", "MarketDataRouter"]

log = logging.getLogger("ibflow.gateway_bridge.market_data")

QUEUE_GROUP: Final = "gateway-bridge"
DEFAULT_LEASE_SECONDS: Final = 60.0
"""How long a subscription lasts unless the requester subscribes again."""

_ACCEPTING: Final = frozenset({ConnectionState.READY, ConnectionState.DEGRADED})
_LINES_GONE: Final = frozenset(
    {ConnectionState.DISCONNECTED, ConnectionState.CONNECTING, ConnectionState.SYNCHRONISING}
)
_TICK_QUEUE: Final = 10_000


class MarketDataFeed:
    """Market data subscriptions of one portfolio's connection (start/stop with its worker).

    ``linger_seconds`` is how long a line nobody holds any more is kept before it is
    cancelled (:data:`DEFAULT_LINGER_SECONDS`; 0 cancels at once). It configures the
    registry the feed creates; a given ``registry`` keeps its own linger (passing a
    different ``linger_seconds`` with it is a :class:`ValueError`).
    """

    def __init__(
        self,
        portfolio_id: str,
        nc: NatsClient,
        connection: PortfolioConnection,
        pacer: Pacer,
        registry: SubscriptionRegistry | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        linger_seconds: float | None = None,
        expire_interval: float = 5.0,
        query_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.portfolio_id = portfolio_id
        if registry is None:
            linger = DEFAULT_LINGER_SECONDS if linger_seconds is None else linger_seconds
            registry = SubscriptionRegistry(linger_seconds=linger)
        elif linger_seconds is not None and linger_seconds != registry.linger_seconds:
            raise ValueError(
                f"linger_seconds={linger_seconds:g} contradicts the given registry's "
                f"{registry.linger_seconds:g}"
            )
        self.registry = registry
        self._nc = nc
        self._connection = connection
        self._pacer = pacer
        self._lease = lease_seconds
        self._expire_interval = expire_interval
        self._query_timeout = query_timeout
        self._clock = clock
        self._handles: dict[str, TickHandle] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._ticks: asyncio.Queue[MarketDataTick] = asyncio.Queue(_TICK_QUEUE)
        self._replay_pending = False
        self._lines_dead = False
        self._replay_task: asyncio.Task[None] | None = None
        connection.on_transition(self._on_transition)
        connection.client.on_tick(self._on_tick)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start tick publishing and lease expiry (commands come through a
        :class:`MarketDataRouter`)."""
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name=f"md-pub-{self.portfolio_id}"),
            asyncio.create_task(self._expire_loop(), name=f"md-expire-{self.portfolio_id}"),
        ]

    async def stop(self) -> None:
        """Stop the background tasks; idempotent."""
        tasks, self._tasks = self._tasks, []
        if self._replay_task is not None:
            tasks.append(self._replay_task)
            self._replay_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def accepts_orders(self) -> bool:
        """Whether this feed's connection is ready (or degraded) for requests."""
        return self._connection.accepts_orders

    # ------------------------------------------------------------------ handlers

    async def subscribe(self, cmd: SubscribeMarketData) -> CommandAccepted:
        """Hold every symbol for ``cmd.requested_by`` (renewing its lease); request the
        new ones from IB (after cancelling a lingering line evicted at the line limit),
        and with ``cmd.refresh`` the streaming ones again. A lingering line is held
        again without a message to IB. All or nothing: a refusal undoes this command's
        new holdings (an evicted line stays cancelled)."""
        self._check(cmd)
        holder = cmd.requested_by
        done: dict[str, list[str]] = {
            "cancelled lingering": [],  # evicted at the line limit
            "subscribed": [],
            "resumed lingering": [],
            "renewed": [],
            "refreshed": [],
        }
        async with self._lock:
            self._check(cmd)
            try:
                for raw in cmd.symbols:
                    await self._subscribe_one(raw, holder, done, refresh=cmd.refresh)
            except BaseException:
                now = self._now()
                for symbol in done["subscribed"]:  # no line, or one only this command wanted
                    if self.registry.unsubscribe(symbol, holder, now, linger=False):
                        await self._cancel(symbol)
                for symbol in done["resumed lingering"]:  # back to lingering, if still a line
                    linger = symbol in self._handles
                    if self.registry.unsubscribe(symbol, holder, now, linger=linger):
                        await self._cancel(symbol)
                raise
        parts = [f"{what} {', '.join(symbols)}" for what, symbols in done.items() if symbols]
        return CommandAccepted.of(
            cmd, detail=f"{'; '.join(parts)} for {holder} (lease {self._lease:g}s)"
        )

    async def _subscribe_one(
        self, raw: str, holder: str, done: dict[str, list[str]], *, refresh: bool
    ) -> None:
        """Register one symbol of a subscribe and send IB what it needs (under the lock);
        record what was done in ``done`` (for the reply and to undo a failed command)."""
        lingered = self.registry.lingering_until(raw) is not None
        result = self.registry.subscribe(raw, holder, self._now(), self._lease)
        symbol = result.symbol
        if result.outcome is SubscribeOutcome.REFUSED:
            raise Reject(result.reason or f"cannot subscribe {symbol}")
        if result.evict is not None:
            done["cancelled lingering"].append(result.evict)
            await self._cancel(result.evict)
        if result.outcome is SubscribeOutcome.NEW:
            done["subscribed"].append(symbol)
            await self._request(symbol)
            return
        if lingered:
            done["resumed lingering"].append(symbol)
        if refresh and symbol in self._handles:
            await self._cancel(symbol)
            await self._request(symbol)
            done["refreshed"].append(symbol)
        elif not lingered:
            done["renewed"].append(symbol)

    async def unsubscribe(self, cmd: UnsubscribeMarketData) -> CommandAccepted:
        """Drop ``cmd.requested_by``'s holdings; the symbols nobody holds any more linger
        (or, with no linger, are cancelled at once)."""
        self._check(cmd)
        cancelled: list[str] = []
        kept: list[str] = []
        async with self._lock:
            for raw in cmd.symbols:
                symbol = normalise_symbol(raw)
                lingered = self.registry.lingering_until(symbol) is not None
                if self.registry.unsubscribe(symbol, cmd.requested_by, self._now()):
                    await self._cancel(symbol)
                    cancelled.append(symbol)
                elif not lingered and self.registry.lingering_until(symbol) is not None:
                    kept.append(symbol)
        detail = f"released {', '.join(normalise_symbol(s) for s in cmd.symbols)}"
        if cancelled:
            detail += f"; cancelled {', '.join(cancelled)}"
        if kept:
            lines = "line" if len(kept) == 1 else "lines"
            linger = self.registry.linger_seconds
            detail += f"; {lines} of {', '.join(kept)} kept for {linger:g}s"
        return CommandAccepted.of(cmd, detail=detail)

    async def expire(self, now: float) -> list[str]:
        """Drop the leases ended at ``now`` (their orphaned symbols start to linger) and
        cancel (and return) the symbols whose linger ended."""
        async with self._lock:
            ended = self.registry.expire(now)
            for symbol in ended:
                await self._cancel(symbol)
        if ended:
            log.info(
                "%s: no holder and linger over, cancelled %s", self.portfolio_id, ", ".join(ended)
            )
        return ended

    # ------------------------------------------------------------------ internals

    @property
    def _client(self) -> IbClient:
        return self._connection.client

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _check(self, cmd: MarketDataRequest) -> None:
        if cmd.portfolio_id is not None and cmd.portfolio_id != self.portfolio_id:
            raise RemoteError(
                NOT_FOUND,
                f"portfolio_id: {cmd.portfolio_id!r} is not served here ({self.portfolio_id!r})",
            )
        if not self._connection.accepts_orders:
            state = self._connection.state.value
            raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id} is {state}")

    async def _request(self, symbol: str) -> None:
        """Paced ``reqMktData`` of ``symbol`` (its handle remembered); typed errors."""
        client = self._client
        try:
            await self._pacer.acquire(1 if client.knows_contract(symbol) else 2, Priority.DATA)
            self._handles[symbol] = await client.subscribe_ticks(
                symbol, timeout=self._query_timeout
            )
        except IbOrderError:
            raise RemoteError(INVALID_REQUEST, f"symbols: unknown symbol {symbol}") from None
        except TimeoutError:
            raise RemoteError(
                TIMEOUT, f"IB did not qualify {symbol} within {self._query_timeout:g}s"
            ) from None
        except (ConnectionError, PacerClosed) as exc:
            raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id}: {exc}") from None

    async def _cancel(self, symbol: str) -> None:
        """Paced ``cancelMktData`` of ``symbol`` (only forgotten if the pacer is closed,
        or if its line died with the connection and has not been replayed yet)."""
        handle = self._handles.pop(symbol, None)
        if handle is None:
            return
        if self._lines_dead:
            self._client.forget_ticks(handle)
            return
        try:
            await self._pacer.acquire(priority=Priority.DATA)
        except PacerClosed:
            self._client.forget_ticks(handle)
            return
        self._client.unsubscribe_ticks(handle)

    def _on_transition(self, transition: Transition) -> None:
        if transition.current in _LINES_GONE:
            self._lines_dead = True
            self._replay_pending = True
        if transition.resubscribe:
            self._replay_pending = True
        if transition.current in _ACCEPTING and self._replay_pending:
            self._replay_pending = False
            if self._replay_task is None or self._replay_task.done():
                self._replay_task = asyncio.create_task(
                    self._replay(), name=f"md-replay-{self.portfolio_id}"
                )
            else:
                self._replay_pending = True  # picked up when the running replay ends

    async def _replay(self) -> None:
        """Request every active symbol anew (again while more replays were asked for)."""
        while True:
            async with self._lock:
                try:
                    await self._replay_once()
                except (ConnectionError, PacerClosed, TimeoutError) as exc:
                    log.warning("%s: replay stopped: %r", self.portfolio_id, exc)
                    return  # the next (re)connect replays again
            if not self._replay_pending or not self._connection.accepts_orders:
                return
            self._replay_pending = False

    async def _replay_once(self) -> None:
        dead, self._lines_dead = self._lines_dead, False
        # Lingering lines are not replayed: dropped from the registry (a later subscribe
        # is NEW and requests them), their handles forgotten or cancelled with the rest.
        lingering = self.registry.drop_lingering()
        symbols = self.registry.active()
        for symbol in lingering + symbols:
            handle = self._handles.pop(symbol, None)
            if handle is None:
                continue
            if dead:
                self._client.forget_ticks(handle)
            else:
                await self._pacer.acquire(priority=Priority.DATA)
                self._client.unsubscribe_ticks(handle)
        if symbols:
            log.info("%s: replaying market data of %s", self.portfolio_id, ", ".join(symbols))
        for symbol in symbols:
            await self._pacer.acquire(
                1 if self._client.knows_contract(symbol) else 2, Priority.DATA
            )
            try:
                self._handles[symbol] = await self._client.subscribe_ticks(
                    symbol, timeout=self._query_timeout
                )
            except IbOrderError as exc:
                log.error("%s: cannot replay %s: %s", self.portfolio_id, symbol, exc)

    def _on_tick(self, tick: MarketTick) -> None:
        if tick.symbol not in self._handles:
            return
        event = MarketDataTick(
            symbol=tick.symbol,
            con_id=tick.con_id,
            bid=tick.bid,
            ask=tick.ask,
            last=tick.last,
            bid_size=tick.bid_size,
            ask_size=tick.ask_size,
            last_size=tick.last_size,
            delayed=tick.delayed,
            ts_event=tick.time,
        )
        try:
            self._ticks.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("%s: tick queue full, tick of %s dropped", self.portfolio_id, tick.symbol)

    async def _publish_loop(self) -> None:
        while True:
            raise_if_cancelled()
            tick = await self._ticks.get()
            try:
                await self._nc.publish(market_data(tick.symbol), tick.model_dump_json().encode())
            except Exception as exc:
                log.warning(
                    "%s: cannot publish tick of %s: %r", self.portfolio_id, tick.symbol, exc
                )

    async def _expire_loop(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self._expire_interval)
            try:
                await self.expire(self._now())
            except Exception:
                log.exception("%s: lease and linger expiry failed", self.portfolio_id)


class MarketDataRouter:
    """Serves the market-data command subjects once for every portfolio's feed.

    The subjects are shared by all portfolios, so with several feeds each serving them a
    command naming portfolio B could reach A's feed. The router sends a command to the
    feed it names, or, without a ``portfolio_id``, to the first ready feed (else to the
    first feed, which refuses with its state). An unknown portfolio is ``not_found``.
    """

    def __init__(
        self, nc: NatsClient, feeds: Sequence[MarketDataFeed], *, concurrency: int = 4
    ) -> None:
        self._nc = nc
        self._feeds = {feed.portfolio_id: feed for feed in feeds}
        self._concurrency = concurrency
        self._subscriptions: list[Subscription] = []

    def add_feed(self, feed: MarketDataFeed) -> None:
        """Route commands naming ``feed.portfolio_id`` to ``feed`` from now on."""
        self._feeds[feed.portfolio_id] = feed

    def remove_feed(self, portfolio_id: str) -> None:
        """Stop routing to the feed of ``portfolio_id`` (its commands become ``not_found``)."""
        self._feeds.pop(portfolio_id, None)

    async def start(self) -> None:
        """Subscribe the two command subjects (queue group ``gateway-bridge``)."""
        for _ in range(self._concurrency):
            self._subscriptions.append(
                await serve(
                    self._nc,
                    SUBSCRIBE_MARKET_DATA,
                    SubscribeMarketData,
                    self.subscribe,
                    queue=QUEUE_GROUP,
                )
            )
            self._subscriptions.append(
                await serve(
                    self._nc,
                    UNSUBSCRIBE_MARKET_DATA,
                    UnsubscribeMarketData,
                    self.unsubscribe,
                    queue=QUEUE_GROUP,
                )
            )

    async def stop(self) -> None:
        """Unsubscribe the command subjects; idempotent."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def subscribe(self, cmd: SubscribeMarketData) -> CommandAccepted:
        """Route a subscribe to its feed."""
        return await self.route(cmd).subscribe(cmd)

    async def unsubscribe(self, cmd: UnsubscribeMarketData) -> CommandAccepted:
        """Route an unsubscribe to its feed."""
        return await self.route(cmd).unsubscribe(cmd)

    def route(self, cmd: MarketDataRequest) -> MarketDataFeed:
        """The feed ``cmd`` is for; raises ``not_found`` naming an unknown portfolio."""
        if cmd.portfolio_id is not None:
            feed = self._feeds.get(cmd.portfolio_id)
            if feed is None:
                raise RemoteError(
                    NOT_FOUND,
                    f"portfolio_id: {cmd.portfolio_id!r} is not served by this bridge",
                )
            return feed
        if not self._feeds:
            raise RemoteError(NOT_FOUND, "portfolio_id: no portfolio is served by this bridge")
        feeds = list(self._feeds.values())
        return next((feed for feed in feeds if feed.accepts_orders), feeds[0])
