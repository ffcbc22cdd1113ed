"""Money and holdings: the broker's account as IB reports it, and our portfolio's figures."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from pydantic import Field

from ibflow.contracts.base import Currency, Event, Money, PortfolioId, Quantity, Symbol


class BrokerPositionReported(Event):
    """IB reported the account's holding of one contract (``position``); signed, short < 0.

    Only non-zero holdings are listed in a snapshot: a contract missing from a *complete*
    snapshot (``BrokerSnapshotCompleted``) is flat, one missing from an incomplete
    snapshot is unknown.
    """

    portfolio_id: PortfolioId
    account_id: str
    con_id: int
    symbol: Symbol
    position: Quantity
    avg_cost: Money
    snapshot_id: uuid.UUID | None = None
    """Set when reported as part of a broker snapshot."""

    def dedupe_key(self) -> str | None:
        """``bpos:<snapshot_id>:<account_id>:<con_id>`` within a snapshot, else none."""
        if self.snapshot_id is None:
            return None
        return f"bpos:{self.snapshot_id}:{self.account_id}:{self.con_id}"


class AccountValuesReported(Event):
    """IB reported the account's values (``accountSummary``); a figure IB did not send
    is ``None``, never zero."""

    portfolio_id: PortfolioId
    account_id: str
    currency: Currency
    net_liquidation: Money | None = None
    total_cash_value: Money | None = None
    buying_power: Money | None = None
    maintenance_margin: Money | None = None
    initial_margin: Money | None = None
    excess_liquidity: Money | None = None
    values: dict[str, str] = Field(default_factory=dict)
    """Every tag as IB sent it: ``Tag`` or ``Tag:CUR`` → value string."""
    snapshot_id: uuid.UUID | None = None
    """Set when reported as part of a broker snapshot."""

    def dedupe_key(self) -> str | None:
        """``acct:<snapshot_id>:<account_id>`` within a snapshot, else none."""
        if self.snapshot_id is None:
            return None
        return f"acct:{self.snapshot_id}:{self.account_id}"


class PortfolioChanged(Event):
    """The order-manager's money figures of a portfolio for the session changed (after a
    fill, a commission, a cash update or a halt)."""

    portfolio_id: PortfolioId
    revision: int = Field(ge=1)
    """Increases by one per change of this portfolio, never reset."""
    session_date: date
    currency: Currency
    cash_balance: Money
    """Cash as last reported by IB, adjusted for our fills and commissions since."""
    realized_pnl: Money = Decimal(0)
    """Realised P&L of the session, after commissions."""
    commissions: Money = Decimal(0)
    gross_exposure: Money = Decimal(0)
    """Sum of the absolute values of open holdings at their fill prices."""
    open_orders: int = Field(default=0, ge=0)
    trading_halted: bool = False

    def dedupe_key(self) -> str:
        """``portfolio:<portfolio_id>:<revision>``."""
        return f"portfolio:{self.portfolio_id}:{self.revision}"
