"""api: ``POST /orders/place`` → acknowledged at the simulator, vs ib_async direct;
``GET /positions`` requests/s with 100 positions.

Everything runs for real, each in its own process: nats-server and PostgreSQL from the
embedded wheels (every package's migrations, one paper portfolio ``bench`` on the
simulator, the instrument AAPL, one API key of scope ``trade``), gateway-sim,
gateway-bridge, order-manager and the api (``python -m ibflow_<name>``, configured by
``IBFLOW_`` variables, started once their ``/readyz`` answers 200). This process is the
HTTP client (httpx, keep-alive) and watches ``IBFLOW_EVENTS`` with the event tap of
``bench/gateway_bridge.py``.

* **place latency**, ``--orders`` (200) at ``--rate`` (10/s, the most the bridge's
  40 msg/s pacer takes without queueing, see ``gateway_bridge.py``), one at a time:
  LMT BUY 10 AAPL @ 100.00 (AAPL starts at 190: the order rests, no fills mixed in).

  - ``api``: wall clock before ``POST /api/v1/ib/orders/place`` → the first
    ``OrderStatusChanged`` Submitted/PreSubmitted of that client order id delivered
    from JetStream (also: → the HTTP 200, which the api answers once the order-manager
    has recorded the order, checked risk and had the bridge's acceptance);
  - ``nats``: the same orders as ``SubmitOrder`` over NATS straight to the
    order-manager → the same Submitted status: the api's own share is the difference;
  - ``direct``: ib_async ``placeOrder`` of the same order on the same simulator →
    the first ``orderStatus`` Submitted/PreSubmitted (``gateway_bridge.bench_direct``).

  The api path crosses HTTP, auth (key cache), the order-manager (validation, risk, a
  PENDING row and its reservation committed before anything is sent, audit), the
  bridge (pacer, IB socket) and back through JetStream: the ratio is what all of that
  costs over a bare socket client.
* **positions throughput**: the bridge's ``positions.bench`` state is replaced by 100
  holdings (``BrokerPositionReported``, as the bridge stores them); ``--clients`` (8)
  keep-alive clients send ``GET /api/v1/ib/positions?portfolio=bench`` back to back for
  ``--seconds`` (10 s); every answer must be 200 with 100 positions. Requests/s and
  latency percentiles. The client runs in this process on the same cores: the figure is
  a lower bound of what the api serves.

    uv run python bench/api.py [--orders 200] [--rate 10] [--clients 8] [--seconds 10]

Prints a table and writes ``bench/results/api-<timestamp>.json``; exits 1 when a
positions answer was not 200 with 100 positions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import yaml
from nats.aio.client import Client as NatsClient

import gateway_bridge as gb
import latency
from ibflow.bus import provision, request
from ibflow.bus import subjects as subj
from ibflow.contracts import (
    BrokerPositionReported,
    CommandAccepted,
    OrderPurpose,
    OrderSide,
    OrderType,
    SubmitOrder,
)
from ibflow.testing.embedded import NatsServer, PostgresServer
from ibflow_api.bridge_state import BRIDGE_STATE_BUCKET
from ibflow_api.keys import Scope, create_key
from latency import Summary

RESULTS = Path(__file__).parent / "results"
PORTFOLIO = gb.PORTFOLIO
HOLDINGS = 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _shown(summary: Summary) -> Summary:
    """A summary without its samples (``bench/run.py`` keeps them for its plots)."""
    return {k: v for k, v in summary.items() if k != "samples_ms"}


def service_environment(
    nats_url: str, database_url: str, http_port: int, **extra: str
) -> dict[str, str]:
    """The environment of one service process (the bridge's, plus ``extra``)."""
    env = gb.bridge_environment(nats_url, database_url, http_port)
    env.update(extra)
    return env


async def seed(database_url: str, sim_port: int) -> str:
    """Portfolio, instrument, API key; returns the key."""
    await gb.seed_portfolio(database_url, sim_port)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO instruments (symbol, con_id, currency, primary_exchange)"
            " VALUES ('AAPL', 265598, 'USD', 'NASDAQ') ON CONFLICT DO NOTHING"
        )
        return (await create_key(conn, "bench", Scope.TRADE)).secret
    finally:
        await conn.close()


async def bench_place(
    http: httpx.AsyncClient, tap: gb.EventTap, count: int, rate: float
) -> list[Summary]:
    acked: list[float] = []
    answered: list[float] = []
    async for i in gb.pace(count, rate):
        coid = f"api-bench-{i}"
        ack = tap.expect(coid)
        started = time.perf_counter()
        response = await http.post(
            "/api/v1/ib/orders/place",
            params={"portfolio": PORTFOLIO},
            json={
                "symbol": gb.SYMBOL,
                "action": "BUY",
                "quantity": str(gb.QUANTITY),
                "order_type": "LMT",
                "limit_price": str(gb.REST_PRICE),
                "client_order_id": coid,
            },
        )
        answered_at = time.perf_counter()
        if response.status_code != 200:
            raise RuntimeError(f"place {coid}: {response.status_code} {response.text}")
        at = await asyncio.wait_for(ack, 30)
        acked.append((at - started) * 1000)
        answered.append((answered_at - started) * 1000)
    return [
        gb.summarise("api: POST place -> Submitted at the simulator", acked),
        gb.summarise("api: POST place -> HTTP 200", answered),
    ]


async def bench_submit(nc: NatsClient, tap: gb.EventTap, count: int, rate: float) -> Summary:
    """The same orders as :func:`bench_place`, sent as ``SubmitOrder`` over NATS straight to
    the order-manager: what the api's HTTP layer adds is the difference."""
    acked: list[float] = []
    async for i in gb.pace(count, rate):
        coid = f"nats-bench-{i}"
        ack = tap.expect(coid)
        cmd = SubmitOrder(
            portfolio_id=PORTFOLIO,
            client_order_id=coid,
            symbol=gb.SYMBOL,
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=gb.QUANTITY,
            limit_price=gb.REST_PRICE,
            purpose=OrderPurpose.MANUAL,
            requested_by="bench",
        )
        started = time.perf_counter()
        await request(nc, subj.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)
        at = await asyncio.wait_for(ack, 30)
        acked.append((at - started) * 1000)
    return gb.summarise("nats: SubmitOrder -> Submitted at the simulator", acked)


async def store_positions(nc: NatsClient, count: int) -> None:
    """Replace the bridge's positions state of the portfolio with ``count`` holdings."""
    holdings = [
        BrokerPositionReported(
            portfolio_id=PORTFOLIO,
            account_id=gb.ACCOUNT,
            con_id=1_000_000 + i,
            symbol=f"SYM{i:03d}",
            position=Decimal(10 + i),
            avg_cost=Decimal("12.34"),
        )
        for i in range(count)
    ]
    payload = json.dumps([json.loads(h.to_json()) for h in holdings]).encode()
    kv = await nc.jetstream().key_value(BRIDGE_STATE_BUCKET)
    await kv.put(f"positions.{PORTFOLIO}", payload)


async def bench_positions(base_url: str, key: str, clients: int, seconds: float) -> Summary:
    samples: list[float] = []
    bad: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=30
        ) as http:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await http.get("/api/v1/ib/positions", params={"portfolio": PORTFOLIO})
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or len(response.json()["positions"]) != HOLDINGS:
                    bad.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    summary = latency.summarise(
        f"GET /positions ({HOLDINGS} holdings), {clients} clients", samples, count_key="requests"
    )
    summary["requests_per_s"] = round(len(samples) / elapsed, 1)
    summary["bad_answers"] = len(bad)
    summary["first_bad"] = bad[:3]
    return summary


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, measure, stop everything (also on Ctrl-C / SIGTERM)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    children: list[gb.Child] = []
    nc: NatsClient | None = None
    nats_server: NatsServer | None = None
    pg: PostgresServer | None = None
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-") as tmp:
        try:
            nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
            pg = PostgresServer.start(Path(tmp) / "pg", die_with_parent=False)
            sim_port, control_port = gb.free_port(), gb.free_port()
            bridge_http, manager_http, api_port = gb.free_port(), gb.free_port(), gb.free_port()
            config = Path(tmp) / "sim.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "market": {"seed": 1, "tick_interval": 0.25},
                        "accounts": [{"id": gb.ACCOUNT, "starting_cash": "100000000"}],
                    }
                )
            )
            sim = gb.Child(
                "gateway-sim",
                [
                    *("-m", "ibflow_gateway_sim", "--port", str(sim_port)),
                    *("--control-port", str(control_port), "--config", str(config)),
                    *("--log-level", "WARNING"),
                ],
            )
            children.append(sim)
            await sim.start()
            key = await seed(pg.url(), sim_port)
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await provision(js, [subj.EVENTS_STREAM, subj.DEAD_LETTER_STREAM])
            await gb.wait_http(sim, control_port, "/health", 20)
            urls = (nats_server.url, pg.url())
            services = [
                ("gateway-bridge", "ibflow_gateway_bridge", bridge_http, {}),
                ("order-manager", "ibflow_order_manager", manager_http, {}),
                ("api", "ibflow_api", api_port, {"IBFLOW_API_PORT": str(api_port)}),
            ]
            for name, module, port, extra in services:
                child = gb.Child(name, ["-m", module], service_environment(*urls, port, **extra))
                children.append(child)
                await child.start()
                await gb.wait_http(child, port, "/readyz", 60)
            await wait_bridge_ready(nc)
            tap = gb.EventTap()
            await tap.start(js)
            await tap.idle()
            base_url = f"http://127.0.0.1:{api_port}"
            async with httpx.AsyncClient(
                base_url=base_url, headers={"X-API-Key": key}, timeout=30
            ) as http:
                place = await bench_place(http, tap, args.orders, args.rate)
            print(_shown(place[0]), flush=True)
            submit = await bench_submit(nc, tap, args.orders, args.rate)
            print(_shown(submit), flush=True)
            direct = await gb.bench_direct(sim_port, args.orders, args.rate)
            print(_shown(direct), flush=True)
            await store_positions(nc, HOLDINGS)
            api_pid = children[-1].pid
            cpu_before = cpu_seconds(api_pid)
            positions = await bench_positions(base_url, key, args.clients, args.seconds)
            positions["api_cpu_ms_per_request"] = round(
                (cpu_seconds(api_pid) - cpu_before) * 1000 / max(positions["requests"], 1), 2
            )
            print(_shown(positions), flush=True)
            for child in children:
                child.check_alive()
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)
            for child in reversed(children):
                await child.stop()
            if pg is not None:
                pg.stop()
            if nats_server is not None:
                nats_server.stop()
    ratio = {
        "p50": round(place[0]["p50_ms"] / direct["p50_ms"], 2),
        "p99": round(place[0]["p99_ms"] / direct["p99_ms"], 2),
    }
    return {
        "latency": [*place, direct, submit],  # bench/run.py reads 0..2 by position
        "ratio_api_over_direct": ratio,
        "positions": positions,
    }


async def wait_bridge_ready(nc: NatsClient, within: float = 60.0) -> None:
    """Until the bridge reports the portfolio's connection ready."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            kv = await nc.jetstream().key_value(BRIDGE_STATE_BUCKET)
            entry = await kv.get(f"connection.{PORTFOLIO}")
            if entry.value and b'"state":"ready"' in entry.value:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the bridge's connection never became ready")


def main() -> None:
    """Command line: run, print a table, write the JSON results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=200, help="place latency orders per path")
    parser.add_argument("--rate", type=float, default=10.0, help="orders offered per second")
    parser.add_argument("--clients", type=int, default=8, help="concurrent GET /positions clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="GET /positions duration")
    args = parser.parse_args()
    if args.orders < 10 or args.rate <= 0 or args.clients < 1 or args.seconds <= 0:
        parser.error("need --orders >= 10, --rate > 0, --clients >= 1, --seconds > 0")
    results = asyncio.run(main_async(args))
    print(f"\nplace latency, LMT BUY 10 AAPL @ 100.00 (rests), {args.rate:g} orders/s")
    columns = ("p50 ms", "p90 ms", "p99 ms", "max ms")
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    print(f"{'path':48} {'n':>5} " + " ".join(f"{c:>9}" for c in columns))
    for r in results["latency"]:
        print(f"{r['scenario']:48} {r['orders']:>5} " + " ".join(f"{r[k]:>9}" for k in keys))
    ratio = results["ratio_api_over_direct"]
    print(f"ratio api/direct: p50 {ratio['p50']}x, p99 {ratio['p99']}x")
    p = results["positions"]
    print(
        f"\n{p['scenario']}: {p['requests_per_s']} req/s over {p['requests']} requests,"
        f" p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, api CPU {p['api_cpu_ms_per_request']}"
        f" ms/request, bad answers {p['bad_answers']}"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"api-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), **results}, indent=2) + "\n")
    print(f"results: {out}")
    if p["bad_answers"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
