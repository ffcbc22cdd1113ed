"""position-monitor: a price through a stop at the simulator → the exit order received by
the simulator, with 50 open positions ticking.

Everything is real and in this one process's event loop (like the integration tests'
stack): embedded nats-server and PostgreSQL, gateway-sim over TCP with ``--positions``
(50) instruments ``S00``..``S49`` at 100.00 whose random walk ticks every
``--tick-interval`` seconds (0.25: 200 ticks/s in all), the gateway-bridge, the
order-manager and the position-monitor (``ibflow.runtime.Runtime`` each). One portfolio
``bench`` buys 10 shares of every symbol (entries through the order-manager with stop
90.00 and target 1000.00), so 50 positions are OPEN and every one of them is evaluated on
every tick of its symbol.

Then ``--samples`` (200) times, one symbol after the other: the clock is read, the
simulator's control API moves the symbol to 89.00 (``sim.faults.set_price``: the tick is
pushed to the bridge at once), and the sample ends when the simulator's ``placeOrder``
handler receives the order whose orderRef is the position's ``exit:<position>`` (the
handler is wrapped to read the clock first). The path measured: simulator tick → bridge
(ib_async) → core NATS → position-monitor (tick evaluated, position row locked and
``CLOSING`` committed) → order-manager ``SubmitOrder`` (validation, risk, ``PENDING``
committed) → bridge ``PlaceBrokerOrder`` (paced) → simulator. After each sample the
position's exit fills, the symbol goes back to 100.00 and a new position is entered, so
50 stay open.

Checks (exit 1 if one fails): every exit orderRef reached the simulator exactly once, one
exit order per position in the order-manager, every sampled position CLOSED.

    uv run python bench/position_monitor.py [--samples 200] [--positions 50]

Prints the summary and writes ``bench/results/position_monitor-<timestamp>.json``. About
a minute with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).parent))

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts import (
    CommandAccepted,
    OrderPurpose,
    OrderSide,
    OrderType,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.runtime import Runtime
from ibflow.testing.embedded import NatsServer, PostgresServer
from ibflow_gateway_bridge.app import SERVICE as BRIDGE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, state_key
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator
from ibflow_order_manager.app import SERVICE as ORDER_MANAGER
from ibflow_order_manager.settings import OrderManagerSettings
from ibflow_position_monitor.app import SERVICE as POSITION_MONITOR
from ibflow_position_monitor.settings import PositionMonitorSettings
from latency import Summary, summarise

RESULTS = Path(__file__).parent / "results"
ACCOUNT = "DU1234567"
PORTFOLIO = "bench"
START = Decimal("100.00")
STOP = Decimal("90.00")
THROUGH = Decimal("89.00")


async def wait_until(condition: Any, within: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` (sync or async) every millisecond until truthy."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {within}s")
        await asyncio.sleep(0.001)


class Bench:
    """The running system and the exit orders the simulator received."""

    def __init__(self, sim: GatewaySimulator, db: asyncpg.Connection[Any], nc: Any) -> None:
        self.sim = sim
        self.db = db
        self.nc = nc
        self.received: dict[str, float] = {}
        self.placed: Counter[str] = Counter()
        original = sim.place_order

        def place_order(session: Any, req: Any) -> None:
            now = time.perf_counter()
            ref = req.order.order_ref
            if ref.startswith("exit:"):
                self.placed[ref] += 1
                self.received.setdefault(ref, now)
            original(session, req)

        sim.place_order = place_order  # type: ignore[method-assign]

    async def enter(self, position_id: str, symbol: str) -> None:
        cmd = SubmitOrder(
            portfolio_id=PORTFOLIO,
            client_order_id=f"entry:{position_id}",
            symbol=symbol,
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=Decimal(10),
            limit_price=Decimal("101.00"),
            purpose=OrderPurpose.ENTRY,
            position_id=position_id,
            stop_loss=STOP,
            take_profit=Decimal(1000),
            requested_by="bench",
        )
        await request(self.nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)

    async def status(self, position_id: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT status FROM positions WHERE id = $1", position_id
        )
        return value


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def run(nats_url: str, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    symbols = [f"S{i:02d}" for i in range(args.positions)]
    config = SimConfig.model_validate(
        {
            "instruments": [
                {
                    "symbol": s,
                    "con_id": 800_000 + i,
                    "primary_exchange": "NYSE",
                    "start_price": "100.00",
                }
                for i, s in enumerate(symbols)
            ],
            "accounts": [{"id": ACCOUNT, "starting_cash": "10000000"}],
            "market": {"tick_interval": args.tick_interval, "volatility": 0.05},
        }
    )
    sim = GatewaySimulator(config.with_seed(3))
    await sim.start("127.0.0.1", 0)
    await apply_migrations(
        database_url, "ibflow.db", "ibflow_order_manager", "ibflow_position_monitor"
    )
    db = await asyncpg.connect(database_url)
    await db.execute(
        "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash, max_order_value,"
        " max_position_value) VALUES ($1, $1, $2, 11, $3, 10000000, 1000000, 1000000)",
        PORTFOLIO,
        sim.port,
        ACCOUNT,
    )
    await db.executemany(
        "INSERT INTO instruments (symbol, currency, primary_exchange) VALUES ($1, 'USD', 'NYSE')",
        [(s,) for s in symbols],
    )
    common = {"nats_url": nats_url, "database_url": database_url, "http_port": 0}
    runtimes: list[Runtime[Any]] = [
        Runtime(BRIDGE, GatewayBridgeSettings.load(gateway_type="simulator", **common)),
        Runtime(ORDER_MANAGER, OrderManagerSettings.load(**common)),
        Runtime(POSITION_MONITOR, PositionMonitorSettings.load(**common)),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(rt.serve(stop)) for rt in runtimes]
    nc = await nats.connect(nats_url)
    bench = Bench(sim, db, nc)
    try:
        await wait_until(lambda: all(rt.ready for rt in runtimes), what="services ready")
        await _wait_bridge(nc)
        generation = dict.fromkeys(symbols, 0)
        gate = asyncio.Semaphore(8)

        async def enter(symbol: str) -> None:
            async with gate:
                await bench.enter(f"{symbol}-{generation[symbol]}", symbol)

        await asyncio.gather(*(enter(s) for s in symbols))

        async def all_open() -> bool:
            count = await db.fetchval("SELECT count(*) FROM positions WHERE status = 'OPEN'")
            return bool(count == len(symbols))

        await wait_until(all_open, within=60, what="every position OPEN")
        ticks_before = _metric("ibflow_position_ticks_total", {"outcome": "used"})
        await asyncio.sleep(args.warmup)
        ticked = _metric("ibflow_position_ticks_total", {"outcome": "used"}) - ticks_before
        tick_rate = ticked / args.warmup

        samples: list[float] = []
        sampled: list[str] = []
        reentry_refusals = 0
        started = time.perf_counter()
        for k in range(args.samples):
            symbol = symbols[k % len(symbols)]
            position_id = f"{symbol}-{generation[symbol]}"
            ref = f"exit:{position_id}"
            t0 = time.perf_counter()
            sim.faults.set_price(symbol, THROUGH)
            await wait_until(lambda r=ref: r in bench.received, within=30, what=f"{ref} at the sim")
            samples.append((bench.received[ref] - t0) * 1000)
            sampled.append(position_id)
            await wait_until(
                lambda p=position_id: _is(bench, p, "CLOSED"),
                within=30,
                what=f"{position_id} CLOSED",
            )
            sim.faults.set_price(symbol, START)
            generation[symbol] += 1
            new_id = f"{symbol}-{generation[symbol]}"
            for attempt in range(50):
                try:
                    await bench.enter(new_id, symbol)
                    break
                except RemoteError as exc:
                    if "duplicate_position" not in exc.message or attempt == 49:
                        raise
                    reentry_refusals += 1
                    await asyncio.sleep(0.05)
            await wait_until(
                lambda p=new_id: _is(bench, p, "OPEN"), within=30, what=f"{new_id} OPEN"
            )
        elapsed = time.perf_counter() - started

        failures: list[str] = []
        twice = {ref: n for ref, n in bench.placed.items() if n != 1}
        if twice:
            failures.append(f"exit orders placed more than once at the simulator: {twice}")
        exits = await db.fetchval("SELECT count(*) FROM orders WHERE purpose = 'exit'")
        if exits != len(sampled):
            failures.append(f"{exits} exit orders in the order-manager for {len(sampled)} samples")
        closed = await db.fetchval(
            "SELECT count(*) FROM positions WHERE id = ANY($1::text[]) AND status = 'CLOSED'",
            sampled,
        )
        if closed != len(sampled):
            failures.append(f"{closed} of {len(sampled)} sampled positions CLOSED")
        open_now = await db.fetchval("SELECT count(*) FROM positions WHERE status = 'OPEN'")
        summary: Summary = summarise(
            "tick at the simulator -> exit order at the simulator", samples, count_key="exits"
        )
        return {
            "summary": summary,
            "open_positions": open_now,
            "ticks_per_second_evaluated": round(tick_rate, 1),
            "samples_seconds": round(elapsed, 2),
            "monitor_tick_to_exit_accepted_mean_ms": round(
                1000
                * _metric("ibflow_position_tick_to_exit_seconds_sum")
                / max(_metric("ibflow_position_tick_to_exit_seconds_count"), 1.0),
                3,
            ),
            "reentries_refused_duplicate_position": reentry_refusals,
            "failures": failures,
        }
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await nc.close()
        await db.close()
        await sim.stop()


async def _order_filled(bench: Bench, client_order_id: str) -> bool:
    status = await bench.db.fetchval(
        "SELECT status FROM orders WHERE client_order_id = $1", client_order_id
    )
    return bool(status == "FILLED")


async def _is(bench: Bench, position_id: str, status: str) -> bool:
    return await bench.status(position_id) == status


async def _wait_bridge(nc: Any) -> None:
    async def ready() -> bool:
        try:
            kv = await nc.jetstream().key_value(STATE_BUCKET)
            entry = await kv.get(state_key(PORTFOLIO))
        except (BucketNotFoundError, KeyNotFoundError):
            return False
        return entry.value is not None and b'"state":"ready"' in entry.value

    await wait_until(ready, within=30, what="bridge ready")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, run, stop the servers."""
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-") as tmp:
        nats_server = NatsServer.start(Path(tmp) / "nats")
        pg = PostgresServer.start(Path(tmp) / "pg")
        try:
            return await run(nats_server.url, pg.url(), args)
        finally:
            pg.stop()
            nats_server.stop()


def main() -> None:
    """Command line: run, print the summary, write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="stop hits measured")
    parser.add_argument("--positions", type=int, default=50, help="open positions ticking")
    parser.add_argument("--tick-interval", type=float, default=0.25, help="seconds per symbol")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds ticking first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(main_async(args))
    s = result["summary"]
    print(
        f"{s['scenario']}: {s['exits']} exits, p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms,"
        f" p99 {s['p99_ms']} ms, max {s['max_ms']} ms"
    )
    print(
        f"{result['open_positions']} positions open, {result['ticks_per_second_evaluated']}"
        f" ticks/s evaluated by the monitor; monitor tick -> order-manager accepted mean"
        f" {result['monitor_tick_to_exit_accepted_mean_ms']} ms"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"position_monitor-{stamp}.json"
    meta = {"python": platform.python_version(), "when": stamp, **vars(args)}
    out.write_text(json.dumps({"meta": meta, "results": result}, indent=2) + "\n")
    print(f"written {out}")
    for failure in result["failures"]:
        print(f"CHECK FAILED: {failure}")
    if result["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
