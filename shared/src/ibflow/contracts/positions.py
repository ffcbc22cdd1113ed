"""Day-trade positions, owned by the position-monitor: their record, the commands that
act on them, and reconciliation of our book against the broker's holdings."""

from __future__ import annotations

import uuid
from decimal import Decimal

from pydantic import Field, computed_field

from ibflow.contracts.base import (
    Actor,
    ClientOrderId,
    Command,
    Contract,
    Event,
    Money,
    PortfolioId,
    PositionId,
    PositiveMoney,
    PositiveQuantity,
    Quantity,
    Symbol,
    UtcDatetime,
)
from ibflow.contracts.enums import ExitReason, PositionSide, PositionStatus


class PositionChanged(Event):
    """The position-monitor's record of one position, published after every transition
    (``revision`` increases by one per transition)."""

    portfolio_id: PortfolioId
    position_id: PositionId
    revision: int = Field(ge=1)
    symbol: Symbol
    side: PositionSide
    status: PositionStatus
    planned_quantity: PositiveQuantity
    """The entry order's quantity."""
    quantity: Quantity = Field(default=Decimal(0), ge=0)
    """Quantity held now (entry fills minus exit fills)."""
    entry_client_order_id: ClientOrderId
    exit_client_order_id: ClientOrderId | None = None
    """The exit order working or last worked, if any."""
    avg_entry_price: Money | None = None
    avg_exit_price: Money | None = None
    stop_loss: PositiveMoney | None = None
    take_profit: PositiveMoney | None = None
    exit_reason: ExitReason | None = None
    realized_pnl: Money = Decimal(0)
    """Realised P&L so far, after commissions."""
    commission: Money = Decimal(0)
    opened_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = None

    def dedupe_key(self) -> str:
        """``position:<position_id>:<revision>``."""
        return f"position:{self.position_id}:{self.revision}"


class FlattenPositions(Command):
    """Ask the position-monitor to close open positions now with market exit orders
    (``exit_reason`` ``manual``); an empty ``symbols`` means every symbol."""

    portfolio_id: PortfolioId | None = None
    """``None``: every portfolio."""
    symbols: tuple[Symbol, ...] = ()
    reason: str = Field(min_length=1)
    requested_by: Actor


class SetPositionLevels(Command):
    """Ask the position-monitor to replace an open position's stop and target; both are
    replaced (``None`` removes a level), so send the current value to keep one."""

    portfolio_id: PortfolioId
    position_id: PositionId
    stop_loss: PositiveMoney | None = None
    take_profit: PositiveMoney | None = None
    requested_by: Actor


class RequestReconciliation(Command):
    """Ask the position-monitor to compare its book with the broker's holdings now."""

    portfolio_id: PortfolioId | None = None
    """``None``: every portfolio."""
    refresh: bool = True
    """Take a fresh broker snapshot first; otherwise use the latest one."""
    requested_by: Actor


class ReconciliationItem(Contract):
    """Our book and the broker's holding of one symbol (signed: short < 0)."""

    symbol: Symbol
    con_id: int | None = None
    book_quantity: Quantity
    broker_quantity: Quantity | None
    """``None``: unknown, the broker's positions could not be queried."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drift(self) -> Quantity | None:
        """Broker minus book; ``None`` when the broker's holding is unknown."""
        return None if self.broker_quantity is None else self.broker_quantity - self.book_quantity


class ReconciliationReported(Event):
    """The position-monitor compared its book with a broker snapshot.

    ``complete`` is false when the snapshot was incomplete: then absent holdings are
    unknown and nothing may be corrected from it.
    """

    portfolio_id: PortfolioId
    snapshot_id: uuid.UUID | None = None
    """The ``BrokerSnapshotCompleted`` compared against."""
    complete: bool
    items: tuple[ReconciliationItem, ...] = ()
    """Every symbol held by us or by the broker."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def in_sync(self) -> bool:
        """True when complete and no symbol drifts."""
        return self.complete and all(item.drift == 0 for item in self.items)


class PositionDriftDetected(Event):
    """Our book and the broker's differ in one symbol of a portfolio (failure mode 12).

    ``kind`` is ``missing_at_broker`` (we hold it, the broker is flat), ``unknown_to_us``
    (the broker holds it, we are flat: adopted as an external position unless
    ``settling``) or ``quantity_mismatch``. Quantities are signed (short < 0).
    """

    portfolio_id: PortfolioId
    symbol: Symbol
    kind: str = Field(min_length=1)
    book_quantity: Quantity
    broker_quantity: Quantity
    settling: bool = False
    """We had a position in the symbol whose fills may still be in flight; nothing adopted."""
    snapshot_id: uuid.UUID | None = None
    """The ``BrokerSnapshotCompleted`` compared against."""
    adopted_position_id: PositionId | None = None
    """The external position the broker's holding was adopted as, if it was."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drift(self) -> Quantity:
        """Broker minus book."""
        return self.broker_quantity - self.book_quantity

    def dedupe_key(self) -> str | None:
        """``drift:<portfolio_id>:<snapshot_id>:<symbol>`` within a snapshot, else none."""
        if self.snapshot_id is None:
            return None
        return f"drift:{self.portfolio_id}:{self.snapshot_id}:{self.symbol}"


class PositionMark(Contract):
    """One position valued at its symbol's latest mark (gross of commissions)."""

    position_id: PositionId
    symbol: Symbol
    side: PositionSide
    quantity: Quantity = Field(ge=0)
    mark_price: PositiveMoney
    unrealized_pnl: Money
    marked_at: UtcDatetime
    """The tick's time."""
    delayed: bool = False


class PositionMarksUpdated(Event):
    """A portfolio's open positions marked to market (throttled: at most one per
    portfolio per marks interval), with the portfolio's unrealized P&L."""

    portfolio_id: PortfolioId
    marks: tuple[PositionMark, ...] = ()
    unrealized_pnl: Money = Decimal(0)
    """Sum of the marks' unrealized P&L."""
