"""IB error/notice codes, their texts (spec §5.1) and ready-made error frames (msg 4).

Codes are ``Final`` ints; :data:`TEXTS` maps a code to IB's text (some are templates with
``{placeholders}``). Named sets group them by purpose. The builders return complete
frames via :func:`~ibflow_gateway_sim.protocol.responses.error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ibflow_gateway_sim.protocol.responses import error

NO_REQ_ID: Final = -1
"""reqId of notices not tied to a request."""

# --- connectivity / farms ----------------------------------------------------------------
MAX_RATE_EXCEEDED: Final = 100
CLIENT_ID_IN_USE: Final = 326
CONNECTIVITY_LOST: Final = 1100
CONNECTIVITY_RESTORED_DATA_LOST: Final = 1101
CONNECTIVITY_RESTORED_DATA_MAINTAINED: Final = 1102
MARKET_DATA_FARM_BROKEN: Final = 2103
MARKET_DATA_FARM_OK: Final = 2104
HMDS_FARM_BROKEN: Final = 2105
HMDS_FARM_OK: Final = 2106
SECDEF_FARM_BROKEN: Final = 2157
SECDEF_FARM_OK: Final = 2158

# --- orders ------------------------------------------------------------------------------
DUPLICATE_ORDER_ID: Final = 103
CANNOT_MODIFY_FILLED_ORDER: Final = 104
MODIFY_DOES_NOT_MATCH: Final = 105
ORDER_REJECTED: Final = 201
ORDER_CANCELLED: Final = 202
CANCEL_NOT_FOUND: Final = 10147
CANNOT_CANCEL: Final = 10148

# --- requests ----------------------------------------------------------------------------
NO_SECURITY_DEFINITION: Final = 200
HISTORICAL_DATA_ERROR: Final = 162
HISTORICAL_DATA_QUERY: Final = 165
NO_HISTORICAL_QUERY: Final = 366
REQUEST_READ_ERROR: Final = 320
REQUEST_VALIDATE_ERROR: Final = 321
REQUEST_PROCESS_ERROR: Final = 322

TEXTS: Final[Mapping[int, str]] = {
    MAX_RATE_EXCEEDED: "Max rate of messages per second has been exceeded:max={max} rec={rec} (1)",
    CLIENT_ID_IN_USE: (
        "Unable to connect as the client id is already in use. Retry with a unique client id."
    ),
    CONNECTIVITY_LOST: "Connectivity between IB and the TWS has been lost.",
    CONNECTIVITY_RESTORED_DATA_LOST: (
        "Connectivity between IB and TWS has been restored- data lost."
    ),
    CONNECTIVITY_RESTORED_DATA_MAINTAINED: (
        "Connectivity between IB and TWS has been restored- data maintained."
    ),
    MARKET_DATA_FARM_BROKEN: "Market data farm connection is broken:usfarm",
    MARKET_DATA_FARM_OK: "Market data farm connection is OK:usfarm",
    HMDS_FARM_BROKEN: "HMDS data farm connection is broken:ushmds",
    HMDS_FARM_OK: "HMDS data farm connection is OK:ushmds",
    SECDEF_FARM_BROKEN: "Sec-def data farm connection is broken:secdefnj",
    SECDEF_FARM_OK: "Sec-def data farm connection is OK:secdefnj",
    DUPLICATE_ORDER_ID: "Duplicate order id",
    CANNOT_MODIFY_FILLED_ORDER: "Can't modify a filled order",
    MODIFY_DOES_NOT_MATCH: "Order being modified does not match original order",
    ORDER_REJECTED: "Order rejected - reason:{reason}",
    ORDER_CANCELLED: "Order Canceled - reason:{reason}",
    CANCEL_NOT_FOUND: "OrderId {order_id} that needs to be cancelled is not found.",
    CANNOT_CANCEL: (
        "OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {state}."
    ),
    NO_SECURITY_DEFINITION: "No security definition has been found for the request",
    HISTORICAL_DATA_ERROR: "Historical Market Data Service error message:{reason}",
    HISTORICAL_DATA_QUERY: "Historical Market Data Service query message:{reason}",
    NO_HISTORICAL_QUERY: "No historical data query found for ticker id:{ticker_id}",
    REQUEST_READ_ERROR: "Error reading request:{reason}",
    REQUEST_VALIDATE_ERROR: "Error validating request:{reason}",
    REQUEST_PROCESS_ERROR: "Error processing request:{reason}",
}
"""IB's text per code; ``{name}`` placeholders are filled by the builders below."""

FARM_OK_CODES: Final = frozenset({MARKET_DATA_FARM_OK, HMDS_FARM_OK, SECDEF_FARM_OK})
"""The notices real TWS sends right after startApi."""
FARM_BROKEN_CODES: Final = frozenset(
    {MARKET_DATA_FARM_BROKEN, HMDS_FARM_BROKEN, SECDEF_FARM_BROKEN}
)
CONNECTIVITY_CODES: Final = frozenset(
    {CONNECTIVITY_LOST, CONNECTIVITY_RESTORED_DATA_LOST, CONNECTIVITY_RESTORED_DATA_MAINTAINED}
)
ORDER_CODES: Final = frozenset(
    {
        DUPLICATE_ORDER_ID,
        CANNOT_MODIFY_FILLED_ORDER,
        MODIFY_DOES_NOT_MATCH,
        ORDER_REJECTED,
        ORDER_CANCELLED,
        CANCEL_NOT_FOUND,
        CANNOT_CANCEL,
    }
)
"""Codes sent with an order id as reqId."""
REQUEST_CODES: Final = frozenset(
    {
        NO_SECURITY_DEFINITION,
        HISTORICAL_DATA_ERROR,
        HISTORICAL_DATA_QUERY,
        NO_HISTORICAL_QUERY,
        REQUEST_READ_ERROR,
        REQUEST_VALIDATE_ERROR,
        REQUEST_PROCESS_ERROR,
    }
)
"""Codes sent with a request id as reqId."""
SESSION_CODES: Final = frozenset({MAX_RATE_EXCEEDED, CLIENT_ID_IN_USE})
"""Codes about the API session itself (reqId -1)."""


def notice(code: int, req_id: int = NO_REQ_ID, advanced_json: str = "", **fill: object) -> bytes:
    """Error frame for ``code`` with IB's text, placeholders filled from ``fill``."""
    return error(req_id, code, TEXTS[code].format(**fill), advanced_json)


def farm_ok_notices() -> list[bytes]:
    """2104, 2106, 2158 in TWS's order: what to send after nextValidId/managedAccounts."""
    return [notice(MARKET_DATA_FARM_OK), notice(HMDS_FARM_OK), notice(SECDEF_FARM_OK)]


def farm_broken_notices() -> list[bytes]:
    """2103, 2105, 2157: every farm disconnected."""
    return [
        notice(MARKET_DATA_FARM_BROKEN),
        notice(HMDS_FARM_BROKEN),
        notice(SECDEF_FARM_BROKEN),
    ]


def connectivity_lost() -> bytes:
    """1100: IB↔TWS link lost (the clients keep the socket and wait for 1101/1102)."""
    return notice(CONNECTIVITY_LOST)


def connectivity_restored(*, data_lost: bool) -> bytes:
    """1101 (subscriptions dropped) or 1102 (maintained; the clients then send msg 62)."""
    return notice(
        CONNECTIVITY_RESTORED_DATA_LOST if data_lost else CONNECTIVITY_RESTORED_DATA_MAINTAINED
    )


def client_id_in_use() -> bytes:
    """326: send at startApi for a duplicate clientId, then close the socket."""
    return notice(CLIENT_ID_IN_USE)


def max_rate_exceeded(received: int, maximum: int = 50) -> bytes:
    """100: more than ``maximum`` messages in one second."""
    return notice(MAX_RATE_EXCEEDED, max=maximum, rec=received)


def no_security_definition(req_id: int) -> bytes:
    """200 for an unknown contract (reqId = request or order id)."""
    return notice(NO_SECURITY_DEFINITION, req_id)


def order_rejected(order_id: int, reason: str, advanced_json: str = "") -> bytes:
    """201 ``Order rejected - reason:<reason>``: the clients mark the trade Cancelled."""
    return notice(ORDER_REJECTED, order_id, advanced_json, reason=reason)


def order_cancelled(order_id: int, reason: str = "") -> bytes:
    """202, sent after ``orderStatus(Cancelled)``."""
    return notice(ORDER_CANCELLED, order_id, reason=reason)


def cancel_not_found(order_id: int) -> bytes:
    """10147: cancel of an unknown order id."""
    return notice(CANCEL_NOT_FOUND, order_id, order_id=order_id)


def cannot_cancel(order_id: int, state: str) -> bytes:
    """10148: cancel of an order already done (``state`` e.g. ``Filled``)."""
    return notice(CANNOT_CANCEL, order_id, order_id=order_id, state=state)


def duplicate_order_id(order_id: int) -> bytes:
    """103 Duplicate order id."""
    return notice(DUPLICATE_ORDER_ID, order_id)


def cannot_modify_filled_order(order_id: int) -> bytes:
    """104 Can't modify a filled order."""
    return notice(CANNOT_MODIFY_FILLED_ORDER, order_id)


def modify_does_not_match(order_id: int) -> bytes:
    """105 Order being modified does not match original order."""
    return notice(MODIFY_DOES_NOT_MATCH, order_id)


def historical_data_error(req_id: int, reason: str) -> bytes:
    """162 Historical Market Data Service error (e.g. ``'pacing violation'``)."""
    return notice(HISTORICAL_DATA_ERROR, req_id, reason=reason)


def no_historical_query(req_id: int) -> bytes:
    """366: cancel of an unknown historical data request."""
    return notice(NO_HISTORICAL_QUERY, req_id, ticker_id=req_id)


def request_error(req_id: int, code: int, reason: str) -> bytes:
    """320/321/322: a request that could not be read/validated/processed."""
    return notice(code, req_id, reason=reason)
