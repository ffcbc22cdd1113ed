"""The simulator's domain: instruments, market data, accounts and the matching engine.

Pure and deterministic: no I/O (except :meth:`Market.load_csv`), no asyncio, no wall
clock. Time is always passed in as a timezone-aware UTC ``now``.
"""

from ibflow_gateway_sim.domain.accounts import (
    DEFAULT_ACCOUNT_ID,
    Account,
    Accounts,
    AccountType,
    MarginCheck,
    PortfolioItem,
    Position,
)
from ibflow_gateway_sim.domain.events import (
    AccountChanged,
    CommissionCharged,
    EngineEvent,
    ExecutionOccurred,
    OrderError,
    OrderRejected,
    OrderStatusChanged,
    PositionChanged,
    SimExecution,
)
from ibflow_gateway_sim.domain.instruments import DEFAULT_INSTRUMENTS, Instrument, Universe
from ibflow_gateway_sim.domain.market import Bar, Market, MarketClock, MarketSettings, Quote
from ibflow_gateway_sim.domain.matching import CommissionSchedule, Engine, ErrorTexts, Fill
from ibflow_gateway_sim.domain.orders import (
    ACTIVE_STATUSES,
    DONE_STATUSES,
    ORDER_TYPES,
    TIFS,
    Action,
    OrderRequest,
    OrderStatus,
    SimOrder,
)

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_INSTRUMENTS",
    "DONE_STATUSES",
    "ORDER_TYPES",
    "TIFS",
    "Account",
    "AccountChanged",
    "AccountType",
    "Accounts",
    "Action",
    "Bar",
    "CommissionCharged",
    "CommissionSchedule",
    "Engine",
    "EngineEvent",
    "ErrorTexts",
    "ExecutionOccurred",
    "Fill",
    "Instrument",
    "MarginCheck",
    "Market",
    "MarketClock",
    "MarketSettings",
    "OrderError",
    "OrderRejected",
    "OrderRequest",
    "OrderStatus",
    "OrderStatusChanged",
    "PortfolioItem",
    "Position",
    "PositionChanged",
    "Quote",
    "SimExecution",
    "SimOrder",
    "Universe",
]
