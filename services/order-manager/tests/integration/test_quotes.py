"""Reference prices from live market data: REAL nats-server and PostgreSQL, the REAL
gateway-bridge service (its ``MarketDataFeed``) in-process, gateway-sim over TCP.

The simulator's market is frozen; prices move only when a test says so
(``faults.set_price``). A crossed book is set on the simulator's market before the
symbol is subscribed, so the bridge's first tick carries it; delayed data is the
simulator session answering with the delayed market data type (what IB does for an
account without a live data subscription).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from ibflow.bus import subjects
from ibflow.contracts.market_data import MarketDataTick
from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow_gateway_bridge.app import SERVICE as BRIDGE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, state_key
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.protocol import ids
from ibflow_gateway_sim.server import GatewaySimulator
from ibflow_order_manager.quotes import Quotes, tick_price

pytestmark = pytest.mark.integration

PORTFOLIO = "quotes"
D = Decimal


async def wait_for(condition: Callable[[], Any], within: float = 10.0) -> None:
    """Await ``condition()`` (sync or async) until truthy; AssertionError after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


@dataclass
class Market:
    """The simulator behind a running bridge, and a NATS client."""

    sim: GatewaySimulator
    nc: NatsClient

    def lines(self) -> list[str]:
        """Symbols the simulator (IB) streams to the bridge."""
        return sorted(
            sub.instrument.symbol
            for session in self.sim.sessions()
            for sub in session.market_data.values()
        )

    def deliver_delayed_data(self) -> None:
        """Answer market data requests with delayed data from now on."""
        for session in self.sim.sessions():
            session.market_data_type = ids.MARKET_DATA_DELAYED


@pytest.fixture
async def market(database_url: str, nats_url: str, nc: NatsClient) -> AsyncIterator[Market]:
    """gateway-sim (frozen market) and the gateway-bridge service connected to it."""
    sim = GatewaySimulator(SimConfig().with_seed(5))
    await sim.start("127.0.0.1", 0)
    sim.faults.freeze(True)
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    db = await asyncpg.connect(database_url)
    try:
        await db.execute(
            "INSERT INTO portfolios (id, name, broker_port, client_id, account)"
            " VALUES ($1, $1, $2, 51, 'DU1234567')",
            PORTFOLIO,
            sim.port,
        )
    finally:
        await db.close()
    # no linger: a line released by the order-manager is cancelled at IB at once, so the
    # simulator's lines show what the order-manager holds
    settings = GatewayBridgeSettings.load(
        gateway_type="simulator",
        nats_url=nats_url,
        database_url=database_url,
        http_port=0,
        market_data_linger_seconds=0,
    )
    bridge = Runtime(BRIDGE, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.serve(stop))
    try:
        await wait_for(lambda: bridge.ready, within=15)
        await wait_for(lambda: _bridge_ready(nc), within=15)
        yield Market(sim, nc)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == EXIT_OK
        await sim.stop()


async def _bridge_ready(nc: NatsClient) -> bool:
    try:
        kv = await nc.jetstream().key_value(STATE_BUCKET)
        entry = await kv.get(state_key(PORTFOLIO))
    except (BucketNotFoundError, KeyNotFoundError):
        return False
    return entry.value is not None and b'"state":"ready"' in entry.value


@pytest.fixture
async def quotes(nc: NatsClient) -> AsyncIterator[Quotes]:
    prices = Quotes(nc, wait=1.0)
    try:
        yield prices
    finally:
        await prices.close()


class Ticks:
    """Every tick the bridge publishes for one symbol (what Quotes is shown)."""

    def __init__(self) -> None:
        self.ticks: list[MarketDataTick] = []

    async def handle(self, msg: Msg) -> None:
        self.ticks.append(MarketDataTick.from_json(msg.data))


async def watch(nc: NatsClient, symbol: str) -> Ticks:
    ticks = Ticks()
    await nc.subscribe(subjects.market_data(symbol), cb=ticks.handle)
    return ticks


# ---------------------------------------------------------------------- scenarios


async def test_reference_price_subscribes_and_returns_first_trade(
    market: Market, quotes: Quotes
) -> None:
    market.sim.faults.set_price("AAPL", "191.25")
    assert market.lines() == []

    price = await quotes.reference_price("AAPL", portfolio_id=PORTFOLIO)

    assert price == D("191.25")
    assert market.lines() == ["AAPL"]  # subscribed at IB through the bridge
    started = time.monotonic()
    assert await quotes.reference_price("aapl") == D("191.25")  # cached: no round trip
    assert time.monotonic() - started < 0.1
    market.sim.faults.set_price("AAPL", "192.10")
    await wait_for(lambda: quotes.cached("AAPL") == D("192.10"), within=5)
    assert market.lines() == ["AAPL"]


async def test_prices_of_several_symbols_survive_an_unknown_one(
    market: Market, quotes: Quotes
) -> None:
    market.sim.faults.set_price("MSFT", "410.00")
    market.sim.faults.set_price("SPY", "512.34")

    found = await quotes.prices(["MSFT", "NOSUCH", "spy"], portfolio_id=PORTFOLIO)

    # The bridge refuses the whole batch for the unknown symbol; asked one by one,
    # the known ones still get their prices.
    assert found == {"MSFT": D("410.00"), "NOSUCH": None, "spy": D("512.34")}
    assert market.lines() == ["MSFT", "SPY"]


async def test_concurrent_requests_for_one_symbol_share_its_first_tick(
    market: Market, quotes: Quotes
) -> None:
    market.sim.faults.set_price("GOOGL", "150.25")

    found = await asyncio.gather(
        *(quotes.reference_price("GOOGL", portfolio_id=PORTFOLIO) for _ in range(5))
    )

    assert found == [D("150.25")] * 5
    assert quotes.symbols == ("GOOGL",)
    assert market.lines() == ["GOOGL"]


async def test_crossed_or_delayed_quote_is_not_a_price(market: Market, quotes: Quotes) -> None:
    sim = market.sim
    sim.market.set_price("MSFT", D("410.00"), sim.now(), bid=D("410.50"), ask=D("409.50"))
    msft = await watch(market.nc, "MSFT")

    assert await quotes.reference_price("MSFT", portfolio_id=PORTFOLIO) is None

    crossed = msft.ticks[-1]
    assert (crossed.bid, crossed.ask, crossed.last) == (D("410.50"), D("409.50"), D("410.00"))
    sim.faults.set_price("MSFT", "411.00")  # the book uncrosses
    await wait_for(lambda: quotes.cached("MSFT") == D("411.00"), within=5)

    market.deliver_delayed_data()
    nvda = await watch(market.nc, "NVDA")

    assert await quotes.reference_price("NVDA", portfolio_id=PORTFOLIO) is None

    assert nvda.ticks
    assert all(tick.delayed for tick in nvda.ticks)
    assert nvda.ticks[-1].last == D("880.00")
    sim.faults.set_price("NVDA", "881.00")
    await wait_for(lambda: any(t.last == D("881.00") for t in nvda.ticks), within=5)
    assert quotes.cached("NVDA") is None


async def test_no_market_data_gives_none_after_wait(market: Market, quotes: Quotes) -> None:
    market.sim.faults.set_farm("market", False)

    started = time.monotonic()
    price = await quotes.reference_price("AMZN", portfolio_id=PORTFOLIO)

    assert price is None
    assert time.monotonic() - started >= 1.0  # waited for a tick that never came
    assert market.lines() == ["AMZN"]  # subscribed all the same
    market.sim.faults.set_farm("market", True)  # the farm's back: IB sends the quote
    await wait_for(lambda: quotes.cached("AMZN") == D("180.00"), within=5)

    started = time.monotonic()
    assert await quotes.reference_price("AAPL", portfolio_id="not-served") is None
    assert time.monotonic() - started < 1.0  # refused (not_found): no wait


async def test_no_bridge_gives_none_at_once(nc: NatsClient) -> None:
    prices = Quotes(nc, wait=1.0)
    try:
        started = time.monotonic()
        assert await prices.reference_price("AAPL") is None  # no_responders
        assert time.monotonic() - started < 1.0
    finally:
        await prices.close()


async def test_close_releases_the_subscriptions_at_the_bridge(
    market: Market, nc: NatsClient
) -> None:
    prices = Quotes(nc, wait=1.0)
    assert await prices.reference_price("QQQ", portfolio_id=PORTFOLIO) is not None
    assert market.lines() == ["QQQ"]

    await prices.close()

    await wait_for(lambda: market.lines() == [], within=5)
    assert prices.symbols == ()
    assert await prices.reference_price("QQQ") is None


async def test_symbols_not_asked_for_are_dropped_and_the_others_renewed(
    market: Market, nc: NatsClient
) -> None:
    now = [0.0]
    prices = Quotes(nc, wait=1.0, keep_for=60.0, renew_interval=0.2, clock=lambda: now[0])
    try:
        await prices.prices(["IWM", "JPM"], portfolio_id=PORTFOLIO)
        assert market.lines() == ["IWM", "JPM"]
        now[0] = 30.0
        await prices.reference_price("JPM", portfolio_id=PORTFOLIO)  # asked again
        now[0] = 61.0

        await wait_for(lambda: market.lines() == ["JPM"], within=5)

        assert prices.symbols == ("JPM",)
    finally:
        await prices.close()


# ---------------------------------------------------------------------- the price rule


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"bid": "99.98", "ask": "100.02", "last": "100.01"}, "100.01"),
        ({"bid": "99.98", "ask": "100.02"}, "100.00"),
        ({"bid": "100.00", "ask": "100.00"}, "100.00"),
        ({"bid": "100.02", "ask": "99.98", "last": "100.01"}, None),
        ({"bid": "99.98", "ask": "100.02", "last": "100.01", "delayed": True}, None),
        ({"bid": "99.98"}, None),
        ({"bid": "0", "ask": "100.02", "last": "0"}, None),
        ({}, None),
    ],
)
def test_tick_price_is_last_trade_else_midpoint_never_crossed_or_delayed(
    fields: dict[str, Any], expected: str | None
) -> None:
    tick = MarketDataTick.model_validate({"symbol": "AAPL", **fields})

    assert tick_price(tick) == (None if expected is None else D(expected))
