"""Prometheus metrics of the position-monitor (default registry, served on ``/metrics``).

Labels stay small: portfolio ids, position statuses, exit reasons, the reasons a quote
was not acted on, and the order-manager's error codes. No per-position labels.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

POSITIONS_ENTERED: Final = Counter(
    "ibflow_positions_entered_total",
    "Positions entering a status (committed transitions), by portfolio and status.",
    ["portfolio", "status"],
)
OPEN_POSITIONS: Final = Gauge(
    "ibflow_positions_open",
    "Positions holding shares (OPEN or CLOSING) watched by this replica, by portfolio.",
    ["portfolio"],
)
EXITS_SENT: Final = Counter(
    "ibflow_position_exits_sent_total",
    "Exit orders recorded and sent to the order-manager, by portfolio and reason.",
    ["portfolio", "reason"],
)
EXIT_REFUSALS: Final = Counter(
    "ibflow_position_exit_refusals_total",
    "Exits the order-manager did not take, by portfolio and its error code.",
    ["portfolio", "code"],
)
TICKS: Final = Counter(
    "ibflow_position_ticks_total",
    "Market data ticks received for watched symbols, by outcome (used, undecodable).",
    ["outcome"],
)
UNUSABLE_QUOTES: Final = Counter(
    "ibflow_position_unusable_quotes_total",
    "Stop/target evaluations not acted on because of the data, by reason (stale, crossed,"
    " delayed, missing_price, invalid_price).",
    ["reason"],
)
STALE_SYMBOLS: Final = Gauge(
    "ibflow_position_stale_symbols",
    "Watched symbols without a tick for longer than IBFLOW_STALE_AFTER.",
)
SNAPSHOT_REQUESTS: Final = Counter(
    "ibflow_position_quote_refreshes_total",
    "Fresh quotes requested for stale symbols (subscription re-requested at the bridge).",
)
TICK_TO_EXIT: Final = Histogram(
    "ibflow_position_tick_to_exit_seconds",
    "A tick's arrival here to the order-manager's acceptance of the exit it triggered.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DRIFT_DETECTED: Final = Counter(
    "ibflow_position_drift_detected_total",
    "Differences between our book and a broker snapshot, by portfolio and kind.",
    ["portfolio", "kind"],
)
OPEN_DRIFT: Final = Gauge(
    "ibflow_position_drift_open",
    "Unresolved reconciliation_reports rows, by portfolio (0: in sync).",
    ["portfolio"],
)
ADOPTED: Final = Counter(
    "ibflow_positions_adopted_total",
    "Broker holdings unknown to us adopted as external positions, by portfolio.",
    ["portfolio"],
)
UNREALIZED_PNL: Final = Gauge(
    "ibflow_portfolio_unrealized_pnl",
    "Unrealized P&L of a portfolio's positions at their latest marks (gross).",
    ["portfolio"],
)
PARKED_FACTS: Final = Counter(
    "ibflow_position_parked_facts_total",
    "Broker facts about orders no position knew yet (kept until one does), by kind.",
    ["kind"],
)
MANUAL_FACTS_SKIPPED: Final = Counter(
    "ibflow_position_manual_facts_skipped_total",
    "Broker facts of orders the order-manager recorded as manual, skipped (no position"
    " owns them), by kind.",
    ["kind"],
)
UNATTRIBUTED: Final = Counter(
    "ibflow_position_unattributed_total",
    "Events about unknown positions, recorded in the log and skipped, by kind.",
    ["kind"],
)
