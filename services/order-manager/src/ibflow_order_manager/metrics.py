"""Prometheus metrics of the order-manager (default registry, served on ``/metrics``).

Labels stay small: portfolio ids (a handful per deployment), our order statuses, and
the names of the risk and validation rules.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

ORDER_TRANSITIONS: Final = Counter(
    "ibflow_orders_entered_total",
    "Orders entering a status (committed transitions), by portfolio and status.",
    ["portfolio", "status"],
)
REJECTIONS: Final = Counter(
    "ibflow_orders_refused_total",
    "Submits refused before reaching IB, by portfolio and rule (risk rule, or the field"
    " checked: portfolio, symbol, currency, tick, reference_price).",
    ["portfolio", "rule"],
)
FILL_TO_COMMIT: Final = Histogram(
    "ibflow_fill_commit_seconds",
    "An execution's creation at the gateway-bridge to its booking committed here.",
    buckets=(0.001, 0.002, 0.004, 0.008, 0.012, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
CASH: Final = Gauge(
    "ibflow_portfolio_cash", "A portfolio's cash (ledger of broker facts).", ["portfolio"]
)
RESERVED_CASH: Final = Gauge(
    "ibflow_portfolio_reserved_cash", "Cash reserved by a portfolio's working buys.", ["portfolio"]
)
UNKNOWN_ORDERS: Final = Gauge(
    "ibflow_orders_unknown", "Orders whose state at IB is not established (UNKNOWN)."
)
CONSUMER_PENDING: Final = Gauge(
    "ibflow_consumer_pending",
    "Messages of a durable consumer not yet delivered (its lag), sampled periodically.",
    ["consumer"],
)
TRADING_HALTED: Final = Gauge(
    "ibflow_om_trading_halted",
    "1 while a portfolio's trading is halted (kill switch or daily loss limit), else 0.",
    ["portfolio"],
)
EXECUTIONS_BOOKED: Final = Counter(
    "ibflow_om_executions_booked",
    "Executions booked (committed; a replayed execution is not counted again).",
    ["portfolio"],
)
COMMISSIONS: Final = Counter(
    "ibflow_om_commissions",
    "Commissions booked (committed), in their currency; rebates (negative) are not counted.",
    ["portfolio", "currency"],
)
REALIZED_PNL_TODAY: Final = Gauge(
    "ibflow_om_realized_pnl_today",
    "IB's realized P&L (net of commissions) of a portfolio's executions since midnight in"
    " New York, as last computed (daily loss check, submit, periodic refresh).",
    ["portfolio"],
)
MAX_DAILY_LOSS: Final = Gauge(
    "ibflow_om_max_daily_loss",
    "A portfolio's daily loss limit (a positive amount); no sample when it has none.",
    ["portfolio"],
)
