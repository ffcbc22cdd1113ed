"""The real path, fill at the simulator → booked by the order-manager: latency at a steady
rate, a morning burst of orders on one connection (pacing), and a burst of executions.

Everything that is ibflow runs as its own process, started as ``make run`` would start
it: embedded nats-server (JetStream, default fsync policy) and PostgreSQL (synchronous
commit, plus ``track_commit_timestamp = on``), the migrations of every installed
package, ``python -m ibflow_gateway_bridge``, ``ibflow_order_manager``,
``ibflow_position_monitor`` and ``ibflow_api`` (the scheduler is left out: a session
event it fires, such as the close-out, would act on the bench's book mid-run).
**gateway-sim runs inside this process** (``GatewaySimulator`` on a TCP port, spoken to
by the bridge's unmodified ib_async over the real TWS protocol) so that the moment of a
fill and of a ``placeOrder``'s arrival can be read at the simulator itself: its
``dispatch`` (engine events → client frames) and ``place_order`` are wrapped to read
the wall clock first. Its market does not move by itself (``auto_advance: false``,
volatility 0): this process decides when fills happen. Orders fill in lots of ``LOT``
shares, one lot per order per matching run (``fill_lot_size``, ``executions_per_check:
1``), so partial fills are the norm.

Phases, in this order, all booked in one portfolio ``bench`` (client id 11):

1. **execution → committed**, ``latency_executions`` (1,000) at ``rate`` (200/s): 1 in 5
   as many BUY LMT orders of ``5 x LOT`` AAPL, submitted through the order-manager's
   ``SubmitOrder`` and resting (AAPL at 190) at 170.00, 169.95, 169.90, ... Every
   ``1/rate`` s the simulator fills one lot: AAPL is moved to just under the next
   order's limit (that order alone is crossed, its first lot fills), then its matching
   is run four times (one lot each). Five partial fills per order, one execution at a
   time, at a steady rate. Each sample: the wall clock just before the simulator sends
   the execDetails → ``pg_xact_commit_timestamp`` of the transaction that inserted the
   execution's row (``bench_xid xid8 DEFAULT pg_current_xact_id()`` added to
   ``executions``, as in ``bench/order_manager.py``). Split at the JetStream timestamp
   of the bridge's ``ExecutionReported`` (same machine clock): simulator → stored by
   the bridge, stored → committed by the order-manager.
2. **pacing**, ``orders`` (500) BUY LMT ``LOT x lots`` AAPL @ 130.00 (resting) submitted at
   once (64 ``SubmitOrder`` requests in flight; the order-manager serves 8 at a time) —
   the morning burst of one portfolio on its one IB connection: placeOrder messages per
   second at the simulator (first to last, and the busiest sliding second), error 100
   sent by the simulator (its 50 msg/s limit: must be 0), first SubmitOrder → last
   ``Submitted`` status stored in JetStream (every order acknowledged by the broker).
3. **burst**: AAPL moved to 120.00 and the simulator's matching run ``lots`` times back to
   back: ``orders x lots`` executions (10,000 with the defaults, partial fills of every
   order), each with its commission, order status, position and account updates. First
   fill → last execution committed: executions/s; first fill → everything booked (every
   execution with its commission, every order ``FILLED``): time to drain. CPU of every
   process over the burst.

Exact checks at the end (exit 1 if one fails), ibflow's books against the simulator's
own account: the same executions (ids, shares, prices, commissions), one transaction per
execution, every order ``FILLED`` with its quantity, no cash left reserved, the cash
change equal to the simulator's to the cent, the position equal to the simulator's (in
the executions booked and in the bridge's reported broker position), nothing
dead-lettered, no error 100.

    uv run python bench/system.py [--rate 200] [--latency-executions 1000] [--orders 500]
                                  [--lots 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

sys.path.insert(0, str(Path(__file__).parent))

import gateway_bridge as gb
import latency
import profiling
from api import wait_bridge_ready
from ibflow.bus import provision, request
from ibflow.bus import subjects as subj
from ibflow.contracts import (
    CommandAccepted,
    ExecutionReported,
    OrderPurpose,
    OrderSide,
    OrderStatusChanged,
    OrderType,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.testing.devstack import migration_packages
from ibflow.testing.embedded import NatsServer, PostgresServer
from ibflow_api.bridge_state import BRIDGE_STATE_BUCKET
from ibflow_api.keys import Scope, create_key
from ibflow_gateway_sim import session as sim_session
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.domain import ExecutionOccurred
from ibflow_gateway_sim.server import GatewaySimulator
from latency import Summary
from order_manager import CpuMeter

RESULTS = Path(__file__).parent / "results"
PORTFOLIO = gb.PORTFOLIO
ACCOUNT = gb.ACCOUNT
SYMBOL = "AAPL"
CON_ID = 265598
START_CASH = Decimal(100_000_000)
SIM_CASH = Decimal(100_000_000)
LOT = 10
"""Shares per execution at the simulator."""
LATENCY_LOTS = 5
"""Executions per latency order."""
LATENCY_STEP = Decimal("0.05")
"""Latency order k rests at ``top - k * LATENCY_STEP`` (170.00 down, the light pass 185.00
down): moving AAPL to just under one order's limit crosses that order alone, so every
matching run fills one lot."""
LIGHT_TOP = Decimal("185.00")
BURST_LIMIT = Decimal("130.00")
SUBMIT_IN_FLIGHT = 64


def _family(root: int) -> set[int]:
    """``root`` and its live descendants (PostgreSQL's backends are the postmaster's)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = (entry / "stat").read_text()
                parents[int(entry.name)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    return family


def _schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for a CPU) summed over ``pid``'s threads."""
    on_cpu = waiting = 0
    with contextlib.suppress(OSError):
        for task in (Path("/proc") / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                fields = (task / "schedstat").read_text().split()
                on_cpu += int(fields[0])
                waiting += int(fields[1])
    return on_cpu, waiting


class SchedMeter:
    """Per process (with its descendants) over a phase: milliseconds on a CPU and
    milliseconds runnable but waiting for one (``/proc/<pid>/task/*/schedstat``). On
    two shared cores the second is the time the machine's other work took from it."""

    BENCH = "bench (simulator + driver)"

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes | {self.BENCH: os.getpid()}
        self.wall = time.perf_counter()
        self.start = {name: self._sample(name, pid) for name, pid in self.processes.items()}

    def _sample(self, name: str, root: int) -> dict[int, tuple[int, int]]:
        pids = {root} if name == self.BENCH else _family(root)
        return {pid: _schedstat(pid) for pid in pids}

    def stop(self, units: int) -> dict[str, Any]:
        """The figures, and CPU milliseconds per unit (execution) of each process."""
        wall = time.perf_counter() - self.wall
        out: dict[str, Any] = {"wall_ms": round(wall * 1000)}
        total = 0.0
        for name, pid in self.processes.items():
            before, after = self.start[name], self._sample(name, pid)
            cpu = sum(a[0] - before.get(p, (0, 0))[0] for p, a in after.items()) / 1e6
            wait = sum(a[1] - before.get(p, (0, 0))[1] for p, a in after.items()) / 1e6
            total += cpu
            out[name] = {
                "on_cpu_ms": round(cpu),
                "waiting_for_cpu_ms": round(wait),
                "cpu_ms_per_execution": round(cpu / units, 3) if units else None,
            }
        out["all_cpu_ms_per_execution"] = round(total / units, 3) if units else None
        return out


class SimProbe:
    """The in-process simulator, wrapped to read the wall clock at each fill and each
    placeOrder it receives, and to count the error 100 it sends."""

    def __init__(self, sim: GatewaySimulator) -> None:
        self.sim = sim
        self.fill_at: dict[str, float] = {}
        self.placed_at: dict[str, float] = {}
        self.rate_errors = 0
        dispatch, place_order = sim.dispatch, sim.place_order

        def timed_dispatch(events: list[Any]) -> None:
            now = time.time()
            for event in events:
                if isinstance(event, ExecutionOccurred):
                    self.fill_at[event.execution.exec_id] = now
            dispatch(events)

        def timed_place_order(session: Any, req: Any) -> None:
            self.placed_at.setdefault(req.order.order_ref or str(req.order_id), time.time())
            place_order(session, req)

        sim.dispatch = timed_dispatch  # type: ignore[method-assign]
        sim.place_order = timed_place_order  # type: ignore[method-assign]
        max_rate_exceeded = sim_session.errors.max_rate_exceeded

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.rate_errors += 1
            return max_rate_exceeded(*args, **kwargs)

        sim_session.errors.max_rate_exceeded = counted  # type: ignore[assignment]
        self.frames: Counter[int] = Counter()
        """IB messages written to each client id (what the bridge has to decode)."""
        self.kinds: Counter[str] = Counter()
        """IB messages written, by message id (every client)."""
        send = sim_session.ClientSession.send
        frames, kinds = self.frames, self.kinds

        def counted_send(session: Any, *out: bytes, droppable: bool = False) -> bool:
            written = send(session, *out, droppable=droppable)
            if written and session.client_id is not None:
                frames[session.client_id] += len(out)
                for frame in out:  # IB message id: the first field after the length
                    kinds[frame[4 : frame.index(b"\0", 4)].decode()] += 1
            return written

        sim_session.ClientSession.send = counted_send  # type: ignore[method-assign]


class Tap:
    """Every message of ``IBFLOW_EVENTS`` while subscribed: subject, JetStream
    timestamp (epoch seconds), data. Parsed afterwards, to stay light."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, bytes]] = []
        self._sub: Any = None

    async def start(self, nc: NatsClient) -> None:
        async def on_msg(msg: Msg) -> None:
            self.items.append((msg.subject, msg.metadata.timestamp.timestamp(), msg.data))

        self._sub = await nc.jetstream().subscribe(
            subj.EVENTS_STREAM.subjects[0],
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def executions_stored(self) -> dict[str, float]:
        subject = subj.execution(PORTFOLIO)
        return {
            ExecutionReported.from_json(data).exec_id: at
            for s, at, data in self.items
            if s == subject
        }

    def first_status(self, statuses: frozenset[str]) -> dict[str, float]:
        """Client order id → JetStream timestamp of its first status in ``statuses``."""
        subject = subj.order_status(PORTFOLIO)
        found: dict[str, float] = {}
        for s, at, data in self.items:
            if s != subject:
                continue
            status = OrderStatusChanged.from_json(data)
            if status.ib_status in statuses and status.client_order_id:
                found.setdefault(status.client_order_id, at)
        return found


def _shown(summary: Summary) -> Summary:
    return {k: v for k, v in summary.items() if k != "samples_ms"}


def submit_command(coid: str, quantity: int, limit: Decimal) -> SubmitOrder:
    return SubmitOrder(
        portfolio_id=PORTFOLIO,
        client_order_id=coid,
        symbol=SYMBOL,
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=Decimal(quantity),
        limit_price=limit,
        purpose=OrderPurpose.MANUAL,
        requested_by="user:bench",
    )


async def wait_until(check: Any, within: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_booked(
    db: asyncpg.Connection[Any], like: str, executions: int, orders: int, stall: float = 20.0
) -> tuple[float, dict[str, int]]:
    """Until ``executions`` executions of orders ``like`` are booked with their commission
    and ``orders`` orders are FILLED; the perf_counter time it was seen. Gives up after
    ``stall`` seconds without progress (the checks then say what is missing)."""
    last: tuple[int, ...] = ()
    last_change = time.perf_counter()
    while True:
        row = await db.fetchrow(
            "SELECT (SELECT count(*) FROM executions WHERE client_order_id LIKE $1) AS booked,"
            " (SELECT count(commission) FROM executions WHERE client_order_id LIKE $1)"
            " AS commissioned,"
            " (SELECT count(*) FROM orders WHERE client_order_id LIKE $1"
            "   AND status = 'FILLED') AS filled",
            like,
        )
        assert row is not None
        now = time.perf_counter()
        seen = {k: int(v) for k, v in row.items()}
        if (
            seen["booked"] >= executions
            and seen["commissioned"] >= executions
            and seen["filled"] >= orders
        ):
            return now, seen
        if tuple(seen.values()) != last:
            last, last_change = tuple(seen.values()), now
        if now - last_change > stall:
            print(f"  {like}: gave up waiting ({seen})", flush=True)
            return now, seen
        await asyncio.sleep(0.05)


async def commit_times(db: asyncpg.Connection[Any], like: str) -> dict[str, float]:
    """exec_id → commit time (epoch s) of the transaction that inserted its row."""
    rows = await db.fetch(
        "SELECT exec_id, extract(epoch FROM pg_xact_commit_timestamp(xid(bench_xid)))::float8"
        " AS committed FROM executions WHERE client_order_id LIKE $1",
        like,
    )
    return {r["exec_id"]: r["committed"] for r in rows}


# --------------------------------------------------------------------------- phases


async def phase_latency(
    nc: NatsClient,
    db: asyncpg.Connection[Any],
    probe: SimProbe,
    tap: Tap,
    count: int,
    rate: float,
    processes: dict[str, int],
    prefix: str = "lat",
    top: Decimal = Decimal("170.00"),
) -> Summary:
    orders = count // LATENCY_LOTS
    coids = [f"{prefix}-{k:05d}" for k in range(orders)]
    limits = [top - LATENCY_STEP * k for k in range(orders)]
    slots = asyncio.Semaphore(8)

    async def submit(coid: str, limit: Decimal) -> None:
        async with slots:
            cmd = submit_command(coid, LOT * LATENCY_LOTS, limit)
            await request(nc, subj.SUBMIT_ORDER, cmd, CommandAccepted, timeout=60)

    await asyncio.gather(*(submit(c, lim) for c, lim in zip(coids, limits, strict=True)))

    async def resting() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM orders WHERE client_order_id LIKE $1 AND status = 'SUBMITTED'",
            f"{prefix}-%",
        )
        return bool(n == orders)

    await wait_until(resting, 60, f"{orders} latency orders SUBMITTED")
    sim = probe.sim
    sched = SchedMeter(processes)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(orders * LATENCY_LOTS):
        await asyncio.sleep(max(start + i / rate - loop.time(), 0))
        k, lot = divmod(i, LATENCY_LOTS)
        if lot == 0:  # cross order k only: ask = its limit - 0.01, above order k+1's limit
            sim.set_price(SYMBOL, limits[k] - Decimal("0.02"))
        else:
            sim.run_matching()
    offered_s = loop.time() - start
    executions = orders * LATENCY_LOTS
    await wait_booked(db, f"{prefix}-%", executions, orders)
    scheduling = sched.stop(count)
    committed = await commit_times(db, f"{prefix}-%")
    stored = tap.executions_stored()
    total, bridge, manager = [], [], []
    ordered = sorted((probe.fill_at[e], e) for e in committed if e in probe.fill_at)
    for filled, exec_id in ordered:  # in fill order
        total.append((committed[exec_id] - filled) * 1000)
        if exec_id in stored:
            bridge.append((stored[exec_id] - filled) * 1000)
            manager.append((committed[exec_id] - stored[exec_id]) * 1000)
    name = f"execution -> committed @{rate:g}/s (fill at the simulator -> commit)"
    return {
        "offered_rate": rate,
        "achieved_rate": round((executions - 1) / offered_s, 1) if offered_s else None,
        "orders": orders,
        "executions": executions,
        "executions_seen_at_simulator": sum(1 for e in committed if e in probe.fill_at),
        "scheduling": scheduling,
        "committed": latency.summarise(name, total, count_key="executions"),
        "sim_to_jetstream": latency.summarise(
            "  fill at the simulator -> ExecutionReported stored (bridge)",
            bridge,
            count_key="executions",
        ),
        "jetstream_to_committed": latency.summarise(
            "  ExecutionReported stored -> committed (order-manager)",
            manager,
            count_key="executions",
        ),
    }


async def phase_pacing(
    nc: NatsClient, probe: SimProbe, tap: Tap, orders: int, lots: int, bridge_http: int
) -> tuple[Summary, list[str]]:
    coids = [f"burst-{j:05d}" for j in range(orders)]
    paced = "ibflow_bridge_paced_messages_total"
    paced_before = gb.metric((await gb.http(bridge_http, "GET", "/metrics"))[1].decode(), paced)
    errors_before = probe.rate_errors
    slots = asyncio.Semaphore(SUBMIT_IN_FLIGHT)
    replies: list[float] = []
    details: list[str] = []

    async def one(coid: str) -> None:
        async with slots:
            reply = await request(
                nc,
                subj.SUBMIT_ORDER,
                submit_command(coid, LOT * lots, BURST_LIMIT),
                CommandAccepted,
                timeout=120,
            )
        replies.append(time.time())
        details.append(reply.detail or "")

    started = time.time()
    await asyncio.gather(*(one(c) for c in coids))
    acked: dict[str, float] = {}

    async def all_acknowledged() -> bool:
        nonlocal acked
        acked = tap.first_status(frozenset({"Submitted", "PreSubmitted"}))
        return all(c in acked for c in coids)

    await wait_until(all_acknowledged, 60, "every burst order Submitted", every=0.2)
    paced_after = gb.metric((await gb.http(bridge_http, "GET", "/metrics"))[1].decode(), paced)
    placed = sorted(probe.placed_at[c] for c in coids if c in probe.placed_at)
    span = placed[-1] - placed[0] if len(placed) > 1 else 0.0
    busiest = 0
    lo = 0
    for hi in range(len(placed)):
        while placed[hi] - placed[lo] >= 1.0:
            lo += 1
        busiest = max(busiest, hi - lo + 1)
    not_submitted = [d for d in details if not d.startswith("SUBMITTED")]
    return {
        "orders": orders,
        "placed_at_simulator": len(placed),
        "orders_per_s": round((len(placed) - 1) / span, 1) if span else None,
        "busiest_second_orders": busiest,
        "bridge_paced_messages": paced_after - paced_before,
        "error_100": probe.rate_errors - errors_before,
        "first_submit_to_all_acknowledged_s": round(max(acked[c] for c in coids) - started, 3),
        "first_submit_to_all_replies_s": round(max(replies) - started, 3),
        "first_submit_to_first_place_s": round(placed[0] - started, 3) if placed else None,
        "replies_not_submitted": len(not_submitted),
    }, coids


async def phase_api(
    db: asyncpg.Connection[Any],
    probe: SimProbe,
    tap: Tap,
    api_port: int,
    key: str,
    count: int,
    rate: float,
) -> Summary:
    """``POST /api/v1/ib/orders/place`` (LMT BUY 10 AAPL @ 100.00, rests) one at a time at
    ``rate``: → placeOrder received by the simulator, → the Submitted status stored in
    JetStream (the broker's acknowledgement as ibflow sees it), → HTTP 200; split at the
    start of the order-manager's transaction that records the order (``created_at``)."""
    coids = [f"api-{i:05d}" for i in range(count)]
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{api_port}", headers={"X-API-Key": key}, timeout=30
    ) as http:
        async for i in gb.pace(count, rate):
            coid = coids[i]
            sent[coid] = time.time()
            response = await http.post(
                "/api/v1/ib/orders/place",
                params={"portfolio": PORTFOLIO},
                json={
                    "symbol": SYMBOL,
                    "action": "BUY",
                    "quantity": "10",
                    "order_type": "LMT",
                    "limit_price": "100.00",
                    "client_order_id": coid,
                },
            )
            answered[coid] = time.time()
            if response.status_code != 200:
                raise RuntimeError(f"place {coid}: {response.status_code} {response.text}")
    acked: dict[str, float] = {}

    async def all_acknowledged() -> bool:
        nonlocal acked
        acked = tap.first_status(frozenset({"Submitted", "PreSubmitted"}))
        return all(c in acked for c in coids)

    await wait_until(all_acknowledged, 30, "every API order Submitted", every=0.1)
    created = {
        r["client_order_id"]: r["created"]
        for r in await db.fetch(
            "SELECT client_order_id, extract(epoch FROM created_at)::float8 AS created"
            " FROM orders WHERE client_order_id LIKE 'api-%'"
        )
    }

    def ms(pairs: list[tuple[float, float]]) -> list[float]:
        return [(b - a) * 1000 for a, b in pairs]

    at_sim = [(sent[c], probe.placed_at[c]) for c in coids]
    return {
        "orders": count,
        "rate": rate,
        "submitted": latency.summarise(
            "API -> broker: POST place -> Submitted stored in JetStream",
            ms([(sent[c], acked[c]) for c in coids]),
            count_key="orders",
        ),
        "at_simulator": latency.summarise(
            "  POST place -> placeOrder received by the simulator", ms(at_sim), count_key="orders"
        ),
        "http_200": latency.summarise(
            "  POST place -> HTTP 200",
            ms([(sent[c], answered[c]) for c in coids]),
            count_key="orders",
        ),
        "post_to_order_recorded": latency.summarise(
            "  POST -> the order-manager's recording transaction begins (api, NATS request)",
            ms([(sent[c], created[c]) for c in coids]),
            count_key="orders",
        ),
        "recorded_to_simulator": latency.summarise(
            "  recording transaction begins -> placeOrder at the simulator (order-manager, bridge)",
            ms([(created[c], probe.placed_at[c]) for c in coids]),
            count_key="orders",
        ),
        "simulator_to_submitted": latency.summarise(
            "  placeOrder at the simulator -> Submitted stored (simulator, bridge, JetStream)",
            ms([(probe.placed_at[c], acked[c]) for c in coids]),
            count_key="orders",
        ),
    }


async def reconnects(bridge_http: int) -> float:
    """The bridge's ``ibflow_bridge_reconnects_total`` (every portfolio)."""
    text = (await gb.http(bridge_http, "GET", "/metrics"))[1].decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("ibflow_bridge_reconnects_total")
    )


async def phase_burst(
    db: asyncpg.Connection[Any],
    probe: SimProbe,
    orders: int,
    lots: int,
    processes: dict[str, int],
    bridge_http: int,
) -> Summary:
    executions = orders * lots
    reconnects_before = await reconnects(bridge_http)
    frames_before = probe.frames[gb.BRIDGE_CLIENT_ID]
    kinds_before = Counter(probe.kinds)
    sim = probe.sim
    cpu = CpuMeter(processes)
    sched = SchedMeter(processes)
    first_fill = time.time()
    started = time.perf_counter()
    sim.set_price(SYMBOL, Decimal("120.00"))
    for _ in range(lots - 1):
        await asyncio.sleep(0)
        sim.run_matching()
    generated_s = time.perf_counter() - started
    drained_at, seen = await wait_booked(db, "burst-%", executions, orders)
    cpu_percent = cpu.stop()
    scheduling = sched.stop(executions)
    bridge_reconnects = await reconnects(bridge_http) - reconnects_before
    frames = probe.frames[gb.BRIDGE_CLIENT_ID] - frames_before
    committed = await commit_times(db, "burst-%")
    last_commit = max(committed.values()) if committed else first_fill
    to_last = last_commit - first_fill
    return {
        "orders": orders,
        "lots_per_order": lots,
        "executions": executions,
        "booked": seen,
        "fills_generated_s": round(generated_s, 3),
        "first_fill_to_last_execution_committed_s": round(to_last, 3),
        "executions_per_s": round(len(committed) / to_last, 1) if to_last > 0 else None,
        "time_to_drain_s": round(drained_at - started, 3),
        "cpu_percent_of_one_core": cpu_percent,
        "scheduling": scheduling,
        "bridge_reconnects": bridge_reconnects,
        "ib_messages_to_bridge": frames,
        "ib_messages_per_execution": round(frames / executions, 2),
        "ib_messages_per_execution_by_id": {
            k: round(n / executions, 2)
            for k, n in (probe.kinds - kinds_before).most_common()
            if n >= executions / 100
        },
    }


# --------------------------------------------------------------------------- checks


async def verify(
    db: asyncpg.Connection[Any],
    nc: NatsClient,
    probe: SimProbe,
    latency_coids: list[str],
    coids: list[str],
) -> tuple[dict[str, bool], Summary]:
    """ibflow's books against the simulator's own account (module docstring)."""
    state = probe.sim.account_state(ACCOUNT)
    assert state is not None
    sim_execs = {
        e["exec_id"]: (Decimal(e["shares"]), Decimal(e["price"]), Decimal(e["commission"]))
        for e in state["executions"]
    }
    rows = await db.fetch(
        "SELECT exec_id, quantity, price, commission FROM executions WHERE portfolio_id = $1",
        PORTFOLIO,
    )
    ours = {r["exec_id"]: (r["quantity"], r["price"], r["commission"]) for r in rows}
    mismatched = [e for e in sim_execs if ours.get(e) != sim_execs[e]]
    transactions = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT exec_id) AS distinct_execs,"
        " coalesce(sum(cash_delta), 0) AS deltas FROM transactions WHERE portfolio_id = $1",
        PORTFOLIO,
    )
    assert transactions is not None
    orders = await db.fetch(
        "SELECT client_order_id, status, quantity, filled_quantity FROM orders"
        " WHERE portfolio_id = $1 AND client_order_id NOT LIKE 'api-%'",
        PORTFOLIO,
    )
    api_orders = await db.fetch(
        "SELECT status, reserved_cash FROM orders WHERE client_order_id LIKE 'api-%'"
    )
    api_reserved = sum((o["reserved_cash"] for o in api_orders), Decimal(0))
    api_resting = sum(
        1 for o in probe.sim.engine.open_orders() if o.request.order_ref.startswith("api-")
    )
    expected_orders = {*latency_coids, *coids}
    bad_orders = [
        o["client_order_id"]
        for o in orders
        if o["status"] != "FILLED" or o["filled_quantity"] != o["quantity"]
    ]
    money = await db.fetchrow("SELECT cash, reserved_cash FROM portfolios WHERE id = $1", PORTFOLIO)
    assert money is not None
    sim_cash_change = Decimal(state["cash"]) - SIM_CASH
    our_cash_change = money["cash"] - START_CASH
    sim_position = sum(
        (Decimal(p["position"]) for p in state["positions"] if p["symbol"] == SYMBOL), Decimal(0)
    )
    booked_position = sum((q for q, _, _ in ours.values()), Decimal(0))

    async def bridge_position() -> Decimal | None:
        try:
            kv = await nc.jetstream().key_value(BRIDGE_STATE_BUCKET)
            entry = await kv.get(f"positions.{PORTFOLIO}")
        except Exception:
            return None
        holdings = json.loads(entry.value or b"[]")
        return sum(
            (Decimal(str(h["position"])) for h in holdings if h["symbol"] == SYMBOL), Decimal(0)
        )

    reported = await bridge_position()
    for _ in range(100):  # the bridge's position report may trail the last fill a little
        if reported == sim_position:
            break
        await asyncio.sleep(0.1)
        reported = await bridge_position()
    dead = (await nc.jetstream().stream_info(subj.DEAD_LETTER_STREAM.name)).state.messages
    details: Summary = {
        "simulator_executions": len(sim_execs),
        "booked_executions": len(ours),
        "executions_not_matching": len(mismatched),
        "transactions": int(transactions["n"]),
        "orders": len(orders),
        "orders_not_filled_exactly": len(bad_orders),
        "simulator_cash_change": str(sim_cash_change),
        "booked_cash_change": str(our_cash_change),
        "sum_of_cash_deltas": str(transactions["deltas"]),
        "reserved_cash": str(money["reserved_cash"]),
        "reserved_by_resting_api_orders": str(api_reserved),
        "api_orders_resting_at_simulator": api_resting,
        "simulator_position": str(sim_position),
        "booked_position": str(booked_position),
        "bridge_reported_position": str(reported),
        "dead_lettered": int(dead),
        "error_100": probe.rate_errors,
    }
    checks = {
        "executions_equal_simulator": not mismatched and len(ours) == len(sim_execs),
        "one_transaction_per_execution": transactions["n"] == len(ours)
        and transactions["distinct_execs"] == len(ours),
        "orders_all_filled_exactly": not bad_orders
        and {o["client_order_id"] for o in orders} == expected_orders,
        "cash_change_equals_simulator": our_cash_change == sim_cash_change
        and transactions["deltas"] == sim_cash_change,
        "no_cash_left_reserved": money["reserved_cash"] == api_reserved,
        "api_orders_resting_at_simulator": api_resting == len(api_orders)
        and all(o["status"] == "SUBMITTED" for o in api_orders),
        "position_equals_simulator": booked_position == sim_position == reported,
        "nothing_dead_lettered": dead == 0,
        "no_error_100": probe.rate_errors == 0,
    }
    return checks, details


# --------------------------------------------------------------------------- run


async def seed(database_url: str, sim_port: int) -> str:
    """Migrations, the bench column, portfolio, instrument; an API key of scope trade."""
    await apply_migrations(database_url, *migration_packages())
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "ALTER TABLE executions ADD COLUMN bench_xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
        )
        await conn.execute(
            "INSERT INTO portfolios (id, name, broker_host, broker_port, client_id, account, cash)"
            " VALUES ($1, 'make bench', '127.0.0.1', $2, $3, $4, $5)",
            PORTFOLIO,
            sim_port,
            gb.BRIDGE_CLIENT_ID,
            ACCOUNT,
            START_CASH,
        )
        await conn.execute(
            "INSERT INTO instruments (symbol, con_id, currency, primary_exchange)"
            " VALUES ($1, $2, 'USD', 'NASDAQ')",
            SYMBOL,
            CON_ID,
        )
        return (await create_key(conn, "bench", Scope.TRADE)).secret
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the three phases and the checks, stop everything (also when
    cancelled: children first, while NATS and PostgreSQL are still up)."""
    result: dict[str, Any] = {}
    children: list[gb.Child] = []
    nc: NatsClient | None = None
    db: asyncpg.Connection[Any] | None = None
    sim: GatewaySimulator | None = None
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-system-") as tmp:
        nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
        pg = PostgresServer.start(
            Path(tmp) / "pg", settings={"track_commit_timestamp": "on"}, die_with_parent=False
        )
        try:
            config = SimConfig.model_validate(
                {
                    "market": {"seed": 1, "auto_advance": False, "volatility": 0.0},
                    "matching": {"fill_lot_size": LOT, "executions_per_check": 1},
                    "accounts": [{"id": ACCOUNT, "starting_cash": str(SIM_CASH)}],
                }
            )
            sim = GatewaySimulator(config)
            probe = SimProbe(sim)
            await sim.start("127.0.0.1", 0)
            sim.set_price(SYMBOL, Decimal("190.00"))
            key = await seed(pg.url(), sim.port)
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await provision(js, [subj.EVENTS_STREAM, subj.DEAD_LETTER_STREAM])
            db = await asyncpg.connect(pg.url())
            ports: dict[str, int] = {}
            for name, module in (
                ("gateway-bridge", "ibflow_gateway_bridge"),
                ("order-manager", "ibflow_order_manager"),
                ("position-monitor", "ibflow_position_monitor"),
                ("api", "ibflow_api"),
            ):
                port = ports[name] = gb.free_port()
                env = gb.bridge_environment(nats_server.url, pg.url(), port)
                env["IBFLOW_API_PORT"] = str(port)
                child = gb.Child(name, ["-m", module], env)
                children.append(child)
                await child.start()
                await gb.wait_http(child, port, "/readyz", 60)
            await wait_bridge_ready(nc)
            tap = Tap()
            await tap.start(nc)
            processes = {c.name: c.pid for c in children} | {
                "postgres": pg.process.pid,
                "nats-server": nats_server.process.pid,
            }
            profile_dir: Path | None = getattr(args, "profile_dir", None)
            result["profiles"] = {}

            async def profiled(label: str, phase: Any) -> Any:
                """Run ``phase``, with py-spy on every process if profiling."""
                if profile_dir is None:
                    return await phase
                profiler = profiling.PhaseProfiler(profile_dir, f"system-{label}")
                await profiler.start()
                try:
                    return await phase
                finally:
                    files = await profiler.stop()
                    result["profiles"][label] = {
                        name: {"file": path} | profiling.summarise(path, profiler.seconds)
                        for name, path in files.items()
                    }

            api_orders = getattr(args, "api_orders", 0)
            if api_orders:
                api_rate = getattr(args, "api_rate", 10.0)
                print(f"system: API -> broker, {api_orders} orders at {api_rate:g}/s", flush=True)
                result["api"] = await profiled(
                    "api",
                    phase_api(db, probe, tap, ports["api"], key, api_orders, api_rate),
                )
                print(f"  {_shown(result['api']['submitted'])}", flush=True)
            light = getattr(args, "light_executions", 0)
            if light:
                light_rate = getattr(args, "light_rate", 50.0)
                print(f"system: execution -> committed, {light} at {light_rate:g}/s", flush=True)
                result["latency_light"] = await profiled(
                    "latency-light",
                    phase_latency(
                        nc, db, probe, tap, light, light_rate, processes, "light", LIGHT_TOP
                    ),
                )
                print(f"  {_shown(result['latency_light']['committed'])}", flush=True)
            print(
                f"system: execution -> committed, {args.latency_executions} at {args.rate:g}/s",
                flush=True,
            )
            result["latency"] = await profiled(
                "latency",
                phase_latency(nc, db, probe, tap, args.latency_executions, args.rate, processes),
            )
            print(f"  {_shown(result['latency']['committed'])}", flush=True)
            print(f"system: pacing, {args.orders} orders submitted at once", flush=True)
            result["pacing"], coids = await profiled(
                "pacing",
                phase_pacing(nc, probe, tap, args.orders, args.lots, ports["gateway-bridge"]),
            )
            print(f"  {result['pacing']}", flush=True)
            await tap.stop()
            print(f"system: burst, {args.orders} orders x {args.lots} lots", flush=True)
            result["burst"] = await profiled(
                "burst",
                phase_burst(db, probe, args.orders, args.lots, processes, ports["gateway-bridge"]),
            )
            print(f"  {result['burst']}", flush=True)
            for child in children:
                child.check_alive()
            latency_coids = [f"lat-{k:05d}" for k in range(result["latency"]["orders"])]
            if "latency_light" in result:
                latency_coids += [
                    f"light-{k:05d}" for k in range(result["latency_light"]["orders"])
                ]
            checks, details = await verify(db, nc, probe, latency_coids, coids)
            result["checks"] = checks
            result["check_details"] = details
            result["exact"] = all(checks.values())
            print(f"  exact: {result['exact']} {details}", flush=True)
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
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=200.0, help="executions/s offered")
    parser.add_argument("--latency-executions", type=int, default=1000, help="latency: executions")
    parser.add_argument("--orders", type=int, default=500, help="pacing/burst: orders")
    parser.add_argument("--lots", type=int, default=20, help="burst: executions per order")
    parser.add_argument(
        "--light-executions", type=int, default=250, help="second latency pass (0: none)"
    )
    parser.add_argument("--light-rate", type=float, default=50.0, help="second pass: rate")
    parser.add_argument("--api-orders", type=int, default=100, help="API -> broker orders")
    parser.add_argument("--api-rate", type=float, default=10.0, help="API orders per second")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"system-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "results": result}, indent=2) + "\n")
    print(f"written {out}")
    if not result.get("exact"):
        print(f"CHECKS FAILED: {[k for k, ok in result['checks'].items() if not ok]}")
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
