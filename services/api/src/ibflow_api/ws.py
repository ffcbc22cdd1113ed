"""WebSocket fan-out: one NATS subscription for the process, many filtered clients.

``/ws`` streams ``{"type", "data", "timestamp", "portfolio_id"}`` messages:
``ib_connection``, ``ib_account``, ``ib_positions``, ``ib_order`` (the dashboard's),
and ``fill``, ``position``, ``session``, ``risk``, ``quote`` (ibflow's). A client
authenticates first (``X-API-Key`` / ``Authorization: Bearer`` header, or as its first
message ``{"action": "auth", "api_key": "..."}`` within ``IBFLOW_WS_AUTH_TIMEOUT``), then
may narrow what it gets, at connect time with ``?portfolio=a,b&types=ib_order,fill&
symbols=AAPL`` or later with ``{"action": "subscribe", "portfolios": [...], "types":
[...], "symbols": [...]}`` (each given list replaces the current one; quotes come only
for the symbols asked for).

**Backpressure.** The NATS callback never waits for a client: each client has a
bounded queue (``IBFLOW_WS_QUEUE_SIZE``) drained by its own sender task. A client whose
queue is full is dropped with close code 1013 ("try again later") and reason
``too slow``; everyone else is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ibflow.bus import subjects
from ibflow.bus.errors import RequestError
from ibflow.bus.rpc import request
from ibflow.contracts import (
    AccountValuesReported,
    BrokerPositionReported,
    CommandAccepted,
    GatewayConnectionChanged,
    MarketDataTick,
    OrderBookUpdated,
    SubscribeMarketData,
)
from ibflow.contracts.base import utc_now
from ibflow.runtime.cancellation import raise_if_cancelled

log = logging.getLogger("ibflow.api.ws")

TYPES: Final = frozenset(
    {
        "ib_connection",
        "ib_account",
        "ib_positions",
        "ib_order",
        "fill",
        "position",
        "session",
        "risk",
        "quote",
    }
)
CLOSE_TOO_SLOW: Final = 1013
CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_NOT_READY: Final = 1013
LEASE_RENEW_SECONDS: Final = 30.0
MAX_SYMBOLS: Final = 100

WS_CLIENTS: Final = Gauge("ibflow_api_ws_clients", "Connected WebSocket clients.")
WS_DROPPED: Final = Counter(
    "ibflow_api_ws_dropped_total", "WebSocket clients dropped for being too slow."
)
WS_SENT: Final = Counter("ibflow_api_ws_messages_total", "Messages queued to clients.", ["type"])

_KIND_TYPES: Final = {
    ("gateway", "connection"): "ib_connection",
    ("account", "values"): "ib_account",
    ("account", "position"): "ib_positions",
    ("order", "updated"): "ib_order",
    ("order", "execution"): "fill",
    ("position", "changed"): "position",
    ("risk", "breached"): "risk",
    ("trading", "halted"): "risk",
    ("trading", "resumed"): "risk",
}


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _dashboard_data(kind: str, data: bytes) -> dict[str, Any]:
    """The dashboard shape of the four ``ib_*`` types; ibflow's own types as they are."""
    if kind == "ib_connection":
        c = GatewayConnectionChanged.model_validate_json(data)
        return {
            "connected": c.connected,
            "gateway_type": c.gateway_type.value,
            "host": c.host,
            "port": c.port,
            "client_id": c.client_id,
            "account_id": c.account_id,
            "connection_time": c.connection_time.isoformat() if c.connection_time else None,
            "last_heartbeat": c.last_heartbeat.isoformat() if c.last_heartbeat else None,
            "error_message": c.error_message,
            "state": c.state.value,
            "server_version": c.server_version,
            "portfolio_id": c.portfolio_id,
        }
    if kind == "ib_account":
        a = AccountValuesReported.model_validate_json(data)
        return {
            "account_id": a.account_id,
            "net_liquidation": _num(a.net_liquidation),
            "total_cash_value": _num(a.total_cash_value),
            "buying_power": _num(a.buying_power),
            "maintenance_margin": _num(a.maintenance_margin),
            "initial_margin": _num(a.initial_margin),
            "excess_liquidity": _num(a.excess_liquidity),
            "currency": a.currency,
            "timestamp": a.ts_event.isoformat(),
        }
    if kind == "ib_positions":
        p = BrokerPositionReported.model_validate_json(data)
        return {
            "account_id": p.account_id,
            "contract_id": p.con_id,
            "symbol": p.symbol,
            "position": _num(p.position),
            "avg_cost": _num(p.avg_cost),
            "market_price": None,
            "market_value": None,
            "unrealized_pnl": None,
            "realized_pnl": None,
            "timestamp": p.ts_event.isoformat(),
        }
    if kind == "ib_order":
        o = OrderBookUpdated.model_validate_json(data)
        return {
            "order_id": o.client_order_id,
            "portfolio_id": o.portfolio_id,
            "symbol": o.symbol,
            "action": o.side.value,
            "order_type": o.order_type.value,
            "total_quantity": _num(o.quantity),
            "filled_quantity": _num(o.filled_quantity),
            "remaining_quantity": _num(o.remaining_quantity),
            "limit_price": _num(o.limit_price),
            "stop_price": _num(o.stop_price),
            "status": o.status.value,
            "avg_fill_price": _num(o.avg_fill_price),
            "commission": _num(o.commission),
            "ib_order_id": o.order_id,
            "perm_id": o.perm_id,
            "ib_status": o.ib_status,
            "time_in_force": o.tif.value,
            "revision": o.revision,
            "timestamp": o.ts_event.isoformat(),
        }
    parsed: dict[str, Any] = json.loads(data)
    return parsed


@dataclass(eq=False)
class WsClient:
    """One connected client: its filters and its bounded outgoing queue."""

    key_id: str
    queue: asyncio.Queue[str]
    types: frozenset[str] = TYPES - {"quote"}
    portfolios: frozenset[str] | None = None
    symbols: frozenset[str] = frozenset()
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, kind: str, portfolio_id: str | None, symbol: str | None) -> bool:
        """Whether a message of ``kind`` about ``portfolio_id`` / ``symbol`` is for this client."""
        if kind == "quote":
            return symbol is not None and symbol in self.symbols
        if kind not in self.types:
            return False
        return self.portfolios is None or portfolio_id is None or portfolio_id in self.portfolios

    def offer(self, text: str) -> None:
        """Queue ``text`` without waiting; a full queue drops the client."""
        if self.dropped.is_set():
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped.set()
            WS_DROPPED.inc()


class Hub:
    """Subscribes to every event (and to the quotes clients ask for) and fans them out.

    The subscription to every event exists only while a client is connected: with no
    dashboard open, the api receives none of the events (about seven per execution)."""

    def __init__(self, nc: NatsClient, queue_size: int, actor: str = "api") -> None:
        self._nc = nc
        self._queue_size = queue_size
        self._actor = actor
        self._clients: set[WsClient] = set()
        self._events: Subscription | None = None
        self._events_lock = asyncio.Lock()
        self._quotes: dict[str, Subscription] = {}
        self._renewer: asyncio.Task[None] | None = None

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._clients)

    async def start(self) -> None:
        """Start renewing market data leases (events are subscribed with the first client)."""
        self._renewer = asyncio.create_task(self._renew_leases(), name="ws-md-leases")

    async def close(self) -> None:
        """Unsubscribe everything."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for sub in [self._events, *self._quotes.values()]:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._quotes.clear()

    async def add(self, key_id: str) -> WsClient:
        """A new client (with the default filters). Returns once the server has the
        subscription to every event, so a snapshot read after it misses no change."""
        client = WsClient(key_id, asyncio.Queue(self._queue_size))
        self._clients.add(client)
        WS_CLIENTS.set(len(self._clients))
        try:
            await self._sync_events()
        except BaseException:
            await self.remove(client)
            raise
        return client

    async def remove(self, client: WsClient) -> None:
        """Forget ``client``; stop the events and the quotes nobody wants any more."""
        self._clients.discard(client)
        WS_CLIENTS.set(len(self._clients))
        await self._sync_events()
        await self._sync_quotes()

    async def _sync_events(self) -> None:
        async with self._events_lock:
            if self._clients and self._events is None:
                self._events = await self._nc.subscribe(subjects.ALL_EVENTS, cb=self._on_event)
                await self._nc.flush()
            elif not self._clients and self._events is not None:
                events, self._events = self._events, None
                with contextlib.suppress(Exception):
                    await events.unsubscribe()

    async def set_filters(
        self,
        client: WsClient,
        *,
        types: Iterable[str] | None = None,
        portfolios: Iterable[str] | None = None,
        symbols: Iterable[str] | None = None,
    ) -> None:
        """Replace the given filters of ``client`` (``ValueError`` naming a bad value)."""
        if types is not None:
            wanted = frozenset(types)
            if unknown := wanted - TYPES:
                raise ValueError(f"types: unknown {sorted(unknown)}; known {sorted(TYPES)}")
            client.types = wanted
        if portfolios is not None:
            client.portfolios = frozenset(portfolios) or None
        if symbols is not None:
            chosen = frozenset(s.strip().upper() for s in symbols if s.strip())
            if len(chosen) > MAX_SYMBOLS:
                raise ValueError(f"symbols: at most {MAX_SYMBOLS}")
            for symbol in chosen:
                subjects.symbol_token(symbol)  # raises ValueError for a bad one
            client.symbols = chosen
            await self._sync_quotes()

    def _on_event_sync(self, subject: str, data: bytes) -> None:
        parts = subject.split(".")
        if len(parts) < 5:
            return
        portfolio: str | None
        if parts[3] == "session":
            kind, portfolio = "session", None
        elif len(parts) == 6:
            found = _KIND_TYPES.get((parts[3], parts[4]))
            if found is None:
                return
            kind, portfolio = found, parts[5]
            if portfolio == subjects.ALL_PORTFOLIOS:
                portfolio = None
        else:
            return
        targets = [c for c in self._clients if c.wants(kind, portfolio, None)]
        if not targets:
            return
        try:
            payload = _dashboard_data(kind, data)
        except (ValidationError, ValueError) as exc:
            log.warning("undecodable event on %s not forwarded: %s", subject, exc)
            return
        text = _message(kind, portfolio, payload)
        WS_SENT.labels(kind).inc(len(targets))
        for client in targets:
            client.offer(text)

    async def _on_event(self, msg: Msg) -> None:
        self._on_event_sync(msg.subject, msg.data)

    async def _on_quote(self, msg: Msg) -> None:
        try:
            tick = MarketDataTick.model_validate_json(msg.data)
        except ValidationError:
            return
        symbol = tick.symbol.upper()
        targets = [c for c in self._clients if c.wants("quote", None, symbol)]
        if not targets:
            return
        text = json.dumps(
            {
                "type": "quote",
                "portfolio_id": None,
                "data": json.loads(msg.data),
                "timestamp": utc_now().isoformat(),
            }
        )
        WS_SENT.labels("quote").inc(len(targets))
        for client in targets:
            client.offer(text)

    async def _sync_quotes(self) -> None:
        wanted = set().union(*(c.symbols for c in self._clients)) if self._clients else set()
        for symbol in set(self._quotes) - wanted:
            sub = self._quotes.pop(symbol)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        new = wanted - set(self._quotes)
        for symbol in new:
            self._quotes[symbol] = await self._nc.subscribe(
                subjects.market_data(symbol), cb=self._on_quote
            )
        if new:
            await self._lease(sorted(new))

    async def _lease(self, symbols: list[str]) -> None:
        cmd = SubscribeMarketData(symbols=tuple(symbols), requested_by=self._actor)
        try:
            await request(
                self._nc, subjects.SUBSCRIBE_MARKET_DATA, cmd, CommandAccepted, timeout=5.0
            )
        except RequestError as exc:
            log.info("market data lease for %s not granted: %s", ",".join(symbols), exc)

    async def _renew_leases(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            if self._quotes:
                await self._lease(sorted(self._quotes))


def _message(kind: str, portfolio: str | None, data: Any) -> str:
    return json.dumps(
        {"type": kind, "portfolio_id": portfolio, "data": data, "timestamp": utc_now().isoformat()}
    )


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


Snapshot = Callable[["WsClient"], Awaitable[list[tuple[str, str | None, bytes]]]]
"""The current state a client gets after ``welcome``: ``(type, portfolio, event JSON)``."""


async def serve_client(
    websocket: WebSocket, hub: Hub, key_id: str, snapshot: Snapshot | None = None
) -> None:
    """Stream to an authenticated, accepted ``websocket`` until it leaves or is dropped.

    After ``welcome``, ``snapshot`` (if given) supplies the current state the client's
    filters select, so a dashboard starts from it rather than waiting for changes; live
    messages queued meanwhile follow it.
    """
    client = await hub.add(key_id)
    try:
        params = websocket.query_params
        try:
            await hub.set_filters(
                client,
                types=_split(params.get("types")),
                portfolios=_split(params.get("portfolio")),
                symbols=_split(params.get("symbols")),
            )
        except ValueError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await websocket.send_text(_control("welcome", client))
        if snapshot is not None:
            for kind, portfolio, data in await snapshot(client):
                if client.wants(kind, portfolio, None):
                    await websocket.send_text(
                        _message(kind, portfolio, _dashboard_data(kind, data))
                    )
        sender = asyncio.create_task(_send_loop(websocket, client), name="ws-send")
        reader = asyncio.create_task(_read_loop(websocket, hub, client), name="ws-read")
        dropped = asyncio.create_task(client.dropped.wait(), name="ws-dropped")
        done, pending = await asyncio.wait(
            {sender, reader, dropped}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if dropped in done and websocket.client_state is WebSocketState.CONNECTED:
            log.info("websocket client of key %s dropped: too slow", key_id)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await websocket.close(code=CLOSE_TOO_SLOW, reason="too slow")
    finally:
        await hub.remove(client)


def _control(kind: str, client: WsClient, error: str | None = None) -> str:
    data: dict[str, Any] = {
        "types": sorted(client.types),
        "portfolios": sorted(client.portfolios) if client.portfolios is not None else None,
        "symbols": sorted(client.symbols),
    }
    if error is not None:
        data = {"error": error}
    return json.dumps(
        {"type": kind, "portfolio_id": None, "data": data, "timestamp": utc_now().isoformat()}
    )


async def _send_loop(websocket: WebSocket, client: WsClient) -> None:
    while True:
        text = await client.queue.get()
        await websocket.send_text(text)


async def _read_loop(websocket: WebSocket, hub: Hub, client: WsClient) -> None:
    while True:
        try:
            raw = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            message = json.loads(raw)
            if not isinstance(message, dict) or message.get("action") != "subscribe":
                raise ValueError('action: expected {"action": "subscribe", ...}')
            lists = {}
            for name in ("types", "portfolios", "symbols"):
                value = message.get(name)
                if value is not None and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)
                ):
                    raise ValueError(f"{name}: a list of strings")
                lists[name] = value
            await hub.set_filters(client, **lists)
            client.offer(_control("subscribed", client))
        except ValueError as exc:
            client.offer(_control("error", client, str(exc)))
