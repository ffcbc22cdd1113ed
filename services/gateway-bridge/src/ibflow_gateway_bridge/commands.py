"""Broker commands of one portfolio over core NATS request/reply.

:class:`BrokerCommands` answers :class:`PlaceBrokerOrder`, :class:`CancelBrokerOrder`,
:class:`ModifyBrokerOrder` and :class:`RefreshBrokerState` on the portfolio's subjects
(``ibflow.bus.subjects.place_broker_order(p)``...) with ``ibflow.bus.serve``, in the
queue group ``gateway-bridge`` (only one bridge should own a portfolio; the group makes
sure a second replica would not execute a command twice).

* Every command is refused at once with ``not_ready`` naming the connection state
  while the connection does not accept orders (``portfolio demo is
  ib_connectivity_lost``).
* Place is idempotent on the client order id (IB's ``orderRef``): under a per-id lock,
  the session's own trades are checked, then the orders of the connection's last
  complete broker snapshot (taken after every (re)connect by the reconciler; no query
  per command), and only while no such snapshot exists yet the broker itself
  (``reqAllOpenOrders`` and ``reqCompletedOrders``, bounded by ``query_timeout``).
  A query that fails or times
  out refuses the command (``not_ready``/``timeout``): "absent" is never assumed. An
  order found is answered ``CommandAccepted(duplicate=True)`` and nothing is placed.
  Concurrent place commands share one broker query (one that started after they were
  received), so a burst costs a few queries, not two per order.
* A place with ``take_profit_price``/``stop_loss_price`` is a bracket: the parent and
  its children (``<client_order_id>:tp`` a ``LMT``, ``<client_order_id>:sl`` a ``STP``,
  opposite side, same quantity, one OCA group ``<client_order_id>:oca``) are sent in one
  go with IB's transmit pattern (:meth:`IbClient.place_bracket`), after ONE pacer wait
  for all of their messages. Idempotency stays on the parent's client order id: if the
  parent is known at the broker, nothing is placed (even if its children are missing).
  The reply lists every client order id placed, parent first. Each child is an order of
  its own at IB: its statuses, executions and commissions are published like any
  order's, under its own client order id. Cancelling the parent before it fills makes
  IB cancel the children; a child can be cancelled or modified by its own id.
* Every message to IB first passes the connection's :class:`Pacer`, with a
  :class:`~ibflow_gateway_bridge.pacing.Priority`: a cancel, and a place whose
  ``purpose`` is ``exit``, are ``URGENT`` (they reduce risk, so they do not wait
  behind a morning burst of entries); every other order, modification, preview and
  the broker queries they wait for are ``ORDER``.
* The broker's verdict (acceptance, 201 rejections, fills) arrives later as events
  published by :class:`~ibflow_gateway_bridge.events.BrokerEventPublisher`.

``CommandAccepted`` has no broker id fields: the broker order id and permId (when
known) are in its ``detail`` (``order_id=12 perm_id=345``), the client order id in
``client_order_ids``.

Metric ``ibflow_bridge_order_ack_seconds{portfolio}``: place command received → first
order status from IB for its ``orderRef``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Final, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from prometheus_client import Histogram
from pydantic import BaseModel

from ibflow.bus import serve
from ibflow.bus.errors import Reject, RemoteError
from ibflow.bus.subjects import (
    cancel_broker_order,
    lookup_broker_order,
    modify_broker_order,
    place_broker_order,
    preview_broker_order,
    refresh_broker_state,
)
from ibflow.contracts.enums import OrderPurpose, OrderType
from ibflow.contracts.gateway import (
    BrokerOrderPreviewed,
    BrokerOrderSearched,
    BrokerSnapshotCompleted,
    CancelBrokerOrder,
    FindBrokerOrder,
    ModifyBrokerOrder,
    PlaceBrokerOrder,
    PreviewBrokerOrder,
    RefreshBrokerState,
)
from ibflow.contracts.replies import (
    INVALID_REQUEST,
    NOT_FOUND,
    NOT_READY,
    TIMEOUT,
    CommandAccepted,
)
from ibflow_gateway_bridge.ib import IbClient
from ibflow_gateway_bridge.ib.adapter import BracketChild, IbOrderError, Trade
from ibflow_gateway_bridge.ib.mapping import order_status_changed
from ibflow_gateway_bridge.pacing import Pacer, PacerClosed, Priority
from ibflow_gateway_bridge.reconciliation import Reconciler
from ibflow_gateway_bridge.supervisor import PortfolioConnection

__all__ = ["ORDER_ACK_SECONDS", "QUEUE_GROUP", "BrokerCommands", "bracket_oca_group"]

log = logging.getLogger("ibflow.gateway_bridge.commands")

QUEUE_GROUP: Final = "gateway-bridge"
"""Queue group of every command subscription."""

ORDER_ACK_SECONDS: Final = Histogram(
    "ibflow_bridge_order_ack_seconds",
    "Place command received to the first order status from IB for its orderRef.",
    ["portfolio"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

_IB_ORDER_TYPES: Final = {
    OrderType.MKT: "MKT",
    OrderType.LMT: "LMT",
    OrderType.STP: "STP",
    OrderType.STP_LMT: "STP LMT",
    OrderType.TRAIL: "TRAIL",
}
_DONE_STATUSES: Final = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})

_Q = TypeVar("_Q", bound=BaseModel)


def _describe(trade: Trade) -> str:
    perm_id = trade.order.permId or trade.orderStatus.permId
    text = f"order_id={trade.order.orderId}"
    if perm_id:
        text += f" perm_id={perm_id}"
    return f"{text} status={trade.orderStatus.status or 'unknown'}"


def _aux_price(terms: PlaceBrokerOrder | ModifyBrokerOrder | PreviewBrokerOrder) -> Decimal | None:
    if terms.order_type is OrderType.TRAIL:
        return terms.trailing_amount
    return terms.stop_price


def _bracket_children(cmd: PlaceBrokerOrder) -> list[BracketChild]:
    """The IB children of a bracket command: take profit (``LMT``), then stop loss (``STP``)."""
    children: list[BracketChild] = []
    if cmd.take_profit_client_order_id is not None:
        children.append(
            BracketChild(cmd.take_profit_client_order_id, "LMT", lmt_price=cmd.take_profit_price)
        )
    if cmd.stop_loss_client_order_id is not None:
        children.append(
            BracketChild(cmd.stop_loss_client_order_id, "STP", aux_price=cmd.stop_loss_price)
        )
    return children


def bracket_oca_group(client_order_id: str) -> str:
    """The OCA group of a bracket's children: ``<parent client order id>:oca``."""
    return f"{client_order_id}:oca"


class BrokerCommands:
    """The command handlers of one portfolio's connection (start/stop with its worker).

    Every command is handled in a task of its own as it arrives (``serve(...,
    concurrent=True)``): a command waiting for the pacer or a broker query never holds up
    the ones behind it, so an urgent exit takes its turn in the pacer at once. (With
    several subscriptions handling one request at a time, NATS handed a request to a
    busy one as readily as to an idle one, and an exit could wait behind an entry's
    pacer wait.) Orders of one client order id are still handled one at a time.
    ``reconciler`` serves :class:`RefreshBrokerState` (refused without one).
    """

    def __init__(
        self,
        portfolio_id: str,
        nc: NatsClient,
        connection: PortfolioConnection,
        pacer: Pacer,
        *,
        reconciler: Reconciler | None = None,
        query_timeout: float = 5.0,
    ) -> None:
        self.portfolio_id = portfolio_id
        self._nc = nc
        self._connection = connection
        self._pacer = pacer
        self._reconciler = reconciler
        self._query_timeout = query_timeout
        self._subscriptions: list[Subscription] = []
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._snapshots: dict[Priority, tuple[asyncio.Task[dict[str, Trade]], float]] = {}
        """The latest broker orders query of each priority, and when it started."""
        self._pending_ack: dict[str, float] = {}
        self._refreshes: set[asyncio.Task[BrokerSnapshotCompleted]] = set()
        self._ack = ORDER_ACK_SECONDS.labels(portfolio=portfolio_id)
        connection.client.on_order_status(self._on_order_status)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Subscribe the portfolio's command subjects: place, cancel, modify, refresh,
        lookup, preview."""
        p = self.portfolio_id
        await self._serve(place_broker_order(p), PlaceBrokerOrder, self.place)
        await self._serve(cancel_broker_order(p), CancelBrokerOrder, self.cancel)
        await self._serve(modify_broker_order(p), ModifyBrokerOrder, self.modify)
        await self._serve(refresh_broker_state(p), RefreshBrokerState, self.refresh)
        await self._serve(lookup_broker_order(p), FindBrokerOrder, self.lookup)
        await self._serve(preview_broker_order(p), PreviewBrokerOrder, self.preview)

    async def stop(self) -> None:
        """Unsubscribe (no new commands) and cancel refreshes still running; idempotent."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in list(self._refreshes):
            task.cancel()
        for task in list(self._refreshes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(
        self, subject: str, model: type[_Q], handler: Callable[[_Q], Awaitable[BaseModel]]
    ) -> None:
        sub = await serve(self._nc, subject, model, handler, queue=QUEUE_GROUP, concurrent=True)
        self._subscriptions.append(sub)

    # ------------------------------------------------------------------ handlers

    async def place(self, cmd: PlaceBrokerOrder) -> CommandAccepted:
        """Place the order (a bracket: with its children) at IB once per client order id
        (see the module docstring)."""
        received = asyncio.get_running_loop().time()
        self._check(cmd.portfolio_id)
        coid = cmd.client_order_id
        coids = cmd.bracket_client_order_ids()
        async with self._order_lock(coid):
            priority = Priority.URGENT if cmd.purpose is OrderPurpose.EXIT else Priority.ORDER
            existing = self._first(self._client.trades_by_ref(coid))
            if existing is None:
                existing = await self._at_broker(coid, received, priority)
            if existing is not None:
                return CommandAccepted.of(
                    cmd,
                    duplicate=True,
                    client_order_ids=coids,
                    detail=f"already placed at the broker: {_describe(existing)}",
                )
            client = self._client
            qualify = 0 if client.knows_contract(cmd.symbol, "STK", cmd.exchange) else 1
            await self._acquire(len(coids) + qualify, priority)
            self._pending_ack[coid] = received
            try:
                order_ids = await self._send_place(cmd)
            except IbOrderError as exc:
                self._pending_ack.pop(coid, None)
                raise RemoteError(INVALID_REQUEST, f"symbol: {exc}") from None
            except TimeoutError:
                self._pending_ack.pop(coid, None)
                raise RemoteError(
                    TIMEOUT, f"IB did not qualify {cmd.symbol} within {self._query_timeout:g}s"
                ) from None
            except ConnectionError as exc:
                self._pending_ack.pop(coid, None)
                raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id}: {exc}") from None
        details = []
        for ref, order_id in zip(coids, order_ids, strict=True):
            placed = self._first(self._client.trades_by_ref(ref))
            text = _describe(placed) if placed is not None else f"order_id={order_id}"
            details.append(text if len(coids) == 1 else f"{ref} {text}")
        return CommandAccepted.of(
            cmd, client_order_ids=coids, detail=f"placed: {'; '.join(details)}"
        )

    async def _send_place(self, cmd: PlaceBrokerOrder) -> list[int]:
        """Send the order (a bracket: parent and children); the IB order ids, parent first."""
        client = self._client
        account = self._connection.config.account or ""
        if cmd.is_bracket:
            return await client.place_bracket(
                symbol=cmd.symbol,
                action=cmd.side.value,
                quantity=cmd.quantity,
                order_type=_IB_ORDER_TYPES[cmd.order_type],
                order_ref=cmd.client_order_id,
                children=_bracket_children(cmd),
                oca_group=bracket_oca_group(cmd.client_order_id),
                exchange=cmd.exchange,
                currency=cmd.currency,
                lmt_price=cmd.limit_price,
                aux_price=_aux_price(cmd),
                trailing_percent=cmd.trailing_percent,
                trail_stop_price=cmd.trail_stop_price,
                tif=cmd.tif.value,
                outside_rth=cmd.outside_rth,
                account=account,
                timeout=self._query_timeout,
            )
        order_id = await client.place_order(
            symbol=cmd.symbol,
            action=cmd.side.value,
            quantity=cmd.quantity,
            order_type=_IB_ORDER_TYPES[cmd.order_type],
            order_ref=cmd.client_order_id,
            exchange=cmd.exchange,
            currency=cmd.currency,
            lmt_price=cmd.limit_price,
            aux_price=_aux_price(cmd),
            trailing_percent=cmd.trailing_percent,
            trail_stop_price=cmd.trail_stop_price,
            tif=cmd.tif.value,
            outside_rth=cmd.outside_rth,
            account=account,
            timeout=self._query_timeout,
        )
        return [order_id]

    async def cancel(self, cmd: CancelBrokerOrder) -> CommandAccepted:
        """Cancel the working order of a client order id; a finished one is accepted as
        is (``duplicate``), an unknown one is ``not_found``."""
        self._check(cmd.portfolio_id)
        coid = cmd.client_order_id
        async with self._order_lock(coid):
            trade = await self._own_trade(coid, Priority.URGENT)
            if trade.orderStatus.status in _DONE_STATUSES:
                return CommandAccepted.of(
                    cmd,
                    duplicate=True,
                    client_order_ids=(coid,),
                    detail=f"nothing to cancel: {_describe(trade)}",
                )
            await self._acquire(priority=Priority.URGENT)
            self._send(lambda: self._client.cancel_order(trade.order.orderId))
        return CommandAccepted.of(
            cmd, client_order_ids=(coid,), detail=f"cancel sent: {_describe(trade)}"
        )

    async def modify(self, cmd: ModifyBrokerOrder) -> CommandAccepted:
        """Re-send a working order with the new quantity and prices; its symbol, side
        and order type cannot change (``refused``)."""
        self._check(cmd.portfolio_id)
        coid = cmd.client_order_id
        async with self._order_lock(coid):
            trade = await self._own_trade(coid)
            order = trade.order
            if trade.orderStatus.status in _DONE_STATUSES:
                raise Reject(f"order {coid} is {trade.orderStatus.status}: cannot modify")
            changed = [
                name
                for name, now, wanted in (
                    ("symbol", trade.contract.symbol.upper(), cmd.symbol.upper()),
                    ("side", order.action.upper(), cmd.side.value),
                    ("order_type", order.orderType, _IB_ORDER_TYPES[cmd.order_type]),
                )
                if now != wanted
            ]
            if changed:
                raise Reject(f"order {coid}: {', '.join(changed)} cannot be modified")
            if cmd.trailing_percent is not None or cmd.trail_stop_price is not None:
                raise Reject("modifying trailing_percent/trail_stop_price is not supported")
            await self._acquire()
            self._send(
                lambda: self._client.modify_order(
                    order.orderId,
                    quantity=cmd.quantity,
                    lmt_price=cmd.limit_price,
                    aux_price=_aux_price(cmd),
                )
            )
        return CommandAccepted.of(
            cmd,
            client_order_ids=(coid,),
            detail=f"modification sent (revision {cmd.revision}): {_describe(trade)}",
        )

    async def lookup(self, cmd: FindBrokerOrder) -> BrokerOrderSearched:
        """Whether IB has an order with this orderRef (this session's trades, else a fresh
        open + completed orders query); a failed query is an error reply, never "not found"."""
        received = asyncio.get_running_loop().time()
        self._check(cmd.portfolio_id)
        coid = cmd.client_order_id
        trade = self._first(self._client.trades_by_ref(coid))
        if trade is None:
            trade = await self._at_broker(coid, received)
        if trade is None:
            return BrokerOrderSearched(client_order_id=coid, found=False)
        status = order_status_changed(self.portfolio_id, trade)
        return BrokerOrderSearched(client_order_id=coid, found=True, status=status)

    async def preview(self, cmd: PreviewBrokerOrder) -> BrokerOrderPreviewed:
        """IB's what-if figures for the order (margins, commission); nothing is placed.
        One paced message (two when the contract must be qualified first)."""
        self._check(cmd.portfolio_id)
        client = self._client
        qualify = 0 if client.knows_contract(cmd.symbol, "STK", cmd.exchange) else 1
        await self._acquire(1 + qualify)
        try:
            figures = await client.what_if(
                symbol=cmd.symbol,
                action=cmd.side.value,
                quantity=cmd.quantity,
                order_type=_IB_ORDER_TYPES[cmd.order_type],
                exchange=cmd.exchange,
                currency=cmd.currency,
                lmt_price=cmd.limit_price,
                aux_price=_aux_price(cmd),
                trailing_percent=cmd.trailing_percent,
                trail_stop_price=cmd.trail_stop_price,
                tif=cmd.tif.value,
                outside_rth=cmd.outside_rth,
                account=self._connection.config.account or "",
                timeout=self._query_timeout,
            )
        except IbOrderError as exc:
            raise RemoteError(INVALID_REQUEST, f"symbol: {exc}") from None
        except TimeoutError:
            raise RemoteError(
                TIMEOUT, f"IB did not answer the what-if within {self._query_timeout:g}s"
            ) from None
        except ConnectionError as exc:
            raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id}: {exc}") from None
        return BrokerOrderPreviewed(
            client_order_id=cmd.client_order_id,
            **{f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)},
        )

    async def refresh(self, cmd: RefreshBrokerState) -> CommandAccepted:
        """Start a broker snapshot of ``cmd.what`` and accept at once; the outcome is a
        ``BrokerSnapshotCompleted`` event."""
        self._check(cmd.portfolio_id)
        if self._reconciler is None:
            raise Reject(f"portfolio {self.portfolio_id} has no reconciler")
        task = asyncio.create_task(self._reconciler.reconcile_now(cmd.what, reason="requested"))
        self._refreshes.add(task)
        task.add_done_callback(self._refresh_done)
        return CommandAccepted.of(
            cmd, detail=f"refreshing {', '.join(query.value for query in cmd.what)}"
        )

    # ------------------------------------------------------------------ internals

    @property
    def _client(self) -> IbClient:
        return self._connection.client

    def _check(self, portfolio_id: str) -> None:
        if portfolio_id != self.portfolio_id:
            raise RemoteError(
                NOT_FOUND,
                f"portfolio_id: {portfolio_id!r} is not served here ({self.portfolio_id!r})",
            )
        if not self._connection.accepts_orders:
            state = self._connection.state.value
            raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id} is {state}")

    async def _acquire(self, n: int = 1, priority: Priority = Priority.ORDER) -> None:
        """Wait for the pacer, then re-check the state (the wait may have been long)."""
        try:
            await self._pacer.acquire(n, priority)
        except PacerClosed as exc:
            raise RemoteError(NOT_READY, str(exc)) from None
        self._check(self.portfolio_id)

    def _send(self, call: Callable[[], None]) -> None:
        try:
            call()
        except IbOrderError as exc:
            raise RemoteError(NOT_FOUND, str(exc)) from None
        except ConnectionError as exc:
            raise RemoteError(NOT_READY, f"portfolio {self.portfolio_id}: {exc}") from None

    @staticmethod
    def _first(trades: list[Trade]) -> Trade | None:
        return trades[0] if trades else None

    @contextlib.asynccontextmanager
    async def _order_lock(self, coid: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(coid, (asyncio.Lock(), 0))
        self._locks[coid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[coid]
            if users <= 1:
                del self._locks[coid]
            else:
                self._locks[coid] = (lock, users - 1)

    async def _own_trade(self, coid: str, priority: Priority = Priority.ORDER) -> Trade:
        """This session's order of ``coid`` (refreshing open orders once if unknown,
        paced with ``priority``)."""
        own = self._client.own_client_id
        for attempt in range(2):
            trades = self._client.trades_by_ref(coid)
            mine = [t for t in trades if t.order.clientId == own]
            working = [t for t in mine if t.orderStatus.status not in _DONE_STATUSES]
            if working or mine:
                return (working or mine)[0]
            if trades:
                raise Reject(
                    f"order {coid} belongs to client id {trades[0].order.clientId}, "
                    f"not this session's {own}"
                )
            if attempt == 0:
                await self._query(self._client.open_orders, "open orders", priority)
        raise RemoteError(
            NOT_FOUND, f"client_order_id: no order {coid!r} at the broker for {self.portfolio_id}"
        )

    async def _query(
        self,
        call: Callable[[float], Awaitable[list[Trade]]],
        what: str,
        priority: Priority = Priority.ORDER,
    ) -> list[Trade]:
        await self._acquire(priority=priority)
        try:
            return await call(self._query_timeout)
        except TimeoutError:
            raise RemoteError(
                TIMEOUT,
                f"IB did not answer the {what} query within {self._query_timeout:g}s; "
                "the order's presence at the broker is unknown",
            ) from None
        except ConnectionError as exc:
            raise RemoteError(
                NOT_READY, f"{what} query failed ({exc}); the order's presence is unknown"
            ) from None

    async def _at_broker(
        self, coid: str, received: float, priority: Priority = Priority.ORDER
    ) -> Trade | None:
        """The broker's order with orderRef ``coid``, if any: from the connection's last
        complete orders snapshot when it is trustworthy (no query), else by querying
        every open and completed order of the account (paced with ``priority``)."""
        if self._reconciler is not None:
            trusted, trade = self._reconciler.known_order(coid)
            if trusted:
                return trade
        return (await self._broker_orders(received, priority)).get(coid)

    async def _broker_orders(self, received: float, priority: Priority) -> dict[str, Trade]:
        """Open and completed orders at the broker by orderRef, from a query that
        started after ``received``, shared by the concurrent callers of one priority (an
        exit does not wait for a query queued behind a burst of entries)."""
        while True:
            task, started = self._snapshots.get(priority, (None, float("-inf")))
            if task is not None and started >= received:
                return await asyncio.shield(task)
            if task is not None and not task.done():
                await asyncio.wait({task})
                continue
            task = asyncio.create_task(self._query_broker_orders(priority))
            task.add_done_callback(_retrieve)
            self._snapshots[priority] = (task, asyncio.get_running_loop().time())

    async def _query_broker_orders(self, priority: Priority) -> dict[str, Trade]:
        found: dict[str, Trade] = {}
        for trade in await self._query(self._client.open_orders, "open orders", priority):
            if trade.order.orderRef:
                found.setdefault(trade.order.orderRef, trade)
        for trade in await self._query(self._client.completed_orders, "completed orders", priority):
            if trade.order.orderRef:
                found.setdefault(trade.order.orderRef, trade)
        return found

    def _on_order_status(self, trade: Trade) -> None:
        started = self._pending_ack.pop(trade.order.orderRef or "", None)
        if started is not None:
            self._ack.observe(asyncio.get_running_loop().time() - started)

    def _refresh_done(self, task: asyncio.Task[BrokerSnapshotCompleted]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("refresh of %s failed", self.portfolio_id, exc_info=task.exception())


def _retrieve(task: asyncio.Task[dict[str, Trade]]) -> None:
    if not task.cancelled():
        task.exception()
