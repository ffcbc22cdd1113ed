"""One API client connection: handshake, startApi, requests, subscriptions, pacing.

A :class:`ClientSession` reads frames, decodes them with
:func:`~ibflow_gateway_sim.protocol.decode_request` and answers like TWS does at server
version 176 (spec ``docs/tws-protocol.md``). Malformed input is logged with the client
id and answered with error 320 (never a crash); a frame that cannot be framed at all
closes only this connection. The server pushes engine events and ticks through the
``send_*`` / ``push_*`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ibflow_gateway_sim import adapters
from ibflow_gateway_sim.domain import (
    Account,
    Instrument,
    PositionChanged,
    Quote,
    SimExecution,
    SimOrder,
)
from ibflow_gateway_sim.protocol import (
    CancelAccountSummary,
    CancelAccountUpdatesMulti,
    CancelHistoricalData,
    CancelMktData,
    CancelOrder,
    CancelPositions,
    ContractSpec,
    DecodeError,
    FrameError,
    HandshakeError,
    OrderStateView,
    PlaceOrder,
    ReqAccountSummary,
    ReqAccountUpdates,
    ReqAccountUpdatesMulti,
    ReqAllOpenOrders,
    ReqAutoOpenOrders,
    ReqCompletedOrders,
    ReqContractDetails,
    ReqCurrentTime,
    ReqExecutions,
    ReqGlobalCancel,
    ReqHistoricalData,
    ReqIds,
    ReqMarketDataType,
    ReqMktData,
    ReqOpenOrders,
    ReqPositions,
    Request,
    StartApi,
    UnknownRequest,
    decode_request,
    errors,
    handshake_reply,
    ids,
    negotiate,
    read_handshake,
    read_message,
    responses,
)

if TYPE_CHECKING:
    from ibflow_gateway_sim.server import GatewaySimulator

__all__ = ["ClientSession", "MarketSubscription"]

log = logging.getLogger("ibflow_gateway_sim.session")

HANDSHAKE_TIMEOUT: Final = 30.0
"""Seconds a new connection has to send its ``API\\0`` handshake."""
MAX_TICK_BACKLOG: Final = 4 * 1024 * 1024
"""Bytes of unsent output above which ticks are dropped for a slow client."""
MAX_HISTORICAL_BARS: Final = 50_000
"""Largest historical request answered (else error 162)."""
NO_CURRENCY_TAGS: Final = frozenset(
    {"AccountCode", "AccountType", "Currency", "Cushion", "Leverage-S"}
)
"""Account tags sent without a currency."""


@dataclass
class MarketSubscription:
    """A streaming reqMktData: the instrument and the last quote sent to the client."""

    req_id: int
    instrument: Instrument
    last: Quote | None = None


class ClientSession:
    """One TCP connection speaking the TWS API (created by the server per connection)."""

    def __init__(
        self,
        sim: GatewaySimulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> None:
        self._sim = sim
        self._reader = reader
        self._writer = writer
        self.number = number
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.version = 0
        self.client_id: int | None = None
        self.requested_client_id: int | None = None
        self.closed = False
        self._done = asyncio.Event()
        self.market_data_type = ids.MARKET_DATA_LIVE
        self.auto_open_orders = False
        self.positions_subscribed = False
        self.account_updates: str | None = None
        self.account_multi: dict[int, str] = {}
        self.account_summary: dict[int, tuple[str, ...]] = {}
        self.market_data: dict[int, MarketSubscription] = {}
        self.known_orders: set[int] = set()
        self._values_sent: dict[str, dict[str, str]] = {}
        self._portfolio_sent: dict[tuple[str, int], tuple[Decimal, ...]] = {}
        self._window: deque[float] = deque()
        self._excess_since: float | None = None
        self._last_rate_error = float("-inf")
        self._held_out: list[bytes] = []
        self._held_in: list[list[str]] = []
        self.messages_received = 0
        self.ticks_sent = 0
        self.ticks_dropped = 0

    # ------------------------------------------------------------------ plumbing

    @property
    def label(self) -> str:
        """``client N`` once known, else the connection number and peer (for logs)."""
        if self.client_id is not None:
            return f"client {self.client_id} (#{self.number} {self.peer})"
        if self.requested_client_id is not None:
            return f"client {self.requested_client_id}? (#{self.number} {self.peer})"
        return f"connection #{self.number} ({self.peer})"

    def stats(self) -> dict[str, object]:
        """Counters for monitoring (``GET /health``)."""
        return {
            "client_id": self.client_id,
            "peer": self.peer,
            "messages_received": self.messages_received,
            "market_data_subscriptions": len(self.market_data),
            "tick_frames_sent": self.ticks_sent,
            "tick_frames_dropped": self.ticks_dropped,
        }

    @property
    def started(self) -> bool:
        """True once startApi was accepted."""
        return self.client_id is not None

    async def run(self) -> None:
        """Serve the connection until it closes (never raises for client misbehaviour)."""
        try:
            await self._serve()
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("%s: disconnected", self.label)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: session failed; closing this connection", self.label)
        finally:
            self._teardown()

    async def _serve(self) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                hello = await read_handshake(self._reader)
            self.version = negotiate(hello)
        except HandshakeError as exc:
            log.warning("%s: refusing the connection, bad handshake: %s", self.label, exc)
            return
        except TimeoutError:
            log.warning("%s: no handshake within %.0fs; closing", self.label, HANDSHAKE_TIMEOUT)
            return
        log.info(
            "%s: handshake v%d..%d%s -> server version %d",
            self.label,
            hello.min_version,
            hello.max_version,
            f" {hello.options}" if hello.options else "",
            self.version,
        )
        self.send(handshake_reply(self.version, self._sim.now()))
        while not self.closed:
            try:
                fields = await read_message(self._reader)
            except FrameError as exc:
                log.warning("%s: unframeable input (%s); closing this connection", self.label, exc)
                return
            self._on_fields(fields)

    def close(self, reason: str = "") -> None:
        """Close the socket (buffered output is still flushed)."""
        if not self.closed:
            if reason:
                log.info("%s: closing: %s", self.label, reason)
            self.closed = True
            self._writer.close()

    async def wait_closed(self) -> None:
        """Wait until :meth:`run` has finished."""
        await self._done.wait()

    def _teardown(self) -> None:
        self.closed = True
        self.market_data.clear()
        with contextlib.suppress(Exception):
            self._writer.close()
        self._done.set()

    def _silenced(self) -> bool:
        return self._sim.is_silenced(self.client_id)

    def send(self, *frames: bytes, droppable: bool = False) -> bool:
        """Write frames; held while silenced (``droppable`` ones, i.e. ticks, are dropped
        then, and also when the client is too slow to read). Returns True if written."""
        if not frames or self.closed or self._writer.is_closing():
            return False
        if self._silenced():
            if not droppable:
                self._held_out.extend(frames)
            return False
        if droppable and self._writer.transport.get_write_buffer_size() > MAX_TICK_BACKLOG:
            return False
        self._writer.write(b"".join(frames))
        return True

    def resume(self) -> None:
        """After a silence: flush held output, then process held requests in order."""
        if self.closed or self._silenced():
            return
        out, self._held_out = self._held_out, []
        if out:
            self.send(*out)
        held, self._held_in = self._held_in, []
        for fields in held:
            if self._writer.is_closing():
                break
            self._process(fields)

    # ------------------------------------------------------------------ input

    def _on_fields(self, fields: list[str]) -> None:
        self.messages_received += 1
        if not self._pace():
            self.close("sustained message rate above the limit")
            return
        if self._silenced():
            self._held_in.append(fields)
            return
        self._process(fields)

    def _pace(self) -> bool:
        """Sliding one-second window; error 100 above the limit. False = disconnect."""
        limits = self._sim.config.limits
        now = asyncio.get_running_loop().time()
        window = self._window
        window.append(now)
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) <= limits.max_msgs_per_second:
            self._excess_since = None
            return True
        if self._excess_since is None:
            self._excess_since = now
        if now - self._last_rate_error >= 1.0:
            self._last_rate_error = now
            log.warning(
                "%s: %d messages in the last second (max %d)",
                self.label,
                len(window),
                limits.max_msgs_per_second,
            )
            self.send(errors.max_rate_exceeded(len(window), limits.max_msgs_per_second))
        limit = limits.disconnect_after
        return limit is None or now - self._excess_since < limit

    def _process(self, fields: list[str]) -> None:
        try:
            request = decode_request(fields)
        except DecodeError as exc:
            log.warning("%s: malformed message: %s", self.label, exc)
            self.send(errors.request_error(_req_id_of(fields), errors.REQUEST_READ_ERROR, str(exc)))
            return
        if not self.started and not isinstance(request, StartApi):
            log.warning("%s: %s before startApi ignored", self.label, type(request).__name__)
            return
        try:
            self._handle(request)
        except Exception as exc:
            log.exception("%s: processing %s failed", self.label, type(request).__name__)
            self.send(
                errors.request_error(
                    _req_id_of(fields), errors.REQUEST_PROCESS_ERROR, type(exc).__name__
                )
            )

    def _handle(self, request: Request) -> None:
        handler = _HANDLERS.get(type(request))
        if handler is not None:
            handler(self, request)
        elif isinstance(request, UnknownRequest):
            log.info(
                "%s: ignoring unsupported message id %d (%d fields)",
                self.label,
                request.msg_id,
                len(request.fields),
            )
        else:
            log.info("%s: %s ignored", self.label, type(request).__name__)

    def _req_ids(self, _: ReqIds) -> None:
        assert self.client_id is not None
        self.send(responses.next_valid_id(self._sim.next_valid_id(self.client_id)))

    def _current_time(self, _: ReqCurrentTime) -> None:
        delay = self._sim.fault_state.current_time_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(
                delay, lambda: self.send(responses.current_time(self._sim.now()))
            )
            return
        self.send(responses.current_time(self._sim.now()))

    def _set_market_data_type(self, request: ReqMarketDataType) -> None:
        kind = request.market_data_type
        self.market_data_type = kind if 1 <= kind <= 4 else ids.MARKET_DATA_LIVE

    def _cancel_positions(self, _: CancelPositions) -> None:
        self.positions_subscribed = False

    def _req_open_orders(self, _: ReqOpenOrders) -> None:
        self._open_orders(all_clients=self.client_id == 0)

    def _req_all_open_orders(self, _: ReqAllOpenOrders) -> None:
        self._open_orders(all_clients=True)

    def _auto_open_orders(self, request: ReqAutoOpenOrders) -> None:
        if self.client_id == 0:
            self.auto_open_orders = request.auto_bind
        else:
            log.info("%s: reqAutoOpenOrders needs client id 0; ignored", self.label)

    def _cancel_account_multi(self, request: CancelAccountUpdatesMulti) -> None:
        self.account_multi.pop(request.req_id, None)

    def _cancel_account_summary(self, request: CancelAccountSummary) -> None:
        self.account_summary.pop(request.req_id, None)

    def _cancel_mkt_data(self, request: CancelMktData) -> None:
        self.market_data.pop(request.req_id, None)

    def _place_order(self, request: PlaceOrder) -> None:
        self._sim.place_order(self, request)

    def _cancel_order(self, request: CancelOrder) -> None:
        self._sim.cancel_order(self, request.order_id)

    def _global_cancel(self, _: ReqGlobalCancel) -> None:
        self._sim.global_cancel()

    def _cancel_historical(self, _: CancelHistoricalData) -> None:
        """Historical requests are answered at once; nothing stays to cancel."""

    # ------------------------------------------------------------------ connection

    def _start_api(self, request: StartApi) -> None:
        if self.started:
            log.warning("%s: second startApi ignored", self.label)
            return
        sim = self._sim
        self.requested_client_id = request.client_id
        if not sim.register_client(self, request.client_id):
            log.warning(
                "%s: client id %d is already in use; sending 326 and closing",
                self.label,
                request.client_id,
            )
            self.send(errors.client_id_in_use())
            self.close()
            return
        self.client_id = request.client_id
        log.info("%s: API started", self.label)
        farms_down = sim.fault_state.farms_down
        frames = [
            responses.managed_accounts(sim.accounts.ids),
            responses.next_valid_id(sim.next_valid_id(request.client_id)),
            errors.notice(
                errors.MARKET_DATA_FARM_BROKEN
                if "market" in farms_down
                else errors.MARKET_DATA_FARM_OK
            ),
            errors.notice(errors.HMDS_FARM_BROKEN if "hmds" in farms_down else errors.HMDS_FARM_OK),
            errors.notice(
                errors.SECDEF_FARM_BROKEN if "secdef" in farms_down else errors.SECDEF_FARM_OK
            ),
        ]
        if sim.fault_state.connectivity_lost:
            frames.append(errors.connectivity_lost())
        self.send(*frames)

    # ------------------------------------------------------------------ contracts & data

    def _resolve(self, contract: ContractSpec) -> Instrument | None:
        if contract.sec_type not in ("", "STK"):
            return None
        universe = self._sim.universe
        inst = universe.resolve(contract.symbol, contract.con_id)
        if inst is None and not contract.symbol and not contract.con_id and contract.local_symbol:
            inst = universe.by_symbol(contract.local_symbol)
        if inst is not None and contract.currency and contract.currency != inst.currency:
            return None
        return inst

    def _contract_details(self, request: ReqContractDetails) -> None:
        inst = self._resolve(request.contract)
        if inst is None:
            log.info("%s: no security definition for %s", self.label, request.contract)
            self.send(errors.no_security_definition(request.req_id))
            return
        view = adapters.contract_details_view(inst, self._sim.now())
        self.send(
            responses.contract_details(request.req_id, view),
            responses.contract_details_end(request.req_id),
        )

    def _data_available(self) -> bool:
        state = self._sim.fault_state
        return not state.connectivity_lost and "market" not in state.farms_down

    @property
    def _delayed(self) -> bool:
        return self.market_data_type in (ids.MARKET_DATA_DELAYED, ids.MARKET_DATA_DELAYED_FROZEN)

    def _mkt_data(self, request: ReqMktData) -> None:
        inst = self._resolve(request.contract)
        if inst is None:
            self.send(errors.no_security_definition(request.req_id))
            return
        req_id = request.req_id
        frames = [
            responses.market_data_type(req_id, self.market_data_type),
            responses.tick_req_params(req_id, inst.min_tick),
        ]
        quote = self._sim.market.quote(inst.symbol) if self._data_available() else None
        if quote is not None:
            frames += adapters.quote_frames(req_id, quote, None, delayed=self._delayed)
        if request.snapshot or request.regulatory_snapshot:
            frames.append(responses.tick_snapshot_end(req_id))
            self.send(*frames)
            return
        self.market_data[req_id] = MarketSubscription(req_id, inst, quote)
        self.send(*frames)

    def push_quotes(self, latest: dict[str, Quote]) -> None:
        """Send tick updates for subscribed symbols whose quote changed."""
        for sub in self.market_data.values():
            quote = latest.get(sub.instrument.symbol.upper())
            if quote is None:
                continue
            frames = adapters.quote_frames(sub.req_id, quote, sub.last, delayed=self._delayed)
            if not frames:
                continue
            if self.send(*frames, droppable=True):
                sub.last = quote
                self.ticks_sent += len(frames)
            else:
                self.ticks_dropped += len(frames)

    def resend_quotes(self) -> None:
        """Send every subscription a full quote (after the market farm is back)."""
        for sub in self.market_data.values():
            quote = self._sim.market.quote(sub.instrument.symbol)
            if quote is None:
                continue
            frames = adapters.quote_frames(sub.req_id, quote, None, delayed=self._delayed)
            if self.send(*frames):
                sub.last = quote

    def drop_market_data(self) -> None:
        """Forget every market-data subscription (1101: the client must resubscribe)."""
        self.market_data.clear()

    def _historical_data(self, request: ReqHistoricalData) -> None:
        sim = self._sim
        req_id = request.req_id
        if sim.fault_state.connectivity_lost or "hmds" in sim.fault_state.farms_down:
            self.send(errors.historical_data_error(req_id, "HMDS data farm connection is broken"))
            return
        inst = self._resolve(request.contract)
        if inst is None:
            self.send(errors.no_security_definition(req_id))
            return
        try:
            duration = adapters.parse_duration(request.duration_str)
            bar_seconds = adapters.parse_bar_size(request.bar_size_setting)
        except ValueError as exc:
            self.send(errors.historical_data_error(req_id, str(exc)))
            return
        if duration // bar_seconds > MAX_HISTORICAL_BARS:
            self.send(errors.historical_data_error(req_id, "Time length exceed max."))
            return
        end = adapters.parse_ib_time(request.end_date_time) or sim.now()
        bars = sim.market.bars(inst.symbol, end, duration, bar_seconds)
        start = end - timedelta(seconds=duration)
        self.send(
            responses.historical_data(
                req_id,
                start.strftime("%Y%m%d %H:%M:%S UTC"),
                end.strftime("%Y%m%d %H:%M:%S UTC"),
                [adapters.bar_view(b, bar_seconds, request.format_date) for b in bars],
            )
        )

    # ------------------------------------------------------------------ orders

    def _open_order_frame(self, order: SimOrder) -> bytes:
        self.known_orders.add(order.perm_id)
        return responses.open_order(
            order.order_id,
            adapters.contract_of(order.instrument),
            self._sim.order_fields(order),
            adapters.order_state(order),
            client_id=order.client_id,
            perm_id=order.perm_id,
        )

    def _order_status_frame(self, order: SimOrder) -> bytes:
        return responses.order_status(
            order.order_id,
            order.status,
            filled=order.filled,
            remaining=order.remaining,
            avg_fill_price=order.avg_fill_price,
            perm_id=order.perm_id,
            parent_id=self._sim.parent_order_id(order),
            last_fill_price=order.last_fill_price,
            client_id=order.client_id,
            why_held=order.why_held,
        )

    def send_order(self, order: SimOrder) -> None:
        """openOrder + orderStatus for an order state change; nothing for an order not
        transmitted yet (``transmit=False``: IB has not received it, the client keeps it
        ``PendingSubmit``)."""
        if not order.transmitted:
            return
        self.send(self._open_order_frame(order), self._order_status_frame(order))

    def send_execution(self, execution: SimExecution) -> None:
        """execDetails (reqId -1) for a live fill, after an openOrder if this client
        has not seen the order yet."""
        order = execution.order
        frames = []
        if order.perm_id not in self.known_orders:
            frames.append(self._open_order_frame(order))
        frames.append(
            responses.exec_details(
                -1, adapters.contract_of(order.instrument), adapters.execution_view(execution)
            )
        )
        self.send(*frames)

    def _open_orders(self, *, all_clients: bool) -> None:
        orders = self._sim.engine.open_orders(None if all_clients else self.client_id)
        frames: list[bytes] = []
        for order in orders:
            if not order.transmitted:
                continue
            frames += [self._open_order_frame(order), self._order_status_frame(order)]
        frames.append(responses.open_order_end())
        self.send(*frames)

    def _completed_orders(self, _: ReqCompletedOrders | None = None) -> None:
        frames: list[bytes] = []
        for order in self._sim.engine.completed_orders():
            if not order.transmitted:
                continue  # cancelled before it was ever transmitted: IB never had it
            parent = self._sim.engine.order(order.parent_perm_id) if order.parent_perm_id else None
            frames.append(
                responses.completed_order(
                    adapters.contract_of(order.instrument),
                    self._sim.order_fields(order),
                    OrderStateView(
                        status=order.status,
                        completed_time=order.updated.strftime("%Y%m%d %H:%M:%S UTC"),
                        completed_status=order.status,
                    ),
                    perm_id=order.perm_id,
                    filled_quantity=order.filled,
                    parent_perm_id=parent.perm_id if parent is not None else 0,
                )
            )
        frames.append(responses.completed_orders_end())
        self.send(*frames)

    def _executions(self, request: ReqExecutions) -> None:
        f = request.filter
        frames: list[bytes] = []
        if f.sec_type in ("", "STK"):
            fills = self._sim.engine.executions(
                client_id=f.client_id or None,
                account=f.account or None,
                symbol=f.symbol or None,
                side=f.side or None,
                since=adapters.parse_ib_time(f.time),
            )
            for fill in fills:
                ex = fill.execution
                frames.append(
                    responses.exec_details(
                        request.req_id,
                        adapters.contract_of(ex.order.instrument),
                        adapters.execution_view(ex),
                    )
                )
                frames.append(adapters.commission_frame(fill.commission))
        frames.append(responses.exec_details_end(request.req_id))
        self.send(*frames)

    def answer_what_if(self, request: PlaceOrder) -> None:
        """A what-if order: only an openOrder with margin figures, no order is created."""
        sim = self._sim
        assert self.client_id is not None
        inst = self._resolve(request.contract)
        if inst is None:
            self.send(errors.no_security_definition(request.order_id))
            return
        fields = request.order
        account = sim.accounts.get(fields.account) or sim.accounts.default
        quote = sim.market.quote(inst.symbol)
        price = fields.lmt_price or fields.aux_price
        if price is None and quote is not None:
            price = quote.ask if fields.is_buy else quote.bid
        value = fields.total_quantity * (price or inst.start_price)
        init_change = value * account.initial_margin_rate
        maint_change = value * account.maint_margin_rate
        commission = sim.engine.commissions.cumulative(fields.total_quantity, value)
        cent = Decimal("0.01")
        state = OrderStateView(
            status="PreSubmitted",
            init_margin_before=account.init_margin_req.quantize(cent),
            maint_margin_before=account.maint_margin_req.quantize(cent),
            equity_with_loan_before=account.equity_with_loan_value.quantize(cent),
            init_margin_change=init_change.quantize(cent),
            maint_margin_change=maint_change.quantize(cent),
            equity_with_loan_change=(-commission).quantize(cent),
            init_margin_after=(account.init_margin_req + init_change).quantize(cent),
            maint_margin_after=(account.maint_margin_req + maint_change).quantize(cent),
            equity_with_loan_after=(account.equity_with_loan_value - commission).quantize(cent),
            commission=commission.quantize(cent),
            min_commission=commission.quantize(cent),
            max_commission=commission.quantize(cent),
            commission_currency=inst.currency,
        )
        echo = replace(fields, account=account.account_id, tif=fields.effective_tif)
        self.send(
            responses.open_order(
                request.order_id,
                adapters.contract_of(inst),
                echo,
                state,
                client_id=self.client_id,
                perm_id=0,
            )
        )

    # ------------------------------------------------------------------ positions & account

    def _req_positions(self, _: ReqPositions | None = None) -> None:
        self.positions_subscribed = True
        frames: list[bytes] = []
        for account in self._sim.accounts:
            for pos in account.positions():
                if pos.quantity != 0:
                    frames.append(
                        responses.position(
                            account.account_id,
                            adapters.contract_of(pos.instrument),
                            pos.quantity,
                            pos.avg_cost,
                        )
                    )
        frames.append(responses.position_end())
        self.send(*frames)

    def send_position(self, event: PositionChanged) -> None:
        """position (61) to a reqPositions subscriber, updatePortfolio (7) to a
        reqAccountUpdates subscriber of that account."""
        frames: list[bytes] = []
        if self.positions_subscribed:
            frames.append(
                responses.position(
                    event.account,
                    adapters.contract_of(event.instrument),
                    event.position,
                    event.avg_cost,
                )
            )
        if self.account_updates == event.account:
            account = self._sim.accounts.get(event.account)
            if account is not None:
                frames += self._portfolio_frames(account, only=event.instrument.con_id, force=True)
        self.send(*frames)

    def _portfolio_frames(
        self, account: Account, *, only: int | None = None, force: bool = False
    ) -> list[bytes]:
        frames: list[bytes] = []
        for item in account.portfolio():
            if only is not None and item.con_id != only:
                continue
            key = (account.account_id, item.con_id)
            row = (
                item.position,
                item.market_price,
                item.market_value,
                item.average_cost,
                item.unrealized_pnl,
                item.realized_pnl,
            )
            previous = self._portfolio_sent.get(key)
            if previous == row and not force:
                continue
            if previous is None and item.position == 0 and not force:
                continue
            self._portfolio_sent[key] = row
            frames.append(
                responses.update_portfolio(
                    adapters.contract_of(item.instrument),
                    account.account_id,
                    position=item.position,
                    market_price=item.market_price,
                    market_value=item.market_value.quantize(Decimal("0.01")),
                    average_cost=item.average_cost,
                    unrealized_pnl=item.unrealized_pnl.quantize(Decimal("0.01")),
                    realized_pnl=item.realized_pnl.quantize(Decimal("0.01")),
                )
            )
        return frames

    @staticmethod
    def _currency(tag: str, account: Account) -> str:
        return "" if tag in NO_CURRENCY_TAGS else account.currency

    def _account_updates(self, request: ReqAccountUpdates) -> None:
        if not request.subscribe:
            self.account_updates = None
            return
        account = self._sim.accounts.get(request.account)
        if account is None:
            log.info("%s: reqAccountUpdates for unknown account %r", self.label, request.account)
            self.send(responses.account_download_end(request.account))
            return
        self.account_updates = account.account_id
        values = account.account_values()
        self._values_sent[account.account_id] = dict(values)
        frames = [
            responses.update_account_value(k, v, self._currency(k, account), account.account_id)
            for k, v in values.items()
        ]
        for key in [k for k in self._portfolio_sent if k[0] == account.account_id]:
            del self._portfolio_sent[key]
        frames += self._portfolio_frames(account)
        frames.append(responses.update_account_time(self._sim.now()))
        frames.append(responses.account_download_end(account.account_id))
        self.send(*frames)

    def _multi_accounts(self, code: str) -> list[Account]:
        if code in ("", "All"):
            return list(self._sim.accounts)
        account = self._sim.accounts.get(code)
        return [account] if account is not None else []

    def _account_updates_multi(self, request: ReqAccountUpdatesMulti) -> None:
        self.account_multi[request.req_id] = request.account
        frames: list[bytes] = []
        for account in self._multi_accounts(request.account):
            for key, value in account.account_values().items():
                frames.append(
                    responses.account_update_multi(
                        request.req_id,
                        account.account_id,
                        key,
                        value,
                        self._currency(key, account),
                        model_code=request.model_code,
                    )
                )
        frames.append(responses.account_update_multi_end(request.req_id))
        self.send(*frames)

    def _account_summary(self, request: ReqAccountSummary) -> None:
        tags = tuple(t for t in request.tags if not t.startswith("$"))
        self.account_summary[request.req_id] = tags
        frames: list[bytes] = []
        for account in self._sim.accounts:
            values = account.account_values()
            for tag in tags:
                if tag in values:
                    frames.append(
                        responses.account_summary(
                            request.req_id,
                            account.account_id,
                            tag,
                            values[tag],
                            self._currency(tag, account),
                        )
                    )
        frames.append(responses.account_summary_end(request.req_id))
        self.send(*frames)

    def send_account_values(self, account_id: str, values: dict[str, str]) -> None:
        """Push the values that changed since the last push to this session's
        account subscriptions (6 + 8, 73, 63)."""
        account = self._sim.accounts.get(account_id)
        if account is None:
            return
        subscribed = (
            self.account_updates == account_id
            or any(code in ("", "All", account_id) for code in self.account_multi.values())
            or bool(self.account_summary)
        )
        if not subscribed:
            return
        last = self._values_sent.setdefault(account_id, {})
        changed = {k: v for k, v in values.items() if last.get(k) != v}
        if not changed:
            return
        last.update(changed)
        frames: list[bytes] = []
        if self.account_updates == account_id:
            frames += [
                responses.update_account_value(k, v, self._currency(k, account), account_id)
                for k, v in changed.items()
            ]
            frames.append(responses.update_account_time(self._sim.now()))
        for req_id, code in self.account_multi.items():
            if code in ("", "All", account_id):
                frames += [
                    responses.account_update_multi(
                        req_id, account_id, k, v, self._currency(k, account)
                    )
                    for k, v in changed.items()
                ]
        for req_id, tags in self.account_summary.items():
            frames += [
                responses.account_summary(
                    req_id, account_id, tag, changed[tag], self._currency(tag, account)
                )
                for tag in tags
                if tag in changed
            ]
        self.send(*frames)

    def refresh_account(self) -> None:
        """Periodic mark-to-market push of portfolio rows and account values."""
        if self.closed or not self.started:
            return
        if self.account_updates is not None:
            account = self._sim.accounts.get(self.account_updates)
            if account is not None:
                self.send(*self._portfolio_frames(account))
        for account in self._sim.accounts:
            self.send_account_values(account.account_id, account.account_values())


def _req_id_of(fields: list[str]) -> int:
    """Best-effort request/order id of a (possibly malformed) message, else -1."""
    if not fields:
        return -1
    candidate = ""
    if fields[0] in ("3", "20"):
        candidate = fields[1] if len(fields) > 1 else ""
    elif fields[0] in ("1", "7", "9", "62", "76"):
        candidate = fields[2] if len(fields) > 2 else ""
    try:
        return int(candidate)
    except ValueError:
        return -1


_HANDLERS: Final[dict[type, Callable[[ClientSession, Any], None]]] = {
    StartApi: ClientSession._start_api,
    ReqIds: ClientSession._req_ids,
    ReqCurrentTime: ClientSession._current_time,
    ReqMarketDataType: ClientSession._set_market_data_type,
    ReqPositions: ClientSession._req_positions,
    CancelPositions: ClientSession._cancel_positions,
    ReqOpenOrders: ClientSession._req_open_orders,
    ReqAllOpenOrders: ClientSession._req_all_open_orders,
    ReqAutoOpenOrders: ClientSession._auto_open_orders,
    ReqCompletedOrders: ClientSession._completed_orders,
    ReqAccountUpdates: ClientSession._account_updates,
    ReqAccountUpdatesMulti: ClientSession._account_updates_multi,
    CancelAccountUpdatesMulti: ClientSession._cancel_account_multi,
    ReqAccountSummary: ClientSession._account_summary,
    CancelAccountSummary: ClientSession._cancel_account_summary,
    ReqExecutions: ClientSession._executions,
    ReqContractDetails: ClientSession._contract_details,
    ReqMktData: ClientSession._mkt_data,
    CancelMktData: ClientSession._cancel_mkt_data,
    PlaceOrder: ClientSession._place_order,
    CancelOrder: ClientSession._cancel_order,
    ReqGlobalCancel: ClientSession._global_cancel,
    ReqHistoricalData: ClientSession._historical_data,
    CancelHistoricalData: ClientSession._cancel_historical,
}
"""Request type → the session method answering it."""
