"""Streaming ticks, snapshots, delayed data and farm/connectivity faults on market data."""

from __future__ import annotations

import math
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.config import MarketConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import SEED, Connect, Eventually


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(market=MarketConfig(seed=SEED, tick_interval=0.02, volatility=2.0))


async def test_streaming_ticks_arrive_and_update(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    updates: list[Any] = []
    ticker = ib.reqMktData(aapl)
    ticker.updateEvent += lambda t: updates.append((t.bid, t.ask, t.last, t.volume))

    await eventually(lambda: len(updates) >= 5, what="several tick updates")
    assert ticker.marketDataType == 1
    assert ticker.minTick == 0.01
    assert ticker.bid > 0
    assert ticker.ask > ticker.bid
    assert ticker.bidSize > 0
    assert ticker.askSize > 0
    assert ticker.last > 0
    assert ticker.volume > 0
    assert ticker.close > 0
    assert ticker.high >= ticker.low > 0
    if ibmod.__name__ == "ib_async":  # ib_insync ignores tick 45 (lastTimestamp)
        assert ticker.lastTimestamp is not None
    assert len({u[3] for u in updates}) > 1, "volume moves as trades print"

    ib.cancelMktData(aapl)
    await eventually(lambda: not sim.sessions()[0].market_data, what="subscription cancelled")


async def test_snapshot_with_req_tickers(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect
) -> None:
    ib = await connect()
    contracts = [ibmod.Stock(s, "SMART", "USD") for s in ("MSFT", "SPY")]
    await ib.qualifyContractsAsync(*contracts)
    tickers = await ib.reqTickersAsync(*contracts)
    assert [t.contract.symbol for t in tickers] == ["MSFT", "SPY"]
    for ticker in tickers:
        assert ticker.bid > 0
        assert ticker.ask > ticker.bid
        assert ticker.last > 0
        assert ticker.close > 0
    assert not sim.sessions()[0].market_data, "a snapshot leaves no subscription"


async def test_delayed_market_data_uses_delayed_ticks(
    ibmod: ModuleType, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    ib.reqMarketDataType(3)
    spy = ibmod.Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    ticker = ib.reqMktData(spy)
    await eventually(lambda: ticker.last > 0 and ticker.bid > 0, what="delayed ticks")
    assert ticker.marketDataType == 3
    assert {t.tickType for t in ticker.ticks} <= {66, 67, 68, 74, 72, 73, 75, 76}
    assert any(t.tickType == 66 for t in ticker.ticks)


async def test_market_farm_down_stops_ticks_and_up_resumes(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    codes: list[int] = []
    ib.errorEvent += lambda *args: codes.append(args[1])
    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    ticker = ib.reqMktData(aapl)
    await eventually(lambda: ticker.last > 0)

    sim.faults.set_farm("market", up=False)
    await eventually(lambda: 2103 in codes, what="2103 farm broken")
    sim.faults.set_price("AAPL", Decimal("150.00"))
    sim.faults.freeze(True)
    sim.faults.set_farm("market", up=True)
    await eventually(lambda: 2104 in codes, what="2104 farm OK")
    await eventually(lambda: ticker.last == 150.0, what="quote refreshed after the farm is back")


async def test_connectivity_lost_then_restored_data_lost(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    codes: list[int] = []
    ib.errorEvent += lambda *args: codes.append(args[1])
    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    ticker = ib.reqMktData(aapl)
    await eventually(lambda: ticker.last > 0)

    sim.faults.connectivity_lost()
    await eventually(lambda: 1100 in codes, what="1100")
    trade = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 10))
    await eventually(lambda: trade.orderStatus.status == "Cancelled", what="order refused")
    assert 201 in codes

    sim.faults.connectivity_restored(data_lost=True)
    await eventually(lambda: 1101 in codes, what="1101")
    assert not sim.sessions()[0].market_data, "1101 drops market-data subscriptions"
    again = ib.placeOrder(aapl, ibmod.MarketOrder("BUY", 10))
    await eventually(lambda: again.orderStatus.status == "Filled", what="orders accepted again")


async def test_connectivity_restored_data_maintained(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect, eventually: Eventually
) -> None:
    ib = await connect()
    codes: list[int] = []
    ib.errorEvent += lambda *args: codes.append(args[1])
    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    ticker = ib.reqMktData(aapl)
    await eventually(lambda: ticker.last > 0)

    sim.faults.connectivity_lost()
    sim.faults.connectivity_restored(data_lost=False)
    await eventually(lambda: 1102 in codes, what="1102")
    # both libraries answer 1102 with reqAccountSummary (msg 62)
    await eventually(lambda: sim.sessions()[0].account_summary, what="account summary request")
    assert sim.sessions()[0].market_data, "1102 keeps subscriptions"
    seen = len(ticker.ticks), ticker.time
    await eventually(lambda: (len(ticker.ticks), ticker.time) != seen, what="ticks keep coming")
    assert not math.isnan(ticker.last)
