"""gateway-bridge: command → broker ack latency vs ib_async direct; events/s of a fill burst.

Everything runs for real, each in its own process: nats-server (JetStream, default fsync
policy) and PostgreSQL from the embedded wheels (migrations of every installed package
applied, one paper portfolio ``bench`` on the simulator, client id 11), gateway-sim
(``python -m ibflow_gateway_sim``) and gateway-bridge (``python -m ibflow_gateway_bridge``,
configured by ``IBFLOW_`` variables, started once ``/readyz`` answers 200). This process
sends the commands and watches ``IBFLOW_EVENTS`` through a JetStream ordered consumer on
every event subject (subscribed before the first command). Nothing is pinned to a core:
five processes share this machine's cores, pinning would crowd the bridge, NATS and this
client onto whatever the simulator leaves.

Order type: **LMT BUY 10 AAPL at 100.00** (AAPL starts at 190): the order rests, so the
first status of each order is ``Submitted`` and no fill traffic is mixed in.

* **latency**, ``--orders`` (300) orders per path, one at a time, offered at ``--rate``
  (10/s) on both paths:

  - ``bridge``: :func:`ibflow.bus.request` of a :class:`PlaceBrokerOrder` on the
    portfolio's command subject → the first ``OrderStatusChanged`` of that client order
    id with ib_status Submitted/PreSubmitted/Filled delivered from JetStream (also: → the
    ``CommandAccepted`` reply);
  - ``direct``: ib_async ``placeOrder`` of the same order on the same simulator (its own
    client id, 77) → the first ``orderStatus`` Submitted/PreSubmitted/Filled.

  Why 10/s and not more: before placing, the bridge checks the broker for the client
  order id (``reqAllOpenOrders`` + ``reqCompletedOrders``, shared only by *concurrent*
  commands), so a lone place command costs 3 messages through the bridge's 40 msg/s
  pacer; 10 orders/s (30 msg/s) is the most that never queues in it. The messages per
  order and the bridge's own ack histogram are read from its ``/metrics``.

* **burst**: ``--burst`` (300) resting LMT BUY orders at 150.00 are placed through the
  bridge (16 commands in flight), then ``POST /market/AAPL/price {"price": "140.00"}``
  on the simulator's control API crosses all of them at once (the latency orders at
  100.00 keep resting). Counted in the stream from the first to the last stored event:
  ExecutionReported + CommissionReported + OrderStatusChanged per second, and checked
  exact: one ExecutionReported and one CommissionReported per execution and one
  ``Filled`` status per order, no Nats-Msg-Id stored twice.

    uv run python bench/gateway_bridge.py [--orders 300] [--burst 300] [--rate 10]

Prints a table and writes ``bench/results/gateway_bridge-<timestamp>.json``; exits 1 when
the burst's event counts are not exact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import ib_async
import nats
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

import latency
from ibflow.bus import provision, request
from ibflow.bus import subjects as subj
from ibflow.contracts.enums import OrderSide, OrderType
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged
from ibflow.contracts.gateway import PlaceBrokerOrder
from ibflow.contracts.replies import CommandAccepted
from ibflow.db.migrations import apply_migrations
from ibflow.testing.devstack import migration_packages
from ibflow.testing.embedded import NatsServer, PostgresServer, free_port
from latency import Summary

RESULTS = Path(__file__).parent / "results"
PORTFOLIO = "bench"
ACCOUNT = "DU1234567"
BRIDGE_CLIENT_ID = 11
DIRECT_CLIENT_ID = 77
SYMBOL = "AAPL"
QUANTITY = Decimal(10)
REST_PRICE = Decimal("100.00")
"""Latency orders (both paths): far below AAPL's 190, they rest."""
BURST_PRICE = Decimal("150.00")
"""Burst orders: rest until the price is moved to CROSS_PRICE."""
CROSS_PRICE = Decimal("140.00")
ACK_STATUSES = frozenset({"Submitted", "PreSubmitted", "Filled"})
BURST_CONCURRENCY = 16
"""Burst commands in flight: the bridge's subscriptions per command subject."""


# --------------------------------------------------------------------------- plumbing


async def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request to 127.0.0.1:``port``; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    raw = await reader.read()
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _die_with_parent() -> None:
    """In the child: SIGTERM when this benchmark dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Child:
    """A Python module run as a subprocess in its own session (the terminal's Ctrl-C
    reaches only this benchmark, which stops it with SIGTERM; it also gets SIGTERM if
    the benchmark dies without stopping it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.args,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}")

    async def stop(self, grace: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def wait_http(child: Child, port: int, path: str, within: float) -> None:
    """Poll ``GET path`` until it answers 200 (the child must stay alive)."""
    deadline = time.monotonic() + within
    last = "no answer"
    while True:
        child.check_alive()
        try:
            status, body = await http(port, "GET", path)
            if status == 200:
                return
            last = f"{status} {body[:300].decode(errors='replace')}"
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name}: {path} not 200 within {within:g}s ({last})")
        await asyncio.sleep(0.1)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if sample.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def summarise(name: str, samples_ms: Sequence[float]) -> Summary:
    """:func:`latency.summarise` counting orders."""
    return latency.summarise(name, samples_ms, count_key="orders")


def place_command(coid: str, price: Decimal) -> PlaceBrokerOrder:
    return PlaceBrokerOrder(
        portfolio_id=PORTFOLIO,
        client_order_id=coid,
        symbol=SYMBOL,
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=QUANTITY,
        limit_price=price,
    )


# --------------------------------------------------------------------------- event tap


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of the events stream as the ordered consumer delivered it."""

    seq: int
    subject: str
    stored_at: datetime
    msg_id: str
    data: bytes


class EventTap:
    """Every message of ``IBFLOW_EVENTS`` from now on (JetStream ordered consumer), and
    the first ack-status arrival time of the client order ids someone waits for."""

    def __init__(self) -> None:
        self.items: list[Stored] = []
        self.last_arrival = time.perf_counter()
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._status_subject = subj.order_status(PORTFOLIO)
        self.filled: set[str] = set()

    async def start(self, js: JetStreamContext) -> None:
        await js.subscribe(
            subj.EVENTS_STREAM.subjects[0],
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    def expect(self, coid: str) -> asyncio.Future[float]:
        """A future set to ``perf_counter()`` at the first ack status of ``coid``."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[coid] = future
        return future

    @property
    def last_seq(self) -> int:
        return self.items[-1].seq if self.items else 0

    async def _on_msg(self, msg: Msg) -> None:
        arrived = time.perf_counter()
        self.last_arrival = arrived
        meta = msg.metadata
        self.items.append(
            Stored(
                meta.sequence.stream,
                msg.subject,
                meta.timestamp,
                (msg.headers or {}).get("Nats-Msg-Id", ""),
                msg.data,
            )
        )
        if msg.subject != self._status_subject:
            return
        status = OrderStatusChanged.from_json(msg.data)
        coid = status.client_order_id or ""
        if status.ib_status == "Filled":
            self.filled.add(coid)
        if status.ib_status in ACK_STATUSES:
            future = self._waiters.pop(coid, None)
            if future is not None and not future.done():
                future.set_result(arrived)

    async def idle(self, quiet: float = 0.5, within: float = 30.0) -> None:
        """Wait until no event arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + within
        while True:
            left = quiet - (time.perf_counter() - self.last_arrival)
            if left <= 0 or time.monotonic() > deadline:
                return
            await asyncio.sleep(min(left, 0.05))


async def wait_for_condition(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- scenarios


async def pace(count: int, rate: float) -> AsyncIterator[int]:
    """Yield 0..count-1, the i-th not before ``start + i / rate`` (later if the
    previous order took longer than the interval)."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for i in range(count):
        await asyncio.sleep(max(next_at - loop.time(), 0))
        next_at += 1 / rate
        yield i


async def bench_bridge(
    nc: NatsClient, tap: EventTap, bridge_http: int, count: int, rate: float
) -> list[Summary]:
    subject = subj.place_broker_order(PORTFOLIO)
    before = (await http(bridge_http, "GET", "/metrics"))[1].decode()
    acks: list[float] = []
    replies: list[float] = []
    async for i in pace(count, rate):
        cmd = place_command(f"lat-{i}", REST_PRICE)
        acked = tap.expect(cmd.client_order_id)
        started = time.perf_counter()
        await request(nc, subject, cmd, CommandAccepted, timeout=30)
        replied = time.perf_counter()
        at = await asyncio.wait_for(acked, 30)
        acks.append((at - started) * 1000)
        replies.append((replied - started) * 1000)
    after = (await http(bridge_http, "GET", "/metrics"))[1].decode()
    labels = {"portfolio": PORTFOLIO}

    def delta(name: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ack_count = delta("ibflow_bridge_order_ack_seconds_count")
    inside = {
        "paced_messages_per_order": round(delta("ibflow_bridge_paced_messages_total") / count, 2),
        "bridge_ack_histogram_mean_ms": round(
            delta("ibflow_bridge_order_ack_seconds_sum") / ack_count * 1000, 3
        )
        if ack_count
        else None,
    }
    status = summarise("bridge: request -> OrderStatusChanged", acks) | inside
    reply = summarise("bridge: request -> CommandAccepted", replies)
    return [status, reply]


async def bench_direct(sim_port: int, count: int, rate: float) -> Summary:
    ib = ib_async.IB()
    await ib.connectAsync("127.0.0.1", sim_port, clientId=DIRECT_CLIENT_ID, timeout=10)
    try:
        contract = ib_async.Stock(SYMBOL, "SMART", "USD")
        await ib.qualifyContractsAsync(contract)
        loop = asyncio.get_running_loop()
        acks: list[float] = []
        async for _ in pace(count, rate):
            done: asyncio.Future[float] = loop.create_future()

            def on_status(trade: Any, done: asyncio.Future[float] = done) -> None:
                if trade.orderStatus.status in ACK_STATUSES and not done.done():
                    done.set_result(time.perf_counter())

            started = time.perf_counter()
            trade = ib.placeOrder(
                contract, ib_async.LimitOrder("BUY", float(QUANTITY), float(REST_PRICE))
            )
            trade.statusEvent += on_status
            at = await asyncio.wait_for(done, 30)
            acks.append((at - started) * 1000)
    finally:
        ib.disconnect()
    return summarise("direct: ib_async placeOrder -> orderStatus", acks)


async def bench_burst(
    nc: NatsClient, js: JetStreamContext, tap: EventTap, control_port: int, count: int
) -> Summary:
    subject = subj.place_broker_order(PORTFOLIO)
    coids = [f"burst-{i}" for i in range(count)]
    acked = [tap.expect(coid) for coid in coids]
    slots = asyncio.Semaphore(BURST_CONCURRENCY)

    async def place(coid: str) -> None:
        async with slots:
            await request(
                nc, subject, place_command(coid, BURST_PRICE), CommandAccepted, timeout=60
            )

    started = time.perf_counter()
    await asyncio.gather(*(place(coid) for coid in coids))
    await asyncio.wait_for(asyncio.gather(*acked), 60)
    placing_s = time.perf_counter() - started
    await tap.idle()
    start_seq = tap.last_seq
    burst = set(coids)

    def counts() -> Counter[str]:
        return Counter(item.subject for item in tap.items if item.seq > start_seq)

    execution, commission = subj.execution(PORTFOLIO), subj.commission(PORTFOLIO)
    moved = time.perf_counter()
    status, body = await http(
        control_port, "POST", f"/market/{SYMBOL}/price", {"price": str(CROSS_PRICE)}
    )
    if status != 200:
        raise RuntimeError(f"moving the price failed: {status} {body!r}")
    await wait_for_condition(
        lambda: (
            counts()[execution] >= count and counts()[commission] >= count and burst <= tap.filled
        ),
        60,
        f"{count} executions, commissions and Filled statuses",
    )
    all_seen = time.perf_counter()
    await tap.idle(quiet=1.0)  # anything late (a duplicate) would show up now
    info = await js.stream_info(subj.EVENTS_STREAM.name)
    window = [item for item in tap.items if item.seq > start_seq]

    status_subject = subj.order_status(PORTFOLIO)
    executions = [ExecutionReported.from_json(i.data) for i in window if i.subject == execution]
    commissions = [CommissionReported.from_json(i.data) for i in window if i.subject == commission]
    statuses = [OrderStatusChanged.from_json(i.data) for i in window if i.subject == status_subject]
    exec_ids = [e.exec_id for e in executions]
    filled = Counter(s.client_order_id for s in statuses if s.ib_status == "Filled")
    measured = [i for i in window if i.subject in {execution, commission, status_subject}]
    span = (measured[-1].stored_at - measured[0].stored_at).total_seconds() if measured else 0.0
    buckets = Counter(
        int((i.stored_at - measured[0].stored_at).total_seconds() * 10) for i in measured
    )
    msg_ids = [i.msg_id for i in window]
    checks = {
        "stream_matches_tap": info.state.last_seq - start_seq == len(window),
        "one_execution_per_order": len(executions) == count
        and Counter(e.client_order_id for e in executions) == Counter(coids),
        "exec_ids_unique": len(set(exec_ids)) == len(exec_ids),
        "one_commission_per_execution": sorted(c.exec_id for c in commissions) == sorted(exec_ids),
        "one_filled_status_per_order": set(filled) == burst and set(filled.values()) == {1},
        "no_msg_id_stored_twice": len(set(msg_ids)) == len(msg_ids),
    }
    other = Counter(".".join(i.subject.split(".")[3:5]) for i in window if i not in measured)
    return {
        "scenario": f"burst: {count} resting LMT crossed at once",
        "orders": count,
        "placing_s": round(placing_s, 2),
        "execution_reported": len(executions),
        "commission_reported": len(commissions),
        "order_status_changed": len(statuses),
        "order_status_by_ib_status": dict(Counter(s.ib_status for s in statuses)),
        "other_events": dict(other),
        "first_to_last_stored_s": round(span, 3),
        "events_per_s": round(len(measured) / span, 1) if span > 0 else None,
        "price_move_to_all_seen_s": round(all_seen - moved, 3),
        "stored_per_100ms": [buckets[n] for n in range(max(buckets, default=-1) + 1)],
        "checks": checks,
        "exact": all(checks.values()),
    }


# --------------------------------------------------------------------------- setup


async def _report_nats_error(exc: Exception) -> None:
    print(f"nats client error: {exc!r}", file=sys.stderr, flush=True)


async def seed_portfolio(database_url: str, sim_port: int) -> None:
    await apply_migrations(database_url, *migration_packages())
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO portfolios (id, name, broker_host, broker_port, client_id, account, cash)"
            " VALUES ($1, 'gateway-bridge bench', '127.0.0.1', $2, $3, $4, 1000000)",
            PORTFOLIO,
            sim_port,
            BRIDGE_CLIENT_ID,
            ACCOUNT,
        )
    finally:
        await conn.close()


def bridge_environment(nats_url: str, database_url: str, http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IBFLOW_")}
    if "IBFLOW_EVENT_LOOP" in os.environ:  # A/B the event loop: uvloop (default) / asyncio
        env["IBFLOW_EVENT_LOOP"] = os.environ["IBFLOW_EVENT_LOOP"]
    env.update(
        IBFLOW_NATS_URL=nats_url,
        IBFLOW_DATABASE_URL=database_url,
        IBFLOW_HTTP_HOST="127.0.0.1",
        IBFLOW_HTTP_PORT=str(http_port),
        IBFLOW_LOG_LEVEL="WARNING",
        IBFLOW_LOG_FORMAT="text",
        IBFLOW_GATEWAY_TYPE="simulator",
        PYTHONUNBUFFERED="1",
    )
    return env


async def main_async(orders: int, burst: int, rate: float) -> dict[str, Any]:
    """Start everything, run the three measurements, stop everything (also on Ctrl-C or
    SIGTERM: the first one cancels the run, the teardown then runs to its end)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted: list[int] = []

    def interrupt(signum: int) -> None:
        if not interrupted:
            print(f"\n{signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
            task.cancel()
        interrupted.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig)
    children: list[Child] = []
    nc: NatsClient | None = None
    nats_server: NatsServer | None = None
    pg: PostgresServer | None = None
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-") as tmp:
        try:
            # Own sessions: the terminal's Ctrl-C reaches only this process, which stops
            # the bridge while NATS and PostgreSQL are still up, then them.
            nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
            pg = PostgresServer.start(Path(tmp) / "pg", die_with_parent=False)
            sim_port, control_port, bridge_http = free_port(), free_port(), free_port()
            config = Path(tmp) / "sim.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "market": {"seed": 1, "tick_interval": 0.25},
                        "accounts": [{"id": ACCOUNT, "starting_cash": "100000000"}],
                    }
                )
            )
            sim = Child(
                "gateway-sim",
                [
                    *("-m", "ibflow_gateway_sim", "--port", str(sim_port)),
                    *("--control-port", str(control_port), "--config", str(config)),
                    *("--log-level", "WARNING"),
                ],
            )
            children.append(sim)
            await sim.start()
            await seed_portfolio(pg.url(), sim_port)
            nc = await nats.connect(nats_server.url, error_cb=_report_nats_error)
            js = nc.jetstream()
            await provision(js, [subj.EVENTS_STREAM])
            await wait_http(sim, control_port, "/health", 20)
            bridge = Child(
                "gateway-bridge",
                ["-m", "ibflow_gateway_bridge"],
                bridge_environment(nats_server.url, pg.url(), bridge_http),
            )
            children.append(bridge)
            await bridge.start()
            print(f"gateway-sim pid {sim.pid}, gateway-bridge pid {bridge.pid}", flush=True)
            await wait_http(bridge, bridge_http, "/readyz", 60)
            tap = EventTap()
            await tap.start(js)
            await tap.idle()  # the bridge's startup snapshot and account values

            latency = await bench_bridge(nc, tap, bridge_http, orders, rate)
            print(latency[0], flush=True)
            burst_result = await bench_burst(nc, js, tap, control_port, burst)
            print(burst_result, flush=True)
            direct = await bench_direct(sim_port, orders, rate)
            print(direct, flush=True)
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
        "p50": round(latency[0]["p50_ms"] / direct["p50_ms"], 2),
        "p99": round(latency[0]["p99_ms"] / direct["p99_ms"], 2),
    }
    return {"latency": [*latency, direct], "ratio_bridge_over_direct": ratio, "burst": burst_result}


def main() -> None:
    """Command line: run, print a table, write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="latency orders per path")
    parser.add_argument("--burst", type=int, default=300, help="orders filled at once")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="latency orders offered per second (both paths)"
    )
    args = parser.parse_args()
    if args.orders < 10 or args.burst < 1 or args.rate <= 0:
        parser.error("need --orders >= 10, --burst >= 1, --rate > 0")
    results = asyncio.run(main_async(args.orders, args.burst, args.rate))

    print(f"\nlatency, LMT BUY {QUANTITY} {SYMBOL} @ {REST_PRICE} (rests), {args.rate:g} orders/s")
    columns = ("p50 ms", "p90 ms", "p99 ms", "max ms", "first10%", "last10%")
    print(f"{'path':44} {'n':>5} " + " ".join(f"{c:>9}" for c in columns))
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "first_10pct_p50_ms", "last_10pct_p50_ms")
    for r in results["latency"]:
        print(f"{r['scenario']:44} {r['orders']:>5} " + " ".join(f"{r[k]:>9}" for k in keys))
    ratio = results["ratio_bridge_over_direct"]
    bridge = results["latency"][0]
    print(
        f"ratio bridge/direct: p50 {ratio['p50']}x, p99 {ratio['p99']}x;"
        f" bridge pacer messages/order {bridge['paced_messages_per_order']},"
        f" bridge-internal ack mean {bridge['bridge_ack_histogram_mean_ms']} ms"
    )
    b = results["burst"]
    print(
        f"\n{b['scenario']}: {b['execution_reported']} ExecutionReported,"
        f" {b['commission_reported']} CommissionReported,"
        f" {b['order_status_changed']} OrderStatusChanged {b['order_status_by_ib_status']}"
        f" (+ other: {b['other_events']})"
    )
    print(
        f"  {b['events_per_s']} events/s over {b['first_to_last_stored_s']} s first->last stored;"
        f" price move -> all seen {b['price_move_to_all_seen_s']} s;"
        f" placing took {b['placing_s']} s; exact: {b['exact']}"
        + ("" if b["exact"] else f" {b['checks']}")
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"gateway_bridge-{stamp}.json"
    meta = {
        "when": stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "ib_async": ib_async.__version__,
        "orders": args.orders,
        "burst": args.burst,
        "rate": args.rate,
        "order": f"LMT BUY {QUANTITY} {SYMBOL} @ {REST_PRICE}",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written {out}")
    if not b["exact"]:
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
