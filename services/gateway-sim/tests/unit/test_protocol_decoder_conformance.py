"""Every response encoder, fed to the REAL decoders of ib_async 2.1.0 and ib_insync 0.9.86.

Spec §8: each frame is split like the clients do and handed to ``Decoder(wrapper, 176)``
of both libraries; the test fails if the decoder logs an error (a dropped message) or if
the objects the wrapper builds do not carry the values we encoded.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.protocol import errors, ids, responses
from ibflow_gateway_sim.protocol.framing import split_frame
from ibflow_gateway_sim.protocol.requests import (
    ComboLegSpec,
    ContractSpec,
    DeltaNeutralContractSpec,
    OrderConditionSpec,
    OrderFields,
)
from ibflow_gateway_sim.protocol.responses import (
    BarView,
    ContractDetailsView,
    ExecutionView,
    OrderStateView,
)

LIBRARIES = ("ib_async", "ib_insync")
CLIENT_ID = 1
ACCOUNT = "DU1234567"
AAPL = ContractSpec(
    con_id=265598,
    symbol="AAPL",
    sec_type="STK",
    strike=Decimal("0.0"),
    exchange="SMART",
    primary_exchange="NASDAQ",
    currency="USD",
    local_symbol="AAPL",
    trading_class="NMS",
)
LMT_BUY = OrderFields(
    action="BUY",
    total_quantity=Decimal("100"),
    order_type="LMT",
    lmt_price=Decimal("150.25"),
    tif="DAY",
    account=ACCOUNT,
    order_ref="myref",
)
FILL_TIME = datetime(2025, 1, 15, 14, 30, 0, tzinfo=UTC)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]


@dataclass
class Library:
    """One client library: its IB/wrapper and a real Decoder at server version 176."""

    name: str
    module: ModuleType
    ib: Any
    decoder: Any
    decoder_log: _Collector
    wrapper_log: _Collector
    error_events: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def wrapper(self) -> Any:
        return self.ib.wrapper

    def feed(self, *frames: bytes) -> None:
        """Decode each frame with the real decoder; fail on any decoder error."""
        for frame in frames:
            fields = split_frame(frame)
            self.decoder.interpret(fields)
            problems = self.decoder_log.errors()
            assert not problems, f"{self.name} could not decode {fields}: {problems}"

    def assert_wrapper_quiet(self) -> None:
        assert not self.wrapper_log.errors(), self.wrapper_log.errors()

    def contract(self, spec: ContractSpec = AAPL) -> Any:
        return self.module.Contract(
            conId=spec.con_id,
            symbol=spec.symbol,
            secType=spec.sec_type,
            exchange=spec.exchange,
            primaryExchange=spec.primary_exchange,
            currency=spec.currency,
            localSymbol=spec.local_symbol,
            tradingClass=spec.trading_class,
        )


@pytest.fixture(params=LIBRARIES)
async def lib(request: pytest.FixtureRequest) -> AsyncIterator[Library]:
    name: str = request.param
    module = importlib.import_module(name)
    decoder_module = importlib.import_module(f"{name}.decoder")
    ib = module.IB()
    ib.client.clientId = CLIENT_ID
    ib.wrapper.clientId = CLIENT_ID
    decoder_log, wrapper_log = _Collector(), _Collector()
    loggers = [(logging.getLogger(f"{name}.Decoder"), decoder_log)]
    loggers.append((logging.getLogger(f"{name}.wrapper"), wrapper_log))
    for logger, handler in loggers:
        logger.addHandler(handler)
    library = Library(
        name, module, ib, decoder_module.Decoder(ib.wrapper, 176), decoder_log, wrapper_log
    )
    ib.errorEvent += lambda *args: library.error_events.append(args)
    try:
        yield library
    finally:
        for logger, handler in loggers:
            logger.removeHandler(handler)


def fields_of(frame: bytes) -> list[str]:
    return split_frame(frame)


def open_order(
    order_id: int = 7,
    order: OrderFields = LMT_BUY,
    status: str = "Submitted",
    perm_id: int = 1000007,
) -> bytes:
    return responses.open_order(
        order_id, AAPL, order, OrderStateView(status), client_id=CLIENT_ID, perm_id=perm_id
    )


def execution(**changes: Any) -> ExecutionView:
    base = ExecutionView(
        exec_id="0000e0d5.00000001.01.01",
        time=FILL_TIME,
        account=ACCOUNT,
        exchange="ISLAND",
        side="BOT",
        shares=Decimal("10"),
        price=Decimal("190.5"),
        perm_id=1000007,
        client_id=CLIENT_ID,
        order_id=7,
        cum_qty=Decimal("10"),
        avg_price=Decimal("190.5"),
        order_ref="myref",
    )
    return replace(base, **changes)


# --- connection messages -------------------------------------------------------------------


async def test_managed_accounts_and_next_valid_id_have_three_fields(lib: Library) -> None:
    lib.feed(responses.managed_accounts(["DU1", "DU2"]), responses.next_valid_id(42))
    assert lib.wrapper.accounts == ["DU1", "DU2"]
    assert fields_of(responses.next_valid_id(42)) == ["9", "1", "42"]
    assert fields_of(responses.managed_accounts(["DU1"])) == ["15", "1", "DU1"]


async def test_current_time_resolves_the_request(lib: Library) -> None:
    future = lib.wrapper.startReq("currentTime")
    lib.feed(responses.current_time(FILL_TIME))
    assert future.result() == FILL_TIME


async def test_error_reaches_error_event_with_code_and_text(lib: Library) -> None:
    lib.feed(responses.error(-1, 2104, "Market data farm connection is OK:usfarm"))
    assert lib.error_events == [(-1, 2104, "Market data farm connection is OK:usfarm", None)]
    assert len(fields_of(responses.error(-1, 1, "x"))) == 6


@pytest.mark.parametrize(
    "frame",
    [
        *errors.farm_ok_notices(),
        *errors.farm_broken_notices(),
        errors.connectivity_lost(),
        errors.connectivity_restored(data_lost=True),
        errors.connectivity_restored(data_lost=False),
        errors.client_id_in_use(),
        errors.max_rate_exceeded(57),
        errors.no_security_definition(3),
        errors.cancel_not_found(8),
        errors.cannot_cancel(8, "Filled"),
        errors.duplicate_order_id(8),
        errors.cannot_modify_filled_order(8),
        errors.historical_data_error(4, "pacing violation"),
        errors.no_historical_query(4),
        errors.request_error(5, errors.REQUEST_READ_ERROR, "bad field"),
    ],
)
async def test_every_notice_decodes_with_its_code_and_text(lib: Library, frame: bytes) -> None:
    _, _, req_id, code, text, _ = fields_of(frame)
    lib.feed(frame)
    assert lib.error_events == [(int(req_id), int(code), text, None)]
    assert text


def test_notice_texts_match_ibs() -> None:
    assert fields_of(errors.cancel_not_found(8))[4] == (
        "OrderId 8 that needs to be cancelled is not found."
    )
    assert fields_of(errors.cannot_cancel(8, "Filled"))[4] == (
        "OrderId 8 that needs to be cancelled cannot be cancelled, state: Filled."
    )
    assert fields_of(errors.max_rate_exceeded(57))[4] == (
        "Max rate of messages per second has been exceeded:max=50 rec=57 (1)"
    )
    assert [fields_of(f)[3] for f in errors.farm_ok_notices()] == ["2104", "2106", "2158"]
    assert sorted(errors.FARM_OK_CODES) == [2104, 2106, 2158]
    assert errors.ORDER_CODES.isdisjoint(errors.REQUEST_CODES)


async def test_error_on_a_pending_request_ends_it(lib: Library) -> None:
    future = lib.wrapper.startReq(3)
    lib.feed(errors.no_security_definition(3))
    assert future.done()
    assert future.result() == []


async def test_order_rejected_cancels_the_trade_and_keeps_advanced_json(lib: Library) -> None:
    lib.feed(open_order(status="PreSubmitted"))
    lib.feed(errors.order_rejected(7, "insufficient margin", advanced_json='{"x": 1}'))
    trade = lib.wrapper.trades[(CLIENT_ID, 7)]
    assert trade.orderStatus.status == "Cancelled"
    assert trade.advancedError == '{"x": 1}'
    assert lib.error_events[-1][1:3] == (201, "Order rejected - reason:insufficient margin")


# --- orders --------------------------------------------------------------------------------


async def test_open_order_builds_a_trade_with_the_encoded_values(lib: Library) -> None:
    frame = open_order()
    assert len(fields_of(frame)) == 128
    lib.feed(frame)
    trade = lib.wrapper.trades[(CLIENT_ID, 7)]
    order = trade.order
    assert (order.orderId, order.clientId, order.permId) == (7, CLIENT_ID, 1000007)
    assert (order.action, order.totalQuantity, order.orderType) == ("BUY", 100.0, "LMT")
    assert order.lmtPrice == 150.25
    assert order.auxPrice == ids.UNSET_DOUBLE
    assert (order.orderRef, order.account, order.tif) == ("myref", ACCOUNT, "DAY")
    assert trade.orderStatus.status == "Submitted"
    assert (trade.contract.conId, trade.contract.symbol) == (265598, "AAPL")
    assert lib.wrapper.permId2Trade[1000007] is trade


OPEN_ORDER_VARIANTS = {
    "stop child GTC outsideRth": OrderFields(
        action="SELL",
        total_quantity=Decimal("5.0"),
        order_type="STP",
        aux_price=Decimal("140.0"),
        tif="GTC",
        outside_rth=True,
        parent_id=7,
        transmit=True,
        oca_group="bracket-7",
        oca_type=3,
        good_till_date="20250201 16:00:00 UTC",
    ),
    "stop limit": OrderFields(
        action="SELL",
        total_quantity=Decimal("3"),
        order_type="STP LMT",
        lmt_price=Decimal("139.5"),
        aux_price=Decimal("140"),
    ),
    "trail percent": OrderFields(
        action="SELL",
        total_quantity=Decimal("1"),
        order_type="TRAIL",
        trailing_percent=Decimal("2.5"),
        trail_stop_price=Decimal("145.1"),
    ),
    "fractional market": OrderFields(
        action="BUY", total_quantity=Decimal("0.5"), order_type="MKT", all_or_none=True
    ),
}


@pytest.mark.parametrize("variant", OPEN_ORDER_VARIANTS)
async def test_open_order_variants_round_trip(lib: Library, variant: str) -> None:
    fields = OPEN_ORDER_VARIANTS[variant]
    lib.feed(open_order(order_id=9, order=fields, status="PreSubmitted", perm_id=1000009))
    order = lib.wrapper.trades[(CLIENT_ID, 9)].order
    assert order.totalQuantity == float(fields.total_quantity)
    assert order.orderType == fields.order_type
    for name, ours in [
        ("lmtPrice", fields.lmt_price),
        ("auxPrice", fields.aux_price),
        ("trailingPercent", fields.trailing_percent),
        ("trailStopPrice", fields.trail_stop_price),
    ]:
        expected = ids.UNSET_DOUBLE if ours is None else float(ours)
        assert getattr(order, name) == expected, name
    assert order.parentId == fields.parent_id
    assert order.ocaGroup == fields.oca_group
    assert order.ocaType == fields.oca_type
    assert order.outsideRth is fields.outside_rth
    assert order.allOrNone is fields.all_or_none
    assert order.tif == fields.tif
    assert order.goodTillDate == fields.good_till_date


KITCHEN_SINK = OrderFields(
    action="BUY",
    total_quantity=Decimal("2"),
    order_type="LMT",
    lmt_price=Decimal("1.25"),
    combo_legs=(
        ComboLegSpec(con_id=1001, ratio=1, action="BUY", exchange="SMART"),
        ComboLegSpec(con_id=1002, ratio=2, action="SELL", exchange="SMART", open_close=1),
    ),
    order_combo_leg_prices=(Decimal("1.5"), None),
    smart_combo_routing_params=(("NonGuaranteed", "1"),),
    delta_neutral_order_type="LMT",
    delta_neutral_con_id=555,
    delta_neutral_short_sale=True,
    scale_init_level_size=10,
    scale_subs_level_size=5,
    scale_price_increment=Decimal("0.05"),
    scale_price_adjust_value=Decimal("0.01"),
    scale_price_adjust_interval=60,
    scale_auto_reset=True,
    hedge_type="D",
    hedge_param="0.5",
    delta_neutral_contract=DeltaNeutralContractSpec(777, Decimal("0.4"), Decimal("12.5")),
    algo_strategy="Adaptive",
    algo_params=(("adaptivePriority", "Normal"),),
    conditions=(
        OrderConditionSpec(1, ("a", "1", "150.0", "265598", "SMART", "0")),
        OrderConditionSpec(3, ("o", "0", "20250115 15:00:00 UTC")),
    ),
    conditions_ignore_rth=True,
    conditions_cancel_order=False,
)


async def test_open_order_with_every_conditional_block(lib: Library) -> None:
    bag = replace(AAPL, sec_type="BAG", con_id=28812380, symbol="AAPL")
    frame = responses.open_order(
        11, bag, KITCHEN_SINK, OrderStateView("Submitted"), client_id=CLIENT_ID, perm_id=11
    )
    lib.feed(frame)
    trade = lib.wrapper.trades[(CLIENT_ID, 11)]
    order, contract = trade.order, trade.contract
    assert [(leg.conId, leg.ratio, leg.action, leg.openClose) for leg in contract.comboLegs] == [
        (1001, 1, "BUY", 0),
        (1002, 2, "SELL", 1),
    ]
    assert [leg.price for leg in order.orderComboLegs] == [1.5, ids.UNSET_DOUBLE]
    assert [(p.tag, p.value) for p in order.smartComboRoutingParams] == [("NonGuaranteed", "1")]
    assert (order.deltaNeutralOrderType, order.deltaNeutralConId) == ("LMT", 555)
    assert order.deltaNeutralShortSale is True
    assert (order.scalePriceIncrement, order.scalePriceAdjustInterval) == (0.05, 60)
    assert order.scaleAutoReset is True
    assert (order.hedgeType, order.hedgeParam) == ("D", "0.5")
    dnc = contract.deltaNeutralContract
    assert (dnc.conId, dnc.delta, dnc.price) == (777, 0.4, 12.5)
    assert order.algoStrategy == "Adaptive"
    assert [(p.tag, p.value) for p in order.algoParams] == [("adaptivePriority", "Normal")]
    price_cond, time_cond = order.conditions
    assert (price_cond.price, price_cond.conId, price_cond.isMore) == (150.0, 265598, True)
    assert (time_cond.conjunction, time_cond.time) == ("o", "20250115 15:00:00 UTC")
    assert order.conditionsIgnoreRth is True
    assert order.lmtPrice == 1.25


async def test_what_if_open_order_resolves_with_numeric_margins(lib: Library) -> None:
    future = lib.wrapper.startReq(13)
    state = OrderStateView(
        "PreSubmitted",
        init_margin_before=Decimal("0"),
        maint_margin_before=Decimal("0"),
        equity_with_loan_before=Decimal("100000"),
        init_margin_change=Decimal("1905.5"),
        maint_margin_change=Decimal("1732.27"),
        equity_with_loan_change=Decimal("-1"),
        init_margin_after=Decimal("1905.5"),
        maint_margin_after=Decimal("1732.27"),
        equity_with_loan_after=Decimal("99999"),
        commission=Decimal("1.0"),
        min_commission=Decimal("1.0"),
        max_commission=Decimal("1.0"),
        commission_currency="USD",
    )
    what_if = replace(LMT_BUY, what_if=True, order_type="MKT", lmt_price=None)
    lib.feed(responses.open_order(13, AAPL, what_if, state, client_id=CLIENT_ID, perm_id=13))
    result = future.result()
    assert float(result.initMarginChange) == 1905.5
    assert float(result.maintMarginAfter) == 1732.27
    assert result.commission == 1.0
    assert result.commissionCurrency == "USD"
    assert (CLIENT_ID, 13) not in lib.wrapper.trades


async def test_open_orders_reply_ends_with_open_order_end(lib: Library) -> None:
    future = lib.wrapper.startReq("openOrders")
    lib.feed(open_order(), responses.open_order_end())
    assert [t.order.orderId for t in future.result()] == [7]
    assert fields_of(responses.open_order_end()) == ["53", "1"]


async def test_order_status_updates_the_trade(lib: Library) -> None:
    frame = responses.order_status(
        7,
        "Filled",
        filled=Decimal("100"),
        remaining=Decimal("0"),
        avg_fill_price=Decimal("150.2"),
        perm_id=1000007,
        parent_id=0,
        last_fill_price=Decimal("150.1"),
        client_id=CLIENT_ID,
        why_held="",
        mkt_cap_price=Decimal("0"),
    )
    assert len(fields_of(frame)) == 12
    lib.feed(open_order(status="Submitted"), frame)
    lib.assert_wrapper_quiet()
    status = lib.wrapper.trades[(CLIENT_ID, 7)].orderStatus
    assert (status.status, status.filled, status.remaining) == ("Filled", 100.0, 0.0)
    assert (status.avgFillPrice, status.lastFillPrice) == (150.2, 150.1)
    assert (status.permId, status.parentId, status.clientId) == (1000007, 0, CLIENT_ID)


async def test_completed_order_inside_a_completed_orders_reply(lib: Library) -> None:
    future = lib.wrapper.startReq("completedOrders")
    state = OrderStateView(
        "Filled", completed_time="20250115 14:30:00 UTC", completed_status="Filled"
    )
    frame = responses.completed_order(
        AAPL, LMT_BUY, state, perm_id=1000007, filled_quantity=Decimal("100")
    )
    assert len(fields_of(frame)) == 97
    lib.feed(frame, responses.completed_orders_end())
    assert fields_of(responses.completed_orders_end()) == ["102"]
    (trade,) = future.result()
    order = trade.order
    assert (order.permId, order.filledQuantity, order.lmtPrice) == (1000007, 100.0, 150.25)
    assert (order.orderRef, order.account, order.orderType) == ("myref", ACCOUNT, "LMT")
    assert trade.orderStatus.status == "Filled"
    assert (trade.contract.conId, trade.contract.localSymbol) == (265598, "AAPL")


async def test_completed_order_with_every_conditional_block(lib: Library) -> None:
    future = lib.wrapper.startReq("completedOrders")
    state = OrderStateView("Cancelled", completed_status="Cancelled by Trader")
    frame = responses.completed_order(
        replace(AAPL, sec_type="BAG"), KITCHEN_SINK, state, perm_id=12, filled_quantity=0
    )
    lib.feed(frame, responses.completed_orders_end())
    (trade,) = future.result()
    assert len(trade.contract.comboLegs) == 2
    assert len(trade.order.conditions) == 2
    assert trade.order.algoParams[0].value == "Normal"
    assert trade.orderStatus.status == "Cancelled"


# --- executions ----------------------------------------------------------------------------


async def test_live_exec_details_then_commission_report(lib: Library) -> None:
    frame = responses.exec_details(-1, AAPL, execution())
    assert len(fields_of(frame)) == 31
    lib.feed(open_order(), frame)
    trade = lib.wrapper.trades[(CLIENT_ID, 7)]
    (fill,) = trade.fills
    ex = fill.execution
    assert (ex.execId, ex.orderId, ex.permId, ex.clientId) == (
        "0000e0d5.00000001.01.01",
        7,
        1000007,
        CLIENT_ID,
    )
    assert (ex.side, ex.shares, ex.price, ex.cumQty, ex.avgPrice) == (
        "BOT",
        10.0,
        190.5,
        10.0,
        190.5,
    )
    assert (ex.acctNumber, ex.exchange, ex.orderRef, ex.lastLiquidity) == (
        ACCOUNT,
        "ISLAND",
        "myref",
        1,
    )
    assert ex.time == FILL_TIME
    assert fill.contract.conId == 265598

    report = responses.commission_report("0000e0d5.00000001.01.01", Decimal("1.25"), "USD")
    assert len(fields_of(report)) == 8
    lib.feed(report)
    assert fill.commissionReport.commission == 1.25
    assert fill.commissionReport.currency == "USD"
    assert fill.commissionReport.realizedPNL == 0.0

    lib.feed(
        responses.commission_report(
            "0000e0d5.00000001.01.01", 1.25, "USD", realized_pnl=Decimal("-3.5"), yield_=0
        )
    )
    assert fill.commissionReport.realizedPNL == -3.5


async def test_exec_details_in_a_req_executions_reply(lib: Library) -> None:
    future = lib.wrapper.startReq(5)
    lib.feed(
        responses.exec_details(5, AAPL, execution(exec_id="e1")),
        responses.exec_details(5, AAPL, execution(exec_id="e2", side="SLD", shares=3)),
        responses.exec_details_end(5),
    )
    fills = future.result()
    assert [(f.execution.execId, f.execution.side) for f in fills] == [
        ("e1", "BOT"),
        ("e2", "SLD"),
    ]
    assert fills[1].execution.shares == 3.0


# --- contracts -----------------------------------------------------------------------------


async def test_contract_details_for_a_us_stock(lib: Library) -> None:
    view = ContractDetailsView(
        contract=AAPL,
        min_tick=Decimal("0.01"),
        long_name="APPLE INC",
        industry="Technology",
        category="Computers",
        subcategory="Computers",
        trading_hours="20250115:0400-20250115:2000",
        liquid_hours="20250115:0930-20250115:1600",
        sec_ids=(("ISIN", "US0378331005"),),
        market_rule_ids="26,26",
    )
    future = lib.wrapper.startReq(3)
    lib.feed(responses.contract_details(3, view), responses.contract_details_end(3))
    (details,) = future.result()
    contract = details.contract
    assert (contract.conId, contract.symbol, contract.primaryExchange) == (265598, "AAPL", "NASDAQ")
    assert (contract.localSymbol, contract.tradingClass, contract.exchange) == (
        "AAPL",
        "NMS",
        "SMART",
    )
    assert details.minTick == 0.01
    assert (details.longName, details.industry, details.timeZoneId) == (
        "APPLE INC",
        "Technology",
        "US/Eastern",
    )
    assert details.liquidHours == "20250115:0930-20250115:1600"
    assert [(t.tag, t.value) for t in details.secIdList] == [("ISIN", "US0378331005")]
    assert (details.stockType, details.minSize, details.suggestedSizeIncrement) == (
        "COMMON",
        0.0001,
        100.0,
    )
    assert details.evMultiplier == 0
    assert details.marketName == "NMS"


async def test_contract_long_name_survives_the_clients_unicode_escape(lib: Library) -> None:
    name = "Soci\u00e9t\u00e9 G\u00e9n\u00e9rale \\ Z\u00fcrich \u20ac"
    future = lib.wrapper.startReq(4)
    view = ContractDetailsView(contract=AAPL, long_name=name)
    frame = responses.contract_details(4, view)
    assert frame.isascii()
    lib.feed(frame, responses.contract_details_end(4))
    (details,) = future.result()
    assert details.longName == name


# --- positions and account -----------------------------------------------------------------


async def test_position_and_position_end(lib: Library) -> None:
    frame = responses.position(ACCOUNT, AAPL, Decimal("10"), Decimal("190.5"))
    assert len(fields_of(frame)) == 16
    future = lib.wrapper.startReq("positions")
    lib.feed(frame, responses.position_end())
    (position,) = future.result()
    assert (position.account, position.position, position.avgCost) == (ACCOUNT, 10.0, 190.5)
    assert position.contract.conId == 265598
    lib.feed(responses.position(ACCOUNT, AAPL, 0, 0))
    assert not lib.wrapper.positions[ACCOUNT]


async def test_update_portfolio(lib: Library) -> None:
    frame = responses.update_portfolio(
        AAPL,
        ACCOUNT,
        position=Decimal("10"),
        market_price=Decimal("191.0"),
        market_value=Decimal("1910.0"),
        average_cost=Decimal("190.5"),
        unrealized_pnl=Decimal("5.0"),
        realized_pnl=Decimal("0"),
    )
    assert len(fields_of(frame)) == 20
    assert "" not in fields_of(frame)[13:19]
    lib.feed(frame)
    item = lib.wrapper.portfolio[ACCOUNT][265598]
    assert (item.position, item.marketPrice, item.marketValue) == (10.0, 191.0, 1910.0)
    assert (item.averageCost, item.unrealizedPNL, item.realizedPNL) == (190.5, 5.0, 0.0)
    assert item.contract.primaryExchange == "NASDAQ"


def test_update_portfolio_refuses_a_non_number() -> None:
    with pytest.raises(ValueError, match="number"):
        responses.update_portfolio(
            AAPL,
            ACCOUNT,
            position=1,
            market_price=float("nan"),
            market_value=0,
            average_cost=0,
            unrealized_pnl=0,
            realized_pnl=0,
        )


async def test_account_updates_download(lib: Library) -> None:
    future = lib.wrapper.startReq("accountValues")
    lib.feed(
        responses.update_account_value("NetLiquidation", "100000.00", "USD", ACCOUNT),
        responses.update_account_time(datetime(2025, 1, 15, 14, 30, tzinfo=UTC)),
        responses.account_download_end(ACCOUNT),
    )
    assert future.done()
    value = lib.wrapper.accountValues[(ACCOUNT, "NetLiquidation", "USD", "")]
    assert value.value == "100000.00"
    assert fields_of(responses.update_account_time("14:30")) == ["8", "1", "14:30"]


async def test_account_update_multi_and_end(lib: Library) -> None:
    future = lib.wrapper.startReq(21)
    lib.feed(
        responses.account_update_multi(21, ACCOUNT, "BuyingPower", "400000", "USD"),
        responses.account_update_multi_end(21),
    )
    assert future.done()
    assert lib.wrapper.accountValues[(ACCOUNT, "BuyingPower", "USD", "")].value == "400000"


async def test_account_summary_and_end(lib: Library) -> None:
    future = lib.wrapper.startReq(22)
    lib.feed(
        responses.account_summary(22, ACCOUNT, "TotalCashValue", "50000", "USD"),
        responses.account_summary_end(22),
    )
    assert future.done()
    assert lib.wrapper.acctSummary[(ACCOUNT, "TotalCashValue", "USD")].value == "50000"


# --- market data ---------------------------------------------------------------------------


async def test_streaming_and_snapshot_ticks_fill_the_ticker(lib: Library) -> None:
    ticker = lib.wrapper.startTicker(5, lib.contract(), "mktData")
    snapshot = lib.wrapper.startReq(5)
    frames = [
        responses.market_data_type(5, ids.MARKET_DATA_DELAYED),
        responses.tick_req_params(5, Decimal("0.01"), "9c0001", 3),
        responses.tick_price(5, ids.TICK_BID, Decimal("190.1"), Decimal("300")),
        responses.tick_price(5, ids.TICK_ASK, Decimal("190.2"), Decimal("200")),
        responses.tick_price(5, ids.TICK_LAST, Decimal("190.15"), Decimal("100")),
        responses.tick_size(5, ids.TICK_VOLUME, Decimal("123456")),
        responses.tick_price(5, ids.TICK_CLOSE, Decimal("188.0")),
        responses.tick_price(5, ids.TICK_HIGH, Decimal("191.0")),
        responses.tick_string(5, ids.TICK_RT_VOLUME, "190.15;100;1736951400000;123456;190.05;true"),
        responses.tick_generic(5, ids.TICK_HALTED, 0),
        responses.tick_snapshot_end(5),
    ]
    assert len(fields_of(frames[2])) == 7
    lib.feed(*frames)
    lib.assert_wrapper_quiet()
    assert (ticker.bid, ticker.bidSize, ticker.ask, ticker.askSize) == (190.1, 300, 190.2, 200)
    assert (ticker.last, ticker.lastSize) == (190.15, 100)
    assert (ticker.volume, ticker.close, ticker.high) == (123456, 188.0, 191.0)
    assert (ticker.minTick, ticker.bboExchange, ticker.snapshotPermissions) == (0.01, "9c0001", 3)
    assert ticker.marketDataType == 3
    assert ticker.rtVolume == 123456
    assert ticker.vwap == 190.05
    assert ticker.halted == 0
    assert snapshot.done()


async def test_last_timestamp_and_delayed_ticks(lib: Library) -> None:
    ticker = lib.wrapper.startTicker(6, lib.contract(), "mktData")
    lib.feed(
        responses.tick_string(6, ids.TICK_LAST_TIMESTAMP, str(int(FILL_TIME.timestamp()))),
        responses.tick_price(6, ids.TICK_DELAYED_BID, Decimal("10.5"), Decimal("1")),
        responses.tick_price(6, ids.TICK_DELAYED_ASK, Decimal("10.75"), Decimal("2")),
        responses.tick_price(6, ids.TICK_DELAYED_LAST, Decimal("10.6"), Decimal("3")),
        responses.tick_size(6, ids.TICK_DELAYED_VOLUME, Decimal("999")),
        responses.tick_price(6, ids.TICK_DELAYED_CLOSE, Decimal("10")),
    )
    lib.assert_wrapper_quiet()
    assert (ticker.bid, ticker.bidSize, ticker.ask, ticker.askSize) == (10.5, 1, 10.75, 2)
    assert (ticker.last, ticker.lastSize, ticker.volume, ticker.close) == (10.6, 3, 999, 10)
    if lib.name == "ib_async":  # ib_insync ignores tickString 45
        assert ticker.lastTimestamp == FILL_TIME


# --- historical data -----------------------------------------------------------------------

DAILY = [
    BarView("20250114", Decimal("1"), Decimal("2"), Decimal("0.5"), Decimal("1.5"), Decimal("1000"),
            Decimal("1.2"), 10),
    BarView("20250115", Decimal("1.5"), Decimal("2.5"), Decimal("1.25"), Decimal("2"),
            Decimal("2000.5"), Decimal("1.75"), 20),
]  # fmt: skip


async def test_historical_data_bars(lib: Library) -> None:
    future = lib.wrapper.startReq(14)
    lib.feed(responses.historical_data(14, "20250110 00:00:00 UTC", "20250115 00:00:00 UTC", DAILY))
    bars = future.result()
    assert [b.date for b in bars] == [date(2025, 1, 14), date(2025, 1, 15)]
    assert [(b.open, b.high, b.low, b.close) for b in bars] == [
        (1.0, 2.0, 0.5, 1.5),
        (1.5, 2.5, 1.25, 2.0),
    ]
    assert [(b.volume, b.average, b.barCount) for b in bars] == [
        (1000, 1.2, 10),
        (2000.5, 1.75, 20),
    ]


async def test_historical_data_with_no_bars(lib: Library) -> None:
    future = lib.wrapper.startReq(15)
    lib.feed(responses.historical_data(15, "", "", []))
    assert future.result() == []


async def test_historical_data_update_keeps_field_order(lib: Library) -> None:
    start = datetime(2025, 1, 15, 14, 30, tzinfo=UTC)
    bars = lib.module.BarDataList()
    bars.append(lib.module.BarData(date=start, open=1, high=1, low=1, close=1))
    lib.wrapper.reqId2Subscriber[16] = bars
    stamp = str(int(start.timestamp()) + 60)
    bar = BarView(stamp, Decimal("2"), Decimal("4"), Decimal("1"), Decimal("3"), Decimal("77"),
                  Decimal("2.5"), 9)  # fmt: skip
    lib.feed(responses.historical_data_update(16, bar))
    new = bars[-1]
    assert len(bars) == 2
    assert (new.open, new.high, new.low, new.close) == (2.0, 4.0, 1.0, 3.0)
    assert (new.volume, new.average, new.barCount) == (77.0, 2.5, 9)
    assert new.date == datetime(2025, 1, 15, 14, 31, tzinfo=UTC)


async def test_harness_catches_a_message_the_decoder_drops(lib: Library) -> None:
    truncated = responses.open_order_end()[:4] + open_order()[4:200]
    fixed = len(truncated[4:]).to_bytes(4, "big") + truncated[4:]
    with pytest.raises(AssertionError, match="could not decode"):
        lib.feed(fixed)
