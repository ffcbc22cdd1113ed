"""ib_async objects (built from ib_async's own dataclasses) → ibflow contracts."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ib_async import (
    AccountValue,
    CommissionReport,
    Execution,
    Fill,
    Order,
    OrderStatus,
    Position,
    Stock,
    Trade,
    TradeLogEntry,
)

from ibflow.contracts.enums import OrderSide
from ibflow_gateway_bridge.ib.mapping import (
    MappingError,
    account_values_reported,
    broker_position_reported,
    commission_reported,
    decimal_or_none,
    execution_reported,
    order_status_changed,
    to_utc,
)

UNSET = sys.float_info.max
NEW_YORK = timezone(timedelta(hours=-4))
AAPL = Stock("AAPL", "SMART", "USD", conId=265598)


def _trade(
    *,
    status: str = "Submitted",
    filled: float = 0.0,
    remaining: float = 100.0,
    avg: float = 0.0,
    last: float = 0.0,
    perm_id: int = 0,
    order_ref: str = "co-1",
    log: list[TradeLogEntry] | None = None,
) -> Trade:
    order = Order(
        orderId=7,
        clientId=3,
        permId=perm_id,
        action="BUY",
        totalQuantity=100,
        orderType="LMT",
        lmtPrice=190.1,
        account="DU1234567",
        orderRef=order_ref,
    )
    order_status = OrderStatus(
        orderId=7,
        status=status,
        filled=filled,
        remaining=remaining,
        avgFillPrice=avg,
        permId=perm_id,
        lastFillPrice=last,
        clientId=3,
    )
    return Trade(contract=AAPL, order=order, orderStatus=order_status, log=log or [])


def _fill(**overrides: object) -> Fill:
    fields: dict[str, object] = {
        "execId": "0000e0d5.6571a2b3.01.01",
        "time": datetime(2024, 3, 11, 10, 15, 3, tzinfo=NEW_YORK),
        "acctNumber": "DU1234567",
        "exchange": "ISLAND",
        "side": "BOT",
        "shares": 40.0,
        "price": 190.1,
        "permId": 1_000_001,
        "clientId": 3,
        "orderId": 7,
        "cumQty": 40.0,
        "avgPrice": 190.1,
        "orderRef": "co-1",
    }
    fields.update(overrides)
    execution = Execution(**fields)  # type: ignore[arg-type]
    return Fill(AAPL, execution, CommissionReport(), execution.time)


def test_order_status_partial_fill_keeps_exact_decimals() -> None:
    trade = _trade(filled=40.0, remaining=60.0, avg=190.1, last=190.1, perm_id=1_000_001)

    event = order_status_changed("demo", trade)

    assert event.client_order_id == "co-1"
    assert event.perm_id == 1_000_001
    assert event.order_id == 7
    assert event.client_id == 3
    assert event.account_id == "DU1234567"
    assert event.ib_status == "Submitted"
    assert (event.filled, event.remaining) == (Decimal(40), Decimal(60))
    assert event.avg_fill_price == Decimal("190.1")
    assert event.last_fill_price == Decimal("190.1")
    assert event.limit_price == Decimal("190.1")
    assert event.aux_price is None
    assert event.dedupe_key() == "ost:1000001:Submitted:40:60:190.1:"


def test_price_only_modify_reports_a_new_status_key() -> None:
    before = _trade(perm_id=1_000_001)
    after = _trade(perm_id=1_000_001)
    after.order.lmtPrice = 191.25

    first, second = order_status_changed("demo", before), order_status_changed("demo", after)

    assert (first.ib_status, first.filled, first.remaining) == (
        second.ib_status,
        second.filled,
        second.remaining,
    )
    assert second.limit_price == Decimal("191.25")
    assert first.dedupe_key() != second.dedupe_key()


def test_order_status_before_any_fill_has_no_prices_and_no_perm_id() -> None:
    event = order_status_changed("demo", _trade(status="PendingSubmit", order_ref=""))

    assert event.perm_id is None
    assert event.client_order_id is None
    assert event.avg_fill_price is None
    assert event.last_fill_price is None
    assert event.why_held is None


def test_order_status_unset_prices_are_none_and_rejection_text_is_kept() -> None:
    at = datetime(2024, 3, 11, 14, 0, tzinfo=UTC)
    log = [TradeLogEntry(at, "Cancelled", "Order rejected - reason: buying power", 201)]
    trade = _trade(status="Cancelled", remaining=100.0, avg=UNSET, last=UNSET, log=log)

    event = order_status_changed("demo", trade, snapshot_id=uuid.UUID(int=1))

    assert event.avg_fill_price is None
    assert event.last_fill_price is None
    assert event.error_message == "201: Order rejected - reason: buying power"
    assert event.ts_event == at
    assert event.snapshot_id == uuid.UUID(int=1)


def test_execution_maps_side_ids_and_time_to_utc() -> None:
    event = execution_reported("demo", _fill())

    assert event.exec_id == "0000e0d5.6571a2b3.01.01"
    assert event.dedupe_key() == "exec:0000e0d5.6571a2b3.01.01"
    assert event.side is OrderSide.BUY
    assert (event.order_id, event.perm_id) == (7, 1_000_001)
    assert event.client_order_id == "co-1"
    assert (event.symbol, event.con_id) == ("AAPL", 265598)
    assert (event.shares, event.price) == (Decimal(40), Decimal("190.1"))
    assert (event.cum_qty, event.avg_price) == (Decimal(40), Decimal("190.1"))
    assert event.executed_at == datetime(2024, 3, 11, 14, 15, 3, tzinfo=UTC)
    assert event.executed_at.tzinfo is UTC
    assert event.ts_event == event.executed_at
    assert event.liquidation is False


def test_execution_sell_and_order_ref_from_trade() -> None:
    fill = _fill(side="SLD", orderRef="", liquidation=1)

    event = execution_reported("demo", fill, trade=_trade(order_ref="co-9"))

    assert event.side is OrderSide.SELL
    assert event.client_order_id == "co-9"
    assert event.liquidation is True


def test_execution_with_unknown_side_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="side"):
        execution_reported("demo", _fill(side="XYZ"))


def test_execution_with_unset_price_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="price"):
        execution_reported("demo", _fill(price=UNSET))


def test_commission_is_exact_and_realized_pnl_sentinel_is_none() -> None:
    report = CommissionReport(
        execId="0000e0d5.6571a2b3.01.01", commission=1.0, currency="USD", realizedPNL=UNSET
    )

    event = commission_reported("demo", report)

    assert event is not None
    assert event.commission == Decimal("1.0")
    assert event.realized_pnl is None
    assert event.currency == "USD"
    assert event.dedupe_key() == "comm:0000e0d5.6571a2b3.01.01"


def test_commission_names_the_order_of_its_fill() -> None:
    report = CommissionReport(execId="e1", commission=1.0, currency="USD")

    from_fill = commission_reported("demo", report, fill=_fill())
    trade = _trade(order_ref="co-2")
    from_trade = commission_reported("demo", report, fill=_fill(orderRef=""), trade=trade)
    unknown = commission_reported("demo", report)

    assert from_fill is not None
    assert from_fill.client_order_id == "co-1"
    assert from_trade is not None
    assert from_trade.client_order_id == "co-2"
    assert unknown is not None
    assert unknown.client_order_id is None


def test_commission_keeps_a_real_zero_realized_pnl() -> None:
    report = CommissionReport(execId="e1", commission=0.35, currency="USD", realizedPNL=0.0)

    event = commission_reported("demo", report)

    assert event is not None
    assert event.realized_pnl == Decimal(0)
    assert event.commission == Decimal("0.35")


@pytest.mark.parametrize(
    "report",
    [
        CommissionReport(execId="e1", commission=UNSET, currency="USD"),
        CommissionReport(execId="e1", commission=-1.0, currency="USD"),
        CommissionReport(execId="e1", commission=float("nan"), currency="USD"),
        CommissionReport(),  # ib_async's placeholder on a fill before the report came
    ],
    ids=["unset-double", "minus-one", "nan", "placeholder"],
)
def test_pending_commission_is_none_never_zero(report: CommissionReport) -> None:
    assert commission_reported("demo", report) is None


def test_position_is_signed_and_exact() -> None:
    position = Position("DU1234567", AAPL, -150.0, 190.123456)

    event = broker_position_reported("demo", position, snapshot_id=uuid.UUID(int=2))

    assert event.position == Decimal(-150)
    assert event.avg_cost == Decimal("190.123456")
    assert (event.account_id, event.con_id, event.symbol) == ("DU1234567", 265598, "AAPL")
    assert event.dedupe_key() == f"bpos:{uuid.UUID(int=2)}:DU1234567:265598"


def test_position_with_unset_average_cost_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="avg_cost"):
        broker_position_reported("demo", Position("DU1234567", AAPL, 10.0, UNSET))


def test_account_values_pick_named_figures_in_currency_and_keep_every_tag() -> None:
    values = [
        AccountValue("DU1234567", "NetLiquidation", "250123.45", "USD", ""),
        AccountValue("DU1234567", "TotalCashValue", "100000.00", "USD", ""),
        AccountValue("DU1234567", "TotalCashValue", "99000.00", "BASE", ""),
        AccountValue("DU1234567", "BuyingPower", "1000000.00", "USD", ""),
        AccountValue("DU1234567", "MaintMarginReq", "1.7976931348623157E308", "USD", ""),
        AccountValue("DU1234567", "InitMarginReq", "", "USD", ""),
        AccountValue("DU1234567", "AccountType", "INDIVIDUAL", "", ""),
        AccountValue("DU7654321", "NetLiquidation", "5.5", "USD", ""),
    ]

    first, second = account_values_reported("demo", values)

    assert first.account_id == "DU1234567"
    assert first.net_liquidation == Decimal("250123.45")
    assert first.total_cash_value == Decimal("100000.00")
    assert first.buying_power == Decimal("1000000.00")
    assert first.maintenance_margin is None, "IB's sentinel is no value, never a number"
    assert first.initial_margin is None, "an empty value is no value, never zero"
    assert first.excess_liquidity is None, "not sent is None, never zero"
    assert first.values["TotalCashValue:BASE"] == "99000.00"
    assert first.values["AccountType"] == "INDIVIDUAL"
    assert second.account_id == "DU7654321"
    assert second.net_liquidation == Decimal("5.5")


def test_decimal_or_none_and_to_utc_edges() -> None:
    assert decimal_or_none(0.1) == Decimal("0.1")
    assert decimal_or_none(UNSET) is None
    assert decimal_or_none(float("inf")) is None
    assert decimal_or_none("abc") is None
    assert decimal_or_none(None) is None
    assert decimal_or_none(3) == Decimal(3)
    naive = datetime(2024, 1, 2, 3, 4, 5)  # IB may hand out naive times
    assert to_utc(naive) == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
