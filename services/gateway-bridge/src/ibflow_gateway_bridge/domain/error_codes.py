"""IB error codes, grouped into named sets that drive the connection state machine.

IB reports everything through one ``error(reqId, code, message)`` callback: real
errors, order rejections, and informational notices (farm status, "connectivity
restored"). Naming the codes in sets (as NautilusTrader does) keeps the meaning in
one place: :class:`~ibflow_gateway_bridge.domain.connection.ConnectionMachine` reacts
to the connectivity, farm and client-id sets; :func:`classify` buckets any code into
an :class:`ErrorClass` for the "errors by class" metric.

Codes from IB's "Message Codes" reference (TWS API documentation).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "CANCEL_REJECTIONS",
    "CLIENT_ID_IN_USE",
    "CONNECTIVITY_LOST",
    "CONNECTIVITY_RESTORED_DATA_KEPT",
    "CONNECTIVITY_RESTORED_DATA_LOST",
    "FARM_DOWN",
    "FARM_INACTIVE_OR_CONNECTING",
    "FARM_OK",
    "HMDS_FARM",
    "MARKET_DATA_FARM",
    "ORDER_CANCELLED",
    "ORDER_REJECTIONS",
    "PACING",
    "REQUEST_ERRORS",
    "SECDEF_FARM",
    "SOCKET_ERRORS",
    "ErrorClass",
    "classify",
]

CONNECTIVITY_LOST: Final = frozenset({1100})
"""Connectivity between the Gateway/TWS and IB's servers is lost (the socket to us is up)."""

CONNECTIVITY_RESTORED_DATA_LOST: Final = frozenset({1101})
"""Connectivity restored, market data subscriptions lost: they must be requested again."""

CONNECTIVITY_RESTORED_DATA_KEPT: Final = frozenset({1102})
"""Connectivity restored, market data subscriptions kept."""

SOCKET_ERRORS: Final = frozenset({502, 504, 507, 1300, 2110})
"""Our socket to the Gateway: couldn't connect (502), not connected (504), bad message
length (507), socket port reset (1300), Gateway-to-server connectivity broken (2110).

Classified as connectivity; the socket's own loss reaches the state machine through
``disconnected()`` (ib_async's ``disconnectedEvent``), not through these codes.
"""

FARM_DOWN: Final = frozenset({2103, 2105, 2157})
"""A data farm connection is broken: market data (2103), historical data/HMDS (2105),
security definitions (2157). Orders still work; the connection is *degraded*."""

FARM_INACTIVE_OR_CONNECTING: Final = frozenset({2107, 2108, 2119})
"""Informational: HMDS (2107) or market data (2108) farm inactive but available on
demand, market data farm connecting (2119). Not a failure."""

FARM_OK: Final = frozenset({2104, 2106, 2158})
"""A data farm connection is OK again: market data (2104), HMDS (2106), sec-def (2158)."""

MARKET_DATA_FARM: Final = frozenset({2103, 2104, 2108, 2119})
"""Codes about a market data farm (down, OK, inactive, connecting)."""

HMDS_FARM: Final = frozenset({2105, 2106, 2107})
"""Codes about a historical data (HMDS) farm."""

SECDEF_FARM: Final = frozenset({2157, 2158})
"""Codes about a security definition farm."""

CLIENT_ID_IN_USE: Final = frozenset({326})
""""Unable to connect as the client id is already in use": another session holds it."""

PACING: Final = frozenset({100, 162})
"""Max message rate exceeded (100); historical data service error, which is how
historical data pacing violations are reported (162)."""

ORDER_REJECTIONS: Final = frozenset(
    {
        103,  # duplicate order id
        104,  # can't modify a filled order
        105,  # order being modified does not match the original
        106,  # can't transmit order id
        107,  # cannot transmit incomplete order
        109,  # price out of the percentage range
        110,  # price does not conform to the minimum price variation
        111,  # time in force and order type are incompatible
        113,  # time in force should be DAY for MOC/LOC orders
        135,  # can't find order with id (modify/cancel)
        136,  # this order cannot be cancelled
        161,  # cancel attempted when the order is not in a cancellable state
        200,  # no security definition found
        201,  # order rejected (reason in the text; also "OCA group is already filled")
        203,  # security not available or allowed for this account
        10147,  # order id to cancel not found
        10148,  # order id that needs to be cancelled cannot be cancelled
        10149,  # invalid order id for cancellation
    }
)
"""Codes by which IB refuses an order, a modification or a cancellation. The bridge
turns them into an order status event carrying the code and text."""

CANCEL_REJECTIONS: Final = frozenset({135, 136, 161, 10147, 10148, 10149})
"""The subset of :data:`ORDER_REJECTIONS` that refuses a cancellation."""

ORDER_CANCELLED: Final = frozenset({202})
"""Order cancelled (notice, reason in the text): not a rejection."""

REQUEST_ERRORS: Final = frozenset(
    {
        101,  # max number of tickers reached
        102,  # duplicate ticker id
        300,  # can't find the ticker id to cancel
        301,  # invalid ticker action
        309,  # max number of market depth requests reached
        310,  # can't find the subscribed market depth
        321,  # error validating request
        322,  # error processing request (e.g. duplicate request id)
        354,  # requested market data is not subscribed
        366,  # no historical data query found for the ticker id
        10089,  # requested market data requires additional subscription
        10090,  # part of the requested market data is not subscribed
        10168,  # requested market data is not subscribed, delayed data not enabled
        10197,  # no market data during a competing live session
    }
)
"""A data or query request refused; the connection itself is fine."""

_WARNINGS: Final = frozenset({399, 404, 10167})
"""Order message warning (399), order held while shares are located (404), displaying
delayed market data (10167). Plus the whole 2100-2199 range, IB's warning codes."""


class ErrorClass(StrEnum):
    """Bucket of an IB error code, the label of the "errors by class" metric."""

    CONNECTIVITY = "connectivity"
    FARM = "farm"
    CLIENT_ID = "client_id"
    PACING = "pacing"
    ORDER = "order"
    REQUEST = "request"
    WARNING = "warning"
    OTHER = "other"


_CONNECTIVITY: Final = (
    CONNECTIVITY_LOST
    | CONNECTIVITY_RESTORED_DATA_LOST
    | CONNECTIVITY_RESTORED_DATA_KEPT
    | SOCKET_ERRORS
)
_FARM: Final = FARM_DOWN | FARM_INACTIVE_OR_CONNECTING | FARM_OK

_CLASSES: Final[tuple[tuple[frozenset[int], ErrorClass], ...]] = (
    (_CONNECTIVITY, ErrorClass.CONNECTIVITY),
    (_FARM, ErrorClass.FARM),
    (CLIENT_ID_IN_USE, ErrorClass.CLIENT_ID),
    (PACING, ErrorClass.PACING),
    (ORDER_REJECTIONS | ORDER_CANCELLED, ErrorClass.ORDER),
    (REQUEST_ERRORS, ErrorClass.REQUEST),
    (_WARNINGS, ErrorClass.WARNING),
)
"""Checked in order; the first set holding the code gives its class."""


def classify(code: int) -> ErrorClass:
    """The :class:`ErrorClass` of IB error ``code``.

    Named sets win over ranges: 2103 is ``farm`` and 2110 ``connectivity`` although
    both lie in IB's 2100-2199 warning range. Unknown codes are ``other``.
    """
    for codes, error_class in _CLASSES:
        if code in codes:
            return error_class
    return ErrorClass.WARNING if 2100 <= code <= 2199 else ErrorClass.OTHER
