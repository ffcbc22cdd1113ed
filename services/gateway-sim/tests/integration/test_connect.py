"""Connect, startup sync, contracts, duplicate client ids: both IB libraries over TCP."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Connect


async def test_connect_and_startup_sync_under_one_second(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect
) -> None:
    started = time.perf_counter()
    ib = await connect(client_id=1)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0, f"connect took {elapsed:.3f}s"
    assert ib.isConnected()
    assert ib.client.serverVersion() == 176
    assert ib.managedAccounts() == ["DU1234567"]
    values = {v.tag: v.value for v in ib.accountValues() if v.currency in ("USD", "")}
    assert values["NetLiquidation"] == "1000000.00"
    assert values["AccountCode"] == "DU1234567"
    assert ib.positions() == []
    assert ib.openTrades() == []
    assert ib.fills() == []
    assert sim.sessions()[0].client_id == 1


async def test_current_time_and_req_ids(connect: Connect) -> None:
    ib = await connect(client_id=3)
    server_time = await ib.reqCurrentTimeAsync()
    assert abs(server_time.timestamp() - time.time()) < 5
    first = ib.client.getReqId()
    assert first >= 1


async def test_qualify_contracts_and_unknown_symbol_error_200(
    ibmod: ModuleType, connect: Connect
) -> None:
    ib = await connect()
    errors: list[tuple[Any, ...]] = []
    ib.errorEvent += lambda *args: errors.append(args)

    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    spy = ibmod.Stock("SPY", "SMART", "USD")
    unknown = ibmod.Stock("NOPE", "SMART", "USD")
    result = await ib.qualifyContractsAsync(aapl, spy, unknown)

    assert aapl.conId == 265598
    assert aapl.primaryExchange == "NASDAQ"
    assert spy.conId == 756733
    assert spy.primaryExchange == "ARCA"
    qualified = [c for c in result if c is not None]
    assert [c.symbol for c in qualified] == ["AAPL", "SPY"]
    assert any(args[1] == 200 for args in errors), errors

    details = await ib.reqContractDetailsAsync(ibmod.Stock(conId=4815747))
    assert len(details) == 1
    assert details[0].contract.symbol == "NVDA"
    assert details[0].longName == "NVIDIA CORP"
    assert details[0].minTick == 0.01


async def test_second_connection_with_client_id_in_use_gets_326(
    ibmod: ModuleType, sim: GatewaySimulator, connect: Connect
) -> None:
    first = await connect(client_id=5)
    second = ibmod.IB()
    codes: list[int] = []
    second.errorEvent += lambda *args: codes.append(args[1])

    with pytest.raises((TimeoutError, ConnectionError)):
        await second.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=1)
    second.disconnect()

    assert 326 in codes
    assert first.isConnected()
    assert await first.reqCurrentTimeAsync()


async def test_historical_bars(ibmod: ModuleType, connect: Connect) -> None:
    ib = await connect()
    contract = ibmod.Stock("MSFT", "SMART", "USD")
    bars = await ib.reqHistoricalDataAsync(
        contract,
        endDateTime="",
        durationStr="1 D",
        barSizeSetting="1 hour",
        whatToShow="TRADES",
        useRTH=False,
    )
    assert 20 <= len(bars) <= 25
    assert all(b.low <= b.open <= b.high and b.low <= b.close <= b.high for b in bars)
    daily = await ib.reqHistoricalDataAsync(
        contract,
        endDateTime="",
        durationStr="5 D",
        barSizeSetting="1 day",
        whatToShow="TRADES",
        useRTH=True,
    )
    assert 1 <= len(daily) <= 5


async def test_account_summary(connect: Connect) -> None:
    ib = await connect()
    summary = await ib.accountSummaryAsync()
    tags = {v.tag: v.value for v in summary}
    assert tags["NetLiquidation"] == "1000000.00"
    assert tags["BuyingPower"] == "4000000.00"
