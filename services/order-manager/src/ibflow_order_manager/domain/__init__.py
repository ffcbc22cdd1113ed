"""Pure domain logic of the order-manager: no I/O, no asyncio, no database, no clock.

* :mod:`~ibflow_order_manager.domain.lifecycle`: the order lifecycle state machine
  (:class:`OrderState`, :class:`Transition`, :func:`entered_status`);
* :mod:`~ibflow_order_manager.domain.errors`: the refusals it raises
  (:class:`OrderDomainError` and its subclasses);
* :mod:`~ibflow_order_manager.domain.pricing`: ticks, notionals, cash reservations
  and cash deltas, exact Decimal;
* :mod:`~ibflow_order_manager.domain.risk`: the pre-trade risk rules
  (:func:`check_risk`) and the daily loss trigger (:func:`crossed_daily_loss`);
* :mod:`~ibflow_order_manager.domain.sizing`: morning entry sizing
  (:func:`size_entry`) and the deterministic entry ids.
"""

from __future__ import annotations

from ibflow_order_manager.domain.errors import (
    IllegalTransition,
    InvalidModification,
    OrderDomainError,
    Overfill,
)
from ibflow_order_manager.domain.lifecycle import (
    BrokerOutcome,
    OrderState,
    Transition,
    entered_status,
    timestamp_column,
)
from ibflow_order_manager.domain.pricing import (
    DEFAULT_BUFFER_FRACTION,
    cash_delta,
    commission_cash_delta,
    format_amount,
    is_on_tick,
    order_notional,
    release_for_fill,
    remaining_reservation,
    reservation,
    reservation_price,
    round_to_tick,
    tick_size,
)
from ibflow_order_manager.domain.risk import (
    ProposedOrder,
    RiskContext,
    RiskLimits,
    RiskRefusal,
    RiskRule,
    check_risk,
    crossed_daily_loss,
    is_reduction,
    risk_refusals,
)
from ibflow_order_manager.domain.sizing import (
    Sized,
    Skipped,
    SkipReason,
    entry_client_order_id,
    entry_position_id,
    round_quantity,
    size_entry,
)

__all__ = [
    "DEFAULT_BUFFER_FRACTION",
    "BrokerOutcome",
    "IllegalTransition",
    "InvalidModification",
    "OrderDomainError",
    "OrderState",
    "Overfill",
    "ProposedOrder",
    "RiskContext",
    "RiskLimits",
    "RiskRefusal",
    "RiskRule",
    "Sized",
    "SkipReason",
    "Skipped",
    "Transition",
    "cash_delta",
    "check_risk",
    "commission_cash_delta",
    "crossed_daily_loss",
    "entered_status",
    "entry_client_order_id",
    "entry_position_id",
    "format_amount",
    "is_on_tick",
    "is_reduction",
    "order_notional",
    "release_for_fill",
    "remaining_reservation",
    "reservation",
    "reservation_price",
    "risk_refusals",
    "round_quantity",
    "round_to_tick",
    "size_entry",
    "tick_size",
    "timestamp_column",
]
