"""A small port over :class:`ib_async.IB`: camelCase and eventkit stop here.

:class:`IbClient` exposes what the bridge needs of one API connection with snake_case
methods and plain callables as callbacks:

* :meth:`IbClient.connect` runs ib_async's connect (handshake, then its startup sync of
  positions, open/completed orders, account updates and executions) and turns every
  failure into an :class:`IbConnectError`, including IB's 326 (client id in use), which
  ib_async itself would only notice when its own timeout expires;
* :meth:`IbClient.current_time` is the heartbeat round trip (``reqCurrentTime``);
* :meth:`IbClient.positions`, :meth:`~IbClient.open_orders`,
  :meth:`~IbClient.completed_orders` and :meth:`~IbClient.executions` are the
  reconciliation queries (each with a timeout; they return ib_async objects to map);
* :meth:`IbClient.place_order`, :meth:`~IbClient.cancel_order` and
  :meth:`~IbClient.modify_order` send orders (``orderRef`` = our client order id);
  :meth:`IbClient.place_bracket` sends a parent with its take-profit / stop-loss
  children in one go (IB's transmit pattern, children in one OCA group);
* :meth:`IbClient.subscribe_ticks` / :meth:`~IbClient.unsubscribe_ticks` stream a
  symbol's top of book (``reqMktData``/``cancelMktData``); :meth:`~IbClient.forget_ticks`
  drops a handle whose line is already gone (reconnect, 1101) without a message to IB;
  ticks reach :meth:`~IbClient.on_tick` callbacks as plain :class:`MarketTick` values;
* ``on_*`` register callbacks. Errors and disconnects arrive as plain values; order,
  execution, commission, position and account-value callbacks receive ib_async objects,
  meant to be handed straight to :mod:`ibflow_gateway_bridge.ib.mapping`.

A callback that raises is logged and never breaks ib_async's event dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, TypeAlias

from ib_async import (
    IB,
    AccountValue,
    CommissionReport,
    Contract,
    Fill,
    Order,
    OrderState,
    Position,
    StartupFetch,
    StartupFetchALL,
    Ticker,
    Trade,
)
from ib_async.util import UNSET_DOUBLE

from ibflow_gateway_bridge.ib import reprs

__all__ = [
    "BRACKET_OCA_TYPE",
    "CONNECT_FAILURE_CODES",
    "AccountValue",
    "AccountValueCallback",
    "BracketChild",
    "CommissionCallback",
    "CommissionReport",
    "DisconnectedCallback",
    "ErrorCallback",
    "ExecutionCallback",
    "Fill",
    "IbClient",
    "IbConnectError",
    "IbOrderError",
    "MarketTick",
    "OrderStatusCallback",
    "Position",
    "PositionCallback",
    "SocketConnectedCallback",
    "TickCallback",
    "TickHandle",
    "Trade",
]

log = logging.getLogger("ibflow_gateway_bridge.ib")

reprs.install()

CLIENT_ID_IN_USE: Final = 326
CONNECT_FAILURE_CODES: Final = frozenset({CLIENT_ID_IN_USE, 502, 503, 504})
"""IB error codes that, received while connecting, mean the connect has failed:
326 client id in use, 502 cannot connect, 503 version too old, 504 not connected."""

ErrorCallback: TypeAlias = Callable[[int | None, int, str], None]
"""``cb(req_id, code, message)``; ``req_id`` is ``None`` for IB's ``-1`` (not a request)."""
DisconnectedCallback: TypeAlias = Callable[[], None]
SocketConnectedCallback: TypeAlias = Callable[[], None]
OrderStatusCallback: TypeAlias = Callable[[Trade], None]
ExecutionCallback: TypeAlias = Callable[[Trade, Fill], None]
CommissionCallback: TypeAlias = Callable[[Trade, Fill, CommissionReport], None]
PositionCallback: TypeAlias = Callable[[Position], None]
AccountValueCallback: TypeAlias = Callable[[AccountValue], None]
TickHandle: TypeAlias = int
"""A market data subscription of :meth:`IbClient.subscribe_ticks`."""

_DELAYED_DATA_TYPES: Final = frozenset({3, 4})

BRACKET_OCA_TYPE: Final = 2
"""IB ``ocaType`` of a bracket's children: 2 = "remaining orders are proportionately
reduced in size with block". A fill of one child shrinks the other by the same number
of shares (a complete fill cancels it), so a partial take-profit fill leaves the stop
loss covering exactly the shares still held; "with block" is IB's overfill protection
(one member routed at a time). Type 1 would cancel the stop on the first partial fill
of the target and leave the rest of the position unprotected."""


@dataclass(frozen=True, slots=True)
class BracketChild:
    """One child of :meth:`IbClient.place_bracket`, on the parent's opposite side with its
    quantity: ``order_type`` ``LMT`` (take profit at ``lmt_price``) or ``STP`` (stop loss
    triggered at ``aux_price``); ``order_ref`` is its own client order id."""

    order_ref: str
    order_type: str
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MarketTick:
    """A symbol's top of book and last trade after a tick; ``None`` for what IB has not
    sent (or sent as "none", e.g. ``-1``). ``time`` is when the tick arrived (UTC)."""

    symbol: str
    con_id: int | None
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    last_size: Decimal | None
    time: datetime
    delayed: bool


TickCallback: TypeAlias = Callable[[MarketTick], None]


class IbConnectError(ConnectionError):
    """Connecting to the Gateway failed; ``code`` is IB's error code when IB gave one."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"{message} (IB code {code})" if code is not None else message)
        self.code = code
        self.message = message

    @property
    def client_id_in_use(self) -> bool:
        """True for IB's 326: another API client holds this client id."""
        return self.code == CLIENT_ID_IN_USE


class IbOrderError(ValueError):
    """An order could not be sent: unknown contract, unknown order id, not connected."""


def _safe(name: str, callback: Callable[..., None]) -> Callable[..., None]:
    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("%s callback %r failed", name, callback)

    return call


_STARTUP_FETCH: Final = StartupFetchALL & ~StartupFetch.SUB_ACCOUNT_UPDATES
"""What ib_async loads at connect: everything but the ``reqAccountUpdatesMulti``
subscription, which repeats every account value ``reqAccountUpdates`` already streams for
the portfolio's account (measured: 36 of the 43 messages a fill costs were the two
streams' account values)."""


@dataclass(frozen=True, slots=True)
class WhatIf:
    """IB's what-if figures of an order (``None``: IB gave none)."""

    init_margin_before: Decimal | None
    init_margin_change: Decimal | None
    init_margin_after: Decimal | None
    maint_margin_before: Decimal | None
    maint_margin_change: Decimal | None
    maint_margin_after: Decimal | None
    equity_with_loan_before: Decimal | None
    equity_with_loan_change: Decimal | None
    equity_with_loan_after: Decimal | None
    commission: Decimal | None
    min_commission: Decimal | None
    max_commission: Decimal | None
    commission_currency: str | None
    warning: str | None


class IbClient:
    """One API connection to an IB Gateway (or TWS, or the simulator).

    Not thread-safe; use it from the event loop that connected it. ``on_disconnected``
    callbacks run when the connection is lost, not after :meth:`disconnect`.
    """

    def __init__(self) -> None:
        self._ib = IB()
        self._closing = False
        self._connect_failure: asyncio.Future[IbConnectError] | None = None
        self._error_callbacks: list[ErrorCallback] = []
        self._disconnected_callbacks: list[DisconnectedCallback] = []
        self._socket_callbacks: list[SocketConnectedCallback] = []
        self._contracts: dict[tuple[str, str, str, str], Contract] = {}
        self._tick_callbacks: list[TickCallback] = []
        self._tickers: dict[TickHandle, tuple[Ticker, Callable[[Ticker], None]]] = {}
        self._next_handle: TickHandle = 0
        self._last_received = 0.0
        # ib_async keeps one future per kind of orders query ("openOrders",
        # "completedOrders"): a second query of a kind started while one is in flight
        # replaces the first one's future, which then never resolves (a timeout:
        # "unknown"). Queries of a kind therefore run one at a time.
        self._open_orders_lock = asyncio.Lock()
        self._completed_orders_lock = asyncio.Lock()
        self._ib.updateEvent += self._handle_update
        self._ib.errorEvent += self._handle_error
        self._ib.disconnectedEvent += self._handle_disconnected
        self._ib.client.apiStart += self._handle_api_start
        self._ib.client.apiError += self._handle_api_error

    # ------------------------------------------------------------------ connection

    async def connect(
        self,
        host: str,
        port: int,
        client_id: int,
        timeout: float,  # noqa: ASYNC109 - passed on to ib_async's own per-step waits
        *,
        account: str = "",
    ) -> None:
        """Connect and wait for ib_async's startup sync to complete.

        Raises :class:`IbConnectError` when the socket cannot be opened, IB refuses the
        session (326 client id in use, 502, 503, 504), the peer closes the socket, a sync
        request fails, or ``timeout`` seconds pass for any step. Leaves the client
        disconnected on failure.
        """
        if self._ib.isConnected():
            raise IbConnectError(None, "already connected")
        self._closing = False
        loop = asyncio.get_running_loop()
        failure: asyncio.Future[IbConnectError] = loop.create_future()
        self._connect_failure = failure
        attempt = asyncio.ensure_future(
            self._ib.connectAsync(
                host,
                port,
                clientId=client_id,
                timeout=timeout,
                account=account,
                raiseSyncErrors=True,
                fetchFields=_STARTUP_FETCH,
            )
        )
        try:
            await asyncio.wait({attempt, failure}, return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                self._silent_disconnect()
                raise failure.result()
            try:
                attempt.result()
            except IbConnectError:
                raise
            except TimeoutError as exc:
                raise IbConnectError(
                    None, f"connecting to {host}:{port} timed out after {timeout:g}s"
                ) from exc
            except OSError as exc:
                raise IbConnectError(None, f"cannot connect to {host}:{port}: {exc}") from exc
        except asyncio.CancelledError:
            attempt.cancel()
            self._silent_disconnect()
            raise
        finally:
            self._connect_failure = None
            if not failure.done():
                failure.cancel()

    def disconnect(self) -> None:
        """Close the connection (no ``on_disconnected`` callback for it); idempotent."""
        self._silent_disconnect()

    def _silent_disconnect(self) -> None:
        self._closing = True
        try:
            if self._ib.client.isReady():
                self._ib.disconnect()
            # ib_async's own disconnect needs a session that is ready (it reads the
            # connection's statistics, "Not connected" otherwise); a socket still
            # connecting, past the handshake but not ready, or refused with 326 is
            # closed here.
            self._ib.client.disconnect()  # type: ignore[no-untyped-call]
        finally:
            self._closing = False

    @property
    def connected(self) -> bool:
        """True while the API session is up (handshake done, socket open)."""
        return bool(self._ib.isConnected())

    @property
    def server_version(self) -> int | None:
        """The Gateway's API server version, once connected."""
        version = self._ib.client.serverVersion()
        return int(version) if version else None

    @property
    def managed_accounts(self) -> list[str]:
        """The account ids this session manages (IB's ``managedAccounts``)."""
        return list(self._ib.managedAccounts())

    @property
    def last_received(self) -> float:
        """``time.monotonic()`` when the last network packet from the Gateway was handled
        (0.0 before any): a connection still delivering data is alive, even when a
        request's answer waits behind a backlog the reader has not decoded yet."""
        return self._last_received

    def _handle_update(self) -> None:
        self._last_received = time.monotonic()

    async def current_time(self, timeout: float) -> datetime:  # noqa: ASYNC109
        """The Gateway's clock (``reqCurrentTime``), UTC; the heartbeat round trip.

        Raises :class:`TimeoutError` when no answer arrives within ``timeout`` seconds
        and :class:`ConnectionError` when not connected or the connection drops.
        """
        if not self._ib.isConnected():
            raise ConnectionError("not connected")
        async with asyncio.timeout(timeout):
            answer: datetime = await self._ib.reqCurrentTimeAsync()
        if answer.tzinfo is None:
            return answer.replace(tzinfo=UTC)
        return answer.astimezone(UTC)

    # ------------------------------------------------------------------ queries

    def _require_connected(self) -> None:
        if not self._ib.isConnected():
            raise ConnectionError("not connected")

    async def positions(self, timeout: float) -> list[Position]:  # noqa: ASYNC109
        """Every position of the managed accounts (``reqPositions``).

        Raises :class:`TimeoutError` after ``timeout`` seconds and
        :class:`ConnectionError` when not connected: never an empty list for a failure.
        """
        self._require_connected()
        async with asyncio.timeout(timeout):
            return list(await self._ib.reqPositionsAsync())

    async def open_orders(self, timeout: float) -> list[Trade]:  # noqa: ASYNC109
        """Every open order of the account, of any client (``reqAllOpenOrders``); one
        such query at a time per connection (``timeout`` counts from its start)."""
        async with self._open_orders_lock:
            self._require_connected()
            async with asyncio.timeout(timeout):
                return list(await self._ib.reqAllOpenOrdersAsync())

    async def completed_orders(self, timeout: float) -> list[Trade]:  # noqa: ASYNC109
        """Today's completed orders, API and manual (``reqCompletedOrders(apiOnly=False)``).

        IB reports a completed order's filled quantity on the order, not in an order
        status: the returned trades' ``orderStatus.filled``/``remaining``/``permId`` are
        filled in from the order so they map like a live final status. One such query
        at a time per connection (``timeout`` counts from its start).
        """
        async with self._completed_orders_lock:
            self._require_connected()
            request = self._ib.reqCompletedOrdersAsync(False)
            async with asyncio.timeout(timeout):
                trades = list(await request)
        for trade in trades:
            order, status = trade.order, trade.orderStatus
            filled = order.filledQuantity
            if filled != UNSET_DOUBLE:
                status.filled = float(filled)
                status.remaining = max(float(order.totalQuantity) - float(filled), 0.0)
            status.permId = status.permId or order.permId
            status.clientId = status.clientId or order.clientId
        return trades

    async def executions(self, timeout: float) -> list[Fill]:  # noqa: ASYNC109
        """Today's executions (``reqExecutions``), each as the session's live
        :class:`Fill`, whose ``commissionReport`` is updated when IB's report arrives."""
        self._require_connected()
        async with asyncio.timeout(timeout):
            fills = await self._ib.reqExecutionsAsync()
        stored = self._ib.wrapper.fills
        return [stored.get(fill.execution.execId, fill) for fill in fills]

    def fill(self, exec_id: str) -> Fill | None:
        """The session's fill of ``exec_id`` (with its latest commission report), if any."""
        return self._ib.wrapper.fills.get(exec_id)

    def account_values(self) -> list[AccountValue]:
        """The latest account values ib_async holds (kept current by its account updates)."""
        return list(self._ib.accountValues())

    # ------------------------------------------------------------------ orders

    async def place_order(
        self,
        *,
        symbol: str,
        action: str,
        quantity: Decimal | int,
        order_type: str = "MKT",
        order_ref: str,
        sec_type: str = "STK",
        exchange: str = "SMART",
        currency: str = "USD",
        lmt_price: Decimal | None = None,
        aux_price: Decimal | None = None,
        trailing_percent: Decimal | None = None,
        trail_stop_price: Decimal | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        account: str = "",
        transmit: bool = True,
        parent_id: int = 0,
        oca_group: str = "",
        oca_type: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> int:
        """Qualify the contract, place the order with ``orderRef=order_ref``; its orderId.

        ``action`` is ``BUY``/``SELL``; ``order_type`` IB's (``MKT``, ``LMT``, ``STP``,
        ``STP LMT``, ``TRAIL``); prices are sent as given (``TRAIL``: ``aux_price`` is
        the trailing amount, or ``trailing_percent``; ``trail_stop_price`` the initial
        stop); ``transmit``, ``parent_id``, ``oca_group`` and ``oca_type`` are sent as
        IB's fields of those names. A contract is qualified once per client and cached.
        Raises :class:`IbOrderError` for a contract IB does not know,
        :class:`ConnectionError` when not connected and :class:`TimeoutError` when
        qualifying takes too long.
        The broker's verdict (acceptance, rejection) arrives as order status events.
        """
        self._require_connected()
        contract = await self._qualify(symbol, sec_type, exchange, currency, timeout)
        order = _order(
            action=action,
            quantity=quantity,
            order_type=order_type,
            order_ref=order_ref,
            lmt_price=lmt_price,
            aux_price=aux_price,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            tif=tif,
            outside_rth=outside_rth,
            account=account,
            transmit=transmit,
            parent_id=parent_id,
            oca_group=oca_group,
            oca_type=oca_type,
        )
        trade = self._ib.placeOrder(contract, order)
        return int(trade.order.orderId)

    async def what_if(
        self,
        *,
        symbol: str,
        action: str,
        quantity: Decimal | int,
        order_type: str = "MKT",
        exchange: str = "SMART",
        currency: str = "USD",
        lmt_price: Decimal | None = None,
        aux_price: Decimal | None = None,
        trailing_percent: Decimal | None = None,
        trail_stop_price: Decimal | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        account: str = "",
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> WhatIf:
        """IB's what-if answer for this order (nothing is placed): margins before, change
        and after, and its commission estimate. Raises :class:`IbOrderError` for a
        contract IB does not know or an order it refuses to evaluate,
        :class:`ConnectionError` when not connected, :class:`TimeoutError` when IB does
        not answer within ``timeout`` seconds."""
        self._require_connected()
        contract = await self._qualify(symbol, "STK", exchange, currency, timeout)
        order = _order(
            action=action,
            quantity=quantity,
            order_type=order_type,
            order_ref="",
            lmt_price=lmt_price,
            aux_price=aux_price,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            tif=tif,
            outside_rth=outside_rth,
            account=account,
            transmit=True,
        )
        async with asyncio.timeout(timeout):
            state = await self._ib.whatIfOrderAsync(contract, order)
        if not isinstance(state, OrderState) or not state.initMarginChange:
            raise IbOrderError(f"IB gave no what-if figures for {symbol}")
        return WhatIf(
            init_margin_before=_figure(state.initMarginBefore),
            init_margin_change=_figure(state.initMarginChange),
            init_margin_after=_figure(state.initMarginAfter),
            maint_margin_before=_figure(state.maintMarginBefore),
            maint_margin_change=_figure(state.maintMarginChange),
            maint_margin_after=_figure(state.maintMarginAfter),
            equity_with_loan_before=_figure(state.equityWithLoanBefore),
            equity_with_loan_change=_figure(state.equityWithLoanChange),
            equity_with_loan_after=_figure(state.equityWithLoanAfter),
            commission=_figure(state.commission),
            min_commission=_figure(state.minCommission),
            max_commission=_figure(state.maxCommission),
            commission_currency=state.commissionCurrency or None,
            warning=state.warningText or None,
        )

    async def place_bracket(
        self,
        *,
        symbol: str,
        action: str,
        quantity: Decimal | int,
        order_type: str,
        order_ref: str,
        children: Sequence[BracketChild],
        oca_group: str,
        oca_type: int = BRACKET_OCA_TYPE,
        sec_type: str = "STK",
        exchange: str = "SMART",
        currency: str = "USD",
        lmt_price: Decimal | None = None,
        aux_price: Decimal | None = None,
        trailing_percent: Decimal | None = None,
        trail_stop_price: Decimal | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        account: str = "",
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[int]:
        """Qualify the contract, then place a parent and its ``children`` back to back;
        their orderIds, parent first.

        IB's bracket pattern (as ``IB.bracketOrder``): the parent and every child but the
        last are sent with ``transmit=False`` (IB holds them), the last child with
        ``transmit=True`` transmits the whole chain; children carry
        ``parentId=<parent's orderId>`` (IB works them once the parent has filled), the
        opposite side, the parent's quantity, ``tif``, ``outside_rth`` and account, and
        share ``oca_group`` with ``oca_type`` (:data:`BRACKET_OCA_TYPE`). Nothing is
        awaited between the placements, so either all of them are written to the
        socket or (not connected) none. Raises like :meth:`place_order`, and
        :class:`ValueError` without children.
        """
        if not children:
            raise ValueError("a bracket needs at least one child")
        self._require_connected()
        contract = await self._qualify(symbol, sec_type, exchange, currency, timeout)
        self._require_connected()  # qualifying awaited: check again before the first send
        parent = _order(
            action=action,
            quantity=quantity,
            order_type=order_type,
            order_ref=order_ref,
            lmt_price=lmt_price,
            aux_price=aux_price,
            trailing_percent=trailing_percent,
            trail_stop_price=trail_stop_price,
            tif=tif,
            outside_rth=outside_rth,
            account=account,
            transmit=False,
        )
        parent_id = int(self._ib.placeOrder(contract, parent).order.orderId)
        child_action = "SELL" if action.upper() == "BUY" else "BUY"
        order_ids = [parent_id]
        for index, child in enumerate(children):
            order = _order(
                action=child_action,
                quantity=quantity,
                order_type=child.order_type,
                order_ref=child.order_ref,
                lmt_price=child.lmt_price,
                aux_price=child.aux_price,
                tif=tif,
                outside_rth=outside_rth,
                account=account,
                transmit=index == len(children) - 1,
                parent_id=parent_id,
                oca_group=oca_group,
                oca_type=oca_type,
            )
            order_ids.append(int(self._ib.placeOrder(contract, order).order.orderId))
        return order_ids

    async def _qualify(
        self,
        symbol: str,
        sec_type: str,
        exchange: str,
        currency: str,
        timeout: float,  # noqa: ASYNC109
    ) -> Contract:
        key = (symbol.upper(), sec_type, exchange, currency)
        contract = self._contracts.get(key)
        if contract is None:
            wanted = Contract(symbol=symbol, secType=sec_type, exchange=exchange, currency=currency)
            async with asyncio.timeout(timeout):
                qualified = await self._ib.qualifyContractsAsync(wanted)
            if not qualified or not isinstance(qualified[0], Contract):
                raise IbOrderError(f"unknown contract {sec_type} {symbol} {exchange} {currency}")
            contract = self._contracts[key] = qualified[0]
        return contract

    def knows_contract(
        self, symbol: str, sec_type: str = "STK", exchange: str = "SMART", currency: str = "USD"
    ) -> bool:
        """Whether :meth:`place_order` has this contract qualified already (one message
        to IB instead of two)."""
        return (symbol.upper(), sec_type, exchange, currency) in self._contracts

    @property
    def own_client_id(self) -> int:
        """The client id of this API session (orders it may cancel and modify)."""
        return int(self._ib.client.clientId)

    def trades_by_ref(self, order_ref: str) -> list[Trade]:
        """The trades this session knows with ``orderRef == order_ref``: placed in this
        session, or loaded by the startup sync and later open/completed order queries."""
        return [trade for trade in self._ib.trades() if trade.order.orderRef == order_ref]

    def _trade(self, order_id: int) -> Trade:
        for trade in self._ib.trades():
            if trade.order.orderId == order_id and trade.order.clientId == self._ib.client.clientId:
                return trade
        raise IbOrderError(f"no order {order_id} in this session")

    def cancel_order(self, order_id: int) -> None:
        """Ask IB to cancel order ``order_id`` of this session (the outcome is a status)."""
        self._require_connected()
        self._ib.cancelOrder(self._trade(order_id).order)

    def modify_order(
        self,
        order_id: int,
        *,
        quantity: Decimal | None = None,
        lmt_price: Decimal | None = None,
        aux_price: Decimal | None = None,
    ) -> None:
        """Re-send order ``order_id`` with a new quantity and/or prices (the rest kept)."""
        self._require_connected()
        trade = self._trade(order_id)
        order = trade.order
        if quantity is not None:
            order.totalQuantity = float(quantity)
        if lmt_price is not None:
            order.lmtPrice = float(lmt_price)
        if aux_price is not None:
            order.auxPrice = float(aux_price)
        self._ib.placeOrder(trade.contract, order)

    # ------------------------------------------------------------------ market data

    async def subscribe_ticks(
        self,
        symbol: str,
        *,
        exchange: str = "SMART",
        currency: str = "USD",
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> TickHandle:
        """Qualify the stock (once, cached) and stream its ticks (``reqMktData``).

        Every update reaches the :meth:`on_tick` callbacks as a :class:`MarketTick` of
        ``symbol`` (upper case). Raises :class:`IbOrderError` for a contract IB does not
        know, :class:`ConnectionError` when not connected and :class:`TimeoutError` when
        qualifying takes too long.
        """
        self._require_connected()
        contract = await self._qualify(symbol, "STK", exchange, currency, timeout)
        self._require_connected()
        ticker = self._ib.reqMktData(contract)
        name = symbol.upper()

        def listener(updated: Ticker) -> None:
            self._emit_tick(name, updated)

        ticker.updateEvent += listener
        self._next_handle += 1
        self._tickers[self._next_handle] = (ticker, listener)
        return self._next_handle

    def unsubscribe_ticks(self, handle: TickHandle) -> None:
        """Stop the stream of ``handle`` (``cancelMktData`` when connected); idempotent."""
        ticker = self.forget_ticks(handle)
        if ticker is not None and ticker.contract is not None and self._ib.isConnected():
            self._ib.cancelMktData(ticker.contract)

    def forget_ticks(self, handle: TickHandle) -> Ticker | None:
        """Stop delivering the ticks of ``handle`` without telling IB (its line is gone:
        reconnect, 1101); returns its ticker (``None`` for an unknown handle)."""
        entry = self._tickers.pop(handle, None)
        if entry is None:
            return None
        ticker, listener = entry
        ticker.updateEvent -= listener
        return ticker

    def _emit_tick(self, symbol: str, ticker: Ticker) -> None:
        received = ticker.time or datetime.now(UTC)
        received = (
            received.replace(tzinfo=UTC) if received.tzinfo is None else received.astimezone(UTC)
        )
        con_id = ticker.contract.conId if ticker.contract is not None else 0
        tick = MarketTick(
            symbol=symbol,
            con_id=con_id or None,
            bid=_price(ticker.bid),
            ask=_price(ticker.ask),
            last=_price(ticker.last),
            bid_size=_size(ticker.bidSize),
            ask_size=_size(ticker.askSize),
            last_size=_size(ticker.lastSize),
            time=received,
            delayed=ticker.marketDataType in _DELAYED_DATA_TYPES,
        )
        for callback in list(self._tick_callbacks):
            _safe("tick", callback)(tick)

    # ------------------------------------------------------------------ callbacks

    def on_tick(self, callback: TickCallback) -> None:
        """Call ``callback(tick)`` for every update of a :meth:`subscribe_ticks` stream."""
        self._tick_callbacks.append(callback)

    def on_error(self, callback: ErrorCallback) -> None:
        """Call ``callback(req_id, code, message)`` for every error or notice IB sends."""
        self._error_callbacks.append(callback)

    def on_disconnected(self, callback: DisconnectedCallback) -> None:
        """Call ``callback()`` when an established connection is lost."""
        self._disconnected_callbacks.append(callback)

    def on_socket_connected(self, callback: SocketConnectedCallback) -> None:
        """Call ``callback()`` when the API handshake completed (before the startup sync)."""
        self._socket_callbacks.append(callback)

    def on_order_status(self, callback: OrderStatusCallback) -> None:
        """Call ``callback(trade)`` on every order status change (``orderStatusEvent``)."""
        self._ib.orderStatusEvent += _safe("order status", callback)

    def on_execution(self, callback: ExecutionCallback) -> None:
        """Call ``callback(trade, fill)`` on every execution (``execDetailsEvent``)."""
        self._ib.execDetailsEvent += _safe("execution", callback)

    def on_commission(self, callback: CommissionCallback) -> None:
        """Call ``callback(trade, fill, report)`` on every commission report."""
        self._ib.commissionReportEvent += _safe("commission", callback)

    def on_position(self, callback: PositionCallback) -> None:
        """Call ``callback(position)`` on every position update (``positionEvent``)."""
        self._ib.positionEvent += _safe("position", callback)

    def on_account_value(self, callback: AccountValueCallback) -> None:
        """Call ``callback(value)`` on every account value update (``accountValueEvent``)."""
        self._ib.accountValueEvent += _safe("account value", callback)

    # ------------------------------------------------------------------ ib_async events

    def _handle_error(self, req_id: int, code: int, message: str, _contract: Any = None) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done() and code in CONNECT_FAILURE_CODES:
            failure.set_result(IbConnectError(code, message))
        request = None if req_id == -1 else req_id
        for callback in list(self._error_callbacks):
            _safe("error", callback)(request, code, message)

    def _handle_api_error(self, message: str) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done():
            failure.set_result(IbConnectError(None, message))

    def _handle_api_start(self) -> None:
        for callback in list(self._socket_callbacks):
            _safe("socket connected", callback)()

    def _handle_disconnected(self) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done():
            failure.set_result(IbConnectError(None, "connection closed while connecting"))
            return
        if self._closing:
            return
        for callback in list(self._disconnected_callbacks):
            _safe("disconnected", callback)()


def _order(
    *,
    action: str,
    quantity: Decimal | int,
    order_type: str,
    order_ref: str,
    lmt_price: Decimal | None = None,
    aux_price: Decimal | None = None,
    trailing_percent: Decimal | None = None,
    trail_stop_price: Decimal | None = None,
    tif: str,
    outside_rth: bool,
    account: str,
    transmit: bool,
    parent_id: int = 0,
    oca_group: str = "",
    oca_type: int = 0,
) -> Order:
    """An ib_async :class:`Order`; prices left unset (IB's "none") when ``None``."""
    order = Order(
        action=action.upper(),
        totalQuantity=float(quantity),
        orderType=order_type,
        tif=tif,
        orderRef=order_ref,
        outsideRth=outside_rth,
        account=account,
        transmit=transmit,
        parentId=parent_id,
        ocaGroup=oca_group,
        ocaType=oca_type,
    )
    if lmt_price is not None:
        order.lmtPrice = float(lmt_price)
    if aux_price is not None:
        order.auxPrice = float(aux_price)
    if trailing_percent is not None:
        order.trailingPercent = float(trailing_percent)
    if trail_stop_price is not None:
        order.trailStopPrice = float(trail_stop_price)
    return order


def _figure(value: str | float) -> Decimal | None:
    """One of IB's what-if figures (a numeric string or a double), ``None`` when unset."""
    if isinstance(value, float):
        if math.isnan(value) or value == UNSET_DOUBLE:
            return None
        return Decimal(str(value))
    text = value.strip()
    if not text:
        return None
    try:
        number = Decimal(text)
    except ArithmeticError:
        return None
    return None if not number.is_finite() or abs(number) >= Decimal(UNSET_DOUBLE) else number


def _price(value: float | None) -> Decimal | None:
    """IB's price, or ``None`` for "no price" (unset, NaN, ``-1``/``0``)."""
    if value is None or math.isnan(value) or value <= 0:
        return None
    return Decimal(str(value))


def _size(value: float | None) -> Decimal | None:
    """IB's size, or ``None`` for "no size" (unset, NaN, negative)."""
    if value is None or math.isnan(value) or value < 0:
        return None
    return Decimal(str(value))
