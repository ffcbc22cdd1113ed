"""Orders as the simulated broker sees them.

:class:`OrderRequest` is what a client asked for (decoded from placeOrder by the server);
:class:`SimOrder` is an immutable SNAPSHOT of the engine's order at one moment (events
carry snapshots; the engine replaces its copy on every change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from ibflow_gateway_sim.domain.instruments import Instrument

__all__ = [
    "ACTIVE_STATUSES",
    "DONE_STATUSES",
    "ORDER_TYPES",
    "TIFS",
    "Action",
    "OrderRequest",
    "OrderStatus",
    "SimOrder",
]

Action = Literal["BUY", "SELL"]

#: Order types the engine accepts (others are rejected with 201).
ORDER_TYPES: Final = frozenset({"MKT", "LMT", "STP", "STP LMT", "TRAIL", "MOC"})
#: Time-in-force values the engine accepts (others are rejected with 201).
TIFS: Final = frozenset({"DAY", "GTC", "IOC", "FOK", "OPG", "GTD"})


class OrderStatus:
    """IB order status strings (as sent in orderStatus/openOrder)."""

    PENDING_SUBMIT: Final = "PendingSubmit"
    PRE_SUBMITTED: Final = "PreSubmitted"
    SUBMITTED: Final = "Submitted"
    CANCELLED: Final = "Cancelled"
    API_CANCELLED: Final = "ApiCancelled"
    FILLED: Final = "Filled"
    INACTIVE: Final = "Inactive"


#: Statuses of an order that is still live (can fill, be modified or cancelled).
ACTIVE_STATUSES: Final = frozenset(
    {OrderStatus.PENDING_SUBMIT, OrderStatus.PRE_SUBMITTED, OrderStatus.SUBMITTED}
)
#: Terminal statuses.
DONE_STATUSES: Final = frozenset(
    {OrderStatus.CANCELLED, OrderStatus.API_CANCELLED, OrderStatus.FILLED, OrderStatus.INACTIVE}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """A client's order, with IB field names in snake_case.

    * ``account``: empty → the engine's default account.
    * ``symbol`` / ``con_id``: the contract; ``con_id`` wins when non-zero.
    * ``lmt_price``: limit price (LMT, STP LMT).
    * ``aux_price``: stop trigger (STP, STP LMT) or trailing AMOUNT (TRAIL).
    * ``trailing_percent``: TRAIL by percent (used when ``aux_price`` is ``None``).
    * ``trail_stop_price``: initial trailing stop level (optional).
    * ``tif``: DAY, GTC, IOC, FOK, OPG, GTD (GTD needs ``good_till_date``).
    * ``oca_type``: 1 = cancel the others on any fill; 2/3 = reduce the others' size.
    """

    symbol: str
    action: Action
    quantity: Decimal
    order_type: str = "MKT"
    account: str = ""
    con_id: int = 0
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None
    trailing_percent: Decimal | None = None
    trail_stop_price: Decimal | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    parent_id: int = 0
    transmit: bool = True
    oca_group: str = ""
    oca_type: int = 0
    order_ref: str = ""
    all_or_none: bool = False
    good_till_date: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOrder:
    """Snapshot of one engine order.

    ``perm_id`` is unique and non-zero. ``quantity`` is the current total quantity (may
    differ from ``request.quantity`` after an OCA size reduction). ``parent_perm_id`` is
    0 for a top-level order; ``children`` are the child ORDER IDS (same client).
    ``triggered`` is True once a STP/STP LMT/TRAIL has triggered. ``trail_stop`` is the
    current trailing stop level. ``transmitted`` is False while the order (or its
    chain) waits for a ``transmit=True`` placement.
    """

    client_id: int
    order_id: int
    perm_id: int
    request: OrderRequest
    instrument: Instrument
    account: str
    status: str
    quantity: Decimal
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal
    last_fill_price: Decimal
    parent_perm_id: int
    children: tuple[int, ...]
    triggered: bool
    trail_stop: Decimal | None
    transmitted: bool
    created: datetime
    updated: datetime
    why_held: str = ""
    commission: Decimal = Decimal(0)

    @property
    def symbol(self) -> str:
        """The instrument's symbol."""
        return self.instrument.symbol

    @property
    def action(self) -> Action:
        """BUY or SELL."""
        return self.request.action

    @property
    def order_type(self) -> str:
        """The order type (MKT, LMT, STP, STP LMT, TRAIL, MOC)."""
        return self.request.order_type

    @property
    def is_active(self) -> bool:
        """True while the order can still fill, be modified or cancelled."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_done(self) -> bool:
        """True once the order is Filled, Cancelled, ApiCancelled or Inactive."""
        return self.status in DONE_STATUSES
