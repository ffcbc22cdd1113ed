"""Pure domain logic of the position-monitor: no I/O, no asyncio, no database, no clock.

* :mod:`~ibflow_position_monitor.domain.position`: the position lifecycle state machine
  (:class:`PositionState`, :class:`Transition`), average prices and realized P&L;
* :mod:`~ibflow_position_monitor.domain.errors`: the refusals it raises
  (:class:`PositionDomainError` and its subclasses);
* :mod:`~ibflow_position_monitor.domain.quotes`: :class:`Quote`, the prices a tick
  carries, and what makes a price usable;
* :mod:`~ibflow_position_monitor.domain.exits`: stop / target evaluation on a quote
  (:func:`evaluate`) and the session close-out (:func:`close_out_decision`);
* :mod:`~ibflow_position_monitor.domain.reconcile`: our book against the broker's
  holdings (:func:`reconcile`);
* :mod:`~ibflow_position_monitor.domain.marks`: unrealized P&L from marks;
* :mod:`~ibflow_position_monitor.domain.ids`: the deterministic exit and adoption ids;
* :mod:`~ibflow_position_monitor.domain.manual`: the manual orders whose facts are skipped.
"""

from __future__ import annotations

from ibflow_position_monitor.domain.errors import (
    ConflictingExecution,
    IllegalTransition,
    InvalidLevels,
    Overfill,
    PositionDomainError,
    SideMismatch,
    UnknownExecution,
)
from ibflow_position_monitor.domain.exits import (
    DEFAULT_CLOSE_OUT_OFFSET_TICKS,
    CloseOutStyle,
    ExitDecision,
    NoExit,
    NoExitReason,
    PriceSource,
    close_out_decision,
    evaluate,
    marketable_limit,
    round_to_tick,
    tick_size,
)
from ibflow_position_monitor.domain.ids import (
    adoption_client_order_id,
    exit_client_order_id,
    exit_position_ids,
    external_position_id,
    is_valid_id,
    safe_id,
)
from ibflow_position_monitor.domain.manual import ManualOrders
from ibflow_position_monitor.domain.marks import (
    Mark,
    MarkSource,
    PortfolioUnrealized,
    mark_position,
    mark_price,
    portfolio_unrealized,
    unrealized_pnl,
)
from ibflow_position_monitor.domain.position import (
    ACTIVE_STATUSES,
    MAX_COMMISSION,
    BookedExecution,
    FillRole,
    PositionState,
    Transition,
    entered_status,
    entry_side,
    exit_side,
)
from ibflow_position_monitor.domain.quotes import Quote, is_usable_price
from ibflow_position_monitor.domain.reconcile import (
    UNKNOWN,
    AdoptExternal,
    Book,
    BrokerHoldings,
    Drift,
    DriftKind,
    Holding,
    Reconciliation,
    Unknown,
    book_of,
    reconcile,
)

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_CLOSE_OUT_OFFSET_TICKS",
    "MAX_COMMISSION",
    "UNKNOWN",
    "AdoptExternal",
    "Book",
    "BookedExecution",
    "BrokerHoldings",
    "CloseOutStyle",
    "ConflictingExecution",
    "Drift",
    "DriftKind",
    "ExitDecision",
    "FillRole",
    "Holding",
    "IllegalTransition",
    "InvalidLevels",
    "ManualOrders",
    "Mark",
    "MarkSource",
    "NoExit",
    "NoExitReason",
    "Overfill",
    "PortfolioUnrealized",
    "PositionDomainError",
    "PositionState",
    "PriceSource",
    "Quote",
    "Reconciliation",
    "SideMismatch",
    "Transition",
    "Unknown",
    "UnknownExecution",
    "adoption_client_order_id",
    "book_of",
    "close_out_decision",
    "entered_status",
    "entry_side",
    "evaluate",
    "exit_client_order_id",
    "exit_position_ids",
    "exit_side",
    "external_position_id",
    "is_usable_price",
    "is_valid_id",
    "mark_position",
    "mark_price",
    "marketable_limit",
    "portfolio_unrealized",
    "reconcile",
    "round_to_tick",
    "safe_id",
    "tick_size",
    "unrealized_pnl",
]
