"""Brackets end to end through the unmodified clients: transmit=False holding, children
waiting for the parent's fill, OCA cancellation and reduction, cancelling the parent.

The market is frozen and moved with the fault API (after ``set_price(P)`` the quote is
bid P / ask P + 0.01 / last P), so every fill price is exact.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.config import MatchingConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import SEED, Connect, Eventually


async def _qualified(ib: Any, ibmod: ModuleType, symbol: str) -> Any:
    contract = ibmod.Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return contract


def _position(ib: Any, symbol: str) -> float:
    return float(sum(p.position for p in ib.positions() if p.contract.symbol == symbol))


def _order_errors(ib: Any) -> list[tuple[int, int]]:
    """``(orderId, code)`` of every error IB sends from now on about a request/order."""
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, *_: seen.append((req_id, code))
    return seen


def _place_bracket(ib: Any, contract: Any, *orders: Any) -> list[Any]:
    return [ib.placeOrder(contract, order) for order in orders]


async def test_bracket_children_wait_for_parent_fill(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("AMD", Decimal("101.00"))
    ib = await connect()
    amd = await _qualified(ib, ibmod, "AMD")
    parent_order, tp_order, sl_order = ib.bracketOrder("BUY", 100, 100.0, 110.0, 95.0)
    assert (parent_order.transmit, tp_order.transmit, sl_order.transmit) == (False, False, True)

    # parent and take profit are held (transmit=False): IB says nothing about them
    parent, take_profit = _place_bracket(ib, amd, parent_order, tp_order)
    await asyncio.sleep(0.2)
    assert [t.orderStatus.status for t in (parent, take_profit)] == ["PendingSubmit"] * 2
    held = sim.engine.find_order(1, parent_order.orderId)
    assert held is not None
    assert held.transmitted is False

    # the stop loss (transmit=True) transmits the chain: parent works, children wait
    [stop_loss] = _place_bracket(ib, amd, sl_order)
    await eventually(lambda: parent.orderStatus.status == "Submitted", what="parent working")
    await eventually(
        lambda: [t.orderStatus.status for t in (take_profit, stop_loss)] == ["PreSubmitted"] * 2,
        what="children waiting for the parent",
    )
    assert take_profit.orderStatus.parentId == parent_order.orderId
    assert stop_loss.orderStatus.parentId == parent_order.orderId

    # a price at which the take profit would fill if it worked: nothing happens
    sim.faults.set_price("AMD", Decimal("110.50"))
    await asyncio.sleep(0.2)
    assert [t.orderStatus.status for t in (take_profit, stop_loss)] == ["PreSubmitted"] * 2
    assert take_profit.fills == []

    sim.faults.set_price("AMD", Decimal("99.99"))  # ask 100.00 reaches the parent's limit
    await eventually(lambda: parent.orderStatus.status == "Filled", what="parent filled")
    await eventually(
        lambda: [t.orderStatus.status for t in (take_profit, stop_loss)] == ["Submitted"] * 2,
        what="children working",
    )
    await eventually(lambda: parent.fills and parent.fills[0].commissionReport.commission > 0)
    assert parent.fills[0].execution.price == pytest.approx(100.0)
    assert parent.fills[0].commissionReport.commission == pytest.approx(1.0)
    assert _position(ib, "AMD") == 100


async def test_bracket_target_fill_cancels_stop(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("AMD", Decimal("101.00"))
    ib = await connect()
    amd = await _qualified(ib, ibmod, "AMD")
    errors = _order_errors(ib)
    parent_order, tp_order, sl_order = ib.bracketOrder("BUY", 100, 101.01, 105.0, 97.0)
    ib.oneCancelsAll([tp_order, sl_order], "bracket-tp-sl", 1)
    parent, take_profit, stop_loss = _place_bracket(ib, amd, parent_order, tp_order, sl_order)
    await eventually(lambda: parent.orderStatus.status == "Filled", what="marketable parent")
    await eventually(lambda: take_profit.orderStatus.status == "Submitted", what="TP working")
    assert stop_loss.order.ocaGroup == "bracket-tp-sl"

    sim.faults.set_price("AMD", Decimal("105.00"))  # bid 105 reaches the take profit
    await eventually(lambda: take_profit.orderStatus.status == "Filled", what="TP filled")
    await eventually(lambda: stop_loss.orderStatus.status == "Cancelled", what="SL cancelled")
    await eventually(lambda: take_profit.fills and take_profit.fills[0].commissionReport.execId)
    [fill] = take_profit.fills
    assert (fill.execution.side, fill.execution.shares) == ("SLD", 100)
    assert fill.execution.price == pytest.approx(105.0)
    assert fill.execution.orderId == tp_order.orderId
    assert fill.commissionReport.commission == pytest.approx(1.0)
    assert fill.commissionReport.realizedPNL == pytest.approx((105.0 - 101.01) * 100 - 2.0)
    assert stop_loss.fills == []
    await eventually(lambda: (sl_order.orderId, 202) in errors, what="202 for the stop")
    await eventually(lambda: _position(ib, "AMD") == 0, what="flat")

    # the group is spent: IB refuses a late member with 201
    late_order = ibmod.LimitOrder("SELL", 100, 120.0, ocaGroup="bracket-tp-sl", ocaType=1)
    late = ib.placeOrder(amd, late_order)
    await eventually(lambda: late.orderStatus.status == "Cancelled", what="late member refused")
    assert (late.order.orderId, 201) in errors


async def test_bracket_stop_fill_cancels_target(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("MSFT", Decimal("400.00"))
    ib = await connect()
    msft = await _qualified(ib, ibmod, "MSFT")
    bracket = ib.bracketOrder("SELL", 50, 399.0, 390.0, 405.0)  # a short entry
    parent, take_profit, stop_loss = _place_bracket(ib, msft, *bracket)
    await eventually(lambda: parent.orderStatus.status == "Filled", what="short entry")
    await eventually(lambda: stop_loss.orderStatus.status == "Submitted", what="SL working")
    await eventually(lambda: _position(ib, "MSFT") == -50, what="short position")

    sim.faults.set_price("MSFT", Decimal("405.50"))  # ask 405.51 crosses the buy stop
    await eventually(lambda: stop_loss.orderStatus.status == "Filled", what="stop filled")
    await eventually(lambda: take_profit.orderStatus.status == "Cancelled", what="TP cancelled")
    assert stop_loss.fills[0].execution.side == "BOT"
    assert stop_loss.fills[0].execution.price == pytest.approx(405.51)
    assert take_profit.fills == []
    await eventually(lambda: _position(ib, "MSFT") == 0, what="flat")


async def test_cancel_parent_cancels_children(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    sim.faults.set_price("AMD", Decimal("101.00"))
    ib = await connect()
    amd = await _qualified(ib, ibmod, "AMD")
    bracket = ib.bracketOrder("BUY", 100, 95.0, 110.0, 90.0)
    parent, take_profit, stop_loss = _place_bracket(ib, amd, *bracket)
    await eventually(lambda: stop_loss.orderStatus.status == "PreSubmitted", what="bracket up")

    ib.cancelOrder(parent.order)
    trades = (parent, take_profit, stop_loss)
    await eventually(
        lambda: [t.orderStatus.status for t in trades] == ["Cancelled"] * 3, what="all cancelled"
    )
    assert all(t.fills == [] for t in trades)
    engine_orders = [sim.engine.find_order(1, o.orderId) for o in bracket]
    assert [o.status for o in engine_orders if o is not None] == ["Cancelled"] * 3
    assert sim.faults.account_state("DU1234567")["open_orders"] == []

    # a cancelled parent takes no new children
    late = ib.placeOrder(amd, ibmod.StopOrder("SELL", 100, 90.0, parentId=parent.order.orderId))
    await eventually(lambda: late.orderStatus.status == "Cancelled", what="late child refused")


async def test_untransmitted_order_is_silent_and_cancelled_locally(
    ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    sim = frozen
    ib = await connect()
    aapl = await _qualified(ib, ibmod, "AAPL")
    errors = _order_errors(ib)
    held = ib.placeOrder(
        aapl, ibmod.LimitOrder("BUY", 10, 500.0, transmit=False, orderRef="held-1")
    )
    await asyncio.sleep(0.2)
    assert held.orderStatus.status == "PendingSubmit"  # marketable, but never sent
    assert [t for t in await ib.reqAllOpenOrdersAsync() if t.order.orderRef == "held-1"] == []

    ib.cancelOrder(held.order)
    assert held.orderStatus.status == "Cancelled"  # the clients resolve it locally
    await eventually(
        lambda: (
            (o := sim.engine.find_order(1, held.order.orderId)) is not None
            and o.status == "Cancelled"
        ),
        what="dropped by the simulator",
    )
    await asyncio.sleep(0.1)
    assert [e for e in errors if e[0] == held.order.orderId] == []
    completed = await ib.reqCompletedOrdersAsync(False)
    assert [t for t in completed if t.order.orderRef == "held-1"] == []
    assert held.fills == []


class TestReduceOnFill:
    """OCA type 2 (reduce with block) on a bracket, with 100-share lots: a partial fill of
    the take profit shrinks the stop loss to the shares still held."""

    @pytest.fixture
    def sim_config(self) -> SimConfig:
        return SimConfig(matching=MatchingConfig(fill_lot_size=100)).with_seed(SEED)

    async def test_partial_target_fill_reduces_stop_then_stop_cancels_rest(
        self, ibmod: ModuleType, frozen: GatewaySimulator, connect: Connect, eventually: Eventually
    ) -> None:
        sim = frozen
        sim.faults.set_price("AMD", Decimal("101.00"))
        ib = await connect()
        amd = await _qualified(ib, ibmod, "AMD")
        parent_order, tp_order, sl_order = ib.bracketOrder("BUY", 200, 102.0, 110.0, 95.0)
        ib.oneCancelsAll([tp_order, sl_order], "reduce-grp", 2)
        parent, take_profit, stop_loss = _place_bracket(ib, amd, parent_order, tp_order, sl_order)
        await eventually(lambda: parent.orderStatus.status == "Filled", what="parent, 2 lots")
        await eventually(lambda: stop_loss.orderStatus.status == "Submitted", what="SL working")

        sim.faults.set_price("AMD", Decimal("110.00"))  # one matching run: one lot of 100
        sim.faults.set_price("AMD", Decimal("105.00"))  # and away again
        await eventually(lambda: take_profit.orderStatus.filled == 100, what="partial TP")
        await eventually(lambda: stop_loss.order.totalQuantity == 100, what="SL reduced")
        assert stop_loss.orderStatus.status == "Submitted"

        sim.faults.set_price("AMD", Decimal("94.99"))  # the stop triggers for what is left
        await eventually(lambda: stop_loss.orderStatus.status == "Filled", what="SL filled")
        await eventually(lambda: take_profit.orderStatus.status == "Cancelled", what="TP rest")
        assert [f.execution.shares for f in stop_loss.fills] == [100]
        assert take_profit.orderStatus.filled == 100
        await eventually(lambda: _position(ib, "AMD") == 0, what="flat")
