"""Events the engine emits, in the order the server must translate them to wire messages.

Per execution the order is: :class:`ExecutionOccurred` → :class:`OrderStatusChanged`
(filled/remaining updated; Filled when complete) → :class:`CommissionCharged` →
:class:`PositionChanged` → :class:`AccountChanged` (TWS doc §4.6 "Fill"). A new order
emits ``OrderStatusChanged(PreSubmitted)`` then, once working,
``OrderStatusChanged(Submitted)``. A cancel emits ``OrderStatusChanged(Cancelled)`` then
``OrderError(code=202)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from ibflow_gateway_sim.domain.instruments import Instrument
from ibflow_gateway_sim.domain.orders import SimOrder

__all__ = [
    "AccountChanged",
    "CommissionCharged",
    "EngineEvent",
    "ExecutionOccurred",
    "OrderError",
    "OrderRejected",
    "OrderStatusChanged",
    "PositionChanged",
    "SimExecution",
]


@dataclass(frozen=True, slots=True)
class SimExecution:
    """One execution (IB execDetails). ``order`` is the order snapshot AFTER this fill.

    ``side`` is BOT/SLD; ``cum_qty``/``avg_price`` are the order's cumulative figures
    after this execution; ``liquidity`` is IB's lastLiquidity (1 = added, 2 = removed).
    """

    exec_id: str
    order: SimOrder
    account: str
    symbol: str
    con_id: int
    side: Literal["BOT", "SLD"]
    shares: Decimal
    price: Decimal
    time: datetime
    cum_qty: Decimal
    avg_price: Decimal
    liquidity: int
    exchange: str = "SMART"


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    """An order's state changed (send openOrder + orderStatus with this snapshot)."""

    order: SimOrder


@dataclass(frozen=True, slots=True)
class ExecutionOccurred:
    """A (partial) fill happened (send execDetails with reqId -1)."""

    execution: SimExecution


@dataclass(frozen=True, slots=True)
class CommissionCharged:
    """Commission for one execution (send commissionReport).

    ``realized_pnl`` is ``None`` for executions that only open/increase a position
    (IB then sends UNSET_DOUBLE); otherwise the P&L realised by this execution, net of
    all commissions (entry commissions are inside the average cost).
    """

    exec_id: str
    account: str
    commission: Decimal
    currency: str
    realized_pnl: Decimal | None


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """A NEW order was refused (send ``error(order_id, code, text)``; text is complete,
    e.g. "Order rejected - reason:..."). The engine keeps no order for it, but the id
    counts for :meth:`Engine.max_order_id`."""

    client_id: int
    order_id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class OrderError:
    """An error about an order request that does not create a new order
    (202 after a cancel, 10147, 10148, 103, 104, 105, 201 on a refused modification)."""

    client_id: int
    order_id: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class PositionChanged:
    """A position changed (send position / updatePortfolio). ``avg_cost`` includes
    commissions, per share, like IB's position avgCost."""

    account: str
    instrument: Instrument
    position: Decimal
    avg_cost: Decimal


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """Account values after a change: the FULL tag → value dict of
    :meth:`Account.account_values` (the server diffs if it wants only changes)."""

    account: str
    values: dict[str, str]


EngineEvent = (
    OrderStatusChanged
    | ExecutionOccurred
    | CommissionCharged
    | OrderRejected
    | OrderError
    | PositionChanged
    | AccountChanged
)
