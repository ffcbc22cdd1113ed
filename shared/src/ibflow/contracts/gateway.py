"""The gateway-bridge's side: its connection, IB's errors, broker snapshots, and the
broker-level commands only the order-manager (and, for refreshes, other services) send it.

Broker commands are separate from :class:`~ibflow.contracts.orders.SubmitOrder` on
purpose: ``SubmitOrder`` asks *our* order-manager, which checks risk and the halt switch,
records the order and only then sends :class:`PlaceBrokerOrder` to the bridge on a
per-portfolio subject that nothing else may publish on. The bridge does no risk checks.
"""

from __future__ import annotations

import uuid
from typing import Self

from pydantic import Field, model_validator

from ibflow.contracts.base import Actor, Command, Event, PortfolioId, Symbol, UtcDatetime
from ibflow.contracts.enums import BrokerQuery, ConnectionState, GatewayType
from ibflow.contracts.orders import OrderRef, OrderTerms


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
    """

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
