"""Every NATS subject and stream of ibflow, versioned, as ``Final`` constants and builders.

Layout::

    ibflow.evt.v1.<domain>.<kind>.<portfolio>   events (JetStream stream IBFLOW_EVENTS)
    ibflow.evt.v1.session.<name>                session events (IBFLOW_EVENTS)
    ibflow.cmd.v1.<noun>.<verb>                 commands, request/reply on core NATS
    ibflow.cmd.v1.broker.<noun>.<verb>.<portfolio>
                                                order-manager → gateway-bridge, core NATS
    ibflow.md.v1.<symbol>                       market data, core NATS, never persisted
    ibflow.dlq.v1.<consumer>                    dead letters (JetStream stream IBFLOW_DLQ)

One subject carries one message type (see :mod:`ibflow.contracts.registry`). Event
subjects always have three tokens after the prefix, the last being the portfolio, so
``portfolio_events("demo")`` selects everything about one portfolio; events about every
portfolio at once (a global halt) use the scope :data:`ALL_PORTFOLIOS`. Builders refuse
values that are not a single subject token (:func:`token`).
"""

from __future__ import annotations

from typing import Final

from ibflow.bus.specs import StreamSpec

ROOT: Final = "ibflow"
VERSION: Final = "v1"

EVENTS_PREFIX: Final = f"{ROOT}.evt.{VERSION}"
COMMANDS_PREFIX: Final = f"{ROOT}.cmd.{VERSION}"
MARKET_DATA_PREFIX: Final = f"{ROOT}.md.{VERSION}"
DEAD_LETTER_PREFIX: Final = f"{ROOT}.dlq.{VERSION}"

EVENTS_STREAM: Final = StreamSpec(
    name="IBFLOW_EVENTS",
    subjects=(f"{EVENTS_PREFIX}.>",),
    description="Every ibflow event, durable; replayed by consumers after restarts.",
)
DEAD_LETTER_STREAM: Final = StreamSpec(
    name="IBFLOW_DLQ",
    subjects=(f"{DEAD_LETTER_PREFIX}.>",),
    description="Messages a consumer gave up on, with the reason and the original payload.",
    max_age_seconds=30 * 24 * 3600.0,
)
ALL_STREAMS: Final = (EVENTS_STREAM, DEAD_LETTER_STREAM)

ALL_PORTFOLIOS: Final = "_all"
"""Scope token of events about every portfolio; no portfolio id starts with ``_``."""

# --- events: <prefix>.<portfolio> -------------------------------------------------------
GATEWAY_CONNECTION: Final = f"{EVENTS_PREFIX}.gateway.connection"
BROKER_ERROR: Final = f"{EVENTS_PREFIX}.gateway.error"
BROKER_SNAPSHOT: Final = f"{EVENTS_PREFIX}.gateway.snapshot"
ORDER_STATUS: Final = f"{EVENTS_PREFIX}.order.status"
EXECUTION: Final = f"{EVENTS_PREFIX}.order.execution"
COMMISSION: Final = f"{EVENTS_PREFIX}.order.commission"
ORDER_UPDATED: Final = f"{EVENTS_PREFIX}.order.updated"
ORDER_REJECTED: Final = f"{EVENTS_PREFIX}.order.rejected"
BROKER_POSITION: Final = f"{EVENTS_PREFIX}.account.position"
ACCOUNT_VALUES: Final = f"{EVENTS_PREFIX}.account.values"
PORTFOLIO_CHANGED: Final = f"{EVENTS_PREFIX}.portfolio.changed"
TRADING_HALTED: Final = f"{EVENTS_PREFIX}.trading.halted"
TRADING_RESUMED: Final = f"{EVENTS_PREFIX}.trading.resumed"
RISK_BREACHED: Final = f"{EVENTS_PREFIX}.risk.breached"
POSITION_CHANGED: Final = f"{EVENTS_PREFIX}.position.changed"
RECONCILIATION: Final = f"{EVENTS_PREFIX}.position.reconciled"
POSITION_DRIFT: Final = f"{EVENTS_PREFIX}.position.drift"
POSITION_MARKS: Final = f"{EVENTS_PREFIX}.position.marks"
ENTRY_SESSION: Final = f"{EVENTS_PREFIX}.entry.completed"
SESSION_EVENTS: Final = f"{EVENTS_PREFIX}.session"
"""Followed by the session event's name, not a portfolio."""

# --- commands (request/reply, core NATS) ------------------------------------------------
SUBMIT_ORDER: Final = f"{COMMANDS_PREFIX}.order.submit"
MODIFY_ORDER: Final = f"{COMMANDS_PREFIX}.order.modify"
CANCEL_ORDER: Final = f"{COMMANDS_PREFIX}.order.cancel"
HALT_TRADING: Final = f"{COMMANDS_PREFIX}.trading.halt"
RESUME_TRADING: Final = f"{COMMANDS_PREFIX}.trading.resume"
FLATTEN_POSITIONS: Final = f"{COMMANDS_PREFIX}.position.flatten"
SET_POSITION_LEVELS: Final = f"{COMMANDS_PREFIX}.position.set_levels"
REQUEST_RECONCILIATION: Final = f"{COMMANDS_PREFIX}.position.reconcile"
TRIGGER_SESSION_EVENT: Final = f"{COMMANDS_PREFIX}.session.trigger"
REQUEST_SESSION_SCHEDULE: Final = f"{COMMANDS_PREFIX}.session.schedule"
SUBMIT_RECOMMENDATIONS: Final = f"{COMMANDS_PREFIX}.recommendations.submit"
SUBSCRIBE_MARKET_DATA: Final = f"{COMMANDS_PREFIX}.market_data.subscribe"
UNSUBSCRIBE_MARKET_DATA: Final = f"{COMMANDS_PREFIX}.market_data.unsubscribe"
CREATE_API_KEY: Final = f"{COMMANDS_PREFIX}.api_key.create"
LIST_API_KEYS: Final = f"{COMMANDS_PREFIX}.api_key.list"
REVOKE_API_KEY: Final = f"{COMMANDS_PREFIX}.api_key.revoke"
# Broker commands are followed by the portfolio: only the order-manager publishes the
# order ones, and each bridge connection listens to its own portfolio.
BROKER_COMMANDS_PREFIX: Final = f"{COMMANDS_PREFIX}.broker"
PLACE_BROKER_ORDER: Final = f"{BROKER_COMMANDS_PREFIX}.order.place"
MODIFY_BROKER_ORDER: Final = f"{BROKER_COMMANDS_PREFIX}.order.modify"
CANCEL_BROKER_ORDER: Final = f"{BROKER_COMMANDS_PREFIX}.order.cancel"
LOOKUP_BROKER_ORDER: Final = f"{BROKER_COMMANDS_PREFIX}.order.lookup"
PREVIEW_BROKER_ORDER: Final = f"{BROKER_COMMANDS_PREFIX}.order.preview"
REFRESH_BROKER_STATE: Final = f"{BROKER_COMMANDS_PREFIX}.state.refresh"

# --- wildcards for subscriptions and consumer filters -----------------------------------
ALL_EVENTS: Final = f"{EVENTS_PREFIX}.>"
ALL_SESSION_EVENTS: Final = f"{SESSION_EVENTS}.*"
ALL_COMMANDS: Final = f"{COMMANDS_PREFIX}.>"
ALL_MARKET_DATA: Final = f"{MARKET_DATA_PREFIX}.*"
ALL_DEAD_LETTERS: Final = f"{DEAD_LETTER_PREFIX}.>"


def token(value: str) -> str:
    """Check that ``value`` is usable as one subject token (no dots, wildcards or spaces)."""
    if not value or any(ch in value for ch in ".*> \t\r\n"):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def _scoped(prefix: str, scope: str) -> str:
    return f"{prefix}.{token(scope)}"


def gateway_connection(portfolio_id: str) -> str:
    """``GatewayConnectionChanged`` of a portfolio."""
    return _scoped(GATEWAY_CONNECTION, portfolio_id)


def broker_error(portfolio_id: str) -> str:
    """``BrokerErrorReported`` of a portfolio."""
    return _scoped(BROKER_ERROR, portfolio_id)


def broker_snapshot(portfolio_id: str) -> str:
    """``BrokerSnapshotCompleted`` of a portfolio."""
    return _scoped(BROKER_SNAPSHOT, portfolio_id)


def order_status(portfolio_id: str) -> str:
    """``OrderStatusChanged`` of a portfolio."""
    return _scoped(ORDER_STATUS, portfolio_id)


def execution(portfolio_id: str) -> str:
    """``ExecutionReported`` of a portfolio."""
    return _scoped(EXECUTION, portfolio_id)


def commission(portfolio_id: str) -> str:
    """``CommissionReported`` of a portfolio."""
    return _scoped(COMMISSION, portfolio_id)


def order_updated(portfolio_id: str) -> str:
    """``OrderBookUpdated`` of a portfolio."""
    return _scoped(ORDER_UPDATED, portfolio_id)


def order_rejected(portfolio_id: str) -> str:
    """``OrderRejected`` of a portfolio."""
    return _scoped(ORDER_REJECTED, portfolio_id)


def broker_position(portfolio_id: str) -> str:
    """``BrokerPositionReported`` of a portfolio."""
    return _scoped(BROKER_POSITION, portfolio_id)


def account_values(portfolio_id: str) -> str:
    """``AccountValuesReported`` of a portfolio."""
    return _scoped(ACCOUNT_VALUES, portfolio_id)


def portfolio_changed(portfolio_id: str) -> str:
    """``PortfolioChanged`` of a portfolio."""
    return _scoped(PORTFOLIO_CHANGED, portfolio_id)


def trading_halted(portfolio_id: str | None) -> str:
    """``TradingHalted`` of a portfolio, or of all (``None`` → :data:`ALL_PORTFOLIOS`)."""
    return _scoped(TRADING_HALTED, ALL_PORTFOLIOS if portfolio_id is None else portfolio_id)


def trading_resumed(portfolio_id: str | None) -> str:
    """``TradingResumed`` of a portfolio, or of all (``None`` → :data:`ALL_PORTFOLIOS`)."""
    return _scoped(TRADING_RESUMED, ALL_PORTFOLIOS if portfolio_id is None else portfolio_id)


def risk_breached(portfolio_id: str) -> str:
    """``RiskLimitBreached`` of a portfolio."""
    return _scoped(RISK_BREACHED, portfolio_id)


def position_changed(portfolio_id: str) -> str:
    """``PositionChanged`` of a portfolio."""
    return _scoped(POSITION_CHANGED, portfolio_id)


def reconciliation(portfolio_id: str) -> str:
    """``ReconciliationReported`` of a portfolio."""
    return _scoped(RECONCILIATION, portfolio_id)


def position_drift(portfolio_id: str) -> str:
    """``PositionDriftDetected`` of a portfolio."""
    return _scoped(POSITION_DRIFT, portfolio_id)


def position_marks(portfolio_id: str) -> str:
    """``PositionMarksUpdated`` of a portfolio."""
    return _scoped(POSITION_MARKS, portfolio_id)


def entry_session(portfolio_id: str) -> str:
    """``EntrySessionCompleted`` of a portfolio."""
    return _scoped(ENTRY_SESSION, portfolio_id)


def session_event(name: str) -> str:
    """``SessionEventEmitted`` named ``name`` (``ibflow.evt.v1.session.morning_entry``)."""
    return _scoped(SESSION_EVENTS, name)


def place_broker_order(portfolio_id: str) -> str:
    """``PlaceBrokerOrder`` for a portfolio's connection."""
    return _scoped(PLACE_BROKER_ORDER, portfolio_id)


def modify_broker_order(portfolio_id: str) -> str:
    """``ModifyBrokerOrder`` for a portfolio's connection."""
    return _scoped(MODIFY_BROKER_ORDER, portfolio_id)


def cancel_broker_order(portfolio_id: str) -> str:
    """``CancelBrokerOrder`` for a portfolio's connection."""
    return _scoped(CANCEL_BROKER_ORDER, portfolio_id)


def lookup_broker_order(portfolio_id: str) -> str:
    """``FindBrokerOrder`` for a portfolio's connection."""
    return _scoped(LOOKUP_BROKER_ORDER, portfolio_id)


def preview_broker_order(portfolio_id: str) -> str:
    """``PreviewBrokerOrder`` for a portfolio's connection."""
    return _scoped(PREVIEW_BROKER_ORDER, portfolio_id)


def refresh_broker_state(portfolio_id: str) -> str:
    """``RefreshBrokerState`` for a portfolio's connection."""
    return _scoped(REFRESH_BROKER_STATE, portfolio_id)


def symbol_token(symbol: str) -> str:
    """A symbol as a subject token: IB's ``BRK B`` and the common ``BRK.B`` become ``BRK_B``.

    Lossy on purpose; the tick itself carries the exact symbol.
    """
    return token(symbol.strip().replace(".", "_").replace(" ", "_"))


def market_data(symbol: str) -> str:
    """``MarketDataTick`` of a symbol (``ibflow.md.v1.AAPL``)."""
    return f"{MARKET_DATA_PREFIX}.{symbol_token(symbol)}"


def dead_letter(consumer: str) -> str:
    """Subject of the dead letters of durable consumer ``consumer``."""
    return f"{DEAD_LETTER_PREFIX}.{token(consumer)}"


def wildcard(prefix: str) -> str:
    """Every scope of one subject family: ``wildcard(ORDER_STATUS)`` → ``...order.status.*``."""
    return f"{prefix}.*"


def portfolio_events(portfolio_id: str) -> str:
    """Every event of one portfolio (``ibflow.evt.v1.*.*.<portfolio>``).

    Does not include events scoped to :data:`ALL_PORTFOLIOS`; subscribe to
    ``portfolio_events(ALL_PORTFOLIOS)`` as well to see global halts.
    """
    return f"{EVENTS_PREFIX}.*.*.{token(portfolio_id)}"


def broker_commands(portfolio_id: str) -> str:
    """Every broker command for one portfolio's connection (the bridge's subscription)."""
    return f"{BROKER_COMMANDS_PREFIX}.*.*.{token(portfolio_id)}"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: does ``pattern`` (with ``*`` / ``>``) select ``subject``?"""
    wanted, actual = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(actual) > index
        if index >= len(actual) or part not in ("*", actual[index]):
            return False
    return len(actual) == len(wanted)
