"""Accounts: commissions, cash, positions, average cost, realised/unrealised P&L,
margin figures and the IB account tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ibflow_gateway_sim.domain import (
    Account,
    Accounts,
    CommissionCharged,
    CommissionSchedule,
    Engine,
    EngineEvent,
    ExecutionOccurred,
    Market,
    MarketSettings,
    OrderRejected,
    OrderRequest,
    Universe,
)

T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
D = Decimal
AAPL = 265598


def setup(*accounts: Account) -> tuple[Engine, Market, Accounts]:
    universe = Universe()
    market = Market(universe, MarketSettings(seed=1))
    market.freeze(True)
    registry = Accounts(accounts or None)
    return Engine(universe, market, registry), market, registry


def trade(
    engine: Engine, market: Market, oid: int, action: str, qty: int, price: str, **kw: Any
) -> list[EngineEvent]:
    now = T0 + timedelta(seconds=oid)
    p = D(price)
    market.set_price("AAPL", p, now, bid=p, ask=p)
    request = OrderRequest(symbol="AAPL", action=action, quantity=D(qty), **kw)  # type: ignore[arg-type]
    events = engine.place(1, oid, request, now)
    assert any(isinstance(e, ExecutionOccurred) for e in events), events
    return events


def fees(events: list[EngineEvent]) -> list[CommissionCharged]:
    return [e for e in events if isinstance(e, CommissionCharged)]


def test_commission_schedule_min_and_cap() -> None:
    sched = CommissionSchedule()
    assert sched.cumulative(D(100), D(10_000)) == D("1.00")  # 0.50 → min $1
    assert sched.cumulative(D(1000), D(100_000)) == D("5.000")  # $0.005/share
    assert sched.cumulative(D(1000), D(200)) == D("2.00")  # capped at 1% of value
    assert sched.cumulative(D(10), D(50)) == D("0.50")  # the cap wins over the minimum


def test_commission_charged_per_execution_via_engine() -> None:
    engine, market, _ = setup()
    assert [f.commission for f in fees(trade(engine, market, 1, "BUY", 100, "100"))] == [D(1)]
    assert [f.commission for f in fees(trade(engine, market, 2, "BUY", 1000, "100"))] == [D(5)]
    assert [f.commission for f in fees(trade(engine, market, 3, "BUY", 1000, "0.20"))] == [D(2)]
    assert engine.commission_total(engine.executions()[0].execution.order.perm_id) == D(1)


def test_round_trip_cash_position_and_realized_pnl() -> None:
    engine, market, accounts = setup()
    buy = trade(engine, market, 1, "BUY", 100, "100.00")
    sell = trade(engine, market, 2, "SELL", 100, "101.50")
    (buy_fee,), (sell_fee,) = fees(buy), fees(sell)
    assert buy_fee.realized_pnl is None  # opening execution: IB sends UNSET
    expected = 100 * (D("101.50") - D("100.00")) - buy_fee.commission - sell_fee.commission
    assert expected == D(148)
    assert sell_fee.realized_pnl == expected
    account = accounts.default
    assert account.realized_pnl == expected
    assert account.cash == D(1_000_000) + expected
    position = account.position(AAPL)
    assert position is not None
    assert (position.quantity, position.avg_cost, position.realized_pnl) == (D(0), D(0), expected)
    values = account.account_values()
    assert values["RealizedPnL"] == "148.00"
    assert values["NetLiquidation"] == "1000148.00"
    assert values["GrossPositionValue"] == "0.00"


def test_average_cost_includes_commission_and_short_round_trip() -> None:
    engine, market, accounts = setup()
    trade(engine, market, 1, "SELL", 200, "50.00")  # short: proceeds net of $1
    position = accounts.default.position(AAPL)
    assert position is not None
    assert (position.quantity, position.avg_cost) == (D(-200), D("49.995"))
    close = trade(engine, market, 2, "BUY", 200, "45.00")
    assert fees(close)[0].realized_pnl == 200 * (D(50) - D(45)) - 2
    assert accounts.default.realized_pnl == D(998)


def test_flip_through_zero_splits_commission() -> None:
    engine, market, accounts = setup()
    trade(engine, market, 1, "BUY", 100, "10.00")  # avg 10.01
    flip = trade(engine, market, 2, "SELL", 300, "11.00")  # commission 1.50
    (fee,) = fees(flip)
    assert fee.commission == D("1.50")
    assert fee.realized_pnl == 100 * (D(11) - D("10.01")) - D("0.50")
    position = accounts.default.position(AAPL)
    assert position is not None
    assert position.quantity == D(-200)
    assert position.avg_cost == D(11) - D(1) / 200


def test_margin_figures_portfolio_and_marks() -> None:
    engine, market, accounts = setup()
    trade(engine, market, 1, "BUY", 1000, "100.00")
    market.set_price("AAPL", D(110), T0 + timedelta(seconds=5))
    engine.on_market(T0 + timedelta(seconds=5))
    account = accounts.default
    assert account.gross_position_value == D(110_000)
    assert account.unrealized_pnl == D(10_000) - D(5)
    assert account.init_margin_req == D(27_500)
    values = account.account_values()
    nlv = D(1_000_000) - D(100_005) + D(110_000)
    assert values["NetLiquidation"] == f"{nlv:.2f}"
    assert values["EquityWithLoanValue"] == values["NetLiquidation"]
    assert values["AvailableFunds"] == f"{nlv - D(27_500):.2f}"
    assert values["BuyingPower"] == f"{(nlv - D(27_500)) * 4:.2f}"
    assert values["MaintMarginReq"] == "27500.00"
    assert values["ExcessLiquidity"] == f"{nlv - D(27_500):.2f}"
    assert values["UnrealizedPnL"] == "9995.00"
    assert values["Currency"] == "USD"
    for tag in ("TotalCashValue", "CashBalance", "InitMarginReq", "AccountCode"):
        assert tag in values
    (item,) = account.portfolio()
    assert (item.con_id, item.position, item.market_price) == (AAPL, D(1000), D(110))
    assert item.market_value == D(110_000)
    assert item.average_cost == D("100.005")
    assert item.unrealized_pnl == D(9995)


def test_cash_account_buying_power_is_cash() -> None:
    engine, _, accounts = setup(Account("U100", starting_cash=D(50_000), account_type="cash"))
    assert accounts.default.buying_power == D(50_000)
    events = engine.place(
        1, 1, OrderRequest(symbol="AAPL", action="BUY", quantity=D(600)), T0
    )  # ~114k > 50k cash
    (rej,) = events
    assert isinstance(rej, OrderRejected)
    assert rej.code == 201
    assert "Equity with Loan Value of [50000.00 USD]" in rej.text


def test_accounts_registry_and_routing() -> None:
    engine, market, accounts = setup(Account("DU1"), Account("DU2", starting_cash=D(5000)))
    assert accounts.ids == ["DU1", "DU2"]
    assert accounts.get("") is accounts.default
    assert accounts.get("XX") is None
    with pytest.raises(ValueError, match="duplicate"):
        accounts.add(Account("DU1"))
    trade(engine, market, 1, "BUY", 10, "100", account="DU2")
    du2 = accounts.get("DU2")
    assert du2 is not None
    assert du2.cash == D(5000) - D(1000) - D(1)
    assert accounts.default.positions() == []
    assert [f.execution.account for f in engine.executions(account="DU2")] == ["DU2"]
