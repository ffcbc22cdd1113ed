"""decode_request against what the REAL ib_async / ib_insync clients write at sv 176.

Each library's own ``Client`` (the real encoder) is put in a connected state with server
version 176 and its socket write replaced by a recorder; the captured frames are decoded
with :func:`decode_request`, which fails on any leftover or missing field. Orders are
then echoed through ``responses.open_order`` into the same library's real decoder, and
must come back unchanged.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.protocol import responses
from ibflow_gateway_sim.protocol.framing import split_frame
from ibflow_gateway_sim.protocol.requests import (
    CancelAccountSummary,
    CancelAccountUpdatesMulti,
    CancelHistoricalData,
    CancelMktData,
    CancelOrder,
    CancelPositions,
    ContractSpec,
    DeltaNeutralContractSpec,
    ExecutionFilter,
    MktDataComboLeg,
    PlaceOrder,
    ReqAccountSummary,
    ReqAccountUpdates,
    ReqAccountUpdatesMulti,
    ReqAllOpenOrders,
    ReqAutoOpenOrders,
    ReqCompletedOrders,
    ReqContractDetails,
    ReqCurrentTime,
    ReqExecutions,
    ReqGlobalCancel,
    ReqHistoricalData,
    ReqIds,
    ReqMarketDataType,
    ReqMktData,
    ReqOpenOrders,
    ReqPositions,
    Request,
    StartApi,
    decode_request,
)
from ibflow_gateway_sim.protocol.responses import OrderStateView

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

# Order attributes openOrder does not carry (or that the client rewrites while sending).
NOT_ECHOED = frozenset(
    {
        "orderId",
        "clientId",
        "permId",
        "transmit",
        "activeStartTime",
        "activeStopTime",
        "scaleTable",
        "algoId",
        "orderMiscOptions",
        "overridePercentageConstraints",
        "extOperator",
        "mifid2DecisionMaker",
        "mifid2DecisionAlgo",
        "mifid2ExecutionTrader",
        "mifid2ExecutionAlgo",
        "advancedErrorOverride",
        "manualOrderTime",
        "volatility",  # ib_async sets None on non-VOL orders before sending
        "deltaNeutralSettlingFirm",  # completedOrder-only subset of the dn block
        "deltaNeutralClearingAccount",
        "deltaNeutralClearingIntent",
        "deltaNeutralOpenClose",
    }
)


@dataclass
class Capture:
    """A real client wired to record its frames instead of writing them to a socket."""

    name: str
    module: ModuleType
    ib: Any
    frames: list[bytes] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return self.ib.client

    def sent(self, call: Callable[[Any], object]) -> list[list[str]]:
        """Run ``call(client)`` and return the fields of every frame it wrote."""
        self.frames.clear()
        call(self.client)
        return [split_frame(frame) for frame in self.frames]

    def one(self, call: Callable[[Any], object]) -> list[str]:
        (fields,) = self.sent(call)
        return fields

    def place(self, order_id: int, order: Any, contract: Any = None) -> list[str]:
        order.orderId = order_id
        target = contract if contract is not None else self.stock()
        return self.one(lambda c: c.placeOrder(order_id, target, order))

    def stock(self) -> Any:
        return self.module.Contract(
            conId=265598,
            symbol="AAPL",
            secType="STK",
            exchange="SMART",
            primaryExchange="NASDAQ",
            currency="USD",
            localSymbol="AAPL",
            tradingClass="NMS",
        )

    def echo(self, decoded: PlaceOrder, perm_id: int) -> Any:
        """openOrder from the decoded placeOrder, through this library's real decoder."""
        decoder = importlib.import_module(f"{self.name}.decoder").Decoder(self.ib.wrapper, 176)
        frame = responses.open_order(
            decoded.order_id,
            decoded.contract,
            decoded.order,
            OrderStateView("Submitted"),
            client_id=CLIENT_ID,
            perm_id=perm_id,
        )
        log = logging.getLogger(f"{self.name}.Decoder")
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        log.addHandler(handler)
        try:
            decoder.interpret(split_frame(frame))
        finally:
            log.removeHandler(handler)
        assert not records, [r.getMessage() for r in records]
        return self.ib.wrapper.trades[(CLIENT_ID, decoded.order_id)]


@pytest.fixture(params=LIBRARIES)
async def lib(request: pytest.FixtureRequest) -> Capture:
    name: str = request.param
    module = importlib.import_module(name)
    ib = module.IB()
    capture = Capture(name, module, ib)
    client = ib.client
    client._serverVersion = 176
    client.connState = client.CONNECTED
    client.clientId = CLIENT_ID
    client.MaxRequests = 0
    client._apiReady = True
    client._reqIdSeq = 10
    client.conn.sendMsg = capture.frames.append
    ib.wrapper.clientId = CLIENT_ID
    return capture


def place_order(fields: list[str]) -> PlaceOrder:
    request = decode_request(fields)
    assert isinstance(request, PlaceOrder)
    return request


def order_differences(original: Any, echoed: Any) -> dict[str, tuple[Any, Any]]:
    ours = vars(original)
    theirs = vars(echoed)
    return {
        name: (ours[name], theirs[name])
        for name in ours
        if name not in NOT_ECHOED and not _same(ours[name], theirs[name])
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


# --- placeOrder ----------------------------------------------------------------------------


async def test_market_order_with_account_and_order_ref(lib: Capture) -> None:
    order = lib.module.MarketOrder("BUY", 10, account=ACCOUNT, orderRef="mkt1")
    fields = lib.place(7, order)
    assert len(fields) == 115
    decoded = place_order(fields)
    assert decoded.order_id == 7
    assert decoded.contract == AAPL
    o = decoded.order
    assert (o.action, o.total_quantity, o.order_type) == ("BUY", Decimal(10), "MKT")
    assert (o.lmt_price, o.aux_price) == (None, None)
    assert (o.account, o.order_ref, o.tif, o.effective_tif) == (ACCOUNT, "mkt1", "", "DAY")
    assert (o.transmit, o.parent_id, o.outside_rth, o.what_if) == (True, 0, False, False)
    assert (o.open_close, o.exempt_code, o.display_size) == ("O", -1, 0)
    assert o.is_buy


async def test_limit_order_gtc_outside_rth(lib: Capture) -> None:
    order = lib.module.LimitOrder("BUY", 5, 100.0, tif="GTC", outsideRth=True)
    o = place_order(lib.place(8, order)).order
    assert (o.order_type, o.lmt_price, o.total_quantity) == ("LMT", Decimal("100.0"), Decimal(5))
    assert (o.tif, o.outside_rth) == ("GTC", True)


async def test_stop_order(lib: Capture) -> None:
    order = lib.module.StopOrder("SELL", 5, 150.0)
    o = place_order(lib.place(9, order)).order
    assert (o.action, o.order_type, o.aux_price, o.lmt_price) == (
        "SELL",
        "STP",
        Decimal("150.0"),
        None,
    )
    assert not o.is_buy


async def test_stop_limit_order(lib: Capture) -> None:
    order = lib.module.StopLimitOrder("SELL", 5, 149.5, 150.25)
    o = place_order(lib.place(10, order)).order
    assert (o.order_type, o.lmt_price, o.aux_price) == (
        "STP LMT",
        Decimal("149.5"),
        Decimal("150.25"),
    )


async def test_trailing_stop_by_amount(lib: Capture) -> None:
    order = lib.module.Order(
        action="SELL", totalQuantity=5, orderType="TRAIL", auxPrice=2.0, trailStopPrice=148.0
    )
    o = place_order(lib.place(11, order)).order
    assert (o.order_type, o.aux_price, o.trail_stop_price, o.trailing_percent) == (
        "TRAIL",
        Decimal("2.0"),
        Decimal("148.0"),
        None,
    )


async def test_trailing_stop_by_percent(lib: Capture) -> None:
    order = lib.module.Order(action="SELL", totalQuantity=5, orderType="TRAIL", trailingPercent=1.5)
    o = place_order(lib.place(12, order)).order
    assert (o.trailing_percent, o.aux_price, o.trail_stop_price) == (Decimal("1.5"), None, None)


async def test_bracket_parent_and_children(lib: Capture) -> None:
    parent, take_profit, stop_loss = lib.ib.bracketOrder("BUY", 10, 100.0, 110.0, 90.0)
    decoded = [place_order(lib.place(o.orderId, o)).order for o in (parent, take_profit, stop_loss)]
    assert [(o.order_type, o.transmit, o.parent_id) for o in decoded] == [
        ("LMT", False, 0),
        ("LMT", False, parent.orderId),
        ("STP", True, parent.orderId),
    ]
    assert [o.action for o in decoded] == ["BUY", "SELL", "SELL"]
    assert decoded[1].lmt_price == Decimal("110.0")
    assert decoded[2].aux_price == Decimal("90.0")


async def test_one_cancels_all_group(lib: Capture) -> None:
    orders = [lib.module.LimitOrder("SELL", 1, 110.0), lib.module.StopOrder("SELL", 1, 90.0)]
    lib.ib.oneCancelsAll(orders, "oca-1", 2)
    decoded = [place_order(lib.place(20 + i, o)).order for i, o in enumerate(orders)]
    assert [(o.oca_group, o.oca_type) for o in decoded] == [("oca-1", 2), ("oca-1", 2)]


async def test_what_if_and_time_fields(lib: Capture) -> None:
    order = lib.module.LimitOrder(
        "BUY",
        3.5,
        99.5,
        whatIf=True,
        goodAfterTime="20250115 09:30:00 UTC",
        goodTillDate="20250116 16:00:00 UTC",
        tif="GTD",
        allOrNone=True,
        minQty=2,
        hidden=True,
        orderMiscOptions=[lib.module.TagValue("a", "b")],
    )
    o = place_order(lib.place(13, order)).order
    assert (o.what_if, o.total_quantity, o.all_or_none, o.min_qty, o.hidden) == (
        True,
        Decimal("3.5"),
        True,
        2,
        True,
    )
    assert (o.good_after_time, o.good_till_date, o.tif) == (
        "20250115 09:30:00 UTC",
        "20250116 16:00:00 UTC",
        "GTD",
    )
    assert o.order_misc_options == "a=b;"


async def test_conditions_algo_hedge_scale_and_delta_neutral(lib: Capture) -> None:
    m = lib.module
    order = m.LimitOrder(
        "BUY",
        100,
        50.0,
        algoStrategy="Adaptive",
        algoParams=[m.TagValue("adaptivePriority", "Normal")],
        hedgeType="D",
        hedgeParam="0.5",
        scaleInitLevelSize=10,
        scaleSubsLevelSize=5,
        scalePriceIncrement=0.05,
        scalePriceAdjustValue=0.01,
        scalePriceAdjustInterval=60,
        scaleAutoReset=True,
        deltaNeutralOrderType="LMT",
        deltaNeutralAuxPrice=1.5,
        deltaNeutralConId=555,
        deltaNeutralShortSale=True,
        conditions=[
            m.PriceCondition(price=150.0, conId=265598, exch="SMART", isMore=False),
            m.TimeCondition(time="20250115 15:00:00 UTC", conjunction="o"),
            m.MarginCondition(percent=30),
            m.ExecutionCondition(secType="STK", exch="SMART", symbol="AAPL"),
            m.VolumeCondition(volume=1000, conId=265598, exch="SMART"),
            m.PercentChangeCondition(changePercent=2.5, conId=265598, exch="SMART"),
        ],
        conditionsIgnoreRth=True,
        conditionsCancelOrder=True,
    )
    contract = lib.stock()
    contract.deltaNeutralContract = m.DeltaNeutralContract(777, 0.4, 12.5)
    o = place_order(lib.place(14, order, contract)).order
    assert (o.algo_strategy, o.algo_params) == ("Adaptive", (("adaptivePriority", "Normal"),))
    assert (o.hedge_type, o.hedge_param) == ("D", "0.5")
    assert (o.scale_price_increment, o.scale_price_adjust_interval, o.scale_auto_reset) == (
        Decimal("0.05"),
        60,
        True,
    )
    assert (o.delta_neutral_order_type, o.delta_neutral_con_id) == ("LMT", 555)
    assert o.delta_neutral_short_sale is True
    assert o.delta_neutral_contract == DeltaNeutralContractSpec(
        777, Decimal("0.4"), Decimal("12.5")
    )
    assert [c.cond_type for c in o.conditions] == [1, 3, 4, 5, 6, 7]
    assert o.conditions[0].fields == ("a", "0", "150.0", "265598", "SMART", "0")
    assert (o.conditions_ignore_rth, o.conditions_cancel_order) == (True, True)


async def test_bag_order_with_legs_and_routing_params(lib: Capture) -> None:
    m = lib.module
    bag = m.Contract(
        secType="BAG",
        symbol="AAPL",
        exchange="SMART",
        currency="USD",
        comboLegs=[
            m.ComboLeg(conId=1001, ratio=1, action="BUY", exchange="SMART"),
            m.ComboLeg(conId=1002, ratio=2, action="SELL", exchange="SMART", openClose=1),
        ],
    )
    order = m.LimitOrder(
        "BUY",
        1,
        1.25,
        orderComboLegs=[m.OrderComboLeg(price=1.5), m.OrderComboLeg()],
        smartComboRoutingParams=[m.TagValue("NonGuaranteed", "1")],
    )
    decoded = place_order(lib.place(15, order, bag))
    o = decoded.order
    assert decoded.contract.sec_type == "BAG"
    assert [(leg.con_id, leg.ratio, leg.action, leg.open_close) for leg in o.combo_legs] == [
        (1001, 1, "BUY", 0),
        (1002, 2, "SELL", 1),
    ]
    assert o.order_combo_leg_prices == (Decimal("1.5"), None)
    assert o.smart_combo_routing_params == (("NonGuaranteed", "1"),)


@pytest.mark.parametrize(
    ("order_type", "extra"),
    [
        (
            "PEG BENCH",
            {
                "referenceContractId": 12087792,
                "isPeggedChangeAmountDecrease": True,
                "peggedChangeAmount": 0.5,
                "referenceChangeAmount": 0.25,
                "referenceExchangeId": "IDEALPRO",
            },
        ),
        ("PEG MID", {"midOffsetAtWhole": 0.01, "midOffsetAtHalf": 0.005}),
        ("PEG BEST", {"minCompeteSize": 100, "competeAgainstBestOffset": 0.02}),
        (
            "PEG BEST",
            {
                "minCompeteSize": 100,
                "competeAgainstBestOffset": math.inf,
                "midOffsetAtWhole": 0.01,
                "midOffsetAtHalf": 0.005,
            },
        ),
    ],
)
async def test_peg_orders_walk_their_tail_blocks(
    lib: Capture, order_type: str, extra: dict[str, Any]
) -> None:
    order = lib.module.Order(action="BUY", totalQuantity=100, orderType=order_type, **extra)
    contract = lib.stock()
    contract.exchange = "IBKRATS"
    order.minTradeQty = 50
    o = place_order(lib.place(16, order, contract)).order
    assert o.order_type == order_type
    assert o.min_trade_qty == 50
    if order_type == "PEG BENCH":
        assert (o.reference_contract_id, o.is_pegged_change_amount_decrease) == (12087792, True)
        assert o.reference_exchange_id == "IDEALPRO"
    if order_type == "PEG MID" or extra.get("competeAgainstBestOffset") == math.inf:
        assert (o.mid_offset_at_whole, o.mid_offset_at_half) == (
            Decimal("0.01"),
            Decimal("0.005"),
        )
    if order_type == "PEG BEST":
        assert o.min_compete_size == 100
        assert o.compete_against_best_offset is not None


# --- the echo: decoded placeOrder → openOrder → the client's decoder ------------------------


def _echo_orders(m: ModuleType) -> dict[str, Any]:
    return {
        "MKT": m.MarketOrder("BUY", 10, account=ACCOUNT, orderRef="mkt1"),
        "LMT": m.LimitOrder("BUY", 5, 100.0, tif="GTC", outsideRth=True),
        "STP": m.StopOrder("SELL", 5.0, 150.0, parentId=3, ocaGroup="g", ocaType=3),
        "STP LMT": m.StopLimitOrder("SELL", 5, 149.5, 150.25, goodTillDate="20250116 16:00:00"),
        "TRAIL": m.Order(action="SELL", totalQuantity=5, orderType="TRAIL", trailingPercent=1.5),
        "algo+conditions": m.LimitOrder(
            "BUY",
            0.5,
            50.0,
            algoStrategy="Adaptive",
            algoParams=[m.TagValue("adaptivePriority", "Urgent")],
            hedgeType="D",
            hedgeParam="0.5",
            conditions=[m.PriceCondition(price=150.0, conId=265598, exch="SMART")],
            conditionsIgnoreRth=True,
            minQty=1,
            allOrNone=True,
            discretionaryAmt=0.1,
        ),
    }


@pytest.mark.parametrize("kind", ["MKT", "LMT", "STP", "STP LMT", "TRAIL", "algo+conditions"])
async def test_decoded_order_echoes_back_unchanged(lib: Capture, kind: str) -> None:
    original = _echo_orders(lib.module)[kind]
    decoded = place_order(lib.place(30, original))
    trade = lib.echo(decoded, perm_id=5000)
    assert order_differences(original, trade.order) == {}
    assert trade.order.permId == 5000
    assert trade.contract.conId == 265598


async def test_echo_comparison_notices_a_changed_price(lib: Capture) -> None:
    original = lib.module.LimitOrder("BUY", 5, 100.0)
    decoded = place_order(lib.place(31, original))
    tampered = replace(decoded, order=replace(decoded.order, lmt_price=Decimal("101")))
    trade = lib.echo(tampered, perm_id=5001)
    assert order_differences(original, trade.order) == {"lmtPrice": (100.0, 101.0)}


# --- every other request the clients send --------------------------------------------------

OTHER_REQUESTS: list[tuple[str, Callable[[Any, ModuleType], object], Request]] = [
    ("startApi", lambda c, m: c.startApi(), StartApi(CLIENT_ID, "")),
    ("reqIds", lambda c, m: c.reqIds(1), ReqIds(1)),
    ("reqCurrentTime", lambda c, m: c.reqCurrentTime(), ReqCurrentTime()),
    ("reqMarketDataType", lambda c, m: c.reqMarketDataType(3), ReqMarketDataType(3)),
    ("reqPositions", lambda c, m: c.reqPositions(), ReqPositions()),
    ("cancelPositions", lambda c, m: c.cancelPositions(), CancelPositions()),
    ("reqOpenOrders", lambda c, m: c.reqOpenOrders(), ReqOpenOrders()),
    ("reqAllOpenOrders", lambda c, m: c.reqAllOpenOrders(), ReqAllOpenOrders()),
    ("reqAutoOpenOrders", lambda c, m: c.reqAutoOpenOrders(True), ReqAutoOpenOrders(True)),
    ("reqCompletedOrders", lambda c, m: c.reqCompletedOrders(False), ReqCompletedOrders(False)),
    (
        "reqAccountUpdates",
        lambda c, m: c.reqAccountUpdates(True, ACCOUNT),
        ReqAccountUpdates(True, ACCOUNT),
    ),
    (
        "reqAccountUpdatesMulti",
        lambda c, m: c.reqAccountUpdatesMulti(4, ACCOUNT, "", False),
        ReqAccountUpdatesMulti(4, ACCOUNT, "", False),
    ),
    (
        "cancelAccountUpdatesMulti",
        lambda c, m: c.cancelAccountUpdatesMulti(4),
        CancelAccountUpdatesMulti(4),
    ),
    (
        "reqAccountSummary",
        lambda c, m: c.reqAccountSummary(5, "All", "NetLiquidation,BuyingPower"),
        ReqAccountSummary(5, "All", ("NetLiquidation", "BuyingPower")),
    ),
    ("cancelAccountSummary", lambda c, m: c.cancelAccountSummary(5), CancelAccountSummary(5)),
    (
        "reqExecutions (empty filter)",
        lambda c, m: c.reqExecutions(6, m.ExecutionFilter()),
        ReqExecutions(6, ExecutionFilter()),
    ),
    (
        "reqExecutions (full filter)",
        lambda c, m: c.reqExecutions(
            6, m.ExecutionFilter(2, ACCOUNT, "20250115 00:00:00", "AAPL", "STK", "SMART", "BUY")
        ),
        ReqExecutions(
            6, ExecutionFilter(2, ACCOUNT, "20250115 00:00:00", "AAPL", "STK", "SMART", "BUY")
        ),
    ),
    (
        "reqContractDetails",
        lambda c, m: c.reqContractDetails(3, m.Stock("AAPL", "SMART", "USD")),
        ReqContractDetails(
            3, ContractSpec(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD")
        ),
    ),
    (
        "reqContractDetails (secId, issuerId)",
        lambda c, m: c.reqContractDetails(
            3,
            m.Contract(
                secType="BOND",
                secIdType="ISIN",
                secId="US912828",
                issuerId="e123",
                includeExpired=True,
            ),
        ),
        ReqContractDetails(3, ContractSpec(sec_type="BOND"), True, "ISIN", "US912828", "e123"),
    ),
    (
        "reqMktData",
        lambda c, m: c.reqMktData(
            7, m.Stock("AAPL", "SMART", "USD", conId=265598), "233,236", False, False, []
        ),
        ReqMktData(
            7,
            ContractSpec(
                con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD"
            ),
            generic_tick_list="233,236",
        ),
    ),
    (
        "reqMktData (snapshot)",
        lambda c, m: c.reqMktData(8, m.Stock("AAPL", "SMART", "USD"), "", True, False, []),
        ReqMktData(
            8,
            ContractSpec(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD"),
            snapshot=True,
        ),
    ),
    (
        "reqMktData (BAG + delta neutral)",
        lambda c, m: c.reqMktData(
            9,
            m.Contract(
                secType="BAG",
                symbol="AAPL",
                comboLegs=[
                    m.ComboLeg(1001, 1, "BUY", "SMART"),
                    m.ComboLeg(1002, 2, "SELL", "CBOE"),
                ],
                deltaNeutralContract=m.DeltaNeutralContract(777, 0.5, 10.0),
            ),
            "",
            False,
            True,
            [m.TagValue("x", "y")],
        ),
        ReqMktData(
            9,
            ContractSpec(symbol="AAPL", sec_type="BAG"),
            combo_legs=(
                MktDataComboLeg(1001, 1, "BUY", "SMART"),
                MktDataComboLeg(1002, 2, "SELL", "CBOE"),
            ),
            delta_neutral_contract=DeltaNeutralContractSpec(777, Decimal("0.5"), Decimal("10.0")),
            regulatory_snapshot=True,
            mkt_data_options="x=y;",
        ),
    ),
    ("cancelMktData", lambda c, m: c.cancelMktData(7), CancelMktData(7)),
    ("cancelOrder", lambda c, m: c.cancelOrder(8), CancelOrder(8, "")),
    (
        "cancelOrder (manual time)",
        lambda c, m: c.cancelOrder(8, "20250115 14:30:00"),
        CancelOrder(8, "20250115 14:30:00"),
    ),
    ("reqGlobalCancel", lambda c, m: c.reqGlobalCancel(), ReqGlobalCancel()),
    (
        "reqHistoricalData",
        lambda c, m: c.reqHistoricalData(
            14,
            m.Stock("AAPL", "SMART", "USD", conId=265598),
            "20250115 14:30:00 UTC",
            "5 D",
            "1 day",
            "TRADES",
            True,
            1,
            False,
            [],
        ),
        ReqHistoricalData(
            req_id=14,
            contract=ContractSpec(
                con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD"
            ),
            include_expired=False,
            end_date_time="20250115 14:30:00 UTC",
            bar_size_setting="1 day",
            duration_str="5 D",
            use_rth=True,
            what_to_show="TRADES",
            format_date=1,
            keep_up_to_date=False,
        ),
    ),
    (
        "reqHistoricalData (keepUpToDate, BAG)",
        lambda c, m: c.reqHistoricalData(
            15,
            m.Contract(
                secType="BAG", symbol="AAPL", comboLegs=[m.ComboLeg(1001, 1, "BUY", "SMART")]
            ),
            "",
            "1 D",
            "5 mins",
            "MIDPOINT",
            False,
            2,
            True,
            [],
        ),
        ReqHistoricalData(
            req_id=15,
            contract=ContractSpec(symbol="AAPL", sec_type="BAG"),
            include_expired=False,
            end_date_time="",
            bar_size_setting="5 mins",
            duration_str="1 D",
            use_rth=False,
            what_to_show="MIDPOINT",
            format_date=2,
            keep_up_to_date=True,
            combo_legs=(MktDataComboLeg(1001, 1, "BUY", "SMART"),),
        ),
    ),
    ("cancelHistoricalData", lambda c, m: c.cancelHistoricalData(14), CancelHistoricalData(14)),
]


@pytest.mark.parametrize(
    ("call", "expected"),
    [pytest.param(call, expected, id=name) for name, call, expected in OTHER_REQUESTS],
)
async def test_request_sent_by_the_client_decodes(
    lib: Capture, call: Callable[[Any, ModuleType], object], expected: Request
) -> None:
    fields = lib.one(lambda client: call(client, lib.module))
    assert decode_request(fields) == expected


async def test_startup_capture_matches_the_spec(lib: Capture) -> None:
    """The exact wire of two captured messages quoted in the spec (§3 table)."""
    assert lib.one(lambda c: c.reqContractDetails(3, lib.module.Stock("AAPL", "SMART", "USD"))) == [
        *["9", "8", "3", "0", "AAPL", "STK"],
        "",
        "0.0",
        "",
        "",
        "SMART",
        "",
        "USD",
        "",
        "",
        "0",
        "",
        "",
        "",
    ]
    assert lib.one(lambda c: c.cancelOrder(8)) == ["4", "1", "8", ""]
