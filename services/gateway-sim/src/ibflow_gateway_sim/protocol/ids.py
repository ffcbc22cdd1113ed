"""Message ids (client→server ``IN_*``, server→client ``OUT_*``), tick types and unset values.

Plain ``Final`` ints rather than enums, so they compare and format exactly like the
wire value. :data:`IN_NAMES` / :data:`OUT_NAMES` give names for logging.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final

UNSET_DOUBLE: Final = sys.float_info.max
"""IB's "no value" for doubles (1.7976931348623157e308); the clients send it as ``''``."""
UNSET_INTEGER: Final = 2**31 - 1
"""IB's "no value" for ints (2147483647); the clients send it as ``''``."""

# --- client → server ---------------------------------------------------------------------
IN_REQ_MKT_DATA: Final = 1
IN_CANCEL_MKT_DATA: Final = 2
IN_PLACE_ORDER: Final = 3
IN_CANCEL_ORDER: Final = 4
IN_REQ_OPEN_ORDERS: Final = 5
IN_REQ_ACCOUNT_UPDATES: Final = 6
IN_REQ_EXECUTIONS: Final = 7
IN_REQ_IDS: Final = 8
IN_REQ_CONTRACT_DETAILS: Final = 9
IN_REQ_AUTO_OPEN_ORDERS: Final = 15
IN_REQ_ALL_OPEN_ORDERS: Final = 16
IN_REQ_HISTORICAL_DATA: Final = 20
IN_CANCEL_HISTORICAL_DATA: Final = 25
IN_REQ_CURRENT_TIME: Final = 49
IN_REQ_GLOBAL_CANCEL: Final = 58
IN_REQ_MARKET_DATA_TYPE: Final = 59
IN_REQ_POSITIONS: Final = 61
IN_REQ_ACCOUNT_SUMMARY: Final = 62
IN_CANCEL_ACCOUNT_SUMMARY: Final = 63
IN_CANCEL_POSITIONS: Final = 64
IN_START_API: Final = 71
IN_REQ_ACCOUNT_UPDATES_MULTI: Final = 76
IN_CANCEL_ACCOUNT_UPDATES_MULTI: Final = 77
IN_REQ_COMPLETED_ORDERS: Final = 99

# --- server → client ---------------------------------------------------------------------
OUT_TICK_PRICE: Final = 1
OUT_TICK_SIZE: Final = 2
OUT_ORDER_STATUS: Final = 3
OUT_ERROR: Final = 4
OUT_OPEN_ORDER: Final = 5
OUT_ACCOUNT_VALUE: Final = 6
OUT_PORTFOLIO_VALUE: Final = 7
OUT_ACCOUNT_UPDATE_TIME: Final = 8
OUT_NEXT_VALID_ID: Final = 9
OUT_CONTRACT_DATA: Final = 10
OUT_EXECUTION_DATA: Final = 11
OUT_MANAGED_ACCOUNTS: Final = 15
OUT_HISTORICAL_DATA: Final = 17
OUT_TICK_GENERIC: Final = 45
OUT_TICK_STRING: Final = 46
OUT_CURRENT_TIME: Final = 49
OUT_CONTRACT_DATA_END: Final = 52
OUT_OPEN_ORDER_END: Final = 53
OUT_ACCOUNT_DOWNLOAD_END: Final = 54
OUT_EXECUTION_DATA_END: Final = 55
OUT_TICK_SNAPSHOT_END: Final = 57
OUT_MARKET_DATA_TYPE: Final = 58
OUT_COMMISSION_REPORT: Final = 59
OUT_POSITION_DATA: Final = 61
OUT_POSITION_END: Final = 62
OUT_ACCOUNT_SUMMARY: Final = 63
OUT_ACCOUNT_SUMMARY_END: Final = 64
OUT_ACCOUNT_UPDATE_MULTI: Final = 73
OUT_ACCOUNT_UPDATE_MULTI_END: Final = 74
OUT_TICK_REQ_PARAMS: Final = 81
OUT_HISTORICAL_DATA_UPDATE: Final = 90
OUT_COMPLETED_ORDER: Final = 101
OUT_COMPLETED_ORDERS_END: Final = 102

# --- tick types (the ones both clients' wrappers map; see spec §4.6) -----------------------
TICK_BID_SIZE: Final = 0
TICK_BID: Final = 1
TICK_ASK: Final = 2
TICK_ASK_SIZE: Final = 3
TICK_LAST: Final = 4
TICK_LAST_SIZE: Final = 5
TICK_HIGH: Final = 6
TICK_LOW: Final = 7
TICK_VOLUME: Final = 8
TICK_CLOSE: Final = 9
TICK_OPEN: Final = 14
TICK_LAST_TIMESTAMP: Final = 45
TICK_SHORTABLE: Final = 46
TICK_RT_VOLUME: Final = 48
TICK_HALTED: Final = 49
TICK_DELAYED_BID: Final = 66
TICK_DELAYED_ASK: Final = 67
TICK_DELAYED_LAST: Final = 68
TICK_DELAYED_BID_SIZE: Final = 69
TICK_DELAYED_ASK_SIZE: Final = 70
TICK_DELAYED_LAST_SIZE: Final = 71
TICK_DELAYED_HIGH: Final = 72
TICK_DELAYED_LOW: Final = 73
TICK_DELAYED_VOLUME: Final = 74
TICK_DELAYED_CLOSE: Final = 75
TICK_DELAYED_OPEN: Final = 76
TICK_DELAYED_LAST_TIMESTAMP: Final = 88

# --- market data types (reqMarketDataType / marketDataType) -------------------------------
MARKET_DATA_LIVE: Final = 1
MARKET_DATA_FROZEN: Final = 2
MARKET_DATA_DELAYED: Final = 3
MARKET_DATA_DELAYED_FROZEN: Final = 4


def _names(prefix: str) -> dict[int, str]:
    return {
        value: name.removeprefix(prefix)
        for name, value in globals().items()
        if name.startswith(prefix) and isinstance(value, int)
    }


IN_NAMES: Final[Mapping[int, str]] = _names("IN_")
"""Client→server id → name (e.g. ``3 → "PLACE_ORDER"``), for logging."""
OUT_NAMES: Final[Mapping[int, str]] = _names("OUT_")
"""Server→client id → name, for logging."""
