"""The lifecycle of one day-trade position, as a pure state machine.

:class:`PositionState` holds the *facts* we know about a position: its identity and
levels, every execution booked against it (by IB's ``execId``), whether its entry order
has ended, which exit orders it has had, and whether the current one is still working.
Its :attr:`~PositionState.status` (a :class:`~ibflow.contracts.enums.PositionStatus`)
is *derived* from those facts, never stored on its own, so it cannot drift from them::

    new()  (the entry order was submitted)                              -> PENDING
    PENDING --first entry fill--> OPEN     (more entry fills grow it)
    PENDING --entry ended, nothing filled--> CANCELLED
    PENDING --entry ended after a partial fill--> OPEN with what filled
    OPEN --submit_exit(client order id, reason)--> CLOSING
    CLOSING --exit fills--> CLOSING, quantity reduced
    CLOSING --exit fills reach what the entries bought--> CLOSED
    CLOSING --exit ended (cancelled / rejected / filled short)--> OPEN (retry allowed)

The status, from the facts (first rule that applies):

1. nothing bought: ``PENDING`` while the entry works (or IB reported fills whose
   executions we have not booked yet), else ``CANCELLED``;
2. everything bought has been sold back (quantity 0): ``CLOSED``;
3. an exit works, or the ended exit reported fills not booked yet: ``CLOSING``;
4. otherwise ``OPEN``.

Every input returns a :class:`Transition` (before, after, and :attr:`Transition.entered`,
the status entered if it changed: stamp ``opened_at`` the first time ``OPEN`` is entered
and ``closed_at`` when ``CLOSED`` is). Refusals raise the errors of
:mod:`~ibflow_position_monitor.domain.errors`; nothing is applied then.

Rules worth knowing (failure modes 10, 11 and 12 of ``ib-failure-modes.md``):

* **Quantities are sums of booked executions**, never IB's status figures. The entry
  side's fills grow the position (up to the planned quantity, else :class:`Overfill`);
  the exit side's fills reduce it (never below zero, else :class:`Overfill`). Which
  role a fill plays comes from its order: the position's entry client order id is the
  entry, any other order attributed to the position is an exit. Its side must agree
  (a LONG enters with BUY and exits with SELL, a SHORT the reverse), else
  :class:`SideMismatch`.
* **Our average price is ours.** :attr:`PositionState.avg_entry_price` is the
  quantity-weighted mean of the entry executions' prices, exact (``entry_notional /
  entry_quantity``), commission excluded. IB's ``avgCost`` is *not* it: in
  ``position``/``updatePortfolio`` it is per contract *including the multiplier*, and
  ``updatePortfolio``'s includes the commission (ibi#175); it is never read here.
  Commissions are tracked separately, per execution, and charged to realized P&L.
* **Executions are idempotent by execId.** The state keeps every booked execution
  (:attr:`PositionState.executions`), so the same execId given again with the same
  figures changes nothing (:attr:`Transition.changed` is false), and with other
  figures raises :class:`ConflictingExecution`. (The caller also deduplicates with the
  inbox and ``position_executions``' primary key; this is the last line.) An execId
  *correction* (IB's new suffix) is a new execId: the overfill checks catch a
  correction booked on top of the fill it corrects.
* **Commissions come late, or first.** A fill is booked with its commission unknown
  (``None``, never 0); :meth:`PositionState.on_commission` fills it in when it arrives,
  also after ``CLOSED``, and realized P&L follows. A later report for the same execId
  replaces the earlier one (IB may send a placeholder first). A commission that
  overtakes its fill raises :class:`UnknownExecution`: the caller parks it and passes
  it as ``commission=`` to :meth:`PositionState.on_execution`.
* **Out-of-order facts are normal.** An exit fill may arrive before we recorded the
  exit (another replica sent it, or the broker's event overtook ours): it records the
  exit order and the position is ``CLOSING``/``CLOSED``; the later
  :meth:`PositionState.submit_exit` with the same id only fills in the reason. A late
  entry fill after the entry was cancelled is booked (the position becomes ``OPEN``);
  after ``CLOSED`` it re-opens the position (the shares are real; exit them).
* **An ended order may still have fills in flight.** IB can report an order
  ``Cancelled`` or ``Filled`` before the ``execDetails`` of its last fills. The
  ``broker_filled`` given to :meth:`PositionState.entry_ended` /
  :meth:`PositionState.exit_ended` is remembered, and the position stays ``PENDING`` /
  ``CLOSING`` until those executions are booked, so a retry never sells shares that
  were already sold.

Money is exact :class:`~decimal.Decimal`. The only divisions are the averages and the
entry cost of a *partly* exited position (``entry_notional * exited / bought``), carried
in the default decimal context (28 significant digits); once the position is closed the
cost is ``entry_notional`` itself, so a closed position's realized P&L is exact::

    LONG:  realized = (exit_notional - entry_notional) * multiplier - commissions
    SHORT: realized = (entry_notional - exit_notional) * multiplier - commissions

Commissions (both sides, every known one) are charged to realized P&L as soon as they
are known, including the entry's while the position is still open; unrealized P&L
(:mod:`~ibflow_position_monitor.domain.marks`) is gross, so realized + unrealized is
the position's whole P&L at every moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from ibflow.contracts.enums import ExitReason, OrderSide, PositionSide, PositionStatus
from ibflow_position_monitor.domain.errors import (
    ConflictingExecution,
    IllegalTransition,
    InvalidLevels,
    Overfill,
    SideMismatch,
    UnknownExecution,
)
from ibflow_position_monitor.domain.ids import (
    adoption_client_order_id,
    exit_client_order_id,
    is_valid_id,
)

__all__ = [
    "ACTIVE_STATUSES",
    "MAX_COMMISSION",
    "BookedExecution",
    "FillRole",
    "PositionState",
    "Transition",
    "entered_status",
    "entry_side",
    "exit_side",
]

_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)

MAX_COMMISSION: Final = Decimal("1e12")
"""Commissions at or above this (in absolute value) are refused: IB's "unset" sentinel
(max double, ~1.8e308) must never reach P&L. Same bound as the tables' CHECKs."""

ACTIVE_STATUSES: Final = frozenset(
    {PositionStatus.PENDING, PositionStatus.OPEN, PositionStatus.CLOSING}
)
"""Statuses of a position that is not finished (the partial unique index's predicate:
one active position per portfolio, symbol and session)."""

_PORTFOLIO_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MAX_SYMBOL_LENGTH: Final = 32


class FillRole(StrEnum):
    """What an execution does to its position: ``entry`` grows it, ``exit`` reduces it."""

    ENTRY = "entry"
    EXIT = "exit"


def entry_side(side: PositionSide) -> OrderSide:
    """The order side that opens a ``side`` position: BUY for LONG, SELL for SHORT."""
    return OrderSide.BUY if side is PositionSide.LONG else OrderSide.SELL


def exit_side(side: PositionSide) -> OrderSide:
    """The order side that closes a ``side`` position: SELL for LONG, BUY for SHORT."""
    return OrderSide.SELL if side is PositionSide.LONG else OrderSide.BUY


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive(value: Decimal, name: str) -> None:
    _require(value.is_finite() and value > 0, f"{name} must be a positive number, got {value}")


def _non_negative(value: Decimal, name: str) -> None:
    _require(value.is_finite() and value >= 0, f"{name} must be >= 0, got {value}")


def _check_commission(value: Decimal) -> None:
    _require(
        value.is_finite() and abs(value) < MAX_COMMISSION,
        f"commission must be a finite number below {MAX_COMMISSION} in absolute value "
        f"(IB's unset sentinel?), got {value}",
    )


def _check_levels(
    side: PositionSide, stop_loss: Decimal | None, take_profit: Decimal | None
) -> None:
    for name, level in (("stop_loss", stop_loss), ("take_profit", take_profit)):
        if level is not None and not (level.is_finite() and level > 0):
            raise InvalidLevels(f"{name} must be a positive price, got {level}")
    if stop_loss is None or take_profit is None:
        return
    if side is PositionSide.LONG and not stop_loss < take_profit:
        raise InvalidLevels(
            f"a LONG position's stop_loss {stop_loss} must be below its take_profit {take_profit}"
        )
    if side is PositionSide.SHORT and not stop_loss > take_profit:
        raise InvalidLevels(
            f"a SHORT position's stop_loss {stop_loss} must be above its take_profit {take_profit}"
        )


@dataclass(frozen=True, slots=True)
class BookedExecution:
    """One of IB's executions booked against a position (a ``position_executions`` row).

    ``commission`` is ``None`` until IB reports it (never 0 as a placeholder).
    """

    exec_id: str
    client_order_id: str
    role: FillRole
    shares: Decimal
    price: Decimal
    commission: Decimal | None = None

    def __post_init__(self) -> None:
        _require(bool(self.exec_id.strip()), "exec_id must not be blank")
        _require(bool(self.client_order_id), "client_order_id must not be empty")
        _positive(self.shares, "shares")
        _positive(self.price, "price")
        if self.commission is not None:
            _check_commission(self.commission)

    @property
    def notional(self) -> Decimal:
        """``shares * price`` (without the multiplier), exact."""
        return self.shares * self.price

    def describe(self) -> str:
        """``"entry 40 @ 10.25 of order <id>"``, for messages."""
        return f"{self.role.value} {self.shares} @ {self.price} of order {self.client_order_id}"


@dataclass(frozen=True, slots=True)
class PositionState:
    """The facts about one position; :attr:`status` and every figure are derived.

    Build a new position with :meth:`new` (its entry order was submitted) or
    :meth:`adopted` (found at the broker); rebuild a stored one with the constructor,
    which checks the invariants (ids, quantities within bounds, consistent exits).
    Every input method returns a :class:`Transition` and never mutates.
    """

    position_id: str
    portfolio_id: str
    symbol: str
    side: PositionSide
    planned_quantity: Decimal
    """The entry order's quantity (the most the entry may buy)."""
    entry_client_order_id: str
    multiplier: Decimal = _ONE
    """Contract multiplier (1 for stocks): P&L = price difference x shares x multiplier."""
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    external: bool = False
    """Adopted from the broker (opened outside ibflow): its entry is a stand-in."""
    executions: tuple[BookedExecution, ...] = ()
    """Every execution booked, in booking order; execIds are unique."""
    entry_done: bool = False
    """The entry order ended (cancelled, rejected or filled); nothing more will be sent."""
    entry_broker_filled: Decimal = _ZERO
    """IB's filled count for the entry when it ended (fills may still be in flight)."""
    exit_client_order_ids: tuple[str, ...] = ()
    """Every exit order the position had, oldest first; the last is the current one."""
    exit_reason: ExitReason | None = None
    """Why the current exit was sent (``None`` if we saw its fill before its intent)."""
    exit_working: bool = False
    """The current exit order is working at the broker."""
    exit_broker_filled: Decimal = _ZERO
    """IB's filled count for the current exit when it ended (0 while it works)."""

    def __post_init__(self) -> None:
        self._check_identity()
        _check_levels(self.side, self.stop_loss, self.take_profit)
        self._check_executions()
        self._check_exits()

    def _check_identity(self) -> None:
        _require(is_valid_id(self.position_id), f"position_id {self.position_id!r} is not an id")
        _require(
            _PORTFOLIO_PATTERN.fullmatch(self.portfolio_id) is not None,
            f"portfolio_id {self.portfolio_id!r} is not a portfolio slug",
        )
        _require(
            0 < len(self.symbol) <= _MAX_SYMBOL_LENGTH,
            f"symbol must be 1..{_MAX_SYMBOL_LENGTH} characters, got {self.symbol!r}",
        )
        _require(
            is_valid_id(self.entry_client_order_id),
            f"entry_client_order_id {self.entry_client_order_id!r} is not a client order id",
        )
        _positive(self.planned_quantity, "planned_quantity")
        _positive(self.multiplier, "multiplier")
        _non_negative(self.entry_broker_filled, "entry_broker_filled")
        _non_negative(self.exit_broker_filled, "exit_broker_filled")

    def _check_executions(self) -> None:
        seen: set[str] = set()
        for execution in self.executions:
            _require(execution.exec_id not in seen, f"execution {execution.exec_id} booked twice")
            seen.add(execution.exec_id)
            is_entry = execution.client_order_id == self.entry_client_order_id
            _require(
                is_entry == (execution.role is FillRole.ENTRY),
                f"execution {execution.exec_id} is booked as {execution.role.value} but its "
                f"order {execution.client_order_id} says otherwise",
            )
        _require(
            self.entry_quantity <= self.planned_quantity,
            f"entry fills {self.entry_quantity} exceed the planned quantity "
            f"{self.planned_quantity}",
        )
        _require(
            self.exit_quantity <= self.entry_quantity,
            f"exit fills {self.exit_quantity} exceed the entry fills {self.entry_quantity}",
        )

    def _check_exits(self) -> None:
        ids = self.exit_client_order_ids
        _require(len(set(ids)) == len(ids), "exit_client_order_ids must be unique")
        for coid in ids:
            _require(is_valid_id(coid), f"exit client order id {coid!r} is not an id")
            _require(
                coid != self.entry_client_order_id,
                f"exit client order id {coid!r} is the entry's",
            )
        _require(not self.exit_working or bool(ids), "an exit works but none is recorded")
        _require(self.exit_reason is None or bool(ids), "an exit reason without an exit")
        _require(
            not self.exit_working or self.exit_broker_filled == 0,
            "exit_broker_filled is recorded only once the exit ended",
        )
        _require(
            not self.exit_working or self.quantity > 0,
            "an exit cannot work on a position with nothing left",
        )

    # -- construction --------------------------------------------------------------

    @classmethod
    def new(
        cls,
        *,
        position_id: str,
        portfolio_id: str,
        symbol: str,
        side: PositionSide,
        planned_quantity: Decimal,
        entry_client_order_id: str,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        multiplier: Decimal = _ONE,
    ) -> PositionState:
        """The entry order was submitted: a ``PENDING`` position, nothing filled yet.

        Raises :class:`InvalidLevels` for levels on the wrong side of each other.
        """
        return cls(
            position_id=position_id,
            portfolio_id=portfolio_id,
            symbol=symbol,
            side=side,
            planned_quantity=planned_quantity,
            entry_client_order_id=entry_client_order_id,
            multiplier=multiplier,
            stop_loss=stop_loss,
            take_profit=take_profit,
        )

    @classmethod
    def adopted(
        cls,
        *,
        position_id: str,
        portfolio_id: str,
        symbol: str,
        side: PositionSide,
        quantity: Decimal,
        price: Decimal,
        multiplier: Decimal = _ONE,
    ) -> PositionState:
        """A position found at the broker that we did not open: ``OPEN``, external.

        It has no entry order of ours; it gets a stand-in entry
        (:func:`~ibflow_position_monitor.domain.ids.adoption_client_order_id`, also its
        one entry execution's id) of ``quantity`` at ``price``. The broker reports no
        fills for it, only its ``avgCost``, so ``price`` is the caller's best figure
        (``avgCost / multiplier``, which includes IB's commission); its commission is
        therefore 0, not unknown, and its P&L is approximate. No stop or target: set
        them with :meth:`set_levels` if wanted; the close-out exits it like any other.
        """
        _positive(quantity, "quantity")
        _positive(price, "price")
        stand_in = adoption_client_order_id(position_id)
        execution = BookedExecution(
            exec_id=stand_in,
            client_order_id=stand_in,
            role=FillRole.ENTRY,
            shares=quantity,
            price=price,
            commission=_ZERO,
        )
        return cls(
            position_id=position_id,
            portfolio_id=portfolio_id,
            symbol=symbol,
            side=side,
            planned_quantity=quantity,
            entry_client_order_id=stand_in,
            multiplier=multiplier,
            external=True,
            executions=(execution,),
            entry_done=True,
            entry_broker_filled=quantity,
        )

    # -- derived: quantities and prices --------------------------------------------

    def _total(self, role: FillRole) -> tuple[Decimal, Decimal]:
        shares = notional = _ZERO
        for execution in self.executions:
            if execution.role is role:
                shares += execution.shares
                notional += execution.notional
        return shares, notional

    @property
    def entry_quantity(self) -> Decimal:
        """Sum of the entry executions' shares (what the position bought in)."""
        return self._total(FillRole.ENTRY)[0]

    @property
    def entry_notional(self) -> Decimal:
        """Sum of ``shares * price`` of the entry executions (no multiplier), exact."""
        return self._total(FillRole.ENTRY)[1]

    @property
    def exit_quantity(self) -> Decimal:
        """Sum of the exit executions' shares."""
        return self._total(FillRole.EXIT)[0]

    @property
    def exit_notional(self) -> Decimal:
        """Sum of ``shares * price`` of the exit executions (no multiplier), exact."""
        return self._total(FillRole.EXIT)[1]

    @property
    def quantity(self) -> Decimal:
        """Quantity held now: entry fills minus exit fills (never negative)."""
        return self.entry_quantity - self.exit_quantity

    @property
    def signed_quantity(self) -> Decimal:
        """:attr:`quantity`, negative for a SHORT position (the broker's convention)."""
        held = self.quantity
        return held if self.side is PositionSide.LONG else -held

    @property
    def avg_entry_price(self) -> Decimal | None:
        """Quantity-weighted mean price of the entry fills; ``None`` before any.

        Ours, from our executions; not IB's ``avgCost`` (module docstring)."""
        shares, notional = self._total(FillRole.ENTRY)
        return None if shares == 0 else notional / shares

    @property
    def avg_exit_price(self) -> Decimal | None:
        """Quantity-weighted mean price of the exit fills; ``None`` before any."""
        shares, notional = self._total(FillRole.EXIT)
        return None if shares == 0 else notional / shares

    @property
    def entry_side(self) -> OrderSide:
        """BUY for a LONG position, SELL for a SHORT one."""
        return entry_side(self.side)

    @property
    def exit_side(self) -> OrderSide:
        """SELL for a LONG position, BUY for a SHORT one."""
        return exit_side(self.side)

    def filled_by(self, client_order_id: str) -> Decimal:
        """Shares booked from the order ``client_order_id``."""
        return sum(
            (e.shares for e in self.executions if e.client_order_id == client_order_id), _ZERO
        )

    def booked(self, exec_id: str) -> BookedExecution | None:
        """The booked execution ``exec_id``, if any."""
        for execution in self.executions:
            if execution.exec_id == exec_id:
                return execution
        return None

    @property
    def exec_ids(self) -> frozenset[str]:
        """The execIds booked against the position."""
        return frozenset(e.exec_id for e in self.executions)

    # -- derived: orders -----------------------------------------------------------

    @property
    def entry_working(self) -> bool:
        """The entry order may still fill: not ended and not filled in full.

        An exit sent while this holds should come with a cancel of the entry's rest.
        """
        return not self.entry_done and self.entry_quantity < self.planned_quantity

    @property
    def awaiting_entry_fills(self) -> Decimal:
        """Entry shares IB reported filled at the end whose executions are not booked."""
        if not self.entry_done:
            return _ZERO
        return max(_ZERO, self.entry_broker_filled - self.entry_quantity)

    @property
    def exit_client_order_id(self) -> str | None:
        """The current (last) exit order's client order id, if any."""
        return self.exit_client_order_ids[-1] if self.exit_client_order_ids else None

    @property
    def exit_attempts(self) -> int:
        """How many exit orders the position has had."""
        return len(self.exit_client_order_ids)

    @property
    def next_exit_client_order_id(self) -> str:
        """The deterministic id of the next exit: ``exit:<position_id>`` first, then
        ``exit:<position_id>:<n>`` (see :func:`~.ids.exit_client_order_id`)."""
        return exit_client_order_id(self.position_id, self.exit_attempts + 1)

    @property
    def awaiting_exit_fills(self) -> Decimal:
        """Shares IB reported filled for the ended current exit whose executions are not
        booked yet (0 while the exit works, or when there is none)."""
        current = self.exit_client_order_id
        if current is None or self.exit_working:
            return _ZERO
        return max(_ZERO, self.exit_broker_filled - self.filled_by(current))

    # -- derived: status -----------------------------------------------------------

    @property
    def status(self) -> PositionStatus:
        """The status, derived from the facts (module docstring)."""
        if self.entry_quantity == 0:
            if self.entry_working or self.awaiting_entry_fills > 0:
                return PositionStatus.PENDING
            return PositionStatus.CANCELLED
        if self.quantity == 0:
            return PositionStatus.CLOSED
        if self.exit_working or self.awaiting_exit_fills > 0:
            return PositionStatus.CLOSING
        return PositionStatus.OPEN

    @property
    def is_active(self) -> bool:
        """``PENDING``, ``OPEN`` or ``CLOSING``: the position is not finished."""
        return self.status in ACTIVE_STATUSES

    # -- derived: money ------------------------------------------------------------

    @property
    def commission(self) -> Decimal:
        """Sum of the commissions known so far, both sides (signed: rebates are < 0)."""
        return sum((e.commission for e in self.executions if e.commission is not None), _ZERO)

    @property
    def commissions_pending(self) -> int:
        """How many booked executions still wait for their commission."""
        return sum(1 for e in self.executions if e.commission is None)

    @property
    def exited_cost(self) -> Decimal:
        """The entry cost (``shares * price``, no multiplier) of the shares sold back:
        ``entry_notional * exit_quantity / entry_quantity``; exactly ``entry_notional``
        once everything is sold back, 0 before any exit."""
        bought, cost = self._total(FillRole.ENTRY)
        sold = self.exit_quantity
        if sold == 0:
            return _ZERO
        if sold == bought:
            return cost
        return cost * sold / bought

    @property
    def held_cost(self) -> Decimal:
        """The entry cost of the shares still held: ``entry_notional - exited_cost``, so
        realized and unrealized P&L always add up to the whole."""
        return self.entry_notional - self.exited_cost

    @property
    def realized_gross(self) -> Decimal:
        """Realized P&L of the shares sold back, before commissions (mirrored for SHORT)."""
        difference = self.exit_notional - self.exited_cost
        if self.side is PositionSide.SHORT:
            difference = -difference
        return difference * self.multiplier

    @property
    def realized_pnl(self) -> Decimal:
        """:attr:`realized_gross` minus every commission known so far (both sides)."""
        return self.realized_gross - self.commission

    @property
    def pnl_final(self) -> bool:
        """``CLOSED`` with every commission known: the realized P&L will not change."""
        return self.status is PositionStatus.CLOSED and self.commissions_pending == 0

    # -- inputs: executions and commissions ----------------------------------------

    def role_of(self, client_order_id: str) -> FillRole:
        """The role of ``client_order_id``'s fills in this position: the entry order's
        are ``entry``, any other order attributed to the position is an ``exit``."""
        return FillRole.ENTRY if client_order_id == self.entry_client_order_id else FillRole.EXIT

    def on_execution(
        self,
        exec_id: str,
        *,
        client_order_id: str,
        side: OrderSide,
        shares: Decimal,
        price: Decimal,
        commission: Decimal | None = None,
    ) -> Transition:
        """Book IB's execution ``exec_id`` of ``shares`` at ``price`` from the order
        ``client_order_id`` (the entry's, or an exit attributed to this position).

        ``commission``: pass it when it arrived before the fill (parked by the caller).
        The same execId again with the same figures changes nothing (or only fills in a
        commission). An exit fill of an order not recorded yet records it as the
        current exit (it evidently works). An exit fill that brings the quantity to 0
        ends the exit (nothing is left for it to sell).

        Raises :class:`SideMismatch`, :class:`ConflictingExecution` or
        :class:`Overfill`; nothing is booked then.
        """
        _positive(shares, "shares")
        _positive(price, "price")
        if commission is not None:
            _check_commission(commission)
        role = self.role_of(client_order_id)
        expected = self.entry_side if role is FillRole.ENTRY else self.exit_side
        if side is not expected:
            raise SideMismatch(role.value, self.side.value, side.value, expected.value)
        execution = BookedExecution(exec_id, client_order_id, role, shares, price, commission)
        existing = self.booked(exec_id)
        if existing is not None:
            if (existing.client_order_id, existing.shares, existing.price) != (
                client_order_id,
                shares,
                price,
            ):
                raise ConflictingExecution(exec_id, existing.describe(), execution.describe())
            if commission is None:
                return self._same()
            return self.on_commission(exec_id, commission)
        if role is FillRole.ENTRY:
            if self.entry_quantity + shares > self.planned_quantity:
                raise Overfill("entry", self.planned_quantity, self.entry_quantity, shares)
            return self._to(executions=(*self.executions, execution))
        if self.exit_quantity + shares > self.entry_quantity:
            raise Overfill("exit", self.entry_quantity, self.exit_quantity, shares)
        changes: dict[str, Any] = {"executions": (*self.executions, execution)}
        known = client_order_id in self.exit_client_order_ids
        if not known:
            changes["exit_client_order_ids"] = (*self.exit_client_order_ids, client_order_id)
            changes["exit_reason"] = None
            changes["exit_broker_filled"] = _ZERO
        flat = self.quantity - shares == 0
        if flat:
            changes["exit_working"] = False
        elif not known:
            changes["exit_working"] = True
        return self._to(**changes)

    def on_commission(self, exec_id: str, commission: Decimal) -> Transition:
        """IB reported the commission of the booked execution ``exec_id``.

        Applies in every status (a late commission after ``CLOSED`` updates the realized
        P&L). The same amount again changes nothing; another amount replaces it (IB's
        latest report wins). Raises :class:`UnknownExecution` if the execution is not
        booked here (the commission overtook its fill).
        """
        _check_commission(commission)
        existing = self.booked(exec_id)
        if existing is None:
            raise UnknownExecution(exec_id, self.position_id)
        if existing.commission is not None and existing.commission == commission:
            return self._same()
        updated = replace(existing, commission=commission)
        return self._to(executions=tuple(updated if e is existing else e for e in self.executions))

    # -- inputs: orders ------------------------------------------------------------

    def entry_ended(self, *, broker_filled: Decimal = _ZERO) -> Transition:
        """The entry order is terminal at the broker (cancelled, rejected, or filled),
        IB reporting ``broker_filled`` shares filled.

        Nothing filled → ``CANCELLED``; partly filled → ``OPEN`` with what filled. While
        IB's count is above the booked entry fills the position waits for them (stays
        ``PENDING`` if nothing is booked yet). Late entry fills are still booked.
        Repeats change nothing (IB's count is never lowered).
        """
        _non_negative(broker_filled, "broker_filled")
        filled = max(self.entry_broker_filled, broker_filled)
        if self.entry_done and filled == self.entry_broker_filled:
            return self._same()
        return self._to(entry_done=True, entry_broker_filled=filled)

    def submit_exit(self, client_order_id: str, reason: ExitReason) -> Transition:
        """An exit order ``client_order_id`` is being sent for ``reason``: ``CLOSING``.

        Only an ``OPEN`` position takes a new exit. Idempotent: an exit already recorded
        (sent before, or seen through its fills first) changes nothing, except that a
        missing reason of the current exit is filled in; it never makes an ended exit
        work again. Raises :class:`IllegalTransition` for any other status (``PENDING``:
        cancel the entry instead; ``CLOSING``: one exit at a time; ``CLOSED``,
        ``CANCELLED``: nothing to exit).
        """
        _require(is_valid_id(client_order_id), f"{client_order_id!r} is not a client order id")
        _require(
            client_order_id != self.entry_client_order_id,
            "an exit cannot reuse the entry's client order id",
        )
        if client_order_id in self.exit_client_order_ids:
            if client_order_id == self.exit_client_order_id and self.exit_reason is None:
                return self._to(exit_reason=reason)
            return self._same()
        status = self.status
        if status is not PositionStatus.OPEN:
            detail = f"exit {self.exit_client_order_id} is still working"
            raise IllegalTransition(
                f"submit exit {client_order_id}",
                status,
                detail if status is PositionStatus.CLOSING else "",
            )
        return self._to(
            exit_client_order_ids=(*self.exit_client_order_ids, client_order_id),
            exit_reason=reason,
            exit_working=True,
            exit_broker_filled=_ZERO,
        )

    def exit_ended(
        self,
        client_order_id: str,
        *,
        broker_filled: Decimal = _ZERO,
        reason: ExitReason | None = None,
    ) -> Transition:
        """The exit order ``client_order_id`` is terminal at the broker (cancelled,
        rejected, or filled), IB reporting ``broker_filled`` shares filled.

        The current exit stops working: the position is ``OPEN`` again when shares are
        left (so the monitor may retry with :attr:`next_exit_client_order_id`), after
        waiting ``CLOSING`` for fills IB reported but we have not booked. An earlier
        exit's end changes nothing (its late fills still book). An exit we never
        recorded is recorded as ended, with ``reason`` (the order's own, when the caller
        knows it), unless another exit works; a missing reason of the current exit is
        filled in from ``reason``, as :meth:`submit_exit` does. Repeats change nothing.
        """
        _non_negative(broker_filled, "broker_filled")
        _require(
            client_order_id != self.entry_client_order_id,
            "the entry order is not an exit: use entry_ended()",
        )
        current = self.exit_client_order_id
        if client_order_id not in self.exit_client_order_ids:
            if self.exit_working:
                return self._same()
            return self._to(
                exit_client_order_ids=(*self.exit_client_order_ids, client_order_id),
                exit_reason=reason,
                exit_broker_filled=broker_filled,
            )
        if client_order_id != current:
            return self._same()
        filled = broker_filled if self.exit_working else max(self.exit_broker_filled, broker_filled)
        named = self.exit_reason or reason
        if (
            not self.exit_working
            and filled == self.exit_broker_filled
            and named == self.exit_reason
        ):
            return self._same()
        return self._to(exit_working=False, exit_broker_filled=filled, exit_reason=named)

    def set_levels(self, stop_loss: Decimal | None, take_profit: Decimal | None) -> Transition:
        """Replace the stop and the target (``None`` removes one).

        Raises :class:`IllegalTransition` on a ``CLOSED`` or ``CANCELLED`` position and
        :class:`InvalidLevels` for levels that cannot protect it.
        """
        status = self.status
        if status not in ACTIVE_STATUSES:
            raise IllegalTransition("set the stop and target", status)
        _check_levels(self.side, stop_loss, take_profit)
        return self._to(stop_loss=stop_loss, take_profit=take_profit)

    # -- helpers -------------------------------------------------------------------

    def _same(self) -> Transition:
        return Transition(self, self)

    def _to(self, **changes: Any) -> Transition:
        return Transition(self, replace(self, **changes))


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one input: the position before and after."""

    previous: PositionState
    state: PositionState

    @property
    def changed(self) -> bool:
        """Whether any fact changed (persist, bump the revision, publish if so)."""
        return self.state != self.previous

    @property
    def entered(self) -> PositionStatus | None:
        """The status the position entered, or ``None`` if it did not change."""
        return entered_status(self.previous, self.state)


def entered_status(previous: PositionState, current: PositionState) -> PositionStatus | None:
    """The status ``current`` entered coming from ``previous``, if it changed.

    Stamp ``opened_at`` the first time ``OPEN`` is entered (a re-open after a cancelled
    exit keeps the first stamp) and ``closed_at`` whenever ``CLOSED`` is (cleared if a
    late entry fill re-opens the position).
    """
    status = current.status
    return None if status is previous.status else status
