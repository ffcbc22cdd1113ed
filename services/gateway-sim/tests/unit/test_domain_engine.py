"""The matching engine: order types, TIFs, brackets/OCA, cancels, modifications,
rejections, partial fills, RTH clock, ids and determinism."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ibflow_gateway_sim.domain import (
    Account,
    AccountChanged,
    Accounts,
    CommissionCharged,
    Engine,
    EngineEvent,
    ExecutionOccurred,
    Market,
    MarketClock,
    MarketSettings,
    OrderError,
    OrderRejected,
    OrderRequest,
    OrderStatusChanged,
    PositionChanged,
    SimExecution,
    Universe,
)

T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
D = Decimal


def setup(
    seed: int = 7, cash: int = 1_000_000, clock: MarketClock | None = None, **kw: Any
) -> tuple[Engine, Market]:
    universe = Universe()
    market = Market(universe, MarketSettings(seed=seed))
    market.freeze(True)
    accounts = Accounts([Account(starting_cash=D(cash))])
    engine = Engine(universe, market, accounts, clock=clock, seed=seed, **kw)
    market.set_price("AAPL", D(100), T0)  # bid 100.00 / ask 100.01
    return engine, market


def req(action: str = "BUY", qty: int = 100, kind: str = "MKT", **kw: Any) -> OrderRequest:
    kw.setdefault("symbol", "AAPL")
    return OrderRequest(action=action, quantity=D(qty), order_type=kind, **kw)  # type: ignore[arg-type]


def tick(engine: Engine, market: Market, price: str, at: int, **kw: Any) -> list[EngineEvent]:
    now = T0 + timedelta(seconds=at)
    market.set_price("AAPL", D(price), now, **kw)
    return engine.on_market(now)


def execs(events: Sequence[EngineEvent]) -> list[SimExecution]:
    return [e.execution for e in events if isinstance(e, ExecutionOccurred)]


def statuses(events: Sequence[EngineEvent], order_id: int | None = None) -> list[str]:
    return [
        e.order.status
        for e in events
        if isinstance(e, OrderStatusChanged) and order_id in (None, e.order.order_id)
    ]


def errors(events: Sequence[EngineEvent]) -> list[tuple[int, int]]:
    return [(e.order_id, e.code) for e in events if isinstance(e, (OrderError, OrderRejected))]


# ---------------------------------------------------------------- determinism


def scenario(seed: int) -> list[EngineEvent]:
    universe = Universe()
    market = Market(universe, MarketSettings(seed=seed, volatility=2.0))
    engine = Engine(universe, market, Accounts(), fill_lots=[40], slippage_ticks=1, seed=seed)
    events: list[EngineEvent] = []
    oid = 0
    for i in range(200):
        now = T0 + timedelta(seconds=i)
        events += engine.on_market(now, market.advance(now))
        if i % 20 == 0:
            quote = market.quote("NVDA")
            assert quote is not None
            oid += 1
            events += engine.place(1, oid, req("BUY", 100, symbol="NVDA"), now)
            oid += 1
            lmt = quote.bid - D("0.05")
            events += engine.place(
                1, oid, req("SELL", 100, "LMT", symbol="NVDA", lmt_price=lmt + D("0.10")), now
            )
    return events


def test_deterministic_same_seed_same_prices_and_fills() -> None:
    first, second = scenario(3), scenario(3)
    assert first == second
    assert len(execs(first)) > 10
    assert [e.exec_id for e in execs(first)] != [e.exec_id for e in execs(scenario(4))]


# ---------------------------------------------------------------- order types


def test_mkt_buy_fills_at_ask_plus_slippage_in_ib_event_order() -> None:
    engine, _ = setup(slippage_ticks=2)
    events = engine.place(1, 1, req("BUY", 100), T0)
    assert [type(e).__name__ for e in events] == [
        "OrderStatusChanged",
        "OrderStatusChanged",
        "ExecutionOccurred",
        "OrderStatusChanged",
        "CommissionCharged",
        "PositionChanged",
        "AccountChanged",
    ]
    assert statuses(events) == ["PreSubmitted", "Submitted", "Filled"]
    (ex,) = execs(events)
    assert ex.price == D("100.03")  # ask 100.01 + 2 ticks
    assert (ex.side, ex.shares, ex.cum_qty, ex.avg_price) == ("BOT", D(100), D(100), D("100.03"))
    assert ex.order.perm_id > 0
    sell = engine.place(1, 2, req("SELL", 100), T0)
    assert execs(sell)[0].price == D("99.98")  # bid 100.00 - 2 ticks


def test_lmt_rests_then_fills_when_crossed() -> None:
    engine, market = setup()
    events = engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D("99.50")), T0)
    assert statuses(events) == ["PreSubmitted", "Submitted"]
    assert execs(tick(engine, market, "99.60", 1)) == []  # ask 99.61 > 99.50
    events = tick(engine, market, "99.40", 2)  # ask 99.41 <= 99.50
    (ex,) = execs(events)
    assert ex.price == D("99.50")
    assert ex.liquidity == 1
    assert statuses(events) == ["Filled"]


def test_marketable_limit_fills_at_once_at_better_price() -> None:
    engine, _ = setup()
    buy = engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(101)), T0)
    assert execs(buy)[0].price == D("100.01")
    sell = engine.place(1, 2, req("SELL", 100, "LMT", lmt_price=D(99)), T0)
    assert execs(sell)[0].price == D(100)


def test_stp_triggers_on_move_through_stop() -> None:
    engine, market = setup()
    events = engine.place(1, 1, req("SELL", 100, "STP", aux_price=D(98)), T0)
    assert statuses(events) == ["PreSubmitted", "Submitted"]
    assert execs(tick(engine, market, "98.50", 1)) == []
    events = tick(engine, market, "97.80", 2)
    (ex,) = execs(events)
    assert ex.price == D("97.80")  # bid after the gap, like a market order
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.triggered
    assert order.status == "Filled"
    engine.place(1, 2, req("BUY", 100, "STP", aux_price=D(99)), T0 + timedelta(seconds=3))
    assert execs(tick(engine, market, "99.10", 4))[0].price == D("99.11")


def test_stp_lmt_triggers_then_rests() -> None:
    engine, market = setup()
    engine.place(1, 1, req("SELL", 100, "STP LMT", aux_price=D(98), lmt_price=D("97.50")), T0)
    assert execs(tick(engine, market, "97.00", 1)) == []  # triggered, bid below the limit
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.triggered
    assert order.status == "Submitted"
    (ex,) = execs(tick(engine, market, "97.60", 2))
    assert ex.price == D("97.50")
    # a gap through the stop that stays above the limit fills at once at the touch
    engine.place(2, 1, req("SELL", 100, "STP LMT", aux_price=D(97), lmt_price=D(96)), T0)
    (gap,) = execs(tick(engine, market, "96.80", 3))
    assert gap.price == D("96.80")


def test_trail_amount_follows_high_then_triggers() -> None:
    engine, market = setup()
    engine.place(1, 1, req("SELL", 100, "TRAIL", aux_price=D(1)), T0)
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.trail_stop == D(99)
    tick(engine, market, "102.00", 1)
    tick(engine, market, "101.50", 2)  # lower: the stop does not move down
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.trail_stop == D(101)
    assert order.status == "Submitted"
    (ex,) = execs(tick(engine, market, "100.90", 3))
    assert ex.price == D("100.90")


def test_trail_initial_stop_price_is_kept_until_overtaken() -> None:
    engine, market = setup()
    engine.place(1, 1, req("SELL", 100, "TRAIL", aux_price=D(1), trail_stop_price=D("99.50")), T0)
    tick(engine, market, "100.20", 1)  # 100.20 - 1 = 99.20 < 99.50: keep 99.50
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.trail_stop == D("99.50")
    tick(engine, market, "100.80", 2)
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.trail_stop == D("99.80")


def test_trail_percent_buy_follows_low_then_triggers() -> None:
    engine, market = setup()
    engine.place(1, 1, req("BUY", 100, "TRAIL", trailing_percent=D(2)), T0)
    tick(engine, market, "90.00", 1)  # low 90 → stop 91.80
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.trail_stop == D("91.80")
    assert execs(tick(engine, market, "91.50", 2)) == []  # ask 91.51 < 91.80
    (ex,) = execs(tick(engine, market, "91.85", 3))
    assert ex.price == D("91.86")


# ---------------------------------------------------------------- TIF, lots, partials


def test_ioc_partial_then_cancel_and_fok_none() -> None:
    engine, market = setup(depth_limited=True)
    market.set_price("AAPL", D(100), T0, ask_size=D(300), bid_size=D(300))
    events = engine.place(1, 1, req("BUY", 500, "LMT", lmt_price=D(101), tif="IOC"), T0)
    assert [e.shares for e in execs(events)] == [D(300)]
    assert statuses(events) == ["PreSubmitted", "Submitted", "Submitted", "Cancelled"]
    assert errors(events) == [(1, 202)]
    order = engine.find_order(1, 1)
    assert order is not None
    assert (order.filled, order.remaining) == (D(300), D(200))
    market.set_price("AAPL", D(100), T0, ask_size=D(300), bid_size=D(300))
    events = engine.place(1, 2, req("BUY", 500, tif="FOK"), T0)
    assert execs(events) == []
    assert statuses(events)[-1] == "Cancelled"


def test_depth_is_shared_between_orders_on_one_quote() -> None:
    engine, market = setup(depth_limited=True)
    market.set_price("AAPL", D(100), T0, ask_size=D(150))
    first = engine.place(1, 1, req("BUY", 100), T0)
    second = engine.place(1, 2, req("BUY", 100), T0)
    assert [e.shares for e in execs(first + second)] == [D(100), D(50)]
    assert [e.shares for e in execs(tick(engine, market, "100", 1))] == [D(50)]


def test_partial_fills_with_lot_splitting_then_cancel_keeps_fills() -> None:
    engine, market = setup(fill_lots=[100], max_executions_per_check=1)
    events = engine.place(1, 1, req("BUY", 300), T0)
    assert [e.shares for e in execs(events)] == [D(100)]
    assert statuses(events)[-1] == "Submitted"
    events = engine.cancel(1, 1, T0 + timedelta(seconds=1))
    assert statuses(events) == ["Cancelled"]
    assert errors(events) == [(1, 202)]
    order = engine.find_order(1, 1)
    assert order is not None
    assert (order.status, order.filled, order.remaining) == ("Cancelled", D(100), D(200))
    assert len(engine.executions()) == 1
    assert execs(tick(engine, market, "100", 2)) == []
    assert engine.accounts.default.position(265598) is not None


def test_lot_splitting_in_one_check_with_min_commission_once() -> None:
    engine, _ = setup(fill_lots=[100])
    events = engine.place(1, 1, req("BUY", 300), T0)
    assert [e.shares for e in execs(events)] == [D(100)] * 3
    assert [e.cum_qty for e in execs(events)] == [D(100), D(200), D(300)]
    assert statuses(events) == ["PreSubmitted", "Submitted", "Submitted", "Submitted", "Filled"]
    fees = [e.commission for e in events if isinstance(e, CommissionCharged)]
    assert fees == [D("1.00"), D(0), D("0.50")]  # $0.005 x 300 = 1.50, min $1 per order


def test_day_order_expires_at_close_and_gtd() -> None:
    engine, _market = setup(clock=MarketClock("rth"))
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(90)), T0)
    engine.place(
        1,
        2,
        req("BUY", 100, "LMT", lmt_price=D(90), tif="GTD", good_till_date=T0 + timedelta(hours=1)),
        T0,
    )
    engine.place(1, 3, req("BUY", 100, "LMT", lmt_price=D(90), tif="GTC"), T0)
    assert errors(engine.on_market(T0 + timedelta(minutes=59))) == []
    assert errors(engine.on_market(T0 + timedelta(hours=1))) == [(2, 202)]
    close = datetime(2024, 3, 4, 21, 0, tzinfo=UTC)
    assert errors(engine.expire(close - timedelta(seconds=1))) == []
    assert errors(engine.expire(close)) == [(1, 202)]
    assert [o.order_id for o in engine.open_orders()] == [3]


def test_opg_waits_for_open_then_cancels_rest() -> None:
    engine, market = setup(clock=MarketClock("rth"))
    evening = datetime(2024, 3, 4, 22, 0, tzinfo=UTC)
    events = engine.place(1, 1, req("BUY", 100, tif="OPG"), evening)
    assert statuses(events) == ["PreSubmitted"]
    assert engine.on_market(evening + timedelta(hours=1)) == []
    open_ = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
    market.set_price("AAPL", D(101), open_)
    events = engine.on_market(open_)
    assert statuses(events) == ["Submitted", "Filled"]
    assert execs(events)[0].price == D("101.01")


def test_moc_fills_at_close() -> None:
    engine, market = setup(clock=MarketClock("rth"))
    engine.place(1, 1, req("SELL", 100, "MOC"), T0)
    assert execs(tick(engine, market, "100", 60)) == []
    close = datetime(2024, 3, 4, 21, 0, tzinfo=UTC)
    market.set_price("AAPL", D("103.37"), close)
    assert execs(engine.on_market(close))[0].price == D("103.37")


# ---------------------------------------------------------------- brackets / OCA


def test_bracket_children_wait_for_parent_and_oca_sibling_cancelled() -> None:
    engine, market = setup()
    parent = engine.place(1, 10, req("BUY", 100, "LMT", lmt_price=D(101), transmit=False), T0)
    assert statuses(parent) == ["PreSubmitted"]  # not transmitted: not filled though marketable
    tp = engine.place(
        1, 11, req("SELL", 100, "LMT", lmt_price=D(105), parent_id=10, transmit=False), T0
    )
    assert statuses(tp) == ["PreSubmitted"]
    assert execs(tick(engine, market, "100", 1)) == []
    sl = engine.place(1, 12, req("SELL", 100, "STP", aux_price=D(95), parent_id=10), T0)
    # last child transmits the chain: the parent works and fills, the children activate
    assert statuses(sl, 10) == ["Submitted", "Filled"]
    assert statuses(sl, 11) == ["Submitted"]
    assert statuses(sl, 12) == ["PreSubmitted", "Submitted"]
    parent_order = engine.find_order(1, 10)
    assert parent_order is not None
    assert parent_order.children == (11, 12)
    events = tick(engine, market, "105.10", 2)
    (ex,) = execs(events)
    assert (ex.order.order_id, ex.price) == (11, D(105))
    assert statuses(events, 12) == ["Cancelled"]
    assert (12, 202) in errors(events)
    position = engine.accounts.default.position(265598)
    assert position is not None
    assert position.quantity == 0


def test_children_of_unfilled_parent_stay_presubmitted() -> None:
    engine, market = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(95), transmit=False), T0)
    events = engine.place(1, 2, req("SELL", 100, "STP", aux_price=D(99), parent_id=1), T0)
    assert statuses(events, 1) == ["Submitted"]
    assert statuses(events, 2) == ["PreSubmitted"]
    assert execs(tick(engine, market, "98", 1)) == []  # the stop would trigger, but waits
    events = tick(engine, market, "94.99", 2)
    assert [(e.order.order_id, e.price) for e in execs(events)] == [(1, D(95)), (2, D("94.99"))]
    # cancelling an unfilled parent cancels its children
    engine.place(1, 3, req("BUY", 100, "LMT", lmt_price=D(80), transmit=False), T0)
    engine.place(1, 4, req("SELL", 100, "LMT", lmt_price=D(99), parent_id=3), T0)
    events = engine.cancel(1, 3, T0)
    assert errors(events) == [(3, 202), (4, 202)]


def test_oca_group_type1_and_201_race() -> None:
    engine, market = setup()
    engine.place(1, 1, req("SELL", 100, "LMT", lmt_price=D(102), oca_group="G", oca_type=1), T0)
    engine.place(1, 2, req("SELL", 100, "STP", aux_price=D(98), oca_group="G", oca_type=1), T0)
    events = tick(engine, market, "102.00", 1)
    assert [e.order.order_id for e in execs(events)] == [1]
    assert statuses(events, 2) == ["Cancelled"]
    late = engine.place(
        1, 3, req("SELL", 100, "LMT", lmt_price=D(110), oca_group="G", oca_type=1), T0
    )
    assert late == [OrderRejected(1, 3, 201, "Order rejected - reason:OCA group is already filled")]


def test_oca_type3_reduces_others_on_partial_fill() -> None:
    engine, market = setup(depth_limited=True)
    engine.place(1, 1, req("SELL", 300, "LMT", lmt_price=D(102), oca_group="R", oca_type=3), T0)
    engine.place(1, 2, req("SELL", 300, "STP", aux_price=D(98), oca_group="R", oca_type=3), T0)
    events = tick(engine, market, "102.00", 1, bid_size=D(100))
    assert [e.shares for e in execs(events)] == [D(100)]
    other = engine.find_order(1, 2)
    assert other is not None
    assert (other.quantity, other.status) == (D(200), "Submitted")


# ---------------------------------------------------------------- cancel / modify


def test_cancel_unknown_and_filled() -> None:
    engine, _ = setup()
    assert engine.cancel(1, 99, T0) == [
        OrderError(1, 99, 10147, "OrderId 99 that needs to be cancelled is not found.")
    ]
    engine.place(1, 1, req("BUY", 100), T0)
    assert engine.cancel(1, 1, T0) == [
        OrderError(
            1, 1, 10148, "OrderId 1 that needs to be cancelled cannot be cancelled, state: Filled."
        )
    ]
    assert engine.cancel(2, 1, T0)[0].code == 10147  # type: ignore[union-attr]  # other client


def test_global_cancel() -> None:
    engine, _ = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(90)), T0)
    engine.place(2, 1, req("BUY", 100, "LMT", lmt_price=D(91)), T0)
    assert errors(engine.global_cancel(T0)) == [(1, 202), (1, 202)]
    assert engine.open_orders() == []
    assert len(engine.completed_orders()) == 2


def test_modify_price_of_working_lmt() -> None:
    engine, market = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(99)), T0)
    perm = engine.find_order(1, 1)
    assert perm is not None
    events = engine.place(1, 1, req("BUY", 200, "LMT", lmt_price=D("99.50")), T0)
    assert statuses(events) == ["Submitted"]
    (changed,) = [e for e in events if isinstance(e, OrderStatusChanged)]
    assert changed.order.perm_id == perm.perm_id
    assert changed.order.request.lmt_price == D("99.50")
    assert changed.order.quantity == D(200)
    (ex,) = execs(tick(engine, market, "99.45", 1))
    assert (ex.price, ex.shares) == (D("99.50"), D(200))


def test_modify_to_marketable_fills_and_modify_filled_is_104() -> None:
    engine, _ = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(99)), T0)
    events = engine.place(1, 1, req("BUY", 100, "MKT"), T0)
    assert execs(events)[0].price == D("100.01")
    assert engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(98)), T0) == [
        OrderError(1, 1, 104, "Can't modify a filled order")
    ]


def test_modify_errors_duplicate_id_and_side() -> None:
    engine, _ = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(99)), T0)
    assert errors(engine.place(1, 1, req("BUY", 100, symbol="MSFT"), T0)) == [(1, 103)]
    assert errors(engine.place(1, 1, req("SELL", 100, "LMT", lmt_price=D(99)), T0)) == [(1, 105)]
    off_tick = engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D("99.005")), T0)
    assert errors(off_tick) == [(1, 201)]
    order = engine.find_order(1, 1)
    assert order is not None
    assert order.request.lmt_price == D(99)  # unchanged and still working
    engine.cancel(1, 1, T0)
    assert errors(engine.place(1, 1, req("BUY", 100), T0)) == [(1, 103)]


# ---------------------------------------------------------------- rejections


def test_rejection_for_insufficient_buying_power() -> None:
    engine, _ = setup(cash=10_000)
    (rej,) = engine.place(1, 1, req("BUY", 1000), T0)  # 100k of stock needs 25k margin
    assert isinstance(rej, OrderRejected)
    assert rej.code == 201
    assert rej.text == (
        "Order rejected - reason:Your order is not accepted because your Equity with Loan "
        "Value of [10000.00 USD] is insufficient to cover the Initial Margin requirement "
        "of [25002.50 USD]."
    )
    assert engine.open_orders() == []
    assert execs(engine.place(1, 2, req("BUY", 300), T0))  # 30k needs 7.5k: fine
    # closing a position never needs margin
    assert execs(engine.place(1, 3, req("SELL", 300), T0))


def test_unknown_symbol_200_and_invalid_orders_201() -> None:
    engine, _ = setup()
    assert engine.place(1, 1, req(symbol="NOPE"), T0) == [
        OrderRejected(1, 1, 200, "No security definition has been found for the request")
    ]
    cases = {
        2: req("BUY", 100, "LMT"),
        3: req("BUY", 100, "LMT", lmt_price=D("100.005")),
        4: req("BUY", 0),
        5: req("BUY", 100, "STP"),
        6: req("BUY", 100, "PEG MID"),
        7: req("BUY", 100, "TRAIL"),
        8: req("BUY", 100, account="U999"),
        9: req("BUY", 100, parent_id=77),
        11: req("BUY", 100, "LMT", lmt_price=D("NaN")),
        12: req("BUY", 100, "LMT", lmt_price=D("1.7976931348623157E+308")),  # UNSET_DOUBLE
        13: req("BUY", 100, tif="GTD"),
        14: req("BUY", 100, tif="GTD", good_till_date=datetime(2024, 3, 5)),
        15: req("BUY", 100, tif="GTX"),
    }
    for oid, request in cases.items():
        (rej,) = engine.place(1, oid, request, T0)
        assert isinstance(rej, OrderRejected)
        assert (rej.order_id, rej.code) == (oid, 201)
        assert rej.text.startswith("Order rejected - reason:")
    (tick_rej,) = engine.place(1, 10, cases[3], T0)
    assert isinstance(tick_rej, OrderRejected)
    assert tick_rej.text == (
        "Order rejected - reason:The price does not conform to the minimum price "
        "variation for this contract."
    )


# ---------------------------------------------------------------- RTH clock


def test_rth_order_outside_rth_waits_unless_outside_rth() -> None:
    engine, market = setup(clock=MarketClock("rth"))
    early = datetime(2024, 3, 4, 13, 0, tzinfo=UTC)  # 08:00 New York
    events = engine.place(1, 1, req("BUY", 100), early)
    assert statuses(events) == ["PreSubmitted"]
    assert engine.on_market(early + timedelta(minutes=10)) == []
    events = engine.place(1, 2, req("BUY", 100, outside_rth=True), early)
    assert statuses(events) == ["PreSubmitted", "Submitted", "Filled"]
    open_ = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    market.set_price("AAPL", D(102), open_)
    events = engine.on_market(open_)
    assert statuses(events) == ["Submitted", "Filled"]
    assert execs(events)[0].price == D("102.01")
    # a resting order placed during RTH does not fill after the close
    engine.place(1, 3, req("BUY", 100, "LMT", lmt_price=D(100), tif="GTC"), open_)
    evening = datetime(2024, 3, 4, 22, 0, tzinfo=UTC)
    market.set_price("AAPL", D(99), evening)
    assert execs(engine.on_market(evening)) == []


# ---------------------------------------------------------------- ids and queries


def test_order_ids_continue_after_restart() -> None:
    engine, _ = setup()
    assert engine.max_order_id(1) == 0
    engine.place(1, 5, req("BUY", 100), T0)
    engine.place(1, 9, req(symbol="NOPE"), T0)  # rejected ids count too
    engine.place(2, 3, req("BUY", 100, "LMT", lmt_price=D(90)), T0)
    # "restart": the server drops its sessions but keeps the engine
    assert engine.max_order_id(1) == 9
    assert engine.max_order_id(2) == 3
    assert engine.max_order_id() == 9
    assert [o.order_id for o in engine.open_orders(2)] == [3]
    assert engine.open_orders(1) == []
    events = engine.place(1, engine.max_order_id(1) + 1, req("BUY", 100), T0)
    assert execs(events)[0].order.order_id == 10


def test_exec_ids_unique_and_queries() -> None:
    engine, _market = setup(fill_lots=[30, 70])
    for oid in range(1, 6):
        engine.place(1, oid, req("BUY" if oid % 2 else "SELL", 250), T0 + timedelta(seconds=oid))
    engine.place(2, 1, req("BUY", 100, symbol="MSFT"), T0 + timedelta(seconds=10))
    fills = engine.executions()
    ids = [f.execution.exec_id for f in fills]
    assert len(ids) == len(set(ids)) == 5 * 6 + 2  # 30, 70, 30, 70, 30, 20 per order
    assert all(re.fullmatch(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01", i) for i in ids)
    assert all(f.commission.exec_id == f.execution.exec_id for f in fills)
    assert len(engine.executions(client_id=2)) == 2
    assert len(engine.executions(symbol="msft")) == 2
    assert len(engine.executions(side="SELL")) == 12
    assert len(engine.executions(side="BOT")) == 20
    assert len(engine.executions(since=T0 + timedelta(seconds=5))) == 8
    assert len(engine.executions(account="DU1234567")) == 32
    first = fills[0].execution.order
    order = engine.order(first.perm_id)
    assert order is not None
    assert order.status == "Filled"
    assert engine.order(1) is None
    perms = {f.execution.order.perm_id for f in fills}
    assert len(perms) == 6
    assert 0 not in perms


def test_position_and_account_events_follow_fills() -> None:
    engine, _ = setup()
    events = engine.place(1, 1, req("BUY", 100), T0)
    (pos,) = [e for e in events if isinstance(e, PositionChanged)]
    assert (pos.account, pos.instrument.symbol, pos.position) == ("DU1234567", "AAPL", D(100))
    assert pos.avg_cost == D("100.02")  # 100.01 + $1 commission / 100 shares
    (acct,) = [e for e in events if isinstance(e, AccountChanged)]
    assert acct.values["TotalCashValue"] == "989998.00"
    assert acct.values["AccountCode"] == "DU1234567"


def test_intermediate_quotes_trigger_stops() -> None:
    engine, market = setup()
    engine.place(1, 1, req("SELL", 100, "STP", aux_price=D(98)), T0)
    market.load_csv_lines(
        [
            "2024-03-04T15:00:01Z,AAPL,97.50",  # dips through the stop...
            "2024-03-04T15:00:02Z,AAPL,100.00",  # ...and recovers before the next check
        ]
    )
    now = T0 + timedelta(seconds=2)
    updates = market.advance(now)
    assert engine.on_market(now) == []  # the current quote alone misses the dip
    (ex,) = execs(engine.on_market(now, updates))
    assert ex.price == D("97.50")


# ---------------------------------------------------------------- transmit=False (brackets)


def transmitted(events: Sequence[EngineEvent], order_id: int) -> list[tuple[str, bool]]:
    return [
        (e.order.status, e.order.transmitted)
        for e in events
        if isinstance(e, OrderStatusChanged) and e.order.order_id == order_id
    ]


def test_held_orders_are_announced_when_the_last_child_transmits_the_chain() -> None:
    engine, _ = setup()
    parent = engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(95), transmit=False), T0)
    tp = engine.place(
        1, 2, req("SELL", 100, "LMT", lmt_price=D(105), parent_id=1, transmit=False), T0
    )
    # not transmitted: the snapshots say so (the server sends nothing for them)
    assert transmitted(parent, 1) == [("PreSubmitted", False)]
    assert transmitted(tp, 2) == [("PreSubmitted", False)]

    events = engine.place(1, 3, req("SELL", 100, "STP", aux_price=D(90), parent_id=1), T0)

    assert transmitted(events, 1) == [("Submitted", True)]
    assert transmitted(events, 2) == [("PreSubmitted", True)]  # first news of the held child
    assert transmitted(events, 3) == [("PreSubmitted", True)]
    # parent first, then the children in placement order
    assert [e.order.order_id for e in events if isinstance(e, OrderStatusChanged)] == [1, 2, 3]


def test_cancelling_an_untransmitted_order_sends_no_202() -> None:
    engine, _ = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(95), transmit=False), T0)
    engine.place(1, 2, req("SELL", 100, "LMT", lmt_price=D(99), parent_id=1, transmit=False), T0)

    events = engine.cancel(1, 1, T0)

    assert transmitted(events, 1) == [("Cancelled", False)]
    assert transmitted(events, 2) == [("Cancelled", False)]
    assert errors(events) == []


def test_modifying_a_held_order_with_transmit_releases_it() -> None:
    engine, _ = setup()
    engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(95), transmit=False), T0)

    events = engine.place(1, 1, req("BUY", 100, "LMT", lmt_price=D(96)), T0)

    assert transmitted(events, 1) == [("PreSubmitted", True), ("Submitted", True)]
