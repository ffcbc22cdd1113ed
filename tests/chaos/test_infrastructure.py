"""The infrastructure fails mid-burst: nats-server ``kill -9`` and restarted (JetStream
data on disk), PostgreSQL stopped for 10 s. Every service keeps running through it
(reconnecting by itself); the books must still be the broker's exactly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from .harness import (
    assert_books_match_the_broker,
    chaos_stack,
    run_burst,
    start_services,
    wait_settled,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.mark.chaos_fast
@pytest.mark.timeout(300)
async def test_nats_server_killed_and_restarted_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    total = 600
    async with chaos_stack(tmp_path) as stack:
        procs = await start_services(stack, "gateway-bridge", "order-manager")
        outage: dict[str, float] = {}

        async def crash() -> None:
            began = time.monotonic()
            stack.infra.kill_nats()
            await asyncio.sleep(3)  # the bridge keeps receiving fills from the broker
            stack.infra.start_nats()  # same port, same store_dir
            outage["s"] = time.monotonic() - began

        burst = await run_burst(stack, total, faults=[(total // 3, crash)])
        await wait_settled(stack, within=180)
        books = await assert_books_match_the_broker(stack, set(burst.coids))
        assert set(books.statuses) <= {"FILLED", "REJECTED"}, books.statuses
        assert books.statuses["FILLED"] >= total // 2
        assert all(p.alive for p in procs.values())
        print(
            f"\nnats-server kill -9 after {total // 3} of {total} orders, down"
            f" {outage['s']:.1f}s; {len(burst.refused)} refused, {len(burst.transient)} asked"
            f" again; burst {burst.seconds:.1f}s; {books}"
        )


@pytest.mark.timeout(300)
async def test_postgres_stopped_for_10s_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    total = 600
    async with chaos_stack(tmp_path) as stack:
        procs = await start_services(stack, "gateway-bridge", "order-manager")
        outage: dict[str, float] = {}

        async def crash() -> None:
            began = time.monotonic()
            stack.infra.stop_postgres()
            await asyncio.sleep(10)
            stack.infra.start_postgres()  # same port, same data
            outage["s"] = time.monotonic() - began

        burst = await run_burst(stack, total, faults=[(total // 3, crash)])
        await wait_settled(stack, within=180)
        books = await assert_books_match_the_broker(stack, set(burst.coids))
        assert set(books.statuses) <= {"FILLED", "REJECTED"}, books.statuses
        assert books.statuses["FILLED"] >= total // 2
        assert all(p.alive for p in procs.values())
        print(
            f"\nPostgreSQL stopped after {total // 3} of {total} orders for"
            f" {outage['s']:.1f}s; {len(burst.refused)} refused, {len(burst.transient)} asked"
            f" again; burst {burst.seconds:.1f}s; {books}"
        )
