"""The simulator: a TCP server speaking the TWS protocol around the pure domain engine.

:class:`GatewaySimulator` owns the market, the accounts and the matching engine, one
:class:`~.session.ClientSession` per connection, the market task (advance the market
on the tick interval, push ticks, run matching) and the translation of engine events
into wire messages, routed to the owning client (and to client 0 with auto-open-orders).
Everything runs in one asyncio event loop; engine calls are synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ibflow_gateway_sim import adapters
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.domain import (
    Account,
    AccountChanged,
    Accounts,
    CommissionCharged,
    CommissionSchedule,
    Engine,
    EngineEvent,
    ExecutionOccurred,
    Market,
    MarketClock,
    MarketSettings,
    OrderError,
    OrderRejected,
    OrderStatusChanged,
    PositionChanged,
    Quote,
    SimOrder,
    Universe,
)
from ibflow_gateway_sim.faults import Faults, FaultState
from ibflow_gateway_sim.protocol import OrderFields, PlaceOrder, errors, responses
from ibflow_gateway_sim.session import ClientSession

__all__ = ["GatewaySimulator"]

log = logging.getLogger("ibflow_gateway_sim")

ACCOUNT_PUSH_INTERVAL = 3.0
"""Seconds between mark-to-market pushes of portfolio/account values to subscribers."""
MAX_LAG_TICKS = 10
"""When the market task is this many ticks late it stops trying to catch up in real time."""
MAX_CATCHUP_STEPS = 64
"""Random-walk steps simulated exactly per symbol per advance; more are collapsed into one
(bounds the work of one market step when the loop is overloaded)."""


class GatewaySimulator:
    """An IB Gateway stand-in: ``await sim.start(host, port)``, connect IB clients, trade.

    ``sim.faults`` injects failures; ``sim.engine`` / ``sim.market`` / ``sim.accounts``
    are the domain objects (mutate them only from the event loop).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        cfg = self.config
        self.universe = Universe(i.to_instrument() for i in cfg.instruments)
        self._start_time = datetime.now(UTC).replace(microsecond=0)
        self._virtual_now = self._start_time
        self._tick = timedelta(seconds=cfg.market.tick_interval)
        self.market = Market(
            self.universe,
            MarketSettings(
                volatility=cfg.market.volatility,
                spread_ticks=cfg.market.spread_ticks,
                tick_interval=cfg.market.tick_interval,
                lot_size=cfg.market.lot_size,
                max_lots=cfg.market.max_lots,
                seed=cfg.market.seed,
                max_catchup_steps=MAX_CATCHUP_STEPS,
            ),
            start=self._start_time,
        )
        if cfg.market.replay_csv is not None:
            rows = self.market.load_csv(cfg.market.replay_csv)
            log.info("loaded %d replay rows from %s", rows, cfg.market.replay_csv)
        self.clock = MarketClock(cfg.market.clock)
        self.accounts = Accounts(
            Account(a.id, a.currency, a.starting_cash, account_type=a.account_type)
            for a in cfg.accounts
        )
        m = cfg.matching
        self.engine = Engine(
            self.universe,
            self.market,
            self.accounts,
            fill_lots=[m.fill_lot_size] if m.fill_lot_size else None,
            slippage_ticks=m.slippage_ticks,
            commission_schedule=CommissionSchedule(
                per_share=m.commission_per_share,
                minimum=m.commission_minimum,
                max_pct=m.commission_max_pct,
            ),
            clock=self.clock,
            max_executions_per_check=m.executions_per_check if m.fill_lot_size else None,
            seed=cfg.market.seed,
        )
        self.fault_state = FaultState(fill_delay=m.fill_delay, commission_delay=m.commission_delay)
        self.faults = Faults(self, self.fault_state)
        self._server: asyncio.Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._connections: set[ClientSession] = set()
        self._clients: dict[int, ClientSession] = {}
        self._echo: dict[tuple[int, int], OrderFields] = {}
        self._echoed: dict[tuple[int, int], tuple[OrderFields, str, Decimal, OrderFields]] = {}
        self._max_ids: dict[int, int] = {}
        self._exec_client: dict[str, int] = {}
        self._outbox: deque[tuple[float, list[EngineEvent]]] = deque()
        self._outbox_task: asyncio.Task[None] | None = None
        self._market_task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._connection_count = 0
        self._last_account_push = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The port actually listened on (useful after ``start(port=0)``)."""
        return self._port

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._host

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    async def start(self, host: str = "127.0.0.1", port: int = 4002) -> None:
        """Listen on ``host:port`` (0 picks a free port) and start the market task."""
        await self._listen(host, port)
        if self.config.market.auto_advance and self._market_task is None:
            self._market_task = asyncio.create_task(self._market_loop(), name="gateway-sim-market")
        log.info(
            "gateway-sim listening on %s:%d (server version 176, %d instruments, accounts %s)",
            self._host,
            self._port,
            len(self.universe),
            ",".join(self.accounts.ids),
        )

    async def _listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connect, host, port)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = host, int(sockname[1])

    async def stop(self) -> None:
        """Stop listening, drop every client and stop the background tasks."""
        for task in (self._market_task, self._outbox_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._market_task = self._outbox_task = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self._close_listener()
        log.info("gateway-sim stopped")

    async def restart(self) -> None:
        """Simulate a gateway restart: every client dropped, state and order ids kept.

        The listener is closed and reopened on the same port; transient faults
        (connectivity, farms, silence) are cleared.
        """
        log.warning("gateway-sim restarting (all clients dropped, state kept)")
        host, port = self._host, self._port
        await self._close_listener()
        self.fault_state.clear_transient()
        await self._listen(host, port)
        log.info("gateway-sim restarted on %s:%d", self._host, self._port)

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        sessions = list(self._connections)
        for session in sessions:
            session.close("server stopping")
        await asyncio.gather(*(s.wait_closed() for s in sessions), return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connection_count += 1
        session = ClientSession(self, reader, writer, self._connection_count)
        self._connections.add(session)
        try:
            await session.run()
        finally:
            self._connections.discard(session)
            if session.client_id is not None and self._clients.get(session.client_id) is session:
                del self._clients[session.client_id]

    # ------------------------------------------------------------------ sessions

    def now(self) -> datetime:
        """The simulator's clock: wall time, or virtual time when ``auto_advance`` is off."""
        if self.config.market.auto_advance:
            return datetime.now(UTC)
        return self._virtual_now

    def register_client(self, session: ClientSession, client_id: int) -> bool:
        """Claim ``client_id`` for ``session``; False if another session holds it."""
        holder = self._clients.get(client_id)
        if holder is not None and holder is not session and not holder.closed:
            return False
        self._clients[client_id] = session
        return True

    def sessions(self) -> list[ClientSession]:
        """Sessions that completed startApi."""
        return list(self._clients.values())

    def next_valid_id(self, client_id: int) -> int:
        """1 + the highest order id this client id ever used (rejected ones included)."""
        return max(self.engine.max_order_id(client_id), self._max_ids.get(client_id, 0)) + 1

    def is_silenced(self, client_id: int | None) -> bool:
        """Whether output to / input from this client is held by the silence fault."""
        state = self.fault_state
        return state.silenced or (client_id is not None and client_id in state.silenced_clients)

    def broadcast(self, frame: bytes) -> None:
        """Send one frame to every session that completed startApi."""
        for session in self.sessions():
            session.send(frame)

    def drop_connections(self) -> int:
        """Close every client socket (the listener stays up)."""
        sessions = list(self._connections)
        for session in sessions:
            session.close("connection dropped by fault injection")
        return len(sessions)

    def drop_market_data(self) -> None:
        """Forget every market-data subscription (after 1101)."""
        for session in self.sessions():
            session.drop_market_data()

    def resend_quotes(self) -> None:
        """Push a full quote to every subscription (after the market farm comes back)."""
        for session in self.sessions():
            session.resend_quotes()

    def resume_sessions(self) -> None:
        """Flush what the silence fault held back, for sessions no longer silenced."""
        for session in list(self._connections):
            session.resume()

    # ------------------------------------------------------------------ market

    async def _market_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.market.tick_interval
        next_at = loop.time()
        while True:
            next_at += interval
            delay = next_at - loop.time()
            if delay < -MAX_LAG_TICKS * interval:
                next_at = loop.time()
            # always yield, even when late: the sessions must keep being served
            await asyncio.sleep(max(delay, 0.0))
            try:
                self._market_step(self.now())
            except Exception:
                log.exception("market step failed")

    def advance_market(self, ticks: int = 1) -> None:
        """Move virtual time ``ticks`` tick intervals forward (``auto_advance: false`` only),
        stepping the market, pushing ticks and running matching after each step."""
        if self.config.market.auto_advance:
            raise RuntimeError("advance_market needs market.auto_advance: false")
        for _ in range(ticks):
            self._virtual_now += self._tick
            self._market_step(self._virtual_now)

    def _market_step(self, now: datetime) -> None:
        quotes = self.market.advance(now)
        self._after_market_change(now, quotes)
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_account_push >= ACCOUNT_PUSH_INTERVAL:
            self._last_account_push = loop.time()
            for session in self.sessions():
                session.refresh_account()

    def _after_market_change(self, now: datetime, quotes: list[tuple[str, Quote]]) -> None:
        state = self.fault_state
        if quotes and not state.connectivity_lost and "market" not in state.farms_down:
            latest = {symbol.upper(): quote for symbol, quote in quotes}
            for session in self.sessions():
                session.push_quotes(latest)
        if not state.connectivity_lost:
            self.dispatch(self.engine.on_market(now, _intermediate(quotes)))

    def run_matching(self) -> None:
        """Check every working order against the current quotes now."""
        if not self.fault_state.connectivity_lost:
            self.dispatch(self.engine.on_market(self.now()))

    def set_price(self, symbol: str, price: Decimal) -> Quote:
        """Move ``symbol`` to ``price``, push the ticks and run matching at once."""
        now = self.now()
        quote = self.market.set_price(symbol, price, now)
        inst = self.universe.by_symbol(symbol)
        name = inst.symbol if inst is not None else symbol
        self._after_market_change(now, [(name, quote)])
        return quote

    # ------------------------------------------------------------------ orders

    def place_order(self, session: ClientSession, request: PlaceOrder) -> None:
        """Handle placeOrder from ``session`` (new order or modification)."""
        client_id = session.client_id
        assert client_id is not None
        order_id = request.order_id
        self._max_ids[client_id] = max(self._max_ids.get(client_id, 0), order_id)
        fields = request.order
        if fields.what_if:
            session.answer_what_if(request)
            return
        if self.fault_state.connectivity_lost:
            session.send(errors.order_rejected(order_id, errors.TEXTS[errors.CONNECTIVITY_LOST]))
            return
        existing = self.engine.find_order(client_id, order_id)
        if existing is None and self.fault_state.reject_next:
            code, text = self.fault_state.reject_next.popleft()
            log.warning("client %d order %d rejected by fault injection", client_id, order_id)
            session.send(responses.error(order_id, code, text))
            return
        contract = request.contract
        inst = None
        if contract.sec_type in ("", "STK"):
            inst = self.universe.resolve(contract.symbol, contract.con_id)
        if inst is None:
            session.send(errors.no_security_definition(order_id))
            return
        try:
            order_request = adapters.order_request(fields, inst)
        except ValueError as exc:
            session.send(errors.order_rejected(order_id, str(exc)))
            return
        key = (client_id, order_id)
        previous = self._echo.get(key)
        self._echo[key] = fields
        events = self.engine.place(client_id, order_id, order_request, self.now())
        refused = any(
            isinstance(ev, OrderRejected | OrderError)
            and ev.client_id == client_id
            and ev.order_id == order_id
            and ev.code != errors.ORDER_CANCELLED
            for ev in events
        )
        if refused:
            if previous is None:
                self._echo.pop(key, None)
            else:
                self._echo[key] = previous
        self.dispatch(events)

    def cancel_order(self, session: ClientSession, order_id: int) -> None:
        """Handle cancelOrder from ``session``."""
        assert session.client_id is not None
        self.dispatch(self.engine.cancel(session.client_id, order_id, self.now()))

    def global_cancel(self) -> None:
        """Handle reqGlobalCancel: cancel every live order of every client."""
        self.dispatch(self.engine.global_cancel(self.now()))

    def order_fields(self, order: SimOrder) -> OrderFields:
        """The fields to echo in openOrder / completedOrder for ``order`` (the last ones
        built are reused while the client's fields, the account and the quantity are
        the same: an order is echoed with each of its status changes)."""
        key = (order.client_id, order.order_id)
        base = self._echo.get(key)
        if base is None:
            return adapters.echo_fields(None, order)
        cached = self._echoed.get(key)
        if (
            cached is not None
            and cached[0] is base
            and cached[1] == order.account
            and cached[2] == order.quantity
        ):
            return cached[3]
        fields = adapters.echo_fields(base, order)
        self._echoed[key] = (base, order.account, order.quantity, fields)
        return fields

    def parent_order_id(self, order: SimOrder) -> int:
        """The client's order id of ``order``'s parent (0 for a top-level order)."""
        return order.request.parent_id if order.parent_perm_id else 0

    # ------------------------------------------------------------------ event delivery

    def dispatch(self, events: list[EngineEvent]) -> None:
        """Deliver engine events to the sessions, in order, honouring the fill delay.

        With a fill delay, everything from the first execution of a batch on is held
        (and whatever follows queues behind it, so the order of messages is kept).
        """
        if not events:
            return
        delay = self.fault_state.fill_delay
        first_fill = next(
            (i for i, ev in enumerate(events) if isinstance(ev, ExecutionOccurred)), None
        )
        if delay <= 0 or first_fill is None:
            self._enqueue(events, 0.0)
            return
        if first_fill:
            self._enqueue(events[:first_fill], 0.0)
        self._enqueue(events[first_fill:], delay)

    def _enqueue(self, events: list[EngineEvent], delay: float) -> None:
        if not self._outbox and delay <= 0:
            self._deliver(events)
            return
        loop = asyncio.get_running_loop()
        release = loop.time() + delay
        if self._outbox:
            release = max(release, self._outbox[-1][0])
        self._outbox.append((release, events))
        if self._outbox_task is None or self._outbox_task.done():
            self._outbox_task = asyncio.create_task(self._drain_outbox(), name="gateway-sim-outbox")

    async def _drain_outbox(self) -> None:
        loop = asyncio.get_running_loop()
        while self._outbox:
            release, events = self._outbox[0]
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._outbox.popleft()
            try:
                self._deliver(events)
            except Exception:
                log.exception("delivering delayed engine events failed")

    def _order_sessions(self, client_id: int) -> list[ClientSession]:
        out: list[ClientSession] = []
        owner = self._clients.get(client_id)
        if owner is not None:
            out.append(owner)
        master = self._clients.get(0)
        if master is not None and master is not owner and master.auto_open_orders:
            out.append(master)
        return out

    def _deliver(self, events: Iterable[EngineEvent]) -> None:
        for event in events:
            try:
                self._deliver_one(event)
            except Exception:
                log.exception("translating %s failed", type(event).__name__)

    def _deliver_one(self, event: EngineEvent) -> None:  # noqa: PLR0912 - one case per event
        match event:
            case OrderStatusChanged(order=order):
                for session in self._order_sessions(order.client_id):
                    session.send_order(order)
            case ExecutionOccurred(execution=execution):
                owner = execution.order.client_id
                self._exec_client[execution.exec_id] = owner
                for session in self._order_sessions(owner):
                    session.send_execution(execution)
            case CommissionCharged():
                self._send_commission(event)
            case OrderRejected(client_id=client_id, order_id=order_id, code=code, text=text):
                log.info("client %d order %d rejected: %d %s", client_id, order_id, code, text)
                for session in self._order_sessions(client_id):
                    session.send(responses.error(order_id, code, text))
            case OrderError(client_id=client_id, order_id=order_id, code=code, text=text):
                owner_session = self._clients.get(client_id)
                if owner_session is not None:
                    owner_session.send(responses.error(order_id, code, text))
            case PositionChanged():
                for session in self.sessions():
                    session.send_position(event)
            case AccountChanged(account=account, values=values):
                for session in self.sessions():
                    session.send_account_values(account, values)

    def _send_commission(self, event: CommissionCharged) -> None:
        delay = self.fault_state.commission_delay
        if delay <= 0:
            self._commission_now(event)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._commission_now(event)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _commission_now(self, event: CommissionCharged) -> None:
        owner = self._exec_client.get(event.exec_id)
        if owner is None:
            return
        frame = adapters.commission_frame(event)
        for session in self._order_sessions(owner):
            session.send(frame)

    # ------------------------------------------------------------------ inspection

    def account_state(self, account_id: str) -> dict[str, Any] | None:
        """Cash, values, positions, open orders and executions of an account (JSON-able)."""
        account = self.accounts.get(account_id)
        if account is None or not account_id:
            return None
        return {
            "account": account.account_id,
            "cash": str(account.cash),
            "net_liquidation": str(account.net_liquidation),
            "realized_pnl": str(account.realized_pnl),
            "commissions": str(account.commissions),
            "values": account.account_values(),
            "positions": [
                {
                    "symbol": p.instrument.symbol,
                    "con_id": p.instrument.con_id,
                    "position": str(p.quantity),
                    "avg_cost": str(p.avg_cost),
                    "realized_pnl": str(p.realized_pnl),
                }
                for p in account.positions()
                if p.quantity != 0
            ],
            "open_orders": [
                _order_dict(o) for o in self.engine.open_orders() if o.account == account_id
            ],
            "executions": [
                {
                    "exec_id": f.execution.exec_id,
                    "order_id": f.execution.order.order_id,
                    "client_id": f.execution.order.client_id,
                    "perm_id": f.execution.order.perm_id,
                    "symbol": f.execution.symbol,
                    "side": f.execution.side,
                    "shares": str(f.execution.shares),
                    "price": str(f.execution.price),
                    "time": f.execution.time.isoformat(),
                    "commission": str(f.commission.commission),
                }
                for f in self.engine.executions(account=account_id)
            ],
        }


def _order_dict(order: SimOrder) -> dict[str, Any]:
    return {
        "client_id": order.client_id,
        "order_id": order.order_id,
        "perm_id": order.perm_id,
        "symbol": order.symbol,
        "action": order.action,
        "order_type": order.order_type,
        "quantity": str(order.quantity),
        "filled": str(order.filled),
        "status": order.status,
        "lmt_price": None if order.request.lmt_price is None else str(order.request.lmt_price),
        "aux_price": None if order.request.aux_price is None else str(order.request.aux_price),
    }


def _intermediate(quotes: list[tuple[str, Quote]]) -> list[tuple[str, Quote]]:
    """The quotes before each symbol's last one.

    ``Engine.on_market`` checks the orders against these, then against the current
    quote; leaving the current one out keeps it from being checked twice.
    """
    last = {symbol.upper(): index for index, (symbol, _) in enumerate(quotes)}
    return [item for index, item in enumerate(quotes) if last[item[0].upper()] != index]
