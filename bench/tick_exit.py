"""Tick → exit with every service a process: a price through a stop at the simulator →
the exit order received by the simulator, 50 open positions ticking.

The same measurement as ``bench/position_monitor.py`` (whose services share this
process's event loop, as in the position-monitor's integration tests), in the topology
``make run`` starts: embedded nats-server and PostgreSQL, the migrations of every
installed package, and ``python -m ibflow_gateway_bridge``, ``ibflow_order_manager`` and
``ibflow_position_monitor`` as processes. gateway-sim runs in this process (over TCP, the
real TWS protocol) so that its ``placeOrder`` handler can read the clock when the exit
arrives: ``--positions`` (50) instruments ``S00``..``S49`` at 100.00 whose random walk
ticks every ``--tick-interval`` (0.25 s: 200 ticks/s in all, streamed to the bridge for
the position-monitor's market data leases).

Portfolio ``bench`` enters 10 shares of every symbol through the order-manager (entries
with stop 90.00, target 1000.00), so 50 positions are OPEN and each is evaluated on
every tick of its symbol. Then ``--samples`` times, one symbol after the other: the
clock is read, the symbol is moved to 89.00 (``sim.faults.set_price``: the tick is
pushed at once), and the sample ends when the simulator receives the order whose
orderRef is the position's ``exit:<position>``. After each sample the exit fills, the
symbol returns to 100.00 and a new position is entered (50 stay open).

Checks (exit 1): every exit orderRef reached the simulator exactly once, one exit order
per sampled position in the order-manager, every sampled position CLOSED.

    uv run python bench/tick_exit.py [--samples 100] [--positions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
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
from nats.aio.client import Client as NatsClient

sys.path.insert(0, str(Path(__file__).parent))

import gateway_bridge as gb
import latency
from api import wait_bridge_ready
from ibflow.bus import provision, request
from ibflow.bus import subjects as subj
from ibflow.bus.errors import RemoteError
from ibflow.contracts import CommandAccepted, OrderPurpose, OrderSide, OrderType, SubmitOrder
from ibflow.db import apply_migrations
from ibflow.testing.devstack import migration_packages
from ibflow.testing.embedded import NatsServer, PostgresServer
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

RESULTS = Path(__file__).parent / "results"
PORTFOLIO = gb.PORTFOLIO
ACCOUNT = gb.ACCOUNT
START = Decimal("100.00")
STOP = Decimal("90.00")
THROUGH = Decimal("89.00")


async def wait_until(check: Any, within: float, what: str, every: float = 0.001) -> None:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(every)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, sample, check, stop everything (also when cancelled)."""
    symbols = [f"S{i:02d}" for i in range(args.positions)]
    children: list[gb.Child] = []
    nc: NatsClient | None = None
    db: asyncpg.Connection[Any] | None = None
    sim: GatewaySimulator | None = None
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-tick-") as tmp:
        nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
        pg = PostgresServer.start(Path(tmp) / "pg", die_with_parent=False)
        try:
            config = SimConfig.model_validate(
                {
                    "instruments": [
                        {
                            "symbol": s,
                            "con_id": 800_000 + i,
                            "primary_exchange": "NYSE",
                            "start_price": str(START),
                        }
                        for i, s in enumerate(symbols)
                    ],
                    "accounts": [{"id": ACCOUNT, "starting_cash": "10000000"}],
                    "market": {"seed": 3, "tick_interval": args.tick_interval, "volatility": 0.05},
                }
            )
            sim = GatewaySimulator(config)
            received: dict[str, float] = {}
            received_wall: dict[str, float] = {}
            placed: Counter[str] = Counter()
            original = sim.place_order

            def place_order(session: Any, req: Any) -> None:
                now = time.perf_counter()
                ref = req.order.order_ref
                if ref.startswith("exit:"):
                    placed[ref] += 1
                    received.setdefault(ref, now)
                    received_wall.setdefault(ref, time.time())
                original(session, req)

            sim.place_order = place_order  # type: ignore[method-assign]
            await sim.start("127.0.0.1", 0)
            await apply_migrations(pg.url(), *migration_packages())
            db = await asyncpg.connect(pg.url())
            await db.execute(
                "INSERT INTO portfolios (id, name, broker_host, broker_port, client_id, account,"
                " cash, max_order_value, max_position_value)"
                " VALUES ($1, $1, '127.0.0.1', $2, $3, $4, 10000000, 1000000, 1000000)",
                PORTFOLIO,
                sim.port,
                gb.BRIDGE_CLIENT_ID,
                ACCOUNT,
            )
            await db.executemany(
                "INSERT INTO instruments (symbol, currency, primary_exchange)"
                " VALUES ($1, 'USD', 'NYSE')",
                [(s,) for s in symbols],
            )
            nc = await nats.connect(nats_server.url)
            await provision(nc.jetstream(), [subj.EVENTS_STREAM, subj.DEAD_LETTER_STREAM])
            ports: dict[str, int] = {}
            for name, module in (
                ("gateway-bridge", "ibflow_gateway_bridge"),
                ("order-manager", "ibflow_order_manager"),
                ("position-monitor", "ibflow_position_monitor"),
            ):
                port = ports[name] = gb.free_port()
                child = gb.Child(
                    name, ["-m", module], gb.bridge_environment(nats_server.url, pg.url(), port)
                )
                children.append(child)
                await child.start()
                await gb.wait_http(child, port, "/readyz", 60)
            await wait_bridge_ready(nc)

            async def enter(position_id: str, symbol: str) -> None:
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
                await request(nc, subj.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)

            async def status_is(position_id: str, status: str) -> bool:
                assert db is not None
                found = await db.fetchval("SELECT status FROM positions WHERE id = $1", position_id)
                return bool(found == status)

            generation = dict.fromkeys(symbols, 0)
            gate = asyncio.Semaphore(8)

            async def first_entry(symbol: str) -> None:
                async with gate:
                    await enter(f"{symbol}-0", symbol)

            await asyncio.gather(*(first_entry(s) for s in symbols))

            async def all_open() -> bool:
                assert db is not None
                n = await db.fetchval("SELECT count(*) FROM positions WHERE status = 'OPEN'")
                return bool(n == len(symbols))

            await wait_until(all_open, 60, "every position OPEN", every=0.05)

            async def monitor_metrics() -> str:
                return (await gb.http(ports["position-monitor"], "GET", "/metrics"))[1].decode()

            before = gb.metric(
                await monitor_metrics(), "ibflow_position_ticks_total", outcome="used"
            )
            await asyncio.sleep(args.warmup)  # ticking, market data leases settled
            after = gb.metric(
                await monitor_metrics(), "ibflow_position_ticks_total", outcome="used"
            )
            tick_rate = (after - before) / args.warmup
            hist_before = await monitor_metrics()

            samples: list[float] = []
            sampled: list[str] = []
            ticked_wall: dict[str, float] = {}
            refusals = 0
            started = time.perf_counter()
            for k in range(args.samples):
                symbol = symbols[k % len(symbols)]
                position_id = f"{symbol}-{generation[symbol]}"
                ref = f"exit:{position_id}"
                ticked_wall[ref] = time.time()
                t0 = time.perf_counter()
                sim.faults.set_price(symbol, THROUGH)
                await wait_until(lambda r=ref: r in received, 30, f"{ref} at the simulator")
                samples.append((received[ref] - t0) * 1000)
                sampled.append(position_id)
                await wait_until(
                    lambda p=position_id: status_is(p, "CLOSED"), 30, f"{position_id} CLOSED"
                )
                sim.faults.set_price(symbol, START)
                generation[symbol] += 1
                new_id = f"{symbol}-{generation[symbol]}"
                for attempt in range(50):
                    try:
                        await enter(new_id, symbol)
                        break
                    except RemoteError as exc:
                        if "duplicate_position" not in exc.message or attempt == 49:
                            raise
                        refusals += 1
                        await asyncio.sleep(0.05)
                await wait_until(lambda p=new_id: status_is(p, "OPEN"), 30, f"{new_id} OPEN")
            elapsed = time.perf_counter() - started
            hist_after = await monitor_metrics()
            for child in children:
                child.check_alive()

            def delta(name: str) -> float:
                return gb.metric(hist_after, name) - gb.metric(hist_before, name)

            exits_seen = delta("ibflow_position_tick_to_exit_seconds_count")

            failures: list[str] = []
            twice = {ref: n for ref, n in placed.items() if n != 1}
            if twice:
                failures.append(f"exit orders placed more than once at the simulator: {twice}")
            exits = await db.fetchval("SELECT count(*) FROM orders WHERE purpose = 'exit'")
            if exits != len(sampled):
                failures.append(f"{exits} exit orders in the order-manager for {len(sampled)}")
            closed = await db.fetchval(
                "SELECT count(*) FROM positions WHERE id = ANY($1::text[]) AND status = 'CLOSED'",
                sampled,
            )
            if closed != len(sampled):
                failures.append(f"{closed} of {len(sampled)} sampled positions CLOSED")
            open_now = await db.fetchval("SELECT count(*) FROM positions WHERE status = 'OPEN'")
            recorded = {
                r["client_order_id"]: r["created"]
                for r in await db.fetch(
                    "SELECT client_order_id, extract(epoch FROM created_at)::float8 AS created"
                    " FROM orders WHERE purpose = 'exit'"
                )
            }
            refs = [r for r in ticked_wall if r in recorded and r in received_wall]
            return {
                "summary": latency.summarise(
                    "tick at the simulator -> exit order at the simulator (services as processes)",
                    samples,
                    count_key="exits",
                ),
                "tick_to_exit_recorded": latency.summarise(
                    "  tick -> the order-manager's transaction recording the exit begins"
                    " (bridge, position-monitor, SubmitOrder request)",
                    [(recorded[r] - ticked_wall[r]) * 1000 for r in refs],
                    count_key="exits",
                )
                if len(refs) > 1
                else None,
                "exit_recorded_to_simulator": latency.summarise(
                    "  that transaction begins -> placeOrder at the simulator"
                    " (order-manager, bridge)",
                    [(received_wall[r] - recorded[r]) * 1000 for r in refs],
                    count_key="exits",
                )
                if len(refs) > 1
                else None,
                "open_positions": open_now,
                "ticks_per_second_evaluated": round(tick_rate, 1),
                "monitor_tick_to_exit_accepted_mean_ms": round(
                    1000 * delta("ibflow_position_tick_to_exit_seconds_sum") / exits_seen, 3
                )
                if exits_seen
                else None,
                "samples_seconds": round(elapsed, 2),
                "reentries_refused_duplicate_position": refusals,
                "failures": failures,
            }
        finally:
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)
            for child in reversed(children):
                await child.stop()
            if sim is not None:
                with contextlib.suppress(Exception):
                    await sim.stop()
            pg.stop()
            nats_server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=100, help="stop hits measured")
    parser.add_argument("--positions", type=int, default=50, help="open positions ticking")
    parser.add_argument("--tick-interval", type=float, default=0.25, help="seconds per symbol")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds ticking first")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args))
    s = result["summary"]
    print(
        f"{s['scenario']}: {s['exits']} exits, p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms,"
        f" p99 {s['p99_ms']} ms, max {s['max_ms']} ms; {result['open_positions']} open"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"tick_exit-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "results": result}, indent=2) + "\n")
    print(f"written {out}")
    for failure in result["failures"]:
        print(f"CHECK FAILED: {failure}")
    if result["failures"]:
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
