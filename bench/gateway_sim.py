"""gateway-sim throughput and latency, seen by an unmodified ib_async client over TCP.

The simulator runs as its own process (``python -m ibflow_gateway_sim`` with a generated
config), the client in this one, so they do not share an event loop or a core: where the
machine has two or more cores the simulator is pinned to core 0 and the client to the
others, so the figures are the simulator's on one core.

* **ticks**: one ib_async client subscribes to every symbol (12) with ``reqMktData``;
  for each market tick interval, count for ``--seconds`` the tick messages the client
  decodes (``Ticker.ticks``; lastTimestamp strings are not counted) and the
  ``pendingTickersEvent`` updates, beside the tick frames the server sent and dropped
  (``GET /health``). The client "keeps up" while the server drops nothing (it drops
  ticks only when more than 4 MB are waiting for the socket).
* **orders**: ``placeOrder`` → the ``Filled`` orderStatus for MKT orders (alternating
  BUY/SELL 100 AAPL), one at a time, in two modes:

  - ``paced``: the client's own throttle stays on (45 msg/s) and orders are offered at
    ``--order-rate`` (default 40/s) so the throttle never delays one: the latency a real
    ib_async user sees;
  - ``unthrottled``: ``client.MaxRequests = 0`` and the simulator's limit raised (config
    ``limits.max_msgs_per_second``), orders back to back: the simulator's own cost.

    uv run python bench/gateway_sim.py [--seconds 5] [--orders 500]

Prints a table and writes ``bench/results/gateway_sim-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ib_async
import yaml

from ibflow.testing.embedded import free_port

RESULTS = Path(__file__).parent / "results"
SYMBOLS = (
    "AAPL",
    "MSFT",
    "SPY",
    "QQQ",
    "NVDA",
    "AMZN",
    "TSLA",
    "META",
    "GOOGL",
    "AMD",
    "JPM",
    "IWM",
)

Summary = dict[str, Any]


async def http_get(port: int, path: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def pin_to_own_cores(sim_pid: int) -> None:
    """Pin the simulator to core 0 and this process to the remaining cores, if any."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(sim_pid, {cores[0]})
        os.sched_setaffinity(0, set(cores[1:]))


class Simulator:
    """The simulator in a subprocess, configured from a dict."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.port = free_port()
        self.control_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory()

    async def __aenter__(self) -> Simulator:
        path = Path(self._dir.name) / "sim.yaml"
        path.write_text(yaml.safe_dump(self.config))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ibflow_gateway_sim",
            "--port",
            str(self.port),
            "--control-port",
            str(self.control_port),
            "--config",
            str(path),
            "--log-level",
            "WARNING",
            stdin=subprocess.DEVNULL,
        )
        pin_to_own_cores(self.proc.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                await http_get(self.control_port, "/health")
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise
                await asyncio.sleep(0.05)

    async def __aexit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
        self._dir.cleanup()


async def bench_ticks(tick_interval: float, seconds: float) -> Summary:
    config = {"market": {"seed": 1, "tick_interval": tick_interval, "volatility": 1.0}}
    async with Simulator(config) as sim:
        ib = ib_async.IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=10)
        contracts = [ib_async.Stock(s, "SMART", "USD") for s in SYMBOLS]
        await ib.qualifyContractsAsync(*contracts)
        ticks = updates = 0

        def on_pending(tickers: set[Any]) -> None:
            nonlocal ticks, updates
            updates += len(tickers)
            ticks += sum(len(t.ticks) for t in tickers)

        for contract in contracts:
            ib.reqMktData(contract)
        await asyncio.sleep(0.5)  # warm up past the initial bursts
        ib.pendingTickersEvent += on_pending
        before = (await http_get(sim.control_port, "/health"))["sessions"][0]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        ib.pendingTickersEvent -= on_pending
        after = (await http_get(sim.control_port, "/health"))["sessions"][0]
        ib.disconnect()
    sent = after["tick_frames_sent"] - before["tick_frames_sent"]
    dropped = after["tick_frames_dropped"] - before["tick_frames_dropped"]
    return {
        "scenario": f"ticks interval={tick_interval * 1000:g}ms",
        "tick_interval_s": tick_interval,
        "server_frames_per_s": round(sent / elapsed),
        "server_dropped_per_s": round(dropped / elapsed),
        "client_ticks_per_s": round(ticks / elapsed),
        "client_updates_per_s": round(updates / elapsed),
        "kept_up": dropped == 0,
    }


async def bench_orders(count: int, *, unthrottled: bool, rate: float) -> Summary:
    config: dict[str, Any] = {"market": {"seed": 1, "tick_interval": 0.25}}
    if unthrottled:
        config["limits"] = {"max_msgs_per_second": 1_000_000}
    async with Simulator(config) as sim:
        ib = ib_async.IB()
        if unthrottled:
            ib.client.MaxRequests = 0
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=10)
        aapl = ib_async.Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(aapl)
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for n in range(count):
            if not unthrottled:
                next_at += 1 / rate
                await asyncio.sleep(max(next_at - loop.time(), 0))
            done = loop.create_future()

            def on_status(trade: Any, done: asyncio.Future[None] = done) -> None:
                if trade.orderStatus.status == "Filled" and not done.done():
                    done.set_result(None)

            started = time.perf_counter()
            trade = ib.placeOrder(aapl, ib_async.MarketOrder("BUY" if n % 2 == 0 else "SELL", 100))
            trade.statusEvent += on_status
            await asyncio.wait_for(done, 10)
            latencies.append((time.perf_counter() - started) * 1000)
        ib.disconnect()
    latencies.sort()
    return {
        "scenario": f"order MKT->Filled {'unthrottled' if unthrottled else f'paced {rate:g}/s'}",
        "orders": count,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "max_ms": round(latencies[-1], 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
    }


async def main_async(seconds: float, orders: int, order_rate: float) -> list[Summary]:
    results = []
    for interval in (0.01, 0.002, 0.001, 0.0005, 0.0002):
        results.append(await bench_ticks(interval, seconds))
        print(results[-1], flush=True)
    results.append(await bench_orders(orders, unthrottled=False, rate=order_rate))
    print(results[-1], flush=True)
    results.append(await bench_orders(orders, unthrottled=True, rate=order_rate))
    print(results[-1], flush=True)
    return results


def main() -> None:
    """Command line: run, print a table, write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="tick measurement window")
    parser.add_argument("--orders", type=int, default=500, help="orders per latency run")
    parser.add_argument("--order-rate", type=float, default=40.0, help="paced orders per second")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.seconds, args.orders, args.order_rate))

    print()
    print(
        f"{'ticks':30} {'srv frames/s':>12} {'dropped/s':>10} {'cli ticks/s':>12} {'updates/s':>10}"
    )
    for r in results:
        if "tick_interval_s" in r:
            print(
                f"{r['scenario']:30} {r['server_frames_per_s']:>12} {r['server_dropped_per_s']:>10}"
                f" {r['client_ticks_per_s']:>12} {r['client_updates_per_s']:>10}"
            )
    print(f"\n{'orders':36} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in results:
        if "orders" in r:
            print(
                f"{r['scenario']:36} {r['orders']:>5} {r['p50_ms']:>8} {r['p99_ms']:>8}"
                f" {r['max_ms']:>8}"
            )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"gateway_sim-{stamp}.json"
    meta = {
        "when": stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "ib_async": ib_async.__version__,
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
