"""What IB reports about our orders, as the gateway-bridge relays it (raw broker facts).

These are facts in IB's terms; the order-manager folds them into its own record
(:class:`~ibflow.contracts.orders.OrderBookUpdated`). All three have natural ids, so a
fact replayed after a reconnect is recognised and applied once.
"""

from __future__ import annotations

import uuid

from pydantic import Field

from ibflow.contracts.base import (
    Currency,
    Event,
    Money,
    PortfolioId,
    PositiveMoney,
    PositiveQuantity,
    Quantity,
    Symbol,
    UtcDatetime,
    canonical_decimal,
)
from ibflow.contracts.enums import OrderSide


class OrderStatusChanged(Event):
    """IB reported an order's status (``orderStatus``/``openOrder``), including orders not
    placed by ibflow (``client_order_id`` is then ``None``)."""

    portfolio_id: PortfolioId
    account_id: str | None = None
    client_order_id: str | None = None
    """The order's ``orderRef``: our client order id; ``None`` for orders placed elsewhere."""
    order_id: int
    perm_id: int | None = None
    """IB's permanent id; ``None`` until IB assigns one (IB's ``0``)."""
    client_id: int | None = None
    """The API client id that placed the order."""
    ib_status: str
    """IB's status string, normally one of ``IbOrderStatus`` (``Submitted``, ``Filled``...)."""
    filled: Quantity = Field(ge=0)
    remaining: Quantity = Field(ge=0)
    avg_fill_price: Money | None = None
    last_fill_price: Money | None = None
    why_held: str | None = None
    error_message: str | None = None
    """IB's error text for the order, if it reported one with this status."""
    snapshot_id: uuid.UUID | None = None
    """Set when reported as part of a broker snapshot."""
    limit_price: Money | None = None
    """The order's limit price at IB now (``None`` for orders without one)."""
    aux_price: Money | None = None
    """The order's stop price (or trailing amount) at IB now, if any."""

    def dedupe_key(self) -> str:
        """``ost:<perm_id|client_order_id|order_id>:<ib_status>:<filled>:<remaining>``,
        then ``:<limit_price>:<aux_price>`` when either is known.

        ``remaining`` is part of the key because a quantity change leaves status and
        filled as they were, and the prices because a price change leaves all three as
        they were (a modify must not be dropped as a duplicate). A status report is a
        state, not a delta: a true repeat (``Submitted`` → ``PendingCancel`` →
        ``Submitted`` after a refused cancel) shares the key, so consumers must not need
        every report, only the latest state.
        """
        order = self.perm_id or self.client_order_id or self.order_id
        filled, remaining = canonical_decimal(self.filled), canonical_decimal(self.remaining)
        key = f"ost:{order}:{self.ib_status}:{filled}:{remaining}"
        if self.limit_price is not None or self.aux_price is not None:
            prices = (self.limit_price, self.aux_price)
            key += ":" + ":".join("" if p is None else canonical_decimal(p) for p in prices)
        return key


class ExecutionReported(Event):
    """IB reported a fill (``execDetails``); corrections come as new ``exec_id`` values."""

    portfolio_id: PortfolioId
    account_id: str
    exec_id: str = Field(min_length=1)
    order_id: int
    perm_id: int
    client_order_id: str | None = None
    symbol: Symbol
    con_id: int
    side: OrderSide
    shares: PositiveQuantity
    price: PositiveMoney
    cum_qty: Quantity = Field(ge=0)
    """Cumulative filled quantity of the order, this fill included."""
    avg_price: Money
    """Average fill price of the order so far."""
    exchange: str
    executed_at: UtcDatetime
    liquidation: bool = False
    """IB liquidated the position (margin call)."""
    snapshot_id: uuid.UUID | None = None
    """Set when replayed as part of a broker snapshot."""

    def dedupe_key(self) -> str:
        """``exec:<exec_id>``."""
        return f"exec:{self.exec_id}"


class CommissionReported(Event):
    """IB reported the commission of a fill (``commissionReport``), usually just after it."""

    portfolio_id: PortfolioId
    exec_id: str = Field(min_length=1)
    commission: Money
    currency: Currency
    realized_pnl: Money | None = None
    """IB's realised P&L of the fill; ``None`` when IB has none (its max-double sentinel)."""
    client_order_id: str | None = None
    """Our client order id of the fill's order (its ``orderRef``); ``None`` when the bridge
    does not know the fill, or the order was not placed by ibflow."""

    def dedupe_key(self) -> str:
        """``comm:<exec_id>``."""
        return f"comm:{self.exec_id}"
