"""Orders end to end: MKT, LMT modify/cancel, STP, STP LMT, bracket, partial fills.

The market is frozen (``frozen`` fixture) and moved with the fault API, so fill prices
are exact: after ``set_price(P)`` the quote is bid P / ask P + 0.01 / last P.
"""

from __future__ import annotations

from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.config import MatchingConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import SEED, Connect, Eventually


def _account(ib: Any) -> dict[str, str]:
    return {v.tag: v.value for v in ib.accountValues() if v.currency in ("USD", "")}


def _position(ib: Any, symbol: str) -> float:
    return sum(p.position for p in ib.positions() if p.contract.symbol == symbol)


async def _qualified(ib: Any, ibmod: ModuleType, symbol: str) -> Any:
    contract = ibmod.Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return contract


async def test_market_order_fill_commission_position_account(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("AAPL", Decimal("190.00"))
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")
    statuses: list[str] = []

    trade = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 300))
    trade.statusEvent += lambda t: statuses.append(t.orderStatus.status)
    await eventually(lambda: trade.orderStatus.status == "Filled", what="MKT filled")
    await eventually(lambda: trade.fills and trade.fills[0].commissionReport.commission > 0)
    await eventually(lambda: _position(ib, "AAPL") == 300, what="position pushed")
    await eventually(lambda: _account(ib)["TotalCashValue"] == "942995.50", what="cash pushed")

    assert trade.orderStatus.filled == 300
    assert trade.orderStatus.remaining == 0
    assert trade.orderStatus.avgFillPrice == pytest.approx(190.01)
    assert trade.order.permId > 0
    assert statuses[-1] == "Filled"
    [fill] = trade.fills
    assert fill.execution.side == "BOT"
    assert fill.execution.shares == 300
    assert fill.execution.price == pytest.approx(190.01)
    assert fill.commissionReport.commission == pytest.approx(1.50)  # 300 * 0.005
    assert fill.commissionReport.currency == "USD"
    [pos] = [p for p in ib.positions() if p.contract.symbol == "AAPL"]
    assert pos.avgCost == pytest.approx(190.015)  # price + commission per share
    [item] = ib.portfolio()
    assert item.position == 300
    # 1,000,000 - 300 * 190.01 - 1.50
    assert _account(ib)["TotalCashValue"] == "942995.50"

    small = ib.placeOrder(aapl, ibmod.MarketOrder("SELL", 100))
    await eventually(lambda: small.orderStatus.status == "Filled")
    await eventually(lambda: small.fills and small.fills[0].commissionReport.commission > 0)
    assert small.fills[0].execution.price == pytest.approx(190.00)  # the bid
    assert small.fills[0].commissionReport.commission == pytest.approx(1.00)  # the minimum
    assert small.fills[0].commissionReport.realizedPNL == pytest.approx(100 * (190.0 - 190.015) - 1)
    await eventually(lambda: _position(ib, "AAPL") == 200)


async def test_limit_order_modify_then_cancel(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")

    order = ibmod.LimitOrder("BUY", 100, 150.0, tif="GTC", orderRef="lmt-1")
    trade = ib.placeOrder(aapl, order)
    await eventually(lambda: trade.orderStatus.status == "Submitted", what="LMT working")
    assert trade.order.lmtPrice == 150.0
    assert trade.order.orderRef == "lmt-1"
    [working] = sim.faults.account_state("DU1234567")["open_orders"]
    assert working["lmt_price"] == "150.0"

    order.lmtPrice = 151.5
    modified = ib.placeOrder(aapl, order)
    assert modified is trade
    await eventually(
        lambda: sim.faults.account_state("DU1234567")["open_orders"][0]["lmt_price"] == "151.5",
        what="modification reaches the engine",
    )
    assert trade.order.lmtPrice == 151.5
    assert trade.orderStatus.status == "Submitted"

    ib.cancelOrder(order)
    await eventually(lambda: trade.orderStatus.status == "Cancelled", what="cancelled")
    assert trade.isDone()
    assert trade.fills == []
    assert sim.faults.account_state("DU1234567")["open_orders"] == []
    assert not ib.openTrades()


async def test_stop_order_triggered_by_price_move(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("MSFT", Decimal("410.00"))
    ib = await connect()
    msft = await _qualified(ib, ibmod, "MSFT")

    trade = ib.placeOrder(msft, ibmod.StopOrder("SELL", 50, 405.0))
    await eventually(lambda: trade.orderStatus.status == "Submitted")
    sim.faults.set_price("MSFT", Decimal("406.00"))  # above the stop: nothing happens
    [working] = sim.engine.open_orders()
    assert working.status == "Submitted"
    assert not working.triggered

    sim.faults.set_price("MSFT", Decimal("404.50"))
    await eventually(lambda: trade.orderStatus.status == "Filled", what="stop triggered")
    assert trade.fills[0].execution.price == pytest.approx(404.50)  # MKT at the bid
    assert trade.fills[0].execution.side == "SLD"
    await eventually(lambda: _position(ib, "MSFT") == -50, what="short position")


async def test_stop_limit_order(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("NVDA", Decimal("880.00"))
    ib = await connect()
    nvda = await _qualified(ib, ibmod, "NVDA")

    order = ibmod.StopLimitOrder("BUY", 10, 886.0, 885.0)  # limit 886, stop 885
    trade = ib.placeOrder(nvda, order)
    await eventually(lambda: trade.orderStatus.status == "Submitted")
    assert trade.order.auxPrice == 885.0
    assert trade.order.lmtPrice == 886.0

    sim.faults.set_price("NVDA", Decimal("885.50"))
    await eventually(lambda: trade.orderStatus.status == "Filled", what="STP LMT filled")
    assert trade.fills[0].execution.price == pytest.approx(885.51)  # the ask, under the limit
    await eventually(lambda: trade.fills[0].commissionReport.commission == pytest.approx(1.0))


async def test_bracket_parent_fills_then_take_profit_cancels_stop_loss(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("AMD", Decimal("101.00"))
    ib = await connect()
    amd = await _qualified(ib, ibmod, "AMD")

    bracket = ib.bracketOrder("BUY", 100, 100.0, 110.0, 95.0)
    parent, take_profit, stop_loss = (ib.placeOrder(amd, o) for o in bracket)
    await eventually(lambda: parent.orderStatus.status == "Submitted", what="parent working")
    await eventually(lambda: stop_loss.orderStatus.status == "PreSubmitted", what="children held")
    assert take_profit.orderStatus.status == "PreSubmitted"
    assert stop_loss.orderStatus.parentId == parent.order.orderId

    sim.faults.set_price("AMD", Decimal("99.99"))  # ask 100.00 reaches the parent's limit
    await eventually(lambda: parent.orderStatus.status == "Filled", what="parent filled")
    await eventually(lambda: take_profit.orderStatus.status == "Submitted", what="TP working")
    await eventually(lambda: stop_loss.orderStatus.status == "Submitted", what="SL working")
    assert parent.fills[0].execution.price == pytest.approx(100.0)

    sim.faults.set_price("AMD", Decimal("110.00"))  # bid 110 reaches the take-profit
    await eventually(lambda: take_profit.orderStatus.status == "Filled", what="TP filled")
    await eventually(lambda: stop_loss.orderStatus.status == "Cancelled", what="SL cancelled")
    assert take_profit.fills[0].execution.price == pytest.approx(110.0)
    assert stop_loss.fills == []
    await eventually(lambda: _position(ib, "AMD") == 0, what="flat")
    state = sim.faults.account_state("DU1234567")
    assert state["open_orders"] == []
    assert len(state["executions"]) == 2
    # (110 - 100) * 100 - 2 * 1.00 commission
    await eventually(lambda: _account(ib)["RealizedPnL"] == "998.00", what="realized P&L")


class TestPartialFills:
    """Lot splitting: 100 shares per execution, one execution per matching run."""

    @pytest.fixture
    def sim_config(self) -> SimConfig:
        return SimConfig(matching=MatchingConfig(fill_lot_size=100)).with_seed(SEED)

    async def test_partial_fill_then_cancel_keeps_fills(
        self, ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
    ) -> None:
        sim = frozen
        ib = await connect()
        aapl = await _qualified(ib, ibmod, "AAPL")
        trade = ib.placeOrder(aapl, ibmod.LimitOrder("BUY", 500, 100.0))
        await eventually(lambda: trade.orderStatus.status == "Submitted")

        sim.faults.set_price("AAPL", Decimal("99.99"))  # one matching run: one lot of 100
        sim.faults.set_price("AAPL", Decimal("105.00"))  # and away again
        await eventually(lambda: trade.orderStatus.filled == 100, what="partial fill")
        assert trade.orderStatus.status == "Submitted"
        assert trade.orderStatus.remaining == 400

        ib.cancelOrder(trade.order)
        await eventually(lambda: trade.orderStatus.status == "Cancelled", what="cancelled")
        assert trade.orderStatus.filled == 100
        assert len(trade.fills) == 1
        assert trade.fills[0].execution.shares == 100
        await eventually(lambda: _position(ib, "AAPL") == 100)

    async def test_market_order_fills_lot_by_lot(
        self, ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
    ) -> None:
        ib = await connect()
        aapl = await _qualified(ib, ibmod, "AAPL")
        trade = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 300))
        await eventually(lambda: trade.orderStatus.status == "Filled", what="all lots")
        assert [f.execution.shares for f in trade.fills] == [100, 100, 100]
        assert [f.execution.cumQty for f in trade.fills] == [100, 200, 300]
        await eventually(lambda: all(f.commissionReport.execId for f in trade.fills))
        # the order's commission is max(1.00, 300 * 0.005) = 1.50, charged as it accrues
        commissions = [f.commissionReport.commission for f in trade.fills]
        assert commissions == pytest.approx([1.0, 0.0, 0.5])


async def test_client_zero_sees_other_clients_orders(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    master = await connect(client_id=0)
    trader = await connect(client_id=9)
    aapl = await _qualified(trader, ibmod, "AAPL")
    trade = trader.placeOrder(aapl, ibmod.MarketOrder("BUY", 10))
    await eventually(lambda: trade.orderStatus.status == "Filled")
    await eventually(
        lambda: any(t.order.permId == trade.order.permId for t in master.trades()),
        what="client 0 sees the order",
    )
    await eventually(lambda: any(f.execution.permId == trade.order.permId for f in master.fills()))


async def test_reject_next_order(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")
    codes: list[int] = []
    ib.errorEvent += lambda *args: codes.append(args[1])

    sim.faults.reject_next(201, "Simulated margin problem")
    rejected = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 10))
    await eventually(lambda: rejected.orderStatus.status == "Cancelled", what="rejected")
    assert 201 in codes
    accepted = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 10))
    await eventually(lambda: accepted.orderStatus.status == "Filled", what="next order fills")
    assert accepted.order.orderId > rejected.order.orderId


async def test_global_cancel(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")
    trades = [ib.placeOrder(aapl, ibmod.LimitOrder("BUY", 10, 100.0 + n)) for n in range(3)]
    await eventually(lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    ib.reqGlobalCancel()
    await eventually(lambda: all(t.orderStatus.status == "Cancelled" for t in trades))


async def test_what_if_order_creates_nothing(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect
) -> None:
    sim = frozen
    sim.faults.set_price("AAPL", Decimal("190.00"))
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")
    state = await ib.whatIfOrderAsync(aapl, ibmod.MarketOrder("BUY", 100))
    assert float(state.initMarginChange) == pytest.approx(100 * 190.01 * 0.25)
    assert state.commission == pytest.approx(1.0)
    assert sim.engine.open_orders() == []
    assert sim.engine.completed_orders() == []


async def test_positions_are_pushed_to_every_subscribed_client(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    watcher = await connect(client_id=21)
    trader = await connect(client_id=22)
    qqq = await _qualified(trader, ibmod, "QQQ")
    trade = trader.placeOrder(qqq, ibmod.MarketOrder("BUY", 7))
    await eventually(lambda: trade.orderStatus.status == "Filled")
    await eventually(lambda: _position(watcher, "QQQ") == 7, what="position pushed to client 21")
    assert not [t for t in watcher.trades() if t.contract.symbol == "QQQ"], "orders stay private"
