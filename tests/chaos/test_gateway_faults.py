"""The gateway misbehaves mid-burst: connections dropped, a zombie gateway, IB
connectivity lost and restored (1101: data lost, 1102: data kept), client id in use
(326) when the crashed bridge comes back, the market data farm down.

Before each fault, resting limit buys wait at the broker; during the outage the price
falls through them, so they fill while the bridge cannot see it (or, for 1100, the
moment IB is back). Afterwards, with no operator action: those fills are booked,
market data flows again, and the books are the broker's exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from ibflow.bus import request, subjects
from ibflow.contracts import (
    CommandAccepted,
    MarketDataTick,
    OrderPurpose,
    OrderSide,
    OrderType,
    SubmitOrder,
    SubscribeMarketData,
)

from .harness import (
    ACCOUNT,
    CLIENT_ID,
    PORTFOLIO,
    PRICES,
    GhostClient,
    ServiceProcess,
    Stack,
    assert_books_match_the_broker,
    chaos_stack,
    run_burst,
    start_services,
    wait_for,
    wait_settled,
    wait_until_none_lost,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

RESTING = 10
REST_LIMIT = Decimal("189.00")
OUTAGE_PRICE = Decimal("188.50")  # AAPL falls through the resting buys
MD_SYMBOL = "MSFT"


async def place_resting(stack: Stack) -> set[str]:
    """``RESTING`` LMT buys of AAPL below the market, acknowledged at the broker."""
    coids = {f"rest-{i:02d}" for i in range(RESTING)}
    for coid in sorted(coids):
        cmd = SubmitOrder(
            portfolio_id=PORTFOLIO,
            client_order_id=coid,
            symbol="AAPL",
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=Decimal(5),
            limit_price=REST_LIMIT,
            purpose=OrderPurpose.MANUAL,
            requested_by="user:chaos",
        )
        await request(stack.nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)
    await wait_for(
        lambda: len([o for o in stack.sim.engine.open_orders() if o.account == ACCOUNT]) == RESTING,
        within=30,
        what="resting orders working at the broker",
    )
    return coids


@contextlib.asynccontextmanager
async def market_data(stack: Stack, symbol: str) -> AsyncIterator[list[MarketDataTick]]:
    """A market data lease on ``symbol`` (renewed every 10 s) and the ticks received."""
    ticks: list[MarketDataTick] = []

    async def on_tick(msg: object) -> None:
        ticks.append(MarketDataTick.from_json(msg.data))  # type: ignore[attr-defined]

    sub = await stack.nc.subscribe(subjects.market_data(symbol), cb=on_tick)
    cmd = SubscribeMarketData(portfolio_id=PORTFOLIO, symbols=(symbol,), requested_by="chaos")

    async def renew() -> None:
        while True:
            with contextlib.suppress(Exception):
                await request(stack.nc, subjects.SUBSCRIBE_MARKET_DATA, cmd, CommandAccepted)
            await asyncio.sleep(10)

    renewing = asyncio.create_task(renew())
    try:
        yield ticks
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await sub.unsubscribe()


async def assert_market_data_flows(stack: Stack, ticks: list[MarketDataTick]) -> None:
    """A new price at the broker reaches ``ibflow.md.v1.<symbol>`` again."""
    ticks.clear()
    price = Decimal("412.00")

    def near(value: Decimal | None) -> bool:
        return value is not None and abs(value - price) <= Decimal("0.05")

    def seen() -> bool:
        stack.sim.faults.set_price(MD_SYMBOL, price)
        return any(near(t.last) or near(t.bid) or near(t.ask) for t in ticks)

    await wait_for(seen, within=60, what=f"a {MD_SYMBOL} tick at {price} after the outage")


async def logged(proc: ServiceProcess, text: str) -> None:
    await wait_for(lambda: text in proc.log_text(), within=60, what=f"{text!r} in the log")


# ---------------------------------------------------------------------- the faults

Fault = Callable[[Stack, ServiceProcess], Awaitable[None]]


async def dropped(stack: Stack, bridge: ServiceProcess) -> None:
    # the gateway hangs a moment, then drops every connection: orders the bridge wrote
    # in that moment never reach IB (without the hang, only in some runs)
    stack.sim.faults.silence(True, client_id=CLIENT_ID)
    await asyncio.sleep(0.5)
    stack.sim.faults.drop_connections()
    stack.sim.faults.silence(False, client_id=CLIENT_ID)
    stack.sim.faults.set_price("AAPL", OUTAGE_PRICE)  # no client connected: nobody told
    await logged(bridge, "connection to the gateway lost")


async def zombie(stack: Stack, bridge: ServiceProcess) -> None:
    stack.sim.faults.silence(True)
    stack.sim.faults.set_price("AAPL", OUTAGE_PRICE)
    await logged(bridge, "zombie gateway, reconnecting")
    await asyncio.sleep(2)
    stack.sim.faults.silence(False)


def connectivity(data_lost: bool) -> Fault:
    async def fault(stack: Stack, bridge: ServiceProcess) -> None:
        stack.sim.faults.connectivity_lost()
        await asyncio.sleep(1)
        stack.sim.faults.set_price("AAPL", OUTAGE_PRICE)  # IB matches once it is back
        await asyncio.sleep(2)
        stack.sim.faults.connectivity_restored(data_lost=data_lost)
        del bridge

    return fault


async def client_id_in_use(stack: Stack, bridge: ServiceProcess) -> None:
    await bridge.kill9()
    ghost = await GhostClient.hold(stack.sim.port, CLIENT_ID)  # the dead session's id
    try:
        stack.sim.faults.set_price("AAPL", OUTAGE_PRICE)
        await bridge.start()
        await logged(bridge, f"as client {CLIENT_ID} failed")  # 326, backing off
    finally:
        await ghost.release()


async def farm_outage(stack: Stack, bridge: ServiceProcess) -> None:
    stack.sim.faults.set_farm("market", up=False)
    stack.sim.faults.set_price("AAPL", OUTAGE_PRICE)
    await asyncio.sleep(3)
    stack.sim.faults.set_farm("market", up=True)
    del bridge


FAULTS: dict[str, Fault] = {
    "dropped": dropped,
    "zombie": zombie,
    "1100_then_1101": connectivity(data_lost=True),
    "1100_then_1102": connectivity(data_lost=False),
    "326_at_reconnect": client_id_in_use,
    "farm_outage": farm_outage,
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_gateway_fault_mid_burst_recovers_the_fills_and_market_data_without_operator(
    tmp_path: Path, fault: str
) -> None:
    total = 300
    async with chaos_stack(tmp_path) as stack:
        procs = await start_services(stack, "gateway-bridge", "order-manager")
        bridge = procs["gateway-bridge"]
        resting = await place_resting(stack)
        async with market_data(stack, MD_SYMBOL) as ticks:

            def first_tick() -> bool:
                stack.sim.faults.set_price(MD_SYMBOL, PRICES[MD_SYMBOL])
                return bool(ticks)

            await wait_for(first_tick, within=30, what=f"a first {MD_SYMBOL} tick")

            async def inject() -> None:
                await FAULTS[fault](stack, bridge)

            burst = await run_burst(stack, total, faults=[(total // 3, inject)])
            # the resting buys filled during the outage (at the broker)
            rest_fills = [
                f for f in stack.broker_fills() if f.execution.order.request.order_ref in resting
            ]
            assert sum(f.execution.shares for f in rest_fills) == 5 * RESTING
            await wait_for(stack.bridge_ready, within=60, what="bridge ready again")
            await wait_settled(stack, within=180)
            await wait_until_none_lost(stack, within=30)
            await assert_market_data_flows(stack, ticks)
        books = await assert_books_match_the_broker(stack, {*burst.coids, *resting})
        rows = await stack.fetch(
            "SELECT status FROM orders WHERE client_order_id = ANY($1::text[])", list(resting)
        )
        assert [r["status"] for r in rows] == ["FILLED"] * RESTING
        assert set(books.statuses) <= {"FILLED", "REJECTED", "CANCELLED"}, books.statuses
        print(
            f"\n{fault} after {total // 3} of {total} orders: {len(burst.refused)} refused;"
            f" burst {burst.seconds:.1f}s; {RESTING} resting orders filled during the outage"
            f" booked; market data resumed; {books}"
        )
