"""Same seed + same orders → same fills (virtual time: ``market.auto_advance: false``)."""

from __future__ import annotations

from decimal import Decimal
from types import ModuleType

from ibflow_gateway_sim.config import MarketConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Eventually

Fills = list[tuple[str, int, str, float, float]]


async def _run(ibmod: ModuleType, seed: int, eventually: Eventually) -> Fills:
    config = SimConfig(market=MarketConfig(seed=seed, auto_advance=False, volatility=1.0))
    sim = GatewaySimulator(config)
    await sim.start("127.0.0.1", 0)
    ib = ibmod.IB()
    try:
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=5)
        aapl, tsla = ibmod.Stock("AAPL", "SMART", "USD"), ibmod.Stock("TSLA", "SMART", "USD")
        await ib.qualifyContractsAsync(aapl, tsla)
        script = [
            (10, aapl, ibmod.MarketOrder("BUY", 100)),
            (25, tsla, ibmod.MarketOrder("SELL", 40)),
            (7, aapl, ibmod.MarketOrder("SELL", 60)),
        ]
        for ticks, contract, order in script:
            sim.advance_market(ticks)
            trade = ib.placeOrder(contract, order)
            await eventually(lambda t=trade: t.orderStatus.status == "Filled")
        quote = sim.market.quote("AAPL")
        assert quote is not None
        resting = ib.placeOrder(
            aapl, ibmod.LimitOrder("BUY", 30, float(quote.bid - Decimal("0.05")))
        )
        await eventually(lambda: resting.orderStatus.status == "Submitted")
        for _ in range(20):
            sim.advance_market(20)
        await eventually(lambda: len(ib.fills()) >= 3)
        return sorted(
            (
                f.execution.execId,
                f.execution.permId,
                f.contract.symbol,
                f.execution.price,
                f.execution.shares,
            )
            for f in ib.fills()
        )
    finally:
        ib.disconnect()
        await sim.stop()


async def test_same_seed_same_fills(ibmod: ModuleType, eventually: Eventually) -> None:
    first = await _run(ibmod, 42, eventually)
    second = await _run(ibmod, 42, eventually)
    other = await _run(ibmod, 43, eventually)

    assert len(first) >= 3
    assert first == second
    assert [f[3] for f in first] != [f[3] for f in other], "another seed moves prices differently"
