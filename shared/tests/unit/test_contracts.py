"""The message contracts: wire format, tolerance, invariants and natural ids."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from ibflow.contracts import (
    REFUSED,
    AccountValuesReported,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyRevoked,
    ApiKeysListed,
    BrokerErrorReported,
    BrokerOrderPreviewed,
    BrokerOrderSearched,
    BrokerPositionReported,
    BrokerQuery,
    BrokerSnapshotCompleted,
    CancelBrokerOrder,
    CancelOrder,
    CommandAccepted,
    CommissionReported,
    ConnectionState,
    Contract,
    CreateApiKey,
    EntrySessionCompleted,
    EntrySkipped,
    Envelope,
    ErrorReply,
    ExecutionReported,
    ExitReason,
    FindBrokerOrder,
    FlattenPositions,
    GatewayConnectionChanged,
    GatewayType,
    HaltTrading,
    ListApiKeys,
    MarketDataTick,
    MessageDeadLettered,
    ModifyBrokerOrder,
    ModifyOrder,
    OccurrenceState,
    OrderBookUpdated,
    OrderPurpose,
    OrderRejected,
    OrderSide,
    OrderStatus,
    OrderStatusChanged,
    OrderType,
    PlaceBrokerOrder,
    PortfolioChanged,
    PositionChanged,
    PositionDriftDetected,
    PositionMark,
    PositionMarksUpdated,
    PositionSide,
    PositionStatus,
    PreviewBrokerOrder,
    Recommendation,
    ReconciliationItem,
    ReconciliationReported,
    RefreshBrokerState,
    RequestReconciliation,
    RequestSessionSchedule,
    ResumeTrading,
    RevokeApiKey,
    RiskAction,
    RiskLimitBreached,
    ScheduledOccurrence,
    SessionEventEmitted,
    SessionSchedule,
    SessionScheduleReported,
    SetPositionLevels,
    SubmitOrder,
    SubmitRecommendations,
    SubscribeMarketData,
    TradingHalted,
    TradingResumed,
    TriggerSessionEvent,
    UnsubscribeMarketData,
    canonical_decimal,
    occurrence_id,
    parse_reply,
)
from ibflow.contracts.registry import CATALOGUE, MessageKind, MessageSpec
from ibflow.contracts.schemas import export_schemas

M = TypeVar("M", bound=Contract)

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
SNAPSHOT = uuid.UUID("00000000-0000-4000-8000-000000000001")

ENTRY: dict[str, Any] = {
    "portfolio_id": "demo",
    "client_order_id": "demo-20261123-0001",
    "symbol": "AAPL",
    "side": OrderSide.BUY,
    "order_type": OrderType.LMT,
    "quantity": Decimal("10"),
    "limit_price": Decimal("101.25"),
    "purpose": OrderPurpose.ENTRY,
    "position_id": "pos-1",
    "stop_loss": Decimal("99.50"),
    "take_profit": Decimal("105"),
    "requested_by": "order-manager",
}
BROKER_TERMS = {k: ENTRY[k] for k in ("portfolio_id", "client_order_id", "symbol", "side")} | {
    "order_type": OrderType.LMT,
    "quantity": Decimal("10"),
    "limit_price": Decimal("101.25"),
}
SESSION: dict[str, Any] = {
    "name": "morning_entry",
    "occurrence_id": "morning_entry:2026-11-23:0",
    "session_date": date(2026, 11, 23),
    "scheduled_for": T0,
    "emitted_at": T0 + timedelta(seconds=1),
    "session_open": T0,
    "session_close": T0 + timedelta(hours=6, minutes=30),
}
USER = "user:alice"

API_KEY = ApiKeyInfo(
    key_id="0123456789ab", name="grafana", scope="read", created_by=USER, created_at=T0
)

SAMPLES: dict[type[Contract], Contract] = {
    m.__class__: m
    for m in (
        SubmitOrder(**ENTRY),
        ModifyOrder(portfolio_id="demo", client_order_id="c1", limit_price=1, requested_by=USER),
        CancelOrder(portfolio_id="demo", client_order_id="c1", requested_by=USER),
        HaltTrading(reason="news", requested_by=USER),
        ResumeTrading(portfolio_id="demo", reason="calm", requested_by=USER),
        FlattenPositions(portfolio_id="demo", reason="eod", requested_by=USER),
        SetPositionLevels(
            portfolio_id="demo", position_id="pos-1", stop_loss=99, requested_by=USER
        ),
        RequestReconciliation(requested_by=USER),
        TriggerSessionEvent(name="close_out", requested_by=USER),
        RequestSessionSchedule(session_date=date(2026, 11, 23)),
        CreateApiKey(name="grafana", scope="read", requested_by=USER),
        ApiKeyCreated(key=API_KEY, secret="ibf_0123456789ab_" + "s" * 43),
        ListApiKeys(include_revoked=True, requested_by=USER),
        ApiKeysListed(keys=(API_KEY,)),
        RevokeApiKey(key_id="0123456789ab", reason="left", requested_by=USER),
        ApiKeyRevoked(key=API_KEY.model_copy(update={"revoked_at": T0})),
        SessionScheduleReported(
            as_of=T0,
            session=SessionSchedule(
                session_date=date(2026, 11, 23),
                session_open=T0,
                session_close=T0 + timedelta(hours=6, minutes=30),
                early_close=False,
                occurrences=(
                    ScheduledOccurrence(
                        name="morning_entry",
                        occurrence_id="morning_entry:2026-11-23:0",
                        scheduled_for=T0 - timedelta(minutes=15),
                        deadline=T0,
                        state=OccurrenceState.EMITTED,
                        emitted_at=T0 - timedelta(minutes=15),
                    ),
                ),
            ),
            next_session=SessionSchedule(
                session_date=date(2026, 11, 24),
                session_open=T0 + timedelta(days=1),
                session_close=T0 + timedelta(days=1, hours=6, minutes=30),
                early_close=False,
                occurrences=(),
            ),
            leader="scheduler-1",
        ),
        SubmitRecommendations(
            portfolio_id="demo",
            session_date=date(2026, 11, 23),
            items=(
                Recommendation(symbol="AAPL", allocation=Decimal("0.1"), stop_loss=Decimal(95)),
                Recommendation(
                    symbol="MSFT",
                    quantity=Decimal(5),
                    entry_type=OrderType.LMT,
                    limit_price=Decimal("410.5"),
                ),
            ),
            requested_by=USER,
        ),
        EntrySessionCompleted(
            portfolio_id="demo",
            session_date=date(2026, 11, 23),
            occurrence_id="morning_entry:2026-11-23:0",
            submitted=("entry-demo-20261123-AAPL",),
            skipped=(EntrySkipped(symbol="MSFT", reason="insufficient_cash"),),
        ),
        SubscribeMarketData(symbols=("AAPL",), requested_by="position-monitor"),
        UnsubscribeMarketData(symbols=("AAPL",), requested_by="position-monitor"),
        RefreshBrokerState(portfolio_id="demo", requested_by="position-monitor"),
        FindBrokerOrder(portfolio_id="demo", client_order_id="c1"),
        BrokerOrderSearched(client_order_id="c1", found=False),
        PreviewBrokerOrder(
            portfolio_id="demo",
            client_order_id="preview-1",
            symbol="AAPL",
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=Decimal(10),
            limit_price=Decimal("190.50"),
        ),
        BrokerOrderPreviewed(
            client_order_id="preview-1",
            init_margin_change=Decimal("476.25"),
            commission=Decimal("1.00"),
            commission_currency="USD",
        ),
        PlaceBrokerOrder(**BROKER_TERMS),
        ModifyBrokerOrder(**BROKER_TERMS, revision=3),
        CancelBrokerOrder(portfolio_id="demo", client_order_id="c1"),
        CommandAccepted(command_id=SNAPSHOT, command_type="SubmitOrder", client_order_ids=("c1",)),
        ErrorReply.of(REFUSED, "trading is halted"),
        GatewayConnectionChanged(
            portfolio_id="demo",
            state=ConnectionState.READY,
            previous_state=ConnectionState.SYNCHRONISING,
            connected=True,
            gateway_type=GatewayType.IB_GATEWAY,
            host="127.0.0.1",
            port=4002,
            client_id=7,
            account_id="DU123",
            connection_time=T0,
            last_heartbeat=T0,
            server_version=176,
        ),
        BrokerErrorReported(portfolio_id="demo", code=201, message="rejected", order_id=5),
        BrokerSnapshotCompleted(
            portfolio_id="demo",
            snapshot_id=SNAPSHOT,
            reason="reconnected",
            queries=tuple(BrokerQuery),
            failed_queries=(BrokerQuery.EXECUTIONS,),
            complete=False,
            position_count=2,
            open_order_count=0,
            started_at=T0,
        ),
        OrderStatusChanged(
            portfolio_id="demo",
            client_order_id="c1",
            order_id=5,
            perm_id=123456,
            ib_status="Submitted",
            filled=Decimal("4"),
            remaining=Decimal("6"),
            avg_fill_price=Decimal("101.20"),
        ),
        ExecutionReported(
            portfolio_id="demo",
            account_id="DU123",
            exec_id="0000e0d5.6578a1b2.01.01",
            order_id=5,
            perm_id=123456,
            client_order_id="c1",
            symbol="AAPL",
            con_id=265598,
            side=OrderSide.BUY,
            shares=Decimal("4"),
            price=Decimal("101.20"),
            cum_qty=Decimal("4"),
            avg_price=Decimal("101.20"),
            exchange="ISLAND",
            executed_at=T0,
        ),
        CommissionReported(
            portfolio_id="demo",
            exec_id="0000e0d5.6578a1b2.01.01",
            commission=Decimal("1.00"),
            currency="USD",
        ),
        BrokerPositionReported(
            portfolio_id="demo",
            account_id="DU123",
            con_id=265598,
            symbol="AAPL",
            position=Decimal("-4"),
            avg_cost=Decimal("101.2"),
            snapshot_id=SNAPSHOT,
        ),
        AccountValuesReported(
            portfolio_id="demo",
            account_id="DU123",
            currency="USD",
            net_liquidation=Decimal("100000.00"),
            values={"NetLiquidation:USD": "100000.00"},
        ),
        OrderBookUpdated(
            **ENTRY, revision=2, status=OrderStatus.SUBMITTED, order_id=5, created_at=T0
        ),
        OrderRejected(
            portfolio_id="demo",
            client_order_id="c1",
            symbol="AAPL",
            side=OrderSide.BUY,
            purpose=OrderPurpose.MANUAL,
            reason="halted",
        ),
        PortfolioChanged(
            portfolio_id="demo",
            revision=1,
            session_date=date(2026, 11, 23),
            currency="USD",
            cash_balance=Decimal("100000"),
        ),
        TradingHalted(reason="max_daily_loss", requested_by="order-manager"),
        TradingResumed(portfolio_id="demo", reason="reviewed", requested_by=USER),
        RiskLimitBreached(
            portfolio_id="demo",
            limit="max_daily_loss",
            threshold=Decimal("-500"),
            observed=Decimal("-512.40"),
            action=RiskAction.TRADING_HALTED,
            message="daily loss beyond limit",
        ),
        PositionChanged(
            portfolio_id="demo",
            position_id="pos-1",
            revision=1,
            symbol="AAPL",
            side=PositionSide.LONG,
            status=PositionStatus.PENDING,
            planned_quantity=Decimal("10"),
            entry_client_order_id="demo-20261123-0001",
        ),
        ReconciliationReported(
            portfolio_id="demo",
            snapshot_id=SNAPSHOT,
            complete=True,
            items=(ReconciliationItem(symbol="AAPL", book_quantity=4, broker_quantity=4),),
        ),
        PositionDriftDetected(
            portfolio_id="demo",
            symbol="AAPL",
            kind="unknown_to_us",
            book_quantity=Decimal(0),
            broker_quantity=Decimal(100),
            snapshot_id=SNAPSHOT,
            adopted_position_id="ext-demo-20261123-AAPL",
        ),
        PositionMarksUpdated(
            portfolio_id="demo",
            marks=(
                PositionMark(
                    position_id="pos-1",
                    symbol="AAPL",
                    side=PositionSide.LONG,
                    quantity=Decimal(10),
                    mark_price=Decimal("101.5"),
                    unrealized_pnl=Decimal("15"),
                    marked_at=datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
                ),
            ),
            unrealized_pnl=Decimal("15"),
        ),
        SessionEventEmitted(**SESSION),
        MarketDataTick(symbol="AAPL", bid=Decimal("101.19"), ask=Decimal("101.21")),
        MessageDeadLettered(
            consumer="order-manager",
            stream="IBFLOW_EVENTS",
            subject="ibflow.evt.v1.order.status.demo",
            stream_sequence=42,
            delivery_count=20,
            reason="undecodable",
            payload_b64="e30=",
        ),
    )
}


def sample(model: type[M]) -> M:
    """The sample message of type ``model``."""
    message = SAMPLES[model]
    assert isinstance(message, model)
    return message


def _ids(spec: MessageSpec) -> str:
    return spec.name


def test_every_catalogued_type_has_a_sample() -> None:
    assert {spec.model for spec in CATALOGUE} == set(SAMPLES)


@pytest.mark.parametrize("spec", CATALOGUE, ids=_ids)
def test_every_message_round_trips_through_the_wire(spec: MessageSpec) -> None:
    message = SAMPLES[spec.model]
    assert spec.model.from_json(message.to_json()) == message


@pytest.mark.parametrize("spec", CATALOGUE, ids=_ids)
def test_wire_fields_are_exactly_the_published_schema(spec: MessageSpec) -> None:
    schema = export_schemas()[spec.name]
    wire = json.loads(SAMPLES[spec.model].to_json())
    assert set(wire) == set(schema["properties"])
    assert set(schema.get("required", ())) <= set(wire)


def test_money_and_quantities_travel_as_decimal_strings() -> None:
    order = SubmitOrder(**(ENTRY | {"limit_price": Decimal("101.250"), "quantity": "1E+2"}))
    wire = json.loads(order.to_json())
    assert wire["limit_price"] == "101.250"
    assert wire["quantity"] == "100"
    parsed = SubmitOrder.from_json(order.to_json())
    assert parsed.limit_price == Decimal("101.250")
    assert isinstance(parsed.quantity, Decimal)


@pytest.mark.parametrize("bad", [101.25, "NaN", "Infinity", "0", "-1"])
def test_prices_refuse_floats_non_finite_and_non_positive_values(bad: object) -> None:
    with pytest.raises(ValidationError):
        SubmitOrder(**(ENTRY | {"limit_price": bad, "stop_loss": None}))


def test_a_json_number_for_money_is_refused() -> None:
    wire = json.loads(sample(SubmitOrder).to_json()) | {"limit_price": 101.25}
    with pytest.raises(ValidationError, match="float"):
        SubmitOrder.from_json(json.dumps(wire))


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    wire = json.loads(sample(OrderStatusChanged).to_json()) | {"added_in_v1_5": {"x": 1}}
    parsed = OrderStatusChanged.from_json(json.dumps(wire))
    assert parsed == sample(OrderStatusChanged)
    assert not hasattr(parsed, "added_in_v1_5")


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        SessionEventEmitted(**(SESSION | {"scheduled_for": datetime(2026, 11, 23, 14, 30)}))


def test_timestamps_are_normalised_to_utc() -> None:
    new_york = timezone(timedelta(hours=-5))
    event = SessionEventEmitted(
        **(SESSION | {"emitted_at": datetime(2026, 11, 23, 9, 30, tzinfo=new_york)})
    )
    assert event.emitted_at == T0
    assert event.emitted_at.tzinfo == UTC


def test_messages_are_frozen() -> None:
    order = sample(SubmitOrder)
    with pytest.raises(ValidationError, match="frozen"):
        order.quantity = Decimal(1)  # type: ignore[misc]


_IMPERATIVE = {
    "Submit", "Modify", "Cancel", "Halt", "Resume", "Flatten", "Set", "Request",
    "Trigger", "Subscribe", "Unsubscribe", "Refresh", "Place", "Find", "Create", "List",
    "Revoke", "Preview",
}  # fmt: skip


@pytest.mark.parametrize("spec", CATALOGUE, ids=_ids)
def test_names_say_what_a_message_is(spec: MessageSpec) -> None:
    words = re.findall(r"[A-Z][a-z]*", spec.name)
    if spec.kind is MessageKind.COMMAND:
        assert words[0] in _IMPERATIVE, f"{spec.name}: a command starts with an imperative verb"
        assert not words[-1].endswith("ed")
    elif spec.kind is MessageKind.MARKET_DATA:
        assert words[-1] == "Tick"
    elif spec.model is ErrorReply:
        assert not issubclass(spec.model, Envelope)
    else:
        assert words[-1].endswith("ed"), f"{spec.name}: an event is named in the past tense"


ENVELOPED = [spec for spec in CATALOGUE if issubclass(spec.model, Envelope)]


@pytest.mark.parametrize("spec", ENVELOPED, ids=_ids)
def test_dedupe_keys_come_from_the_payload_only(spec: MessageSpec) -> None:
    message = SAMPLES[spec.model]
    assert isinstance(message, Envelope)
    fresh_envelope = {
        "event_id": uuid.uuid4(),
        "ts_event": T0 + timedelta(days=1),
        "ts_init": T0 + timedelta(days=1),
        "correlation_id": uuid.uuid4(),
    }
    again = type(message).from_json(message.model_copy(update=fresh_envelope).to_json())
    assert again.dedupe_key() == message.dedupe_key()
    assert message.msg_id() == (message.dedupe_key() or str(message.event_id))


def test_natural_ids_of_broker_facts_and_requests() -> None:
    assert sample(ExecutionReported).msg_id() == "exec:0000e0d5.6578a1b2.01.01"
    assert sample(CommissionReported).msg_id() == "comm:0000e0d5.6578a1b2.01.01"
    assert sample(OrderStatusChanged).msg_id() == "ost:123456:Submitted:4:6"
    assert sample(SessionEventEmitted).msg_id() == "session:morning_entry:2026-11-23:0"
    assert sample(SubmitOrder).msg_id() == "cmd:submit:demo-20261123-0001"
    assert sample(BrokerPositionReported).msg_id() == f"bpos:{SNAPSHOT}:DU123:265598"


def test_order_status_key_ignores_decimal_spelling_but_not_remaining() -> None:
    status = sample(OrderStatusChanged)
    respelled = status.model_copy(update={"filled": Decimal("4.000"), "remaining": Decimal("6.0")})
    resized = status.model_copy(update={"remaining": Decimal("16")})
    assert respelled.dedupe_key() == status.dedupe_key()
    assert resized.dedupe_key() != status.dedupe_key()
    assert canonical_decimal(Decimal("1E+1")) == "10"


def test_order_status_key_falls_back_to_our_id_before_ib_assigns_a_perm_id() -> None:
    status = sample(OrderStatusChanged).model_copy(update={"perm_id": None})
    assert status.dedupe_key() == "ost:c1:Submitted:4:6"


def test_broker_facts_outside_a_snapshot_have_no_natural_id() -> None:
    position = sample(BrokerPositionReported).model_copy(update={"snapshot_id": None})
    assert position.dedupe_key() is None
    assert position.msg_id() == str(position.event_id)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"limit_price": None}, "LMT order needs limit_price"),
        ({"order_type": OrderType.MKT}, "MKT order takes no limit_price"),
        ({"order_type": OrderType.STP_LMT}, "STP_LMT order needs stop_price"),
        ({"order_type": OrderType.TRAIL, "limit_price": None}, "exactly one of trailing"),
        (
            {
                "order_type": OrderType.TRAIL,
                "limit_price": None,
                "trailing_amount": 1,
                "trailing_percent": 1,
            },
            "exactly one of trailing",
        ),
        ({"position_id": None}, "need a position_id"),
        ({"stop_loss": Decimal("106")}, "losing side"),
        ({"purpose": OrderPurpose.EXIT}, "exit_reason"),
        ({"purpose": OrderPurpose.MANUAL, "position_id": None}, "entry orders only"),
    ],
)
def test_inconsistent_orders_are_refused(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        SubmitOrder(**(ENTRY | changes))


def test_a_trailing_entry_and_a_short_entry_are_accepted() -> None:
    trailing = {"order_type": OrderType.TRAIL, "limit_price": None, "trailing_percent": "1.5"}
    assert SubmitOrder(**(ENTRY | trailing)).trailing_percent == Decimal("1.5")
    short = SubmitOrder(**(ENTRY | {"side": OrderSide.SELL, "stop_loss": 105, "take_profit": 99}))
    assert short.side is OrderSide.SELL


def test_an_empty_modification_is_refused() -> None:
    with pytest.raises(ValidationError, match="nothing to modify"):
        ModifyOrder(portfolio_id="demo", client_order_id="c1", requested_by=USER)
    assert sample(ModifyOrder).changes() == {"limit_price": Decimal(1)}


def test_a_failed_snapshot_query_is_unknown_not_empty() -> None:
    snapshot = sample(BrokerSnapshotCompleted)
    assert snapshot.execution_count is None
    base = snapshot.model_dump()
    with pytest.raises(ValidationError, match="executions count"):
        BrokerSnapshotCompleted(**(base | {"execution_count": 0}))
    with pytest.raises(ValidationError, match="complete must be true exactly"):
        BrokerSnapshotCompleted(**(base | {"complete": True}))
    with pytest.raises(ValidationError, match="positions count"):
        BrokerSnapshotCompleted(**(base | {"position_count": None}))


def test_session_occurrence_ids_name_their_event_and_date() -> None:
    assert occurrence_id("morning_entry", date(2026, 11, 23)) == SESSION["occurrence_id"]
    with pytest.raises(ValidationError, match="occurrence_id"):
        SessionEventEmitted(**(SESSION | {"occurrence_id": "close_out:2026-11-23:0"}))


def test_reconciliation_publishes_drift_and_verdict() -> None:
    item = ReconciliationItem(
        symbol="AAPL", book_quantity=Decimal("4"), broker_quantity=Decimal("3")
    )
    unknown = ReconciliationItem(symbol="MSFT", book_quantity=Decimal("2"), broker_quantity=None)
    report = ReconciliationReported(portfolio_id="demo", complete=False, items=(item, unknown))
    wire = json.loads(report.to_json())
    assert [i["drift"] for i in wire["items"]] == ["-1", None]
    assert wire["in_sync"] is False
    assert sample(ReconciliationReported).model_dump()["in_sync"] is True


def test_error_replies_have_the_agreed_shape_and_are_told_apart() -> None:
    error = ErrorReply.of(REFUSED, "trading is halted")
    assert json.loads(error.to_json()) == {
        "error": {"code": "refused", "message": "trading is halted"}
    }
    assert parse_reply(error.to_json()) == error
    command = sample(SubmitOrder)
    accepted = CommandAccepted.of(command, client_order_ids=(command.client_order_id,))
    assert parse_reply(accepted.to_json()) == accepted
    assert (accepted.command_id, accepted.command_type) == (command.event_id, "SubmitOrder")
    assert (accepted.correlation_id, accepted.causation_id) == (command.event_id, command.event_id)


def test_exit_reasons_and_purposes_use_the_agreed_spelling() -> None:
    assert [r.value for r in ExitReason] == ["stop", "target", "close_out", "manual", "external"]
    assert OrderStatus.FILLED.is_terminal
    assert not OrderStatus.CANCEL_REQUESTED.is_terminal


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"quantity": Decimal(1), "allocation": Decimal("0.1")}, "exactly one of"),
        ({}, "exactly one of"),
        ({"quantity": Decimal(1), "entry_type": OrderType.LMT}, "limit_price is required"),
        ({"quantity": Decimal(1), "limit_price": Decimal(10)}, "limit_price is required"),
        ({"quantity": Decimal(1), "entry_type": OrderType.STP}, "MKT or LMT"),
        ({"allocation": Decimal("1.5")}, "less than or equal to 1"),
        (
            {"quantity": Decimal(1), "stop_loss": Decimal(110), "take_profit": Decimal(100)},
            "losing side",
        ),
    ],
)
def test_recommendation_refuses_ambiguous_size_or_prices(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        Recommendation(symbol="AAPL", **fields)


def test_recommendations_name_each_symbol_once() -> None:
    item = Recommendation(symbol="AAPL", quantity=Decimal(1))
    with pytest.raises(ValidationError, match="each symbol at most once"):
        SubmitRecommendations(
            portfolio_id="demo",
            session_date=date(2026, 11, 23),
            items=(item, item),
            requested_by=USER,
        )


# ---------------------------------------------------------------- bracket broker orders

BRACKET = BROKER_TERMS | {
    "take_profit_price": Decimal("105"),
    "stop_loss_price": Decimal("99.50"),
}


def test_a_bracket_names_its_children_after_the_parent() -> None:
    bracket = PlaceBrokerOrder(**BRACKET)

    assert bracket.is_bracket
    assert bracket.child_side is OrderSide.SELL
    assert bracket.bracket_client_order_ids() == (
        "demo-20261123-0001",
        "demo-20261123-0001:tp",
        "demo-20261123-0001:sl",
    )
    plain = PlaceBrokerOrder(**BROKER_TERMS)
    assert not plain.is_bracket
    assert plain.bracket_client_order_ids() == ("demo-20261123-0001",)
    assert PlaceBrokerOrder.from_json(bracket.to_json()) == bracket


def test_a_bracket_may_have_only_one_child() -> None:
    stop_only = PlaceBrokerOrder(**(BRACKET | {"take_profit_price": None}))
    assert stop_only.bracket_client_order_ids() == ("demo-20261123-0001", "demo-20261123-0001:sl")
    target_only = PlaceBrokerOrder(**(BRACKET | {"stop_loss_price": None}))
    assert target_only.take_profit_client_order_id == "demo-20261123-0001:tp"
    assert target_only.stop_loss_client_order_id is None


def test_a_short_bracket_mirrors_the_sides() -> None:
    short = PlaceBrokerOrder(
        **(BRACKET | {"side": OrderSide.SELL, "take_profit_price": 95, "stop_loss_price": 103})
    )
    assert short.child_side is OrderSide.BUY
    market = PlaceBrokerOrder(
        **(BRACKET | {"order_type": OrderType.MKT, "limit_price": None, "take_profit_price": 300})
    )  # no entry price to compare with: only the children's order is checked
    assert market.take_profit_price == Decimal(300)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"stop_loss_price": Decimal("106")}, "take_profit_price must be above stop_loss_price"),
        ({"take_profit_price": Decimal("99.50")}, "take_profit_price must be above stop_loss"),
        (
            {"side": OrderSide.SELL, "take_profit_price": 95, "stop_loss_price": 90},
            "take_profit_price must be below stop_loss_price for a SELL parent",
        ),
        (
            {"take_profit_price": Decimal("101.25"), "stop_loss_price": None},
            "take_profit_price must be above the parent's limit_price for a BUY",
        ),
        (
            {"stop_loss_price": Decimal("102"), "take_profit_price": None},
            "stop_loss_price must be below the parent's limit_price for a BUY",
        ),
        (
            {"side": OrderSide.SELL, "take_profit_price": 102, "stop_loss_price": None},
            "take_profit_price must be below the parent's limit_price for a SELL",
        ),
        (
            {"side": OrderSide.SELL, "stop_loss_price": 101, "take_profit_price": None},
            "stop_loss_price must be above the parent's limit_price for a SELL",
        ),
        (
            {
                "order_type": OrderType.STP,
                "limit_price": None,
                "stop_price": Decimal("100"),
                "stop_loss_price": Decimal("100.5"),
                "take_profit_price": None,
            },
            "stop_loss_price must be below the parent's stop_price for a BUY",
        ),
        ({"tif": "IOC"}, "a bracket cannot have tif IOC"),
        ({"tif": "OPG"}, "a bracket cannot have tif OPG"),
        ({"take_profit_price": Decimal(0)}, "greater than 0"),
        ({"stop_loss_price": 99.5}, "not exact"),
    ],
)
def test_a_bracket_on_the_wrong_side_is_refused(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PlaceBrokerOrder(**(BRACKET | changes))


def test_a_bracket_parent_id_must_leave_room_for_the_child_suffix() -> None:
    longest = "b" * 61
    accepted = PlaceBrokerOrder(**(BRACKET | {"client_order_id": longest}))
    assert accepted.stop_loss_client_order_id == longest + ":sl"
    too_long = "b" * 62
    with pytest.raises(ValidationError, match=r"too long for a bracket.*at most 61"):
        PlaceBrokerOrder(**(BRACKET | {"client_order_id": too_long}))
    # the same id is fine for a plain order
    assert PlaceBrokerOrder(**(BROKER_TERMS | {"client_order_id": too_long})).client_order_id
