"""Market data over NATS: REAL gateway-sim over TCP, REAL nats-server, no mocks.

Subscribe/unsubscribe commands go through ``ibflow.bus.request``; ticks are read from a
core NATS subscription on ``subjects.market_data(symbol)``; the simulator's sessions
show which lines IB (the simulator) holds, and their request ids which requests it
received (a cancel removes an id, a new ``reqMktData`` adds one). Prices are moved with
``faults.set_price``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts.enums import ConnectionState
from ibflow.contracts.market_data import MarketDataTick, SubscribeMarketData, UnsubscribeMarketData
from ibflow.contracts.replies import INVALID_REQUEST, NOT_READY, CommandAccepted
from ibflow_gateway_bridge.domain.subscriptions import SubscriptionRegistry
from ibflow_gateway_bridge.market_data import MarketDataFeed, MarketDataRouter
from ibflow_gateway_bridge.pacing import Pacer, Priority
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Bridge, ConnectionEvents, RecordingPacer, portfolio_config, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def start_feed(nc: NatsClient) -> AsyncIterator[Callable[..., Any]]:
    """``await start_feed(bridge, **kw)`` → a started :class:`MarketDataFeed` (stopped after),
    its commands served by a :class:`MarketDataRouter` over every feed started so far."""
    started: list[MarketDataFeed] = []
    routers: list[MarketDataRouter] = []

    async def _start(bridge: Bridge, **kw: Any) -> MarketDataFeed:
        p = bridge.connection.portfolio_id
        feed = MarketDataFeed(p, nc, bridge.connection, Pacer(p), query_timeout=3.0, **kw)
        await feed.start()
        started.append(feed)
        for router in routers:
            await router.stop()
        routers[:] = [MarketDataRouter(nc, started)]
        await routers[0].start()
        return feed

    yield _start
    for router in routers:
        await router.stop()
    for feed in started:
        await feed.stop()


class Ticks:
    """Every ``MarketDataTick`` published on a symbol's subject."""

    def __init__(self) -> None:
        self.ticks: list[MarketDataTick] = []

    async def handle(self, msg: Msg) -> None:
        self.ticks.append(MarketDataTick.model_validate_json(msg.data))

    async def wait_last(self, price: str, within: float = 5.0) -> MarketDataTick:
        deadline = time.monotonic() + within
        while True:
            for tick in self.ticks:
                if tick.last == Decimal(price):
                    return tick
            if time.monotonic() > deadline:
                seen = [str(t.last) for t in self.ticks]
                raise AssertionError(f"no tick with last={price} within {within}s: {seen}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def ticks(nc: NatsClient) -> AsyncIterator[Ticks]:
    collector = Ticks()
    sub = await nc.subscribe(subjects.market_data("AAPL"), cb=collector.handle)
    yield collector
    await sub.unsubscribe()


def _subscribe(p: str | None, *symbols: str, by: str = "tester") -> SubscribeMarketData:
    return SubscribeMarketData(portfolio_id=p, symbols=symbols, requested_by=by)


def _unsubscribe(p: str, *symbols: str, by: str = "tester") -> UnsubscribeMarketData:
    return UnsubscribeMarketData(portfolio_id=p, symbols=symbols, requested_by=by)


async def _send(
    nc: NatsClient, cmd: SubscribeMarketData | UnsubscribeMarketData
) -> CommandAccepted:
    subject = (
        subjects.SUBSCRIBE_MARKET_DATA
        if isinstance(cmd, SubscribeMarketData)
        else subjects.UNSUBSCRIBE_MARKET_DATA
    )
    return await request(nc, subject, cmd, CommandAccepted, timeout=5.0)


def _sim_lines(sim: GatewaySimulator) -> list[str]:
    return sorted(
        sub.instrument.symbol for session in sim.sessions() for sub in session.market_data.values()
    )


def _sim_request_ids(sim: GatewaySimulator) -> set[int]:
    return {req_id for session in sim.sessions() for req_id in session.market_data}


async def test_subscribe_streams_ticks_on_core_nats(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    ticks: Ticks,
) -> None:
    p = "md1"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=41))
    await start_feed(bridge)
    await bridge.wait_ready()

    accepted = await _send(nc, _subscribe(p, "aapl"))

    assert accepted.detail is not None
    assert "subscribed AAPL" in accepted.detail
    assert _sim_lines(gateway_sim) == ["AAPL"]
    gateway_sim.faults.set_price("AAPL", "191.25")
    tick = await ticks.wait_last("191.25")
    assert tick.symbol == "AAPL"
    assert tick.con_id == 265598
    assert tick.bid is not None
    assert tick.ask is not None
    assert tick.bid < tick.ask
    assert tick.delayed is False
    # Subscribing again renews the lease: no second line at IB.
    again = await _send(nc, _subscribe(p, "AAPL"))
    assert again.detail is not None
    assert "renewed AAPL" in again.detail
    assert _sim_lines(gateway_sim) == ["AAPL"]


async def test_refresh_re_requests_a_streaming_line_and_ticks_keep_coming(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    ticks: Ticks,
) -> None:
    p = "md9"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=49))
    await start_feed(bridge)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))
    before = _sim_request_ids(gateway_sim)

    refreshed = await _send(
        nc,
        SubscribeMarketData(portfolio_id=p, symbols=("AAPL",), requested_by="tester", refresh=True),
    )

    assert refreshed.detail is not None
    assert "refreshed AAPL" in refreshed.detail
    await wait_until(lambda: _sim_lines(gateway_sim) == ["AAPL"])
    assert _sim_request_ids(gateway_sim).isdisjoint(before)
    ticks.ticks.clear()
    gateway_sim.faults.set_price("AAPL", "194.50")
    await ticks.wait_last("194.50")


async def test_market_data_resumes_after_1101_without_a_new_subscribe(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    connection_events: ConnectionEvents,
    ticks: Ticks,
) -> None:
    p = "md2"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=42))
    await start_feed(bridge)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))
    gateway_sim.faults.set_price("AAPL", "191.00")
    await ticks.wait_last("191.00")

    gateway_sim.faults.connectivity_lost()
    await wait_until(lambda: bridge.connection.state is ConnectionState.IB_CONNECTIVITY_LOST)
    refused = await _send_expecting_error(nc, _subscribe(p, "MSFT"))
    assert refused.code == NOT_READY
    assert "ib_connectivity_lost" in refused.message
    gateway_sim.faults.connectivity_restored(data_lost=True)
    await bridge.wait_ready()
    await wait_until(lambda: _sim_lines(gateway_sim) == ["AAPL"])
    ticks.ticks.clear()
    gateway_sim.faults.set_price("AAPL", "192.50")

    await ticks.wait_last("192.50")
    assert "ib_connectivity_lost" in connection_events.states()


async def test_market_data_resumes_after_reconnect(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    connection_events: ConnectionEvents,
    ticks: Ticks,
) -> None:
    p = "md3"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=43))
    await start_feed(bridge)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))
    gateway_sim.faults.set_price("AAPL", "190.50")
    await ticks.wait_last("190.50")

    assert gateway_sim.faults.drop_connections() == 1
    await connection_events.wait_for(
        lambda events: (
            [e.state.value for e in events if e.portfolio_id == p][-2:]
            == ["synchronising", "ready"]
            and "disconnected" in [e.state.value for e in events if e.portfolio_id == p][2:]
        )
    )
    await wait_until(lambda: _sim_lines(gateway_sim) == ["AAPL"])
    ticks.ticks.clear()
    gateway_sim.faults.set_price("AAPL", "193.75")

    await ticks.wait_last("193.75")


async def test_without_linger_unsubscribe_of_the_last_holder_cancels_at_once(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    ticks: Ticks,
) -> None:
    p = "md4"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=44))
    feed = await start_feed(bridge, linger_seconds=0)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL", by="alice"))
    await _send(nc, _subscribe(p, "AAPL", by="bob"))

    first = await _send(nc, _unsubscribe(p, "AAPL", by="alice"))
    assert first.detail is not None
    assert "cancelled" not in first.detail
    assert _sim_lines(gateway_sim) == ["AAPL"]
    last = await _send(nc, _unsubscribe(p, "AAPL", by="bob"))

    assert last.detail is not None
    assert "cancelled AAPL" in last.detail
    await wait_until(lambda: _sim_lines(gateway_sim) == [])
    assert feed.registry.active() == []
    ticks.ticks.clear()
    gateway_sim.faults.set_price("AAPL", "188.00")
    await asyncio.sleep(0.3)
    assert ticks.ticks == []


async def test_market_data_requests_are_paced_after_orders(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "md-prio"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=49))
    pacer = RecordingPacer(p)
    feed = MarketDataFeed(p, nc, bridge.connection, pacer, linger_seconds=0)
    router = MarketDataRouter(nc, [feed])
    await feed.start()
    await router.start()
    try:
        await bridge.wait_ready()
        await _send(nc, _subscribe(p, "AAPL", by="alice"))
        await _send(nc, _unsubscribe(p, "AAPL", by="alice"))
        await wait_until(lambda: _sim_lines(gateway_sim) == [])
    finally:
        await router.stop()
        await feed.stop()

    assert pacer.priorities == [Priority.DATA, Priority.DATA]


async def test_expired_lease_cancels_the_orphaned_line(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md5"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=45))
    feed = await start_feed(bridge, lease_seconds=0.3, linger_seconds=0, expire_interval=0.05)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL", by="crashed-client"))
    assert _sim_lines(gateway_sim) == ["AAPL"]

    await wait_until(lambda: _sim_lines(gateway_sim) == [], within=3.0)
    assert feed.registry.active() == []


async def test_position_closed_and_reopened_within_linger_keeps_the_line(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    ticks: Ticks,
) -> None:
    p = "md10"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=53))
    feed = await start_feed(bridge, linger_seconds=30.0)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL", by="position-monitor"))
    requested = _sim_request_ids(gateway_sim)
    assert len(requested) == 1

    released = await _send(nc, _unsubscribe(p, "AAPL", by="position-monitor"))

    assert released.detail is not None
    assert "line of AAPL kept for 30s" in released.detail
    assert "cancelled" not in released.detail
    assert feed.registry.active() == []
    assert feed.registry.lingering() == ["AAPL"]
    # The lingering line still streams, and its ticks are still published.
    gateway_sim.faults.set_price("AAPL", "187.25")
    await ticks.wait_last("187.25")

    reopened = await _send(nc, _subscribe(p, "AAPL", by="position-monitor"))

    assert reopened.detail is not None
    assert "resumed lingering AAPL" in reopened.detail
    assert feed.registry.active() == ["AAPL"]
    assert feed.registry.lingering() == []
    await asyncio.sleep(0.2)  # a cancel or a request would have reached the simulator
    # Same request id: IB got neither a cancelMktData nor a second reqMktData.
    assert _sim_request_ids(gateway_sim) == requested
    assert _sim_lines(gateway_sim) == ["AAPL"]
    gateway_sim.faults.set_price("AAPL", "187.50")
    await ticks.wait_last("187.50")


async def test_released_line_is_cancelled_at_ib_once_the_linger_is_over(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md11"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=54))
    feed = await start_feed(bridge, linger_seconds=30.0, expire_interval=3600.0)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL", "MSFT"))
    released_at = asyncio.get_running_loop().time()  # the feed's clock
    await _send(nc, _unsubscribe(p, "AAPL"))

    assert await feed.expire(released_at + 29.0) == []
    assert _sim_lines(gateway_sim) == ["AAPL", "MSFT"]
    assert await feed.expire(released_at + 31.0) == ["AAPL"]

    await wait_until(lambda: _sim_lines(gateway_sim) == ["MSFT"])
    assert feed.registry.lingering() == []
    assert feed.registry.active() == ["MSFT"]


async def test_lingering_line_is_cancelled_by_the_expiry_loop(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md12"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=55))
    feed = await start_feed(bridge, linger_seconds=0.3, expire_interval=0.05)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))

    released = await _send(nc, _unsubscribe(p, "AAPL"))

    assert released.detail is not None
    assert "line of AAPL kept for 0.3s" in released.detail
    assert _sim_lines(gateway_sim) == ["AAPL"]
    await wait_until(lambda: _sim_lines(gateway_sim) == [], within=3.0)
    assert len(feed.registry) == 0


async def test_new_symbol_at_the_line_limit_cancels_the_lingering_line_first(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md13"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=56))
    feed = await start_feed(bridge, registry=SubscriptionRegistry(max_lines=1, linger_seconds=30))
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))
    await _send(nc, _unsubscribe(p, "AAPL"))

    accepted = await _send(nc, _subscribe(p, "MSFT"))

    assert accepted.detail is not None
    assert "cancelled lingering AAPL" in accepted.detail
    assert "subscribed MSFT" in accepted.detail
    await wait_until(lambda: _sim_lines(gateway_sim) == ["MSFT"])
    assert feed.registry.active() == ["MSFT"]
    assert feed.registry.lingering() == []


@pytest.mark.parametrize(
    ("outage", "client_id"),
    [pytest.param("reconnect", 57, id="lost-in-a-reconnect"), pytest.param("1101", 58, id="1101")],
)
async def test_lingering_line_lost_in_an_outage_is_requested_again_by_the_next_subscribe(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
    ticks: Ticks,
    outage: str,
    client_id: int,
) -> None:
    p = f"md-outage-{client_id}"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=client_id))
    feed = await start_feed(bridge, linger_seconds=30.0)
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL", "MSFT"))
    await _send(nc, _unsubscribe(p, "AAPL"))
    assert feed.registry.lingering() == ["AAPL"]

    if outage == "reconnect":
        assert gateway_sim.faults.drop_connections() == 1
    else:
        gateway_sim.faults.connectivity_lost()
        await wait_until(lambda: bridge.connection.state is ConnectionState.IB_CONNECTIVITY_LOST)
        gateway_sim.faults.connectivity_restored(data_lost=True)
    # only the held symbol is replayed; the lingering line is forgotten (dead) or cancelled
    await bridge.wait_ready()
    await wait_until(lambda: _sim_lines(gateway_sim) == ["MSFT"])
    await wait_until(lambda: feed.registry.lingering() == [])
    assert feed.registry.active() == ["MSFT"]

    again = await _send(nc, _subscribe(p, "AAPL"))

    assert again.detail is not None
    assert "subscribed AAPL" in again.detail
    assert _sim_lines(gateway_sim) == ["AAPL", "MSFT"]
    ticks.ticks.clear()
    gateway_sim.faults.set_price("AAPL", "189.75")
    await ticks.wait_last("189.75")


async def test_unknown_symbol_is_refused_naming_it(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md6"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=46))
    feed = await start_feed(bridge)
    await bridge.wait_ready()

    error = await _send_expecting_error(nc, _subscribe(p, "AAPL", "NOSUCH"))

    assert error.code == INVALID_REQUEST
    assert "NOSUCH" in error.message
    # All or nothing: AAPL, requested first in the same command, is not left behind.
    assert feed.registry.active() == []
    await wait_until(lambda: _sim_lines(gateway_sim) == [])


async def test_line_limit_is_refused_with_the_reason(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    p = "md7"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=47))
    await start_feed(bridge, registry=SubscriptionRegistry(max_lines=1))
    await bridge.wait_ready()
    await _send(nc, _subscribe(p, "AAPL"))

    error = await _send_expecting_error(nc, _subscribe(p, "MSFT"))

    assert error.code == "refused"
    assert "line limit" in error.message
    assert "MSFT" in error.message
    assert _sim_lines(gateway_sim) == ["AAPL"]


async def _send_expecting_error(
    nc: NatsClient, cmd: SubscribeMarketData | UnsubscribeMarketData
) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        await _send(nc, cmd)
    return caught.value


async def test_commands_reach_the_feed_of_the_portfolio_they_name(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_feed: Callable[..., Any],
) -> None:
    alpha = start_portfolio(portfolio_config("mda", gateway_sim.port, client_id=51))
    beta = start_portfolio(portfolio_config("mdb", gateway_sim.port, client_id=52))
    feed_a = await start_feed(alpha)
    feed_b = await start_feed(beta)
    await alpha.wait_ready()
    await beta.wait_ready()

    for _ in range(4):  # whichever subscription NATS picks, B's command reaches B
        await _send(nc, _subscribe("mdb", "MSFT"))
    assert feed_b.registry.active() == ["MSFT"]
    assert feed_a.registry.active() == []

    await _send(nc, _subscribe(None, "AAPL"))
    assert "AAPL" in feed_a.registry.active() + feed_b.registry.active()

    error = await _send_expecting_error(nc, _subscribe("nosuch", "AAPL"))
    assert error.code == "not_found"
    assert "portfolio_id" in error.message
