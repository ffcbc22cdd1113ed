"""The lifecycle of one of our orders, as a pure state machine.

:class:`OrderState` holds the *facts* we know about an order: its quantity, the
executions we booked, whether the broker has acknowledged it, whether we asked to
cancel it, what the broker finally did with it, and whether its submit was ambiguous.
Its :attr:`~OrderState.status` (an :class:`~ibflow.contracts.enums.OrderStatus`) is
*derived* from those facts, never stored on its own, so it cannot drift from them::

    PENDING --sent() / any broker status / an execution--> SUBMITTED
    SUBMITTED --execution--> PARTIALLY_FILLED --executions reach quantity--> FILLED
    PENDING | SUBMITTED | PARTIALLY_FILLED --request_cancel()--> CANCEL_REQUESTED
    any working state --IB Cancelled / ApiCancelled--> CANCELLED (the remainder only)
    any working state --IB Inactive with an error--> REJECTED (CANCELLED if anything filled)
    PENDING --not_sent()--> REJECTED          (the bridge proved it never reached IB)
    any working state --mark_unknown()--> UNKNOWN
    PENDING | UNKNOWN --resolve_unknown()--> SUBMITTED (found) | PENDING (resend)
                                           | REJECTED / CANCELLED (not found)

Every input returns a :class:`Transition` (the state before, the state after, and
:attr:`Transition.entered`, the status entered if the status changed, for stamping the
``<status>_at`` columns: :func:`timestamp_column`). Refusals raise the errors of
:mod:`ibflow_order_manager.domain.errors`.

Rules worth knowing (failure modes 5, 8, 10, 11 of ``ib-failure-modes.md``):

* **Filled quantity is the sum of our booked executions**, never IB's status report.
  IB's ``Filled`` status (or a ``filled`` count above ours) only acknowledges the order
  and is recorded as :attr:`OrderState.broker_filled`: the status *waits for the
  executions*, and becomes ``FILLED`` when the booked executions reach the quantity.
  :attr:`OrderState.awaiting_executions` shows the gap (the executions are in flight,
  or lost and due from the reconciliation's ``reqExecutions``).
* **Out-of-order events are normal.** An execution before any acknowledgement
  acknowledges the order (IB may skip ``orderStatus`` for an instantly filled market
  order). Any recognised broker status acknowledges it too and clears ``UNKNOWN`` (the
  broker has the order, so the submit was not lost).
* **Terminal states never go back to working.** Once ``FILLED``, ``CANCELLED`` or
  ``REJECTED``, working statuses (``Submitted``...) are ignored as stale and
  :meth:`~OrderState.request_cancel` / :meth:`~OrderState.mark_unknown` refuse. Only
  executions still count: a **late execution after a cancel is booked** (the status
  stays ``CANCELLED``, or becomes ``FILLED`` once the executions reach the quantity),
  and an execution on a ``REJECTED`` order (IB did trade part of it after all) makes it
  ``CANCELLED`` (or ``FILLED``): an order with fills is never shown as rejected.
* **Cancelled means the remainder.** A cancelled order keeps the fills its executions
  say; :attr:`OrderState.open_quantity` is zero once terminal, so only the unfilled
  remainder's cash reservation is released.
* **Inactive** with an error is a rejection (``REJECTED``, or ``CANCELLED`` when
  something already filled, by our executions or IB's count). Without an error it is
  *kept*: IB also reports held orders (outside regular hours, awaiting a locate...)
  as ``Inactive``; it acknowledges the order and changes nothing else.
* A **cancel request stays requested** when a working status arrives afterwards (the
  report may predate the cancel); only :meth:`~OrderState.cancel_refused` clears it.
* Execution de-duplication (by IB's ``execId``) is the caller's job: every execution
  given to :meth:`~OrderState.on_execution` is booked.

Money is exact :class:`~decimal.Decimal`: ``filled_notional`` is the exact sum of
``shares * price``; :attr:`OrderState.avg_fill_price` divides in the default decimal
context (28 significant digits) and is not rounded further (rounding is for display).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ibflow.contracts.enums import IbOrderStatus, OrderStatus
from ibflow_order_manager.domain.errors import IllegalTransition, InvalidModification, Overfill

__all__ = [
    "BrokerOutcome",
    "OrderState",
    "Transition",
    "entered_status",
    "timestamp_column",
]

_ZERO = Decimal(0)

_IB = IbOrderStatus

_WORKING_REPORTS = frozenset({_IB.PENDING_SUBMIT, _IB.PRE_SUBMITTED, _IB.SUBMITTED, _IB.FILLED})
"""Statuses that acknowledge the order and change nothing else (``Filled`` included:
the status waits for the executions)."""

_CANCELLED_REPORTS = frozenset({_IB.API_CANCELLED, _IB.CANCELLED})
_CANCEL_NOTICE = "202:"
"""How the bridge's error text of IB's "Order Canceled" notice starts (``<code>: <text>``)."""
_ACCEPTED_BY_IB = frozenset({_IB.PRE_SUBMITTED.value, _IB.SUBMITTED.value, _IB.FILLED.value})

_STALE_WHEN_TERMINAL = frozenset(
    {_IB.PENDING_SUBMIT, _IB.PRE_SUBMITTED, _IB.SUBMITTED, _IB.PENDING_CANCEL}
)
"""Reports of a working order: on a terminal order they can only be stale."""

NOT_FOUND_AT_BROKER = "not found at the broker"
NEVER_AT_BROKER = "accepted by the bridge but never reached IB (not found at the broker)"
"""Default :attr:`OrderState.reason` when :meth:`OrderState.resolve_unknown` finds nothing."""


class BrokerOutcome(StrEnum):
    """What the broker (or the bridge) finally did with the order, if anything yet.

    ``cancelled``: IB cancelled it (``Cancelled``/``ApiCancelled``; ``Inactive`` with an
    error after something filled; gone from the broker after it had been acknowledged).
    ``rejected``: it never worked (``Inactive`` with an error and nothing filled; the
    bridge proved it never reached IB; not found at the broker and never acknowledged).
    """

    NONE = "none"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive(value: Decimal, name: str) -> None:
    _require(value.is_finite() and value > 0, f"{name} must be a positive number, got {value}")


def _non_negative(value: Decimal, name: str) -> None:
    _require(value.is_finite() and value >= 0, f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class OrderState:
    """The facts about one order; :attr:`status` is derived from them.

    Build a new order with :meth:`new`; rebuild a stored one with the constructor (it
    checks the invariants: ``0 <= filled_quantity <= quantity``, no notional without
    fills). Every input method returns a :class:`Transition` and never mutates.
    """

    quantity: Decimal
    """The order's total quantity (a modify changes it; the remainder follows)."""
    filled_quantity: Decimal = _ZERO
    """Sum of the shares of our booked executions."""
    filled_notional: Decimal = _ZERO
    """Sum of ``shares * price`` of our booked executions (for the average price)."""
    acknowledged: bool = False
    """The broker has the order: the bridge placed it, IB reported a status, or it filled."""
    cancel_requested: bool = False
    """We (or someone at TWS: IB's ``PendingCancel``) asked for the order to be cancelled."""
    outcome: BrokerOutcome = BrokerOutcome.NONE
    """What the broker finally did with the order (``none`` while working)."""
    unknown: bool = False
    """The submit (or the broker's view) was ambiguous; reconcile before assuming anything."""
    ib_status: str | None = None
    """IB's latest recognised status string for the order."""
    broker_filled: Decimal = _ZERO
    """The highest ``filled`` IB reported in a status (may run ahead of our executions)."""
    broker_remaining: Decimal | None = None
    """IB's ``remaining`` in its latest recognised status report."""
    reason: str | None = None
    """Why the order is rejected, cancelled or unknown (IB's error text where any)."""

    def __post_init__(self) -> None:
        _positive(self.quantity, "quantity")
        _non_negative(self.filled_quantity, "filled_quantity")
        _non_negative(self.filled_notional, "filled_notional")
        _non_negative(self.broker_filled, "broker_filled")
        if self.broker_remaining is not None:
            _non_negative(self.broker_remaining, "broker_remaining")
        _require(
            self.filled_quantity <= self.quantity,
            f"filled_quantity {self.filled_quantity} is above quantity {self.quantity}",
        )
        _require(
            self.filled_quantity > 0 or self.filled_notional == 0,
            "filled_notional must be 0 while nothing is filled",
        )

    @classmethod
    def new(cls, quantity: Decimal) -> OrderState:
        """A new order of ``quantity``: ``PENDING`` (persisted, not yet acknowledged)."""
        return cls(quantity=quantity)

    # -- derived -------------------------------------------------------------------

    @property
    def status(self) -> OrderStatus:  # noqa: PLR0911 - one return per precedence level
        """Our status, derived from the facts (see the module docstring).

        Precedence: fully filled → ``FILLED``; a broker outcome → ``CANCELLED`` /
        ``REJECTED`` (``CANCELLED`` when a rejected order has fills); ``UNKNOWN``;
        ``CANCEL_REQUESTED``; not acknowledged → ``PENDING``; some fills →
        ``PARTIALLY_FILLED``; else ``SUBMITTED``.
        """
        if self.filled_quantity >= self.quantity:
            return OrderStatus.FILLED
        if self.outcome is BrokerOutcome.CANCELLED:
            return OrderStatus.CANCELLED
        if self.outcome is BrokerOutcome.REJECTED:
            return OrderStatus.CANCELLED if self.filled_quantity > 0 else OrderStatus.REJECTED
        if self.unknown:
            return OrderStatus.UNKNOWN
        if self.cancel_requested:
            return OrderStatus.CANCEL_REQUESTED
        if not self.acknowledged:
            return OrderStatus.PENDING
        if self.filled_quantity > 0:
            return OrderStatus.PARTIALLY_FILLED
        return OrderStatus.SUBMITTED

    @property
    def is_terminal(self) -> bool:
        """``FILLED``, ``CANCELLED`` or ``REJECTED``: only late executions still count."""
        return self.status.is_terminal

    @property
    def remaining(self) -> Decimal:
        """Quantity not filled: ``quantity - filled_quantity`` (also once terminal)."""
        return self.quantity - self.filled_quantity

    @property
    def open_quantity(self) -> Decimal:
        """Quantity that may still fill as the order works: :attr:`remaining` while
        working, ``0`` once terminal (what a cash reservation must still cover)."""
        return _ZERO if self.is_terminal else self.remaining

    @property
    def avg_fill_price(self) -> Decimal | None:
        """``filled_notional / filled_quantity``; ``None`` while nothing is filled."""
        if self.filled_quantity == 0:
            return None
        return self.filled_notional / self.filled_quantity

    @property
    def awaiting_executions(self) -> Decimal:
        """How much IB reports filled beyond our booked executions (``0`` when none)."""
        return max(_ZERO, self.broker_filled - self.filled_quantity)

    # -- inputs from the bridge's answers -------------------------------------------

    def sent(self) -> Transition:
        """The bridge placed the order at IB: acknowledged (``PENDING`` → ``SUBMITTED``).

        Nothing changes if already acknowledged or terminal.
        """
        if self.acknowledged or self.is_terminal:
            return self._same()
        return self._to(acknowledged=True, unknown=False)

    def not_sent(self, reason: str) -> Transition:
        """The bridge proved the order never reached IB (``NOT_SENT``): ``REJECTED``.

        Raises :class:`IllegalTransition` once the broker has acknowledged the order or
        anything filled; repeated on a rejected order, nothing changes.
        """
        if self.outcome is BrokerOutcome.REJECTED and not self.acknowledged:
            return self._same()
        if self.acknowledged or self.filled_quantity > 0 or self.is_terminal:
            raise IllegalTransition(
                "record that the order never reached IB", self.status, "the broker has it"
            )
        return self._to(outcome=BrokerOutcome.REJECTED, unknown=False, reason=reason)

    # -- inputs from IB ---------------------------------------------------------------

    def on_broker_status(  # noqa: PLR0911 - one return per kind of report
        self,
        ib_status: str,
        broker_filled: Decimal,
        remaining: Decimal,
        error: str | None = None,
    ) -> Transition:
        """Apply IB's status report (``OrderStatusChanged``).

        * ``PendingSubmit``/``PreSubmitted``/``Submitted``: acknowledged;
        * ``Filled``: acknowledged only; ``FILLED`` waits for the executions
          (:attr:`awaiting_executions` shows the gap);
        * ``PendingCancel``: acknowledged and cancel requested (IB is cancelling it,
          whoever asked);
        * ``Cancelled``/``ApiCancelled``: ``CANCELLED`` (the fills stay as booked), but
          ``REJECTED`` when it is IB refusing the order (an error other than 202, before
          IB ever reported it working, nothing filled, no cancel of ours: ib_async
          reports a 201 rejection as ``Cancelled``);
        * ``Inactive`` with ``error``: ``REJECTED`` (``CANCELLED`` if anything filled);
          without: acknowledged, nothing else (IB's held orders);
        * any other string: nothing changes, and :attr:`Transition.recognised` is
          ``False`` so the caller can log and count it.

        Every recognised status clears ``UNKNOWN`` and records ``ib_status``,
        ``broker_filled`` (never lowered) and ``broker_remaining``. On a terminal order
        working reports are ignored as stale; final ones are recorded without changing
        the status.
        """
        _non_negative(broker_filled, "broker_filled")
        _non_negative(remaining, "remaining")
        try:
            kind = IbOrderStatus(ib_status)
        except ValueError:
            return Transition(self, self, recognised=False)
        held = kind is _IB.INACTIVE and not error
        if self.is_terminal and (kind in _STALE_WHEN_TERMINAL or held):
            return self._same()
        seen: dict[str, Any] = {
            "ib_status": kind.value,
            "broker_filled": max(self.broker_filled, broker_filled),
            "broker_remaining": remaining,
        }
        if self.is_terminal:
            return self._to(**seen)
        seen.update(acknowledged=True, unknown=False)
        if kind in _WORKING_REPORTS or held:
            return self._to(**seen)
        if kind is _IB.PENDING_CANCEL:
            return self._to(cancel_requested=True, **seen)
        if kind in _CANCELLED_REPORTS and not self._refused_by(error, seen["broker_filled"]):
            return self._to(outcome=BrokerOutcome.CANCELLED, reason=error or self.reason, **seen)
        # Inactive with an error, or a refusal reported as Cancelled: IB refused the
        # order (or stopped what was left of it).
        traded = self.filled_quantity > 0 or seen["broker_filled"] > 0
        outcome = BrokerOutcome.CANCELLED if traded else BrokerOutcome.REJECTED
        return self._to(outcome=outcome, reason=error, **seen)

    def _refused_by(self, error: str | None, broker_filled: Decimal) -> bool:
        """Whether a ``Cancelled`` report is IB refusing the order: with an error other
        than IB's cancellation notice (202), before IB ever reported it working (no
        ``PreSubmitted``/``Submitted``), nothing filled and no cancel of ours. ib_async
        turns a rejection (error 201 and the like) into ``Cancelled``."""
        return (
            error is not None
            and not error.startswith(_CANCEL_NOTICE)
            and not self.cancel_requested
            and self.ib_status not in _ACCEPTED_BY_IB
            and self.filled_quantity == 0
            and broker_filled == 0
        )

    def on_execution(self, shares: Decimal, price: Decimal) -> Transition:
        """Book one execution of ``shares`` at ``price`` (already de-duplicated by execId).

        Acknowledges the order and clears ``UNKNOWN`` (the broker traded it). Booked in
        every state, terminal ones included (a late fill after a cancel): see the module
        docstring for the status that follows. Raises :class:`Overfill` if the fills
        would exceed the quantity (nothing is booked).
        """
        _positive(shares, "shares")
        _positive(price, "price")
        if self.filled_quantity + shares > self.quantity:
            raise Overfill(self.quantity, self.filled_quantity, shares)
        return self._to(
            filled_quantity=self.filled_quantity + shares,
            filled_notional=self.filled_notional + shares * price,
            acknowledged=True,
            unknown=False,
        )

    # -- inputs from our commands ----------------------------------------------------

    def request_cancel(self) -> Transition:
        """We ask for the remainder to be cancelled: ``CANCEL_REQUESTED``.

        Idempotent (nothing changes when already requested). Raises
        :class:`IllegalTransition` on a terminal order. On a ``PENDING`` order it is
        recorded too (the cancel follows the order once IB has it); an ``UNKNOWN`` order
        stays ``UNKNOWN`` (with the request remembered) until resolved.
        """
        if self.is_terminal:
            raise IllegalTransition("request a cancel", self.status)
        if self.cancel_requested:
            return self._same()
        return self._to(cancel_requested=True)

    def cancel_refused(self, reason: str) -> Transition:
        """IB refused the cancel (e.g. error 161/10148): the order works on, as before.

        Nothing changes if no cancel was requested or the order is terminal.
        """
        if not self.cancel_requested or self.is_terminal:
            return self._same()
        return self._to(cancel_requested=False, reason=reason)

    def modify_quantity(self, new_quantity: Decimal) -> Transition:
        """Change the order's total quantity (IB's ``totalQuantity``); the remainder
        becomes ``new_quantity - filled_quantity``.

        Raises :class:`InvalidModification` when the order is not a working
        acknowledged order (``PENDING``, ``UNKNOWN``, ``CANCEL_REQUESTED``, terminal),
        or when ``new_quantity`` is not above what already filled (our executions, or
        IB's count if higher). The same quantity changes nothing.
        """
        status = self.status
        if not (new_quantity.is_finite() and new_quantity > 0):
            raise InvalidModification(f"quantity must be positive, got {new_quantity}")
        if status.is_terminal:
            raise InvalidModification(f"cannot modify: order is {status.value}")
        if status is OrderStatus.UNKNOWN:
            raise InvalidModification(
                "cannot modify: order is UNKNOWN, it must be reconciled with the broker first"
            )
        if status is OrderStatus.PENDING:
            raise InvalidModification("cannot modify: order is PENDING, IB has not acknowledged it")
        if status is OrderStatus.CANCEL_REQUESTED:
            raise InvalidModification("cannot modify: a cancel was requested for this order")
        floor = max(self.filled_quantity, self.broker_filled)
        if new_quantity <= floor:
            detail = f"{self.filled_quantity}"
            if self.broker_filled > self.filled_quantity:
                detail = f"{floor} (booked {self.filled_quantity}, IB reports {self.broker_filled})"
            raise InvalidModification(
                f"quantity: new total {new_quantity} must be above the filled quantity {detail}"
            )
        if new_quantity == self.quantity:
            return self._same()
        return self._to(quantity=new_quantity)

    def modification_confirmed(self, new_quantity: Decimal) -> Transition:
        """IB accepted our modification to a total of ``new_quantity``: record it, in
        whatever state the executions booked meanwhile left the order.

        IB may fill the new remainder before its answer is recorded: a cut from 250 to
        180 whose last 80 shares filled at once arrives with 180 booked, and is
        ``FILLED`` here (:meth:`modify_quantity` would refuse it, as if nothing had
        changed). The quantity never goes below the booked executions: IB refuses a
        total below its filled count, so such a report is stale.
        """
        _positive(new_quantity, "new_quantity")
        quantity = max(new_quantity, self.filled_quantity)
        if quantity == self.quantity:
            return self._same()
        return self._to(quantity=quantity)

    def grown_by_broker(self, cumulative: Decimal) -> Transition:
        """IB's cumulative fill of the order, ``cumulative``, is above our quantity: its
        order is bigger than our record (a modification IB applied before we recorded
        its answer, or one made at TWS). The quantity becomes ``cumulative``, so the
        execution that showed it can be booked; an order that was ``FILLED`` at the old
        quantity is partly filled again until the answer or the executions say more.
        """
        if cumulative <= self.quantity:
            return self._same()
        return self._to(quantity=cumulative)

    # -- ambiguity -------------------------------------------------------------------

    def mark_unknown(self, reason: str) -> Transition:
        """The broker's view of the order could not be established (a submit timed out,
        the bridge failed unexpectedly, the order was lost while disconnected):
        ``UNKNOWN`` until :meth:`resolve_unknown` or a broker fact says otherwise.

        Allowed from any working state (idempotent when already unknown; the first
        reason is kept). Raises :class:`IllegalTransition` on a terminal order.
        """
        if self.is_terminal:
            raise IllegalTransition("mark the order unknown", self.status)
        if self.unknown:
            return self._same()
        return self._to(unknown=True, reason=reason)

    def resolve_unknown(
        self, *, at_broker: bool, resend: bool = False, reason: str | None = None
    ) -> Transition:
        """The broker was asked for the order's orderRef (open and completed orders).

        * ``at_broker``: IB has it: acknowledged (then apply its status and executions);
        * not at the broker and ``resend``: back to ``PENDING``, to be sent again with
          the same client order id. Refused (:class:`IllegalTransition`) when the broker
          ever acknowledged the order, anything filled, or a cancel was requested:
          re-sending then could place it twice or against our wish;
        * not at the broker, no resend: ``REJECTED`` if it never reached IB,
          ``CANCELLED`` if IB had acknowledged it (it was working and is gone), with
          ``reason`` (default "not found at the broker").

        Only ``PENDING`` or ``UNKNOWN`` orders are resolved (:class:`IllegalTransition`
        otherwise, e.g. a ``PENDING`` order with a cancel requested counts as pending).
        """
        if at_broker and resend:
            raise ValueError("resend applies only to an order not found at the broker")
        if self.is_terminal or not (self.unknown or not self.acknowledged):
            raise IllegalTransition(
                "resolve the order", self.status, "only PENDING or UNKNOWN orders are resolved"
            )
        if at_broker:
            return self._to(acknowledged=True, unknown=False, reason=None)
        if resend:
            if self.acknowledged or self.filled_quantity > 0:
                raise IllegalTransition(
                    "resend", self.status, "IB acknowledged it; a resend could place it twice"
                )
            if self.cancel_requested:
                raise IllegalTransition("resend", self.status, "a cancel was requested")
            return self._to(unknown=False, reason=None)
        outcome = BrokerOutcome.CANCELLED if self.acknowledged else BrokerOutcome.REJECTED
        return self._to(outcome=outcome, unknown=False, reason=reason or NOT_FOUND_AT_BROKER)

    def never_reached_broker(self, reason: str = NEVER_AT_BROKER) -> Transition:
        """The bridge accepted the order but IB has no such orderRef and never reported
        anything about it (it was written into a connection that died): ``REJECTED``,
        with ``reason``. Only for an order without any broker fact — no IB status, nothing
        filled — and not terminal (:class:`IllegalTransition` otherwise)."""
        if self.is_terminal or self.ib_status is not None or self.broker_filled > 0:
            raise IllegalTransition(
                "reject an order IB never saw", self.status, "IB reported on it"
            )
        if self.filled_quantity > 0:
            raise IllegalTransition("reject an order IB never saw", self.status, "it has fills")
        return self._to(outcome=BrokerOutcome.REJECTED, unknown=False, reason=reason)

    # -- helpers -------------------------------------------------------------------

    def _same(self) -> Transition:
        return Transition(self, self)

    def _to(self, **changes: Any) -> Transition:
        return Transition(self, replace(self, **changes))


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one input: the state before and after.

    ``recognised`` is ``False`` only for an IB status string we do not know (the state
    is then unchanged; log and count it).
    """

    previous: OrderState
    state: OrderState
    recognised: bool = True

    @property
    def changed(self) -> bool:
        """Whether any fact changed (persist and publish ``OrderBookUpdated`` if so)."""
        return self.state != self.previous

    @property
    def entered(self) -> OrderStatus | None:
        """The status the order entered, or ``None`` if its status did not change."""
        return entered_status(self.previous, self.state)


def entered_status(previous: OrderState, current: OrderState) -> OrderStatus | None:
    """The :class:`OrderStatus` ``current`` entered coming from ``previous``, if it
    changed; stamp its :func:`timestamp_column` with the transition time."""
    status = current.status
    return None if status is previous.status else status


def timestamp_column(status: OrderStatus) -> str:
    """The ``orders`` column stamped when an order enters ``status``:
    ``"submitted_at"``, ``"partially_filled_at"``, ``"cancel_requested_at"``..."""
    return f"{status.value.lower()}_at"
