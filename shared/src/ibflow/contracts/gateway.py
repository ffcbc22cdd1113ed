"""The gateway-bridge's side: its connection, IB's errors, broker snapshots, and the
broker-level commands only the order-manager (and, for refreshes, other services) send it.

Broker commands are separate from :class:`~ibflow.contracts.orders.SubmitOrder` on
purpose: ``SubmitOrder`` asks *our* order-manager, which checks risk and the halt switch,
records the order and only then sends :class:`PlaceBrokerOrder` to the bridge on a
per-portfolio subject that nothing else may publish on. The bridge does no risk checks.
"""

from __future__ import annotations

import uuid
from typing import Final, Self

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from ibflow.contracts.base import (
    Actor,
    ClientOrderId,
    Command,
    Contract,
    Event,
    Money,
    PortfolioId,
    PositiveMoney,
    Symbol,
    UtcDatetime,
)
from ibflow.contracts.enums import (
    BrokerQuery,
    ConnectionState,
    GatewayType,
    OrderPurpose,
    OrderSide,
    TimeInForce,
)
from ibflow.contracts.execution import OrderStatusChanged
from ibflow.contracts.orders import OrderRef, OrderTerms

TAKE_PROFIT_SUFFIX: Final = ":tp"
"""Appended to a bracket parent's client order id to name its take-profit child."""
STOP_LOSS_SUFFIX: Final = ":sl"
"""Appended to a bracket parent's client order id to name its stop-loss child."""

_CLIENT_ORDER_ID: Final = TypeAdapter(ClientOrderId)
_ONE_SHOT_TIFS: Final = frozenset({TimeInForce.IOC, TimeInForce.FOK, TimeInForce.OPG})


class GatewayConnectionChanged(Event):
    """The bridge's connection to a portfolio's IB Gateway changed state.

    The latest one per subject is the connection's current state (consumers starting up
    read it with ``deliver_policy="last_per_subject"``).
    """

    portfolio_id: PortfolioId
    state: ConnectionState
    previous_state: ConnectionState | None = None
    connected: bool
    """The API socket to the Gateway is up (it may be up while IB itself is not)."""
    gateway_type: GatewayType
    host: str
    port: int = Field(ge=1, le=65535)
    client_id: int
    account_id: str | None = None
    connection_time: UtcDatetime | None = None
    last_heartbeat: UtcDatetime | None = None
    """When the bridge last heard from the Gateway."""
    error_message: str | None = None
    server_version: int | None = None

    @property
    def ready(self) -> bool:
        """True when orders may be sent through this connection."""
        return self.state is ConnectionState.READY


class BrokerErrorReported(Event):
    """IB reported an error or warning (``error`` callback), for an order, a request or
    the connection; codes 2100-2199 are informational."""

    portfolio_id: PortfolioId
    code: int
    message: str
    req_id: int | None = None
    """IB's request id, ``None`` for IB's ``-1`` (not about a request)."""
    order_id: int | None = None
    client_order_id: str | None = None
    symbol: Symbol | None = None
    """The symbol of the request or order the error is about, when the bridge knows it."""


class BrokerSnapshotCompleted(Event):
    """The bridge finished (re)loading the broker's state, after connecting or on request.

    Every ``OrderStatusChanged``, ``ExecutionReported``, ``BrokerPositionReported`` and
    ``AccountValuesReported`` of the snapshot carries its ``snapshot_id`` and precedes
    this event. A failed query makes its part *unknown*, not empty: it is listed in
    ``failed_queries``, its count is ``None`` and ``complete`` is false, so nobody may
    conclude e.g. "no positions" from it. ``causation_id`` is the ``RefreshBrokerState``
    that asked for it, if any.
    """

    portfolio_id: PortfolioId
    snapshot_id: uuid.UUID
    account_id: str | None = None
    reason: str
    """Why it was taken: ``connected``, ``reconnected`` or ``requested``."""
    queries: tuple[BrokerQuery, ...] = Field(min_length=1)
    failed_queries: tuple[BrokerQuery, ...] = ()
    complete: bool
    """True when every query succeeded."""
    position_count: int | None = Field(default=None, ge=0)
    open_order_count: int | None = Field(default=None, ge=0)
    execution_count: int | None = Field(default=None, ge=0)
    started_at: UtcDatetime

    @model_validator(mode="after")
    def _check_outcome(self) -> Self:
        if not set(self.failed_queries) <= set(self.queries):
            raise ValueError("failed_queries must be among queries")
        if self.complete == bool(self.failed_queries):
            raise ValueError("complete must be true exactly when no query failed")
        counts = {
            BrokerQuery.POSITIONS: self.position_count,
            BrokerQuery.ORDERS: self.open_order_count,
            BrokerQuery.EXECUTIONS: self.execution_count,
        }
        for query, count in counts.items():
            known = query in self.queries and query not in self.failed_queries
            if known != (count is not None):
                raise ValueError(f"{query} count must be given exactly when that query succeeded")
        return self

    def dedupe_key(self) -> str:
        """``snapshot:<snapshot_id>``."""
        return f"snapshot:{self.snapshot_id}"


class RefreshBrokerState(Command):
    """Ask the bridge to reload parts of a portfolio's broker state; answered at once with
    ``CommandAccepted``, the result is a :class:`BrokerSnapshotCompleted`."""

    portfolio_id: PortfolioId
    what: tuple[BrokerQuery, ...] = Field(default=tuple(BrokerQuery), min_length=1)
    requested_by: Actor


class PlaceBrokerOrder(OrderTerms, Command):
    """Order-manager → bridge: place this order at IB (``orderRef`` = ``client_order_id``).

    Idempotent: the bridge places an order for a ``client_order_id`` once and answers a
    repeat with ``CommandAccepted.duplicate``.

    **Bracket.** With ``take_profit_price`` and/or ``stop_loss_price`` the order is the
    parent of a bracket: its children are placed with it, in one go, and only work once
    the parent has filled completely. Each child is an order of its own at IB, on the
    opposite side with the parent's quantity, ``tif`` and ``outside_rth``: the take
    profit a ``LMT`` at ``take_profit_price`` with client order id (``orderRef``)
    ``<client_order_id>:tp``, the stop loss a ``STP`` at ``stop_loss_price`` with
    ``<client_order_id>:sl``. The children are one-cancels-the-other: when one fills, IB
    cancels the other; cancelling the parent before it fills cancels both. Idempotency
    stays on the parent's ``client_order_id``. Validation: for a ``BUY`` parent the take
    profit is above the stop loss, and above the parent's entry price (``limit_price``,
    or ``stop_price`` of a ``STP``) while the stop loss is below it; mirrored for a
    ``SELL``. A bracket's ``tif`` must let its children rest (not ``IOC``, ``FOK`` or
    ``OPG``), and its ``client_order_id`` must leave room for the 3-character suffixes.
    """

    purpose: OrderPurpose | None = None
    """Why the order exists (its ``SubmitOrder``'s purpose). The bridge sends an ``exit``
    ahead of the other orders waiting for IB's message rate (a stop must not wait behind
    a morning burst of entries); ``None`` (an older order-manager) is an ordinary order."""
    take_profit_price: PositiveMoney | None = None
    """Bracket: limit price of the take-profit child (``LMT``, opposite side, parent's
    quantity; client order id ``<client_order_id>:tp``). Above the entry for a ``BUY``
    parent, below it for a ``SELL``."""
    stop_loss_price: PositiveMoney | None = None
    """Bracket: stop (trigger) price of the stop-loss child (``STP``, opposite side,
    parent's quantity; client order id ``<client_order_id>:sl``). Below the entry for a
    ``BUY`` parent, above it for a ``SELL``."""

    @model_validator(mode="after")
    def _check_bracket(self) -> Self:
        tp, sl = self.take_profit_price, self.stop_loss_price
        if tp is None and sl is None:
            return self
        for child in self.bracket_client_order_ids()[1:]:
            try:
                _CLIENT_ORDER_ID.validate_python(child)
            except ValidationError:
                raise ValueError(
                    f"client_order_id {self.client_order_id!r} is too long for a bracket: its "
                    f"child {child!r} would not be a valid client order id (at most 64 "
                    f"characters, so a bracket parent's id may have at most 61)"
                ) from None
        if self.tif in _ONE_SHOT_TIFS:
            raise ValueError(
                f"a bracket cannot have tif {self.tif}: its children take the parent's tif "
                "and must be able to rest (use DAY or GTC)"
            )
        buy = self.side is OrderSide.BUY
        above, below = ("above", "below") if buy else ("below", "above")
        if tp is not None and sl is not None and not (tp > sl if buy else tp < sl):
            raise ValueError(
                f"take_profit_price must be {above} stop_loss_price for a {self.side} parent"
            )
        entry = self.limit_price if self.limit_price is not None else self.stop_price
        if entry is not None:
            name = "limit_price" if self.limit_price is not None else "stop_price"
            if tp is not None and not (tp > entry if buy else tp < entry):
                raise ValueError(
                    f"take_profit_price must be {above} the parent's {name} for a {self.side}"
                )
            if sl is not None and not (sl < entry if buy else sl > entry):
                raise ValueError(
                    f"stop_loss_price must be {below} the parent's {name} for a {self.side}"
                )
        return self

    @property
    def is_bracket(self) -> bool:
        """True when the order has a take-profit and/or a stop-loss child."""
        return self.take_profit_price is not None or self.stop_loss_price is not None

    @property
    def take_profit_client_order_id(self) -> str | None:
        """``<client_order_id>:tp`` when there is a take-profit child, else ``None``."""
        if self.take_profit_price is None:
            return None
        return f"{self.client_order_id}{TAKE_PROFIT_SUFFIX}"

    @property
    def stop_loss_client_order_id(self) -> str | None:
        """``<client_order_id>:sl`` when there is a stop-loss child, else ``None``."""
        if self.stop_loss_price is None:
            return None
        return f"{self.client_order_id}{STOP_LOSS_SUFFIX}"

    @property
    def child_side(self) -> OrderSide:
        """The side of a bracket's children: the opposite of the parent's."""
        return OrderSide.SELL if self.side is OrderSide.BUY else OrderSide.BUY

    def bracket_client_order_ids(self) -> tuple[str, ...]:
        """The client order ids this command places: the parent's, then the take
        profit's and the stop loss's when given."""
        children = (self.take_profit_client_order_id, self.stop_loss_client_order_id)
        return (self.client_order_id, *(coid for coid in children if coid is not None))

    def dedupe_key(self) -> str:
        """``cmd:place:<client_order_id>``."""
        return f"cmd:place:{self.client_order_id}"


class ModifyBrokerOrder(OrderTerms, Command):
    """Order-manager → bridge: re-send a working order with these complete new terms."""

    revision: int = Field(ge=1)
    """The ``OrderBookUpdated`` revision that holds these terms."""

    def dedupe_key(self) -> str:
        """``cmd:broker_modify:<client_order_id>:<revision>``."""
        return f"cmd:broker_modify:{self.client_order_id}:{self.revision}"


class CancelBrokerOrder(OrderRef, Command):
    """Order-manager → bridge: cancel this order at IB (idempotent)."""

    def dedupe_key(self) -> str:
        """``cmd:broker_cancel:<client_order_id>``."""
        return f"cmd:broker_cancel:{self.client_order_id}"


class PreviewBrokerOrder(OrderTerms, Command):
    """Ask IB what an order would do to the account (a what-if order): margins before,
    change and after, and IB's commission estimate. Nothing is placed;
    ``client_order_id`` only labels the question. Answered with
    :class:`BrokerOrderPreviewed`; a failed query is an error reply (``not_ready``,
    ``timeout``, ``invalid_request`` naming the symbol)."""


class BrokerOrderPreviewed(Contract):
    """IB's what-if answer to a :class:`PreviewBrokerOrder` (``None``: IB gave no figure)."""

    client_order_id: ClientOrderId
    init_margin_before: Money | None = None
    init_margin_change: Money | None = None
    init_margin_after: Money | None = None
    maint_margin_before: Money | None = None
    maint_margin_change: Money | None = None
    maint_margin_after: Money | None = None
    equity_with_loan_before: Money | None = None
    equity_with_loan_change: Money | None = None
    equity_with_loan_after: Money | None = None
    commission: Money | None = None
    min_commission: Money | None = None
    max_commission: Money | None = None
    commission_currency: str | None = None
    warning: str | None = None
    """IB's warning text about the order, if any."""


class FindBrokerOrder(OrderRef, Command):
    """Order-manager → bridge: does IB have an order with this ``orderRef``, open or
    completed? Answered with :class:`BrokerOrderSearched`; an error reply (``not_ready``,
    ``timeout``) means *unknown*, never "not there"."""


class BrokerOrderSearched(Contract):
    """The answer to :class:`FindBrokerOrder`: found or not, and IB's view of it."""

    client_order_id: ClientOrderId
    found: bool
    status: OrderStatusChanged | None = None
    """The order's current status at IB, when found."""
