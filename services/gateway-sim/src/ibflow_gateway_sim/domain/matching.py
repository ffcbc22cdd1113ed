"""The simulated broker: client orders, matching against the market, executions,
commissions and account updates. Pure and deterministic: the same inputs (seed, calls,
``now`` values) always give the same events.

Semantics (see also the README of the domain in the final report):

* **Lifecycle.** A new order emits ``OrderStatusChanged(PreSubmitted)``; once it is
  working, ``OrderStatusChanged(Submitted)`` follows, then any immediate fills. An
  order stays ``PreSubmitted`` while held: not transmitted yet (``transmit=False`` in
  its chain), child of a parent that has not fully filled, waiting for the regular
  session (RTH clock, ``outside_rth=False``) or for the open (``OPG``).
* **Transmit.** Like TWS, an order placed with ``transmit=False`` is kept but not
  sent: its snapshots say ``transmitted=False`` (the server tells the client nothing
  about it, the client keeps it ``PendingSubmit``) and it never works. A later
  ``transmit=True`` placement in the same chain (the order itself modified, its parent,
  or a child of the same parent) transmits the whole chain, parent first: each member
  then emits ``PreSubmitted`` (still held, e.g. a child waiting for its parent) or
  ``Submitted``. Cancelling an untransmitted order emits only its ``Cancelled``
  snapshot (no 202: IB never had it).
* **Brackets.** A child (``parent_id``) is ``PreSubmitted`` until its parent has
  filled COMPLETELY, then ``Submitted``; it fills like any order (its own executions
  and commissions).
* **Fills** (per execution): ``ExecutionOccurred`` → ``OrderStatusChanged`` (Submitted
  while partially filled, Filled when complete) → ``CommissionCharged`` →
  ``PositionChanged`` → ``AccountChanged``. Side effects (OCA, children) follow.
* **Prices.** MKT: the touch (ask for BUY, bid for SELL) ± ``slippage_ticks``. LMT
  marketable when it starts working: the touch with slippage, capped at the limit; a
  resting LMT fills at its limit once the touch reaches it (ask <= limit for BUY, bid >=
  limit for SELL). STP triggers when last or the touch reaches the stop (BUY: ask or
  last >= stop; SELL: bid or last <= stop) then fills like MKT; STP LMT triggers then
  behaves as a marketable-at-arrival LMT. TRAIL keeps ``stop = extreme -/+ amount``
  (or percent) where the extreme is the highest (SELL) / lowest (BUY) last price
  seen while working; the stop only ratchets in the favourable direction.
  MOC fills at the last price at the first check at/after the session close
  (immediately in always-open mode).
* **Liquidity.** Unlimited at the touch unless ``depth_limited``: then each quote's
  displayed size (ask_size for BUY, bid_size for SELL) is shared by all orders checked
  against it.
* **Lots.** ``fill_lots=[100]`` splits every fill into executions of at most 100
  shares; several values are used in turn (``[30, 70]`` → 30, 70, 30, ...).
  ``max_executions_per_check`` limits executions per check (IOC/FOK/OPG excepted).
* **TIF.** IOC/FOK/OPG get one attempt when they start working (OPG at the open), the
  remainder is cancelled (FOK and all-or-none: all or nothing). DAY orders expire at
  the session close (RTH clock only); GTD at ``good_till_date``; GTC never.
* **OCA.** Members are the other children of the same parent (a bracket is implicitly
  OCA) plus orders of the same account with the same ``oca_group``. ``oca_type=1``: any
  fill cancels the others. Otherwise (2, 3 and implicit brackets) each fill reduces the
  others' size by the same number of shares; a member reduced to its filled quantity is
  cancelled. Once a member of an explicit group fills completely (type 1: at all), the
  group is spent and a new member is rejected with 201 "OCA group is already filled".
* **Cancels** emit ``OrderStatusChanged(Cancelled)`` then ``OrderError(202)``; a
  cancelled parent that was not fully filled cancels its children.
* **Rejections** of a new order emit only ``OrderRejected`` (no order is kept).
* **Buying power** is checked for the part of a new order that increases exposure,
  against the order alone (open orders are not reserved), at the limit/stop price or the
  touch. Modifications are not re-checked.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from ibflow_gateway_sim.domain.accounts import Account, Accounts
from ibflow_gateway_sim.domain.events import (
    AccountChanged,
    CommissionCharged,
    EngineEvent,
    ExecutionOccurred,
    OrderError,
    OrderRejected,
    OrderStatusChanged,
    PositionChanged,
    SimExecution,
)
from ibflow_gateway_sim.domain.instruments import Instrument, Universe
from ibflow_gateway_sim.domain.market import Market, MarketClock, Quote, require_utc
from ibflow_gateway_sim.domain.orders import (
    ACTIVE_STATUSES,
    DONE_STATUSES,
    ORDER_TYPES,
    TIFS,
    OrderRequest,
    OrderStatus,
    SimOrder,
)

__all__ = ["CommissionSchedule", "Engine", "ErrorTexts", "Fill"]

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)
_MAX_VALUE: Final = Decimal(10) ** 12  # larger prices/quantities are rejected as invalid


class ErrorTexts:
    """IB error texts the engine uses (``Order rejected - reason:`` prefix included)."""

    NO_SECURITY: Final = "No security definition has been found for the request"
    REJECT: Final = "Order rejected - reason:"
    CANCELLED: Final = "Order Canceled - reason:"
    DUPLICATE_ID: Final = "Duplicate order id"
    MODIFY_FILLED: Final = "Can't modify a filled order"
    MODIFY_MISMATCH: Final = "Order being modified does not match original order"
    MIN_TICK: Final = "The price does not conform to the minimum price variation for this contract."
    OCA_FILLED: Final = "OCA group is already filled"


class CommissionSchedule(BaseModel):
    """IB fixed pricing for US stocks: ``per_share`` (0.005) with a ``minimum`` (1.00)
    per ORDER and a ``max_pct`` (1 %) of trade value cap.

    The cumulative commission of an order after ``q`` shares worth ``v`` is
    ``min(max(per_share*q, minimum), max_pct*v)``; each execution is charged the
    increase, so the minimum is applied once per order across its executions (the
    first execution carries it) and the 1 % cap wins over the minimum.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_share: Decimal = Decimal("0.005")
    minimum: Decimal = Decimal("1.00")
    max_pct: Decimal = Decimal("0.01")

    def cumulative(self, shares: Decimal, value: Decimal) -> Decimal:
        """Total commission for an order that has filled ``shares`` worth ``value``."""
        return min(max(self.per_share * shares, self.minimum), self.max_pct * abs(value))


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution with its commission report (an answer row of reqExecutions)."""

    execution: SimExecution
    commission: CommissionCharged


class _Rejected(Exception):  # noqa: N818 - internal control flow, not an error type
    """Internal: a new order or modification is refused with ``code``/``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


_Hold = Literal["", "transmit", "parent", "rth", "opg"]


class _Order:
    """The engine's mutable order; :meth:`snap` gives the immutable :class:`SimOrder`."""

    __slots__ = (
        "account",
        "avg_price",
        "children",
        "client_id",
        "commission",
        "created",
        "expires_at",
        "extreme",
        "filled",
        "first_check",
        "hold",
        "inst",
        "last_price",
        "moc_at",
        "opg_at",
        "order_id",
        "parent_perm",
        "perm_id",
        "quantity",
        "req",
        "status",
        "trail_stop",
        "transmitted",
        "triggered",
        "updated",
        "value_filled",
    )

    def __init__(
        self,
        *,
        client_id: int,
        order_id: int,
        perm_id: int,
        req: OrderRequest,
        inst: Instrument,
        account: str,
        parent_perm: int,
        now: datetime,
    ) -> None:
        self.client_id = client_id
        self.order_id = order_id
        self.perm_id = perm_id
        self.req = req
        self.inst = inst
        self.account = account
        self.parent_perm = parent_perm
        self.children: list[int] = []
        self.status: str = OrderStatus.PENDING_SUBMIT
        self.hold: _Hold = "transmit"
        self.quantity = req.quantity
        self.filled = _ZERO
        self.avg_price = _ZERO
        self.last_price = _ZERO
        self.value_filled = _ZERO
        self.commission = _ZERO
        self.triggered = False
        self.trail_stop: Decimal | None = None
        self.extreme: Decimal | None = None
        self.transmitted = False
        self.first_check = False
        self.created = now
        self.updated = now
        self.expires_at: datetime | None = None
        self.opg_at: datetime | None = None
        self.moc_at: datetime | None = None

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def buy(self) -> bool:
        return self.req.action == "BUY"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def one_shot(self) -> bool:
        return self.req.tif in ("IOC", "FOK", "OPG")

    def snap(self) -> SimOrder:
        return SimOrder(
            client_id=self.client_id,
            order_id=self.order_id,
            perm_id=self.perm_id,
            request=self.req,
            instrument=self.inst,
            account=self.account,
            status=self.status,
            quantity=self.quantity,
            filled=self.filled,
            remaining=self.remaining,
            avg_fill_price=self.avg_price,
            last_fill_price=self.last_price,
            parent_perm_id=self.parent_perm,
            children=tuple(self.children),
            triggered=self.triggered,
            trail_stop=self.trail_stop,
            transmitted=self.transmitted,
            created=self.created,
            updated=self.updated,
            why_held="",
            commission=self.commission,
        )


class Engine:
    """The broker: accepts, modifies and cancels client orders and fills them against
    :class:`Market` quotes. Every mutating method returns the ordered list of events the
    server must translate to wire messages (see the module docs for the semantics).

    ``seed`` fixes the first permId and the exec-id counter. ``clock`` defaults to an
    always-open :class:`MarketClock`.
    """

    def __init__(
        self,
        universe: Universe,
        market: Market,
        accounts: Accounts,
        *,
        fill_lots: Sequence[int] | None = None,
        slippage_ticks: int = 0,
        commission_schedule: CommissionSchedule | None = None,
        clock: MarketClock | None = None,
        depth_limited: bool = False,
        max_executions_per_check: int | None = None,
        seed: int = 0,
    ) -> None:
        if fill_lots is not None and (not fill_lots or any(lot <= 0 for lot in fill_lots)):
            raise ValueError("fill_lots must be a non-empty list of positive sizes")
        if max_executions_per_check is not None and max_executions_per_check <= 0:
            raise ValueError("max_executions_per_check must be positive")
        self.universe = universe
        self.market = market
        self.accounts = accounts
        self.fill_lots: tuple[int, ...] | None = tuple(fill_lots) if fill_lots else None
        self.slippage_ticks = slippage_ticks
        self.commissions = commission_schedule or CommissionSchedule()
        self.clock = clock or MarketClock("always_open")
        self.depth_limited = depth_limited
        self.max_executions_per_check = max_executions_per_check
        rng = random.Random(f"{seed}:engine")  # noqa: S311 - ids, not crypto
        self._perm_counter = itertools.count(rng.randrange(100_000_000, 1_000_000_000))
        self._exec_counter = itertools.count(rng.randrange(0x10000000, 0x70000000))
        self._orders: dict[int, _Order] = {}
        # orders that may still be active (pruned lazily), in placement order
        self._live: dict[int, _Order] = {}
        self._ids: dict[tuple[int, int], int] = {}
        self._max_ids: dict[int, int] = {}
        self._fills: list[Fill] = []
        self._spent_oca: set[tuple[str, str]] = set()
        self._depth: dict[str, tuple[Quote, Decimal, Decimal]] = {}

    # ================================================================ public commands

    def place(
        self, client_id: int, order_id: int, request: OrderRequest, now: datetime
    ) -> list[EngineEvent]:
        """New order, or modification when ``(client_id, order_id)`` is already known.

        New order: validation failures give one ``OrderRejected`` (200 unknown contract,
        201 invalid order / price / buying power / spent OCA group); accepted with
        ``transmit=False`` it is only kept (one ``transmitted=False`` snapshot), else it
        transmits its chain (module docs, "Transmit"). Known id: live and
        same contract and side → modification (``OrderStatusChanged`` with the new
        terms, then any fills); different contract → 103; different side → 105; filled
        → 104; cancelled/inactive → 103.
        """
        now = require_utc(now)
        self._max_ids[client_id] = max(self._max_ids.get(client_id, 0), order_id)
        perm = self._ids.get((client_id, order_id))
        if perm is not None:
            return self._modify(self._orders[perm], request, now)

        try:
            inst, account, parent = self._admit(client_id, request)
        except _Rejected as rej:
            return [OrderRejected(client_id, order_id, rej.code, rej.text)]

        order = _Order(
            client_id=client_id,
            order_id=order_id,
            perm_id=next(self._perm_counter),
            req=request,
            inst=inst,
            account=account.account_id,
            parent_perm=parent.perm_id if parent is not None else 0,
            now=now,
        )
        self._orders[order.perm_id] = order
        self._live[order.perm_id] = order
        self._ids[(client_id, order_id)] = order.perm_id
        if parent is not None:
            parent.children.append(order_id)
        self._set_expiry(order, now)
        order.status = OrderStatus.PRE_SUBMITTED
        if not request.transmit:
            # held: IB never hears of it (the snapshot says transmitted=False)
            return [OrderStatusChanged(order.snap())]
        return self._transmit_chain(order, now, placed=True)

    def cancel(self, client_id: int, order_id: int, now: datetime) -> list[EngineEvent]:
        """Cancel the remainder of an order (fills are kept): ``OrderStatusChanged
        (Cancelled)`` + ``OrderError(202)``, then the same for its unfilled children.

        Unknown id → ``OrderError(10147)``; already done → ``OrderError(10148)``.
        """
        now = require_utc(now)
        perm = self._ids.get((client_id, order_id))
        if perm is None:
            text = f"OrderId {order_id} that needs to be cancelled is not found."
            return [OrderError(client_id, order_id, 10147, text)]
        order = self._orders[perm]
        if not order.active:
            text = (
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                f"state: {order.status}."
            )
            return [OrderError(client_id, order_id, 10148, text)]
        return self._cancel(order, now)

    def global_cancel(self, now: datetime) -> list[EngineEvent]:
        """Cancel every live order of every client (reqGlobalCancel), in placement order."""
        now = require_utc(now)
        events: list[EngineEvent] = []
        for order in self._live_orders():
            events += self._cancel(order, now)
        return events

    def on_market(
        self, now: datetime, updates: Sequence[tuple[str, Quote]] = ()
    ) -> list[EngineEvent]:
        """Check every working order against the market (call after ``Market.advance``).

        When ``updates`` (the list ``Market.advance`` returned) is given, the orders of
        each updated symbol are first checked against every intermediate quote in turn,
        so a stop crossed and re-crossed between two calls still triggers (quotes older
        than an order are skipped for it). Then: held
        orders whose session opened start working, every working order is checked
        against the current quote, accounts are marked to the last prices, and
        DAY/GTD orders that are due expire (as :meth:`expire`).
        """
        now = require_utc(now)
        events: list[EngineEvent] = []
        for symbol, update in updates:
            key = symbol.upper()
            for order in self._live_orders():
                if (
                    order.status == OrderStatus.SUBMITTED
                    and order.inst.symbol.upper() == key
                    and update.ts >= order.created
                ):
                    events += self._check(order, update, now)
        for order in self._live_orders():
            if not order.active:
                continue
            if order.hold in ("rth", "opg"):
                events += self._activate(order, now)
            elif order.status == OrderStatus.SUBMITTED:
                quote = self.market.quote(order.inst.symbol)
                if quote is not None:
                    events += self._check(order, quote, now)
        self._mark_accounts()
        events += self.expire(now)
        return events

    def expire(self, now: datetime) -> list[EngineEvent]:
        """Cancel live DAY (RTH clock) and GTD orders whose time is up, and OPG orders
        whose open has passed without a fill."""
        now = require_utc(now)
        events: list[EngineEvent] = []
        for order in self._live_orders():
            if order.active and order.expires_at is not None and now >= order.expires_at:
                events += self._cancel(order, now)
        return events

    # ================================================================ public queries

    def max_order_id(self, client_id: int | None = None) -> int:
        """Highest order id seen from ``client_id`` (all clients when ``None``), including
        rejected ones; 0 if none. nextValidId on (re)connect = this + 1."""
        if client_id is None:
            return max(self._max_ids.values(), default=0)
        return self._max_ids.get(client_id, 0)

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        """Live orders (of one client, or all), in placement order."""
        return [
            o.snap()
            for o in self._orders.values()
            if o.active and (client_id is None or o.client_id == client_id)
        ]

    def completed_orders(self) -> list[SimOrder]:
        """Done orders (Filled/Cancelled/ApiCancelled/Inactive), in placement order."""
        return [o.snap() for o in self._orders.values() if o.status in DONE_STATUSES]

    def executions(
        self,
        *,
        client_id: int | None = None,
        account: str | None = None,
        symbol: str | None = None,
        side: str | None = None,
        since: datetime | None = None,
    ) -> list[Fill]:
        """Executions matching the reqExecutions filter, with their commissions, in time
        order. Empty/None filter fields match everything; ``side`` accepts BOT/SLD or
        BUY/SELL; ``since`` keeps executions at or after it."""
        want_side = {"BUY": "BOT", "SELL": "SLD"}.get((side or "").upper(), (side or "").upper())
        out = []
        for fill in self._fills:
            ex = fill.execution
            if client_id is not None and ex.order.client_id != client_id:
                continue
            if account and ex.account != account:
                continue
            if symbol and ex.symbol.upper() != symbol.upper():
                continue
            if want_side and ex.side != want_side:
                continue
            if since is not None and ex.time < require_utc(since):
                continue
            out.append(fill)
        return out

    def order(self, perm_id: int) -> SimOrder | None:
        """The order with ``perm_id``, or ``None``."""
        order = self._orders.get(perm_id)
        return order.snap() if order is not None else None

    def find_order(self, client_id: int, order_id: int) -> SimOrder | None:
        """The order a client knows as ``order_id``, or ``None``."""
        perm = self._ids.get((client_id, order_id))
        return self._orders[perm].snap() if perm is not None else None

    def commission_total(self, perm_id: int) -> Decimal:
        """Total commission charged on an order so far (0 for unknown)."""
        order = self._orders.get(perm_id)
        return order.commission if order is not None else _ZERO

    def _live_orders(self) -> list[_Order]:
        """Active orders in placement order (also prunes the live index)."""
        live = [o for o in self._live.values() if o.active]
        if len(live) != len(self._live):
            self._live = {o.perm_id: o for o in live}
        return live

    # ================================================================ validation

    def _admit(
        self, client_id: int, request: OrderRequest
    ) -> tuple[Instrument, Account, _Order | None]:
        """Checks for a new order; raises :class:`_Rejected`."""
        inst = self.universe.resolve(request.symbol, request.con_id)
        if inst is None:
            raise _Rejected(200, ErrorTexts.NO_SECURITY)
        account = self.accounts.get(request.account)
        if account is None:
            raise _Rejected(201, f"{ErrorTexts.REJECT}Invalid account code {request.account}")
        self._validate(request, inst)
        parent: _Order | None = None
        if request.parent_id:
            pperm = self._ids.get((client_id, request.parent_id))
            parent = self._orders[pperm] if pperm is not None else None
            if parent is None:
                raise _Rejected(
                    201, f"{ErrorTexts.REJECT}Parent order {request.parent_id} not found"
                )
            if not parent.active and parent.status != OrderStatus.FILLED:
                raise _Rejected(201, f"{ErrorTexts.REJECT}Parent order is being cancelled.")
        if request.oca_group and (account.account_id, request.oca_group) in self._spent_oca:
            raise _Rejected(201, ErrorTexts.REJECT + ErrorTexts.OCA_FILLED)
        self._check_margin(account, inst, request)
        return inst, account, parent

    def _validate(self, req: OrderRequest, inst: Instrument) -> None:
        """Static checks of a request; raises :class:`_Rejected` (201)."""

        def fail(reason: str) -> _Rejected:
            return _Rejected(201, ErrorTexts.REJECT + reason)

        if req.action not in ("BUY", "SELL"):
            raise fail(f"Invalid action {req.action}")
        numbers = (req.quantity, req.lmt_price, req.aux_price, req.trailing_percent)
        if any(n is not None and not (n.is_finite() and abs(n) < _MAX_VALUE) for n in numbers):
            raise fail("Invalid value in a price or quantity field")
        if req.trail_stop_price is not None and not (
            req.trail_stop_price.is_finite() and abs(req.trail_stop_price) < _MAX_VALUE
        ):
            raise fail("Invalid value in a price or quantity field")
        if req.quantity <= 0:
            raise fail("Order quantity must be positive")
        if req.order_type not in ORDER_TYPES:
            raise fail(f"Unsupported order type {req.order_type}")
        if req.tif not in TIFS:
            raise fail(f"Unsupported time in force {req.tif}")
        if req.tif == "GTD" and req.good_till_date is None:
            raise fail("Good till date must be specified for GTD orders")
        if req.good_till_date is not None and req.good_till_date.utcoffset() is None:
            raise fail("Good till date must carry a time zone")
        if any(not inst.is_on_tick(p) for p in self._prices(req, fail)):
            raise fail(ErrorTexts.MIN_TICK)

    @staticmethod
    def _prices(req: OrderRequest, fail: Callable[[str], _Rejected]) -> list[Decimal]:
        kind = req.order_type
        prices: list[Decimal] = []
        if kind in ("LMT", "STP LMT"):
            if req.lmt_price is None or req.lmt_price <= 0:
                raise fail("Limit price must be specified for this order type")
            prices.append(req.lmt_price)
        if kind in ("STP", "STP LMT"):
            if req.aux_price is None or req.aux_price <= 0:
                raise fail("Stop price must be specified for this order type")
            prices.append(req.aux_price)
        if kind == "TRAIL":
            if req.aux_price is not None and req.aux_price > 0:
                prices.append(req.aux_price)
            elif req.trailing_percent is None or not _ZERO < req.trailing_percent < _HUNDRED:
                raise fail("Trailing amount or trailing percent must be specified")
            if req.trail_stop_price is not None:
                prices.append(req.trail_stop_price)
        return prices

    def _reference_price(self, req: OrderRequest, inst: Instrument) -> Decimal:
        if req.order_type in ("LMT", "STP LMT") and req.lmt_price is not None:
            return req.lmt_price
        if req.order_type == "STP" and req.aux_price is not None:
            return req.aux_price
        quote = self.market.quote(inst.symbol)
        if quote is None:
            return inst.start_price
        return quote.ask if req.action == "BUY" else quote.bid

    def _check_margin(self, account: Account, inst: Instrument, req: OrderRequest) -> None:
        pos = account.position(inst.con_id)
        held = pos.quantity if pos is not None else _ZERO
        signed = req.quantity if req.action == "BUY" else -req.quantity
        increase = max(abs(held + signed) - abs(held), _ZERO)
        if increase == 0:
            return
        check = account.check_margin(increase * self._reference_price(req, inst))
        if check.ok:
            return
        cur = account.currency
        raise _Rejected(
            201,
            f"{ErrorTexts.REJECT}Your order is not accepted because your Equity with Loan Value of "
            f"[{check.equity_with_loan:.2f} {cur}] is insufficient to cover the Initial "
            f"Margin requirement of [{check.required:.2f} {cur}].",
        )

    def _set_expiry(self, order: _Order, now: datetime) -> None:
        req = order.req
        order.expires_at = None
        if req.tif == "GTD":
            order.expires_at = require_utc(req.good_till_date) if req.good_till_date else None
        elif req.tif == "DAY" and req.order_type != "MOC":
            order.expires_at = self.clock.session_close(now)
        if req.tif == "OPG" and order.opg_at is None:
            if self.clock.is_open(now):
                close = self.clock.session_close(now)
                order.opg_at = now if close is None else self.clock.next_open(close)
            else:
                order.opg_at = self.clock.next_open(now)
        if req.order_type == "MOC" and order.moc_at is None:
            order.moc_at = self.clock.session_close(now)

    # ================================================================ modify / cancel

    def _check_modify(self, order: _Order, req: OrderRequest) -> None:
        """Checks for a modification; raises :class:`_Rejected` (sent as OrderError)."""
        if order.status == OrderStatus.FILLED:
            raise _Rejected(104, ErrorTexts.MODIFY_FILLED)
        if not order.active:
            raise _Rejected(103, ErrorTexts.DUPLICATE_ID)
        inst = self.universe.resolve(req.symbol, req.con_id)
        if inst is None or inst.con_id != order.inst.con_id:
            raise _Rejected(103, ErrorTexts.DUPLICATE_ID)
        if req.action != order.req.action:
            raise _Rejected(105, ErrorTexts.MODIFY_MISMATCH)
        self._validate(req, inst)
        if req.quantity <= order.filled:
            text = "The order quantity cannot be reduced to the filled quantity or below"
            raise _Rejected(201, ErrorTexts.REJECT + text)

    def _modify(self, order: _Order, req: OrderRequest, now: datetime) -> list[EngineEvent]:
        try:
            self._check_modify(order, req)
        except _Rejected as rej:
            return [OrderError(order.client_id, order.order_id, rej.code, rej.text)]
        old = order.req
        # parent, OCA group and account are fixed at creation
        order.req = OrderRequest(
            symbol=req.symbol,
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            account=old.account,
            con_id=req.con_id,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            trailing_percent=req.trailing_percent,
            trail_stop_price=req.trail_stop_price,
            tif=req.tif,
            outside_rth=req.outside_rth,
            parent_id=old.parent_id,
            transmit=req.transmit or old.transmit,
            oca_group=old.oca_group,
            oca_type=old.oca_type,
            order_ref=req.order_ref,
            all_or_none=req.all_or_none,
            good_till_date=req.good_till_date,
        )
        order.quantity = req.quantity
        if req.order_type != old.order_type:
            order.triggered = False
        if (req.order_type, req.aux_price, req.trailing_percent, req.trail_stop_price) != (
            old.order_type,
            old.aux_price,
            old.trailing_percent,
            old.trail_stop_price,
        ):
            order.trail_stop = None
            order.extreme = None
        if req.tif != old.tif or req.good_till_date != old.good_till_date:
            order.opg_at = None
            self._set_expiry(order, now)
        order.updated = now
        release = req.transmit and not order.transmitted
        if release:
            order.transmitted = True  # this placement is the first IB hears of it
        events: list[EngineEvent] = [OrderStatusChanged(order.snap())]
        if release:
            events += self._transmit_chain(order, now, placed=False)
        elif order.status == OrderStatus.SUBMITTED:
            order.first_check = True
            quote = self.market.quote(order.inst.symbol)
            if quote is not None:
                events += self._check(order, quote, now)
        return events

    def _cancel(self, order: _Order, now: datetime) -> list[EngineEvent]:
        if not order.active:
            return []
        order.status = OrderStatus.CANCELLED
        order.updated = now
        events: list[EngineEvent] = [OrderStatusChanged(order.snap())]
        if order.transmitted:  # an order IB never received is dropped without a word
            events.append(OrderError(order.client_id, order.order_id, 202, ErrorTexts.CANCELLED))
        if order.filled < order.quantity:
            for child in self._children(order):
                events += self._cancel(child, now)
        return events

    # ================================================================ activation

    def _children(self, order: _Order) -> list[_Order]:
        out = []
        for oid in order.children:
            perm = self._ids.get((order.client_id, oid))
            if perm is not None:
                out.append(self._orders[perm])
        return out

    def _parent(self, order: _Order) -> _Order | None:
        return self._orders.get(order.parent_perm) if order.parent_perm else None

    def _transmit_chain(self, order: _Order, now: datetime, *, placed: bool) -> list[EngineEvent]:
        """Transmit ``order`` with its parent and siblings, then activate them in
        placement order (the parent first).

        ``placed``: ``order`` is a new order, whose ``PreSubmitted`` is emitted in its
        turn. Another member transmitted only now that is still held afterwards (a child
        waiting for its parent's fill) emits ``PreSubmitted`` too: it is the first the
        client hears of it; one that starts working at once emits ``Submitted``.
        """
        root = self._parent(order) or order
        chain = [root, *self._children(root)]
        fresh = {member.perm_id for member in chain if not member.transmitted}
        for member in chain:
            member.transmitted = True
        events: list[EngineEvent] = []
        for member in sorted(chain, key=lambda o: o.perm_id):
            if member is order and placed:
                events.append(OrderStatusChanged(member.snap()))
            if member.active and member.hold == "transmit":
                events += self._activate(member, now)
                if member is not order and member.perm_id in fresh and member.hold:
                    events.append(OrderStatusChanged(member.snap()))
        return events

    def _hold_reason(self, order: _Order, now: datetime) -> _Hold:
        if not order.transmitted:
            return "transmit"
        parent = self._parent(order)
        if parent is not None and parent.status != OrderStatus.FILLED:
            return "parent"
        if order.req.tif == "OPG":
            return "opg" if order.opg_at is not None and now < order.opg_at else ""
        if order.req.order_type == "MOC":
            return ""
        if not order.req.outside_rth and not self.clock.is_open(now):
            return "rth"
        return ""

    def _activate(self, order: _Order, now: datetime) -> list[EngineEvent]:
        """Re-evaluate a held order; when nothing holds it any more it becomes Submitted
        and gets its first check."""
        order.hold = self._hold_reason(order, now)
        if order.hold:
            return []
        events: list[EngineEvent] = []
        if order.status != OrderStatus.SUBMITTED:
            order.status = OrderStatus.SUBMITTED
            order.updated = now
            events.append(OrderStatusChanged(order.snap()))
        order.first_check = True
        quote = self.market.quote(order.inst.symbol)
        if quote is not None:
            events += self._check(order, quote, now)
        return events

    # ================================================================ matching

    def _slip(self, order: _Order) -> Decimal:
        return self.slippage_ticks * order.inst.min_tick

    def _market_price(self, order: _Order, quote: Quote) -> Decimal:
        if order.buy:
            return quote.ask + self._slip(order)
        return max(quote.bid - self._slip(order), order.inst.min_tick)

    def _limit_price(self, order: _Order, quote: Quote, limit: Decimal) -> Decimal | None:
        """Fill price of a limit order against ``quote``, or ``None`` if not crossed."""
        if order.buy:
            if quote.ask > limit:
                return None
            return min(self._market_price(order, quote), limit) if order.first_check else limit
        if quote.bid < limit:
            return None
        return max(self._market_price(order, quote), limit) if order.first_check else limit

    def _stop_hit(self, order: _Order, quote: Quote, stop: Decimal) -> bool:
        if order.buy:
            return quote.ask >= stop or quote.last >= stop
        return quote.bid <= stop or quote.last <= stop

    def _update_trail(self, order: _Order, quote: Quote) -> Decimal:
        req, inst, last = order.req, order.inst, quote.last

        def level(extreme: Decimal) -> Decimal:
            if req.aux_price is not None and req.aux_price > 0:
                offset = req.aux_price
            else:
                offset = extreme * (req.trailing_percent or _ZERO) / _HUNDRED
            return inst.round_price(extreme - offset if not order.buy else extreme + offset)

        if order.extreme is None or order.trail_stop is None:
            order.extreme = last
            order.trail_stop = (
                req.trail_stop_price if req.trail_stop_price is not None else level(last)
            )
        elif (not order.buy and last > order.extreme) or (order.buy and last < order.extreme):
            order.extreme = last
            new = level(last)
            order.trail_stop = (
                max(order.trail_stop, new) if not order.buy else min(order.trail_stop, new)
            )
        return order.trail_stop

    def _fill_price(self, order: _Order, quote: Quote, now: datetime) -> Decimal | None:
        """The price this order would fill at against ``quote`` now, updating trigger and
        trailing state; ``None`` if it does not fill."""
        req = order.req
        kind = req.order_type
        if kind == "MOC":
            due = order.moc_at is None or now >= order.moc_at
            return quote.last if due else None
        if not req.outside_rth and not self.clock.is_open(now):
            return None
        if kind == "TRAIL" and not order.triggered:
            stop = self._update_trail(order, quote)
            if not self._stop_hit(order, quote, stop):
                return None
            order.triggered = True
        if kind in ("STP", "STP LMT") and not order.triggered:
            assert req.aux_price is not None
            if not self._stop_hit(order, quote, req.aux_price):
                return None
            order.triggered = True
            order.first_check = True
        if kind in ("LMT", "STP LMT"):
            assert req.lmt_price is not None
            return self._limit_price(order, quote, req.lmt_price)
        return self._market_price(order, quote)

    def _available(self, order: _Order, quote: Quote) -> Decimal | None:
        if not self.depth_limited:
            return None
        key = order.inst.symbol
        seen, used_bid, used_ask = self._depth.get(key, (quote, _ZERO, _ZERO))
        if seen is not quote:
            used_bid = used_ask = _ZERO
            self._depth[key] = (quote, used_bid, used_ask)
        if order.buy:
            return max(quote.ask_size - used_ask, _ZERO)
        return max(quote.bid_size - used_bid, _ZERO)

    def _consume(self, order: _Order, quote: Quote, shares: Decimal) -> None:
        if not self.depth_limited:
            return
        _, used_bid, used_ask = self._depth.get(order.inst.symbol, (quote, _ZERO, _ZERO))
        if order.buy:
            used_ask += shares
        else:
            used_bid += shares
        self._depth[order.inst.symbol] = (quote, used_bid, used_ask)

    def _lots(self, order: _Order, shares: Decimal) -> list[Decimal]:
        if self.fill_lots is None:
            return [shares]
        out: list[Decimal] = []
        left = shares
        for lot in itertools.cycle(self.fill_lots):
            if left <= 0:
                break
            part = min(Decimal(lot), left)
            out.append(part)
            left -= part
        if not order.one_shot and self.max_executions_per_check is not None:
            out = out[: self.max_executions_per_check]
        return out

    def _check(self, order: _Order, quote: Quote, now: datetime) -> list[EngineEvent]:
        """One matching attempt of a working order against one quote."""
        if order.status != OrderStatus.SUBMITTED:
            return []
        price = self._fill_price(order, quote, now)
        events: list[EngineEvent] = []
        if price is not None:
            available = self._available(order, quote)
            shares = order.remaining if available is None else min(order.remaining, available)
            all_or_none = order.req.tif == "FOK" or order.req.all_or_none
            if shares > 0 and not (all_or_none and shares < order.remaining):
                resting = not order.first_check and order.req.order_type in ("LMT", "STP LMT")
                liquidity = 1 if resting else 2
                self._consume(order, quote, shares)
                for lot in self._lots(order, shares):
                    if order.status != OrderStatus.SUBMITTED:
                        break
                    events += self._execute(
                        order, shares=lot, price=price, liquidity=liquidity, quote=quote, now=now
                    )
        order.first_check = False
        if order.one_shot and order.active:
            events += self._cancel(order, now)
        return events

    def _execute(
        self,
        order: _Order,
        *,
        shares: Decimal,
        price: Decimal,
        liquidity: int,
        quote: Quote,
        now: datetime,
    ) -> list[EngineEvent]:
        shares = min(shares, order.remaining)
        seq = next(self._exec_counter)
        exec_id = f"{order.perm_id:08x}.{seq:08x}.01.01"
        old_filled = order.filled
        order.filled += shares
        order.avg_price = (order.avg_price * old_filled + price * shares) / order.filled
        order.last_price = price
        order.value_filled += price * shares
        order.updated = now
        if order.remaining <= 0:
            order.status = OrderStatus.FILLED
        total = self.commissions.cumulative(order.filled, order.value_filled)
        commission = max(total - order.commission, _ZERO)
        order.commission += commission
        account = self.accounts.get(order.account)
        assert account is not None
        side: Literal["BOT", "SLD"] = "BOT" if order.buy else "SLD"
        realized = account.apply_execution(order.inst, side, shares, price, commission)
        account.mark(order.inst.con_id, quote.last)
        snap = order.snap()
        execution = SimExecution(
            exec_id=exec_id,
            order=snap,
            account=order.account,
            symbol=order.inst.symbol,
            con_id=order.inst.con_id,
            side=side,
            shares=shares,
            price=price,
            time=now,
            cum_qty=order.filled,
            avg_price=order.avg_price,
            liquidity=liquidity,
            exchange=order.inst.primary_exchange,
        )
        report = CommissionCharged(
            exec_id, order.account, commission, order.inst.currency, realized
        )
        self._fills.append(Fill(execution, report))
        pos = account.position(order.inst.con_id)
        assert pos is not None
        events: list[EngineEvent] = [
            ExecutionOccurred(execution),
            OrderStatusChanged(snap),
            report,
            PositionChanged(order.account, order.inst, pos.quantity, pos.avg_cost),
            AccountChanged(order.account, account.account_values()),
        ]
        events += self._after_fill(order, shares, now)
        return events

    # ================================================================ OCA / children

    def _oca_members(self, order: _Order) -> list[_Order]:
        members: dict[int, _Order] = {}
        parent = self._parent(order)
        if parent is not None:
            for sib in self._children(parent):
                members[sib.perm_id] = sib
        group = order.req.oca_group
        if group:
            for other in self._live_orders():
                if other.account == order.account and other.req.oca_group == group:
                    members[other.perm_id] = other
        members.pop(order.perm_id, None)
        return sorted((m for m in members.values() if m.active), key=lambda m: m.perm_id)

    def _after_fill(self, order: _Order, shares: Decimal, now: datetime) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        group = order.req.oca_group
        cancel_all = bool(group) and order.req.oca_type == 1
        if group and (cancel_all or order.status == OrderStatus.FILLED):
            self._spent_oca.add((order.account, group))
        for other in self._oca_members(order):
            if not other.active:
                continue
            if cancel_all:
                events += self._cancel(other, now)
                continue
            other.quantity = max(other.quantity - shares, other.filled)
            other.updated = now
            if other.remaining <= 0:
                events += self._cancel(other, now)
            else:
                events.append(OrderStatusChanged(other.snap()))
        if order.status == OrderStatus.FILLED:
            for child in self._children(order):
                if child.active and child.hold == "parent":
                    events += self._activate(child, now)
        return events

    def _mark_accounts(self) -> None:
        for account in self.accounts:
            for pos in account.positions():
                quote = self.market.quote(pos.instrument.symbol)
                if quote is not None:
                    account.mark(pos.instrument.con_id, quote.last)
