"""The infrastructure fails mid-burst: nats-server ``kill -9`` and restarted (JetStream
data on disk), PostgreSQL stopped for 10 s. Every service keeps running through it
(reconnecting by itself); stops are crossed during the outage and targets after it; the
books and the positions must still be the broker's exactly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import (
    PORTFOLIO,
    POS_ACCOUNT,
    POS_PORTFOLIO,
    POSITION_SYMBOLS,
    Books,
    Burst,
    Stack,
    assert_books_match_the_broker,
    chaos_stack,
    run_burst,
    start_services,
    wait_settled,
)
from .positions import (
    STOP,
    TARGET,
    Ticker,
    assert_positions_match_the_broker,
    open_positions,
    position_orders,
    positions_left,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SYMBOLS = POSITION_SYMBOLS[:4]


async def burst_through_an_outage(
    tmp_path: Path, down: Callable[[Stack], None], up: Callable[[Stack], None], seconds: float
) -> tuple[Burst, Books, float]:
    """600 orders; after 200, ``down``, two stops crossed, ``seconds`` later ``up``, two
    targets crossed; then every check."""
    total = 600
    async with chaos_stack(tmp_path, with_positions=True) as stack:
        procs = await start_services(
            stack,
            "gateway-bridge",
            "order-manager",
            "position-monitor",
            portfolios=(PORTFOLIO, POS_PORTFOLIO),
        )
        await open_positions(stack, SYMBOLS)
        ticking = Ticker(stack)
        outage: list[float] = []

        async def crash() -> None:
            began = time.monotonic()
            down(stack)
            for symbol in SYMBOLS[:2]:
                ticking.move(symbol, STOP - 1)
            await asyncio.sleep(seconds)
            up(stack)
            outage.append(time.monotonic() - began)
            for symbol in SYMBOLS[2:]:
                ticking.move(symbol, TARGET + 1)

        async with ticking:
            burst = await run_burst(stack, total, faults=[(total // 3, crash)])
            await wait_settled(stack, within=180, extra=lambda: positions_left(stack))
            await wait_settled(stack, within=60, account=POS_ACCOUNT, portfolio=POS_PORTFOLIO)
        books = await assert_books_match_the_broker(stack, set(burst.coids))
        assert set(books.statuses) <= {"FILLED", "REJECTED"}, books.statuses
        assert books.statuses["FILLED"] >= total // 2
        closed = await assert_positions_match_the_broker(stack, SYMBOLS)
        assert sorted(r["exit_reason"] for r in closed) == ["stop", "stop", "target", "target"]
        await assert_books_match_the_broker(
            stack, position_orders(closed), account=POS_ACCOUNT, portfolio=POS_PORTFOLIO
        )
        assert all(p.alive for p in procs.values()), [p.name for p in procs.values()]
        return burst, books, outage[0]


@pytest.mark.chaos_fast
@pytest.mark.timeout(300)
async def test_nats_server_killed_and_restarted_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    burst, books, outage = await burst_through_an_outage(
        tmp_path,
        lambda stack: stack.infra.kill_nats(),
        lambda stack: stack.infra.start_nats(),  # same port, same store_dir
        seconds=3,
    )
    print(
        f"\nnats-server kill -9 after 200 of 600 orders, down {outage:.1f}s;"
        f" {len(burst.refused)} refused, {len(burst.transient)} asked again;"
        f" burst {burst.seconds:.1f}s; {books}; 4 positions closed once each"
    )


@pytest.mark.timeout(300)
async def test_postgres_stopped_for_10s_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    burst, books, outage = await burst_through_an_outage(
        tmp_path,
        lambda stack: stack.infra.stop_postgres(),
        lambda stack: stack.infra.start_postgres(),  # same port, same data
        seconds=10,
    )
    print(
        f"\nPostgreSQL stopped after 200 of 600 orders for {outage:.1f}s;"
        f" {len(burst.refused)} refused, {len(burst.transient)} asked again;"
        f" burst {burst.seconds:.1f}s; {books}; 4 positions closed once each"
    )
