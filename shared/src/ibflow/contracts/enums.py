"""Closed vocabularies of the catalogue. Values are the wire spelling."""

from __future__ import annotations

from enum import StrEnum


class OrderSide(StrEnum):
    """Direction of an order or execution (IB's ``BOT``/``SLD`` map to ``BUY``/``SELL``)."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """Order types we send; the bridge maps ``STP_LMT`` to IB's ``STP LMT``."""

    MKT = "MKT"
    LMT = "LMT"
    STP = "STP"
    STP_LMT = "STP_LMT"
    TRAIL = "TRAIL"


class TimeInForce(StrEnum):
    """How long an order works: the day, until cancelled, immediately, all-or-none now, open."""

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    OPG = "OPG"


class OrderStatus(StrEnum):
    """Our lifecycle of an order (the order-manager's, not IB's status strings).

    ``PENDING`` is recorded but not yet acknowledged by IB; ``UNKNOWN`` means the
    broker's view could not be established (e.g. lost while disconnected) and the
    order must be reconciled before anything is assumed about it.
    """

    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """True once the order can no longer change (filled, cancelled or rejected)."""
        return self in _TERMINAL_ORDER_STATUSES


_TERMINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED}
)


class IbOrderStatus(StrEnum):
    """IB's order status strings, as reported in ``OrderStatusChanged.ib_status``.

    The field itself is a plain string so that a status IB adds later is recorded, not
    refused; these are the ones we know and map.
    """

    PENDING_SUBMIT = "PendingSubmit"
    PENDING_CANCEL = "PendingCancel"
    PRE_SUBMITTED = "PreSubmitted"
    SUBMITTED = "Submitted"
    API_CANCELLED = "ApiCancelled"
    CANCELLED = "Cancelled"
    FILLED = "Filled"
    INACTIVE = "Inactive"


class OrderPurpose(StrEnum):
    """Why an order exists: to open a position, to close one, or by hand."""

    ENTRY = "entry"
    EXIT = "exit"
    MANUAL = "manual"


class PositionSide(StrEnum):
    """A position is long (entered with a buy) or short (entered with a sell)."""

    LONG = "LONG"
    SHORT = "SHORT"


class PositionStatus(StrEnum):
    """Lifecycle of a day-trade position.

    ``PENDING`` (entry working) → ``OPEN`` (entry filled, stop/target watched) →
    ``CLOSING`` (exit working) → ``CLOSED``; ``CANCELLED`` if the entry never filled.
    """

    PENDING = "PENDING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"


class ExitReason(StrEnum):
    """Why a position was closed: its stop, its target, the session close-out, by hand,
    or outside ibflow (found flat at the broker)."""

    STOP = "stop"
    TARGET = "target"
    CLOSE_OUT = "close_out"
    MANUAL = "manual"
    EXTERNAL = "external"


class ConnectionState(StrEnum):
    """State of the bridge's connection to one IB Gateway.

    ``synchronising``: connected, loading positions/orders/executions before trading;
    ``ready``: synchronised, orders may be sent; ``ib_connectivity_lost``: the socket to
    the Gateway is up but the Gateway lost IB's servers (IB error 1100); ``degraded``:
    connected but some data farm or query is failing.
    """

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    SYNCHRONISING = "synchronising"
    READY = "ready"
    IB_CONNECTIVITY_LOST = "ib_connectivity_lost"
    DEGRADED = "degraded"


class GatewayType(StrEnum):
    """What the bridge is connected to."""

    IB_GATEWAY = "ib_gateway"
    TWS = "tws"
    SIMULATOR = "simulator"


class BrokerQuery(StrEnum):
    """A part of the broker's state the bridge can (re)load."""

    ACCOUNT = "account"
    POSITIONS = "positions"
    ORDERS = "orders"
    EXECUTIONS = "executions"


class RiskAction(StrEnum):
    """What the order-manager did about a breached risk limit."""

    WARNED = "warned"
    ORDER_REFUSED = "order_refused"
    TRADING_HALTED = "trading_halted"
