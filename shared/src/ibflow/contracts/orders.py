"""Orders as ibflow sees them: what may be submitted, and the order-manager's record.

Anyone (the API, the position-monitor) asks the order-manager with :class:`SubmitOrder`,
:class:`ModifyOrder` and :class:`CancelOrder`; only the order-manager talks to the
gateway-bridge (:mod:`ibflow.contracts.gateway`), so risk checks and the halt switch
cannot be bypassed. Every transition of our record is published as
:class:`OrderBookUpdated`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import Field, model_validator

from ibflow.contracts.base import (
    Actor,
    ClientOrderId,
    Command,
    Contract,
    Currency,
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
from ibflow.contracts.enums import (
    ExitReason,
    OrderPurpose,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)

TrailingPercent = Annotated[Money, Field(gt=0, lt=100)]
"""A trailing distance in percent of the price, strictly between 0 and 100."""

_REQUIRED_PRICES: dict[OrderType, frozenset[str]] = {
    OrderType.MKT: frozenset(),
    OrderType.LMT: frozenset({"limit_price"}),
    OrderType.STP: frozenset({"stop_price"}),
    OrderType.STP_LMT: frozenset({"limit_price", "stop_price"}),
    OrderType.TRAIL: frozenset(),
}
_TRAILING = frozenset({"trailing_amount", "trailing_percent"})
_TRAIL_PRICES = _TRAILING | {"trail_stop_price"}
_PRICE_FIELDS = (
    "limit_price",
    "stop_price",
    "trailing_amount",
    "trailing_percent",
    "trail_stop_price",
)


class OrderRef(Contract):
    """Identifies one of our orders: its portfolio and client order id."""

    portfolio_id: PortfolioId
    client_order_id: ClientOrderId


class OrderTerms(OrderRef):
    """What IB needs to work an order (shared by our commands and our order record).

    Which prices an order type takes: ``MKT`` none; ``LMT`` ``limit_price``; ``STP``
    ``stop_price``; ``STP_LMT`` both; ``TRAIL`` exactly one of ``trailing_amount`` /
    ``trailing_percent`` and optionally ``trail_stop_price``. Anything else is refused.
    """

    symbol: Symbol
    side: OrderSide
    order_type: OrderType
    quantity: PositiveQuantity
    limit_price: PositiveMoney | None = None
    stop_price: PositiveMoney | None = None
    """Trigger price of ``STP`` / ``STP_LMT`` orders."""
    trailing_amount: PositiveMoney | None = None
    """``TRAIL``: distance of the stop from the best price, in money."""
    trailing_percent: TrailingPercent | None = None
    """``TRAIL``: distance of the stop from the best price, in percent."""
    trail_stop_price: PositiveMoney | None = None
    """``TRAIL``: the initial stop price (IB computes one when omitted)."""
    tif: TimeInForce = TimeInForce.DAY
    outside_rth: bool = False
    """Allow the order to trigger or fill outside regular trading hours."""
    exchange: str = "SMART"
    currency: Currency = "USD"

    @model_validator(mode="after")
    def _check_prices(self) -> Self:
        given = {name for name in _PRICE_FIELDS if getattr(self, name) is not None}
        required = _REQUIRED_PRICES[self.order_type]
        allowed = required | (_TRAIL_PRICES if self.order_type is OrderType.TRAIL else set())
        if missing := required - given:
            raise ValueError(f"{self.order_type} order needs {', '.join(sorted(missing))}")
        if unexpected := given - allowed:
            raise ValueError(f"{self.order_type} order takes no {', '.join(sorted(unexpected))}")
        if self.order_type is OrderType.TRAIL and len(given & _TRAILING) != 1:
            raise ValueError("TRAIL order needs exactly one of trailing_amount, trailing_percent")
        return self


class OrderIntent(OrderTerms):
    """An order's terms plus why it exists and who asked.

    Entries and exits belong to a position (``position_id``): an entry may carry the
    position's protective levels (``stop_loss``/``take_profit``, watched by the
    position-monitor, never sent to IB); an exit says why (``exit_reason``). Manual
    orders belong to no position.
    """

    purpose: OrderPurpose
    position_id: PositionId | None = None
    exit_reason: ExitReason | None = None
    stop_loss: PositiveMoney | None = None
    """Entries: close the position when the price crosses this level against it."""
    take_profit: PositiveMoney | None = None
    """Entries: close the position when the price reaches this level in its favour."""
    reference_price: PositiveMoney | None = None
    """The market price the requester saw, used to value orders without a limit price
    (``MKT``, ``TRAIL``) for cash and risk; the order-manager looks one up when omitted."""
    requested_by: Actor

    @model_validator(mode="after")
    def _check_purpose(self) -> Self:
        manual = self.purpose is OrderPurpose.MANUAL
        if manual == (self.position_id is not None):
            raise ValueError("entry and exit orders need a position_id, manual orders take none")
        if (self.purpose is OrderPurpose.EXIT) != (self.exit_reason is not None):
            raise ValueError("exit orders need an exit_reason, other orders take none")
        levels = self.stop_loss is not None or self.take_profit is not None
        if levels and self.purpose is not OrderPurpose.ENTRY:
            raise ValueError("stop_loss/take_profit belong on entry orders only")
        if self.stop_loss is not None and self.take_profit is not None:
            long = self.side is OrderSide.BUY
            if (self.stop_loss < self.take_profit) != long:
                raise ValueError("stop_loss must be on the losing side of take_profit")
        return self


class SubmitOrder(OrderIntent, Command):
    """Ask the order-manager to place a new order.

    ``client_order_id`` is the idempotency key: a repeat with the same id is answered
    like the first (``CommandAccepted.duplicate``) and places nothing. Refused
    (``ErrorReply`` ``refused``, plus :class:`OrderRejected`) when trading is halted for
    a non-exit order, when a risk limit would be breached, or when the gateway is not ready.
    """

    def dedupe_key(self) -> str:
        """``cmd:submit:<client_order_id>``."""
        return f"cmd:submit:{self.client_order_id}"


class CancelOrder(OrderRef, Command):
    """Ask the order-manager to cancel one of our working orders (idempotent)."""

    reason: str = ""
    requested_by: Actor

    def dedupe_key(self) -> str:
        """``cmd:cancel:<client_order_id>``."""
        return f"cmd:cancel:{self.client_order_id}"


class ModifyOrder(OrderRef, Command):
    """Ask the order-manager to change a working order; the given fields replace the
    current ones, omitted ones are kept. The merged terms must still be valid."""

    quantity: PositiveQuantity | None = None
    limit_price: PositiveMoney | None = None
    stop_price: PositiveMoney | None = None
    trailing_amount: PositiveMoney | None = None
    trailing_percent: TrailingPercent | None = None
    trail_stop_price: PositiveMoney | None = None
    requested_by: Actor

    @model_validator(mode="after")
    def _check_changes(self) -> Self:
        if not self.changes():
            raise ValueError("nothing to modify")
        return self

    def changes(self) -> dict[str, Decimal]:
        """The fields this modification sets."""
        fields = ("quantity", *_PRICE_FIELDS)
        return {name: value for name in fields if (value := getattr(self, name)) is not None}


class OrderBookUpdated(OrderIntent, Event):
    """The order-manager's record of one order, published after every transition.

    "Order book" is our own book of orders, not market depth. ``revision`` increases by
    one per transition, so consumers keep the highest revision they have seen.
    """

    revision: int = Field(ge=1)
    status: OrderStatus
    order_id: int | None = None
    """IB's order id, once the bridge has placed the order."""
    perm_id: int | None = None
    """IB's permanent order id, once IB has assigned it."""
    ib_status: str | None = None
    """IB's latest status string for the order (see ``IbOrderStatus``)."""
    filled_quantity: Quantity = Decimal(0)
    avg_fill_price: Money | None = None
    commission: Money = Decimal(0)
    """Commissions charged so far, in the account's currency."""
    status_message: str | None = None
    """Why the order was rejected, cancelled or is unknown (IB's error text where any)."""
    created_at: UtcDatetime

    @property
    def remaining_quantity(self) -> Decimal:
        """Quantity not filled yet."""
        return self.quantity - self.filled_quantity

    def dedupe_key(self) -> str:
        """``order:<client_order_id>:<revision>``."""
        return f"order:{self.client_order_id}:{self.revision}"


class OrderRejected(OrderRef, Event):
    """An order was refused: by the order-manager before it reached IB (halted, risk,
    gateway not ready), or by IB (``broker_error_code`` set)."""

    symbol: Symbol
    side: OrderSide
    purpose: OrderPurpose
    position_id: PositionId | None = None
    reason: str
    broker_error_code: int | None = None
    """IB's error code when IB rejected the order; ``None`` when we refused it."""

    def dedupe_key(self) -> str:
        """``rej:<client_order_id>``: an order is rejected at most once."""
        return f"rej:{self.client_order_id}"
