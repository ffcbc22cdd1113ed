"""order-manager: execution at the bridge → committed in PostgreSQL; executions/s persisted.

Everything is real: nats-server (JetStream, default fsync policy) and PostgreSQL
(synchronous commit, plus ``track_commit_timestamp = on``) from the embedded wheels,
the migrations of ``ibflow.db`` and ``ibflow_order_manager``, one portfolio ``bench``
with the instrument AAPL, and the order-manager as one or two real subprocesses
(``python -m ibflow_order_manager``, configured by ``IBFLOW_`` variables).

**This process plays the gateway-bridge**, so what is measured is the order-manager's
consumption path alone (no simulator, no bridge): it answers the order-manager's
``PlaceBrokerOrder`` requests at once, and publishes ``ExecutionReported`` and
``CommissionReported`` events exactly as the bridge does (:func:`ibflow.bus.publish` to
``subjects.execution(p)``/``commission(p)``, ``Nats-Msg-Id`` = the event's dedupe key;
the bursts use ``publish_async`` with the same headers). The bridge's own publish
latency is measured by ``bench/gateway_bridge.py``. Orders: BUY LMT 100 AAPL @ 100.00,
each filled in 5 executions of 20, interleaved across orders (every order's k-th fill
before any (k+1)-th), each execution's commission published right after it, as the
bridge does. The latency orders go through the real ``SubmitOrder`` path (risk checks,
cash reservation, "placed" by this bridge: ``SUBMITTED``; the submit rate is reported);
the other phases' orders are copies of one such submitted order's row (only the client
order id differs) plus their reservations, to keep the run short.

* **latency**, ``--light-executions`` 500 at ``--light-rate`` 50/s, then
  ``--latency-executions`` 1,000 at ``--rate`` 200/s: from the wall clock just before
  the execution's publish to the **commit** of the transaction that inserted its
  ``executions`` row. How that commit time is read, and why: the bench adds one column
  to ``executions``, ``bench_xid xid8 DEFAULT pg_current_xact_id()`` (the id of the
  inserting transaction; a default is evaluated once at INSERT, so the commission's
  later UPDATE does not change it, unlike the row's ``xmin``), and reads
  ``pg_xact_commit_timestamp()`` of it. That is PostgreSQL's own wall clock (same
  machine, same ``CLOCK_REALTIME``) taken as the commit record is written, just before
  its WAL flush (~0.3 ms here, ``../shared/docs/limits.md`` row 0): exact per execution,
  no polling quantisation and no load added by polling. The row's ``received_at`` is
  ``now()``, i.e. the start of the transaction, not its commit: it splits the latency
  into *delivery* (publish → transaction begins) and *transaction* (begins → commit).
  Cross-check: the service's own ``ibflow_fill_commit_seconds`` histogram (event
  creation here → after the commit returned there).
* **throughput**, ``--executions`` 5,000 over ``--orders`` 1,000 fresh orders (10,000
  events published pipelined, as fast as JetStream takes them) with ONE and then TWO
  order-manager replicas: first publish → last execution committed (commit timestamps
  again) and → last commission committed; executions/s; the split of each execution
  consumer's time between its booking transaction and the rest; CPU of every process.
  Then exact checks: executions and transactions rows = what was published, every
  commission booked (none left parked), each order's filled quantity, notional and
  commission = the sums of its executions and FILLED with no reservation left,
  portfolio cash = starting cash + sum(cash_delta) = starting cash + what this bench
  computed from the events it sent, reserved cash = the orders' reservations, nothing
  dead-lettered, consumers drained. The latency phases are checked the same way. Exits 1
  if a check fails.
* **floor**, same run, same servers: ``run_floor`` imported from
  ``bench/publish_consume_commit.py`` (bare nats-py ``js.publish`` → ``fetch(1)`` →
  asyncpg transaction of a fill's 3 writes → ``ack``), at ``--rate`` for latency, and
  as fast as possible (a drain, the publisher running alongside as in the bursts) for
  throughput, ``--latency-executions`` messages each.
* ``--profile``: ``py-spy record`` (raw stacks) of every replica during the bursts, and
  ``pg_stat_activity`` sampled every 5 ms: backend-milliseconds per execution running,
  waiting for a lock, for the WAL flush, or idle in a transaction waiting for its
  client, by statement. It perturbs the figures a little.

    uv run python bench/order_manager.py [--rate 200] [--executions 5000] [--orders 1000]

Prints the tables (with ratios to the floor) and writes
``bench/results/order_manager-<timestamp>.json``. About 2 minutes with the defaults
(most of it the bursts, at ~100 executions/s per replica); Ctrl-C (or SIGTERM) stops
the replicas, PostgreSQL and NATS in that order.
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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck

import latency
from ibflow.bus import provision, publish, request, serve
from ibflow.bus import subjects as subj
from ibflow.bus.publisher import message_headers
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_STREAM
from ibflow.contracts import (
    CommandAccepted,
    CommissionReported,
    ExecutionReported,
    OrderPurpose,
    OrderSide,
    OrderType,
    PlaceBrokerOrder,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.testing.embedded import NatsServer, PostgresServer
from latency import Summary
from publish_consume_commit import SCHEMA as FLOOR_SCHEMA
from publish_consume_commit import STREAM as FLOOR_STREAM
from publish_consume_commit import run_floor

RESULTS = Path(__file__).parent / "results"
PORTFOLIO = "bench"
ACCOUNT = "DU1234567"
SYMBOL = "AAPL"
CON_ID = 265598
START_CASH = Decimal(100_000_000)
ORDER_QUANTITY = Decimal(100)
LIMIT_PRICE = Decimal("100.00")
FILLS_PER_ORDER = 5
FILL_SHARES = ORDER_QUANTITY / FILLS_PER_ORDER
SUBMIT_CONCURRENCY = 8
"""Submits in flight: the order-manager serves 8 of a kind at once per replica."""
READY_LINE = re.compile(r"order-manager ready \(http port (\d+)\)")
DURABLES = ("order-manager-facts",)


def fill_price(n: int) -> Decimal:
    """The price of fill ``n``: 99.50..99.99, never above the limit."""
    return Decimal("99.50") + Decimal(n % 50) / 100


def commission_of(n: int) -> Decimal:
    """IB-like commission of fill ``n``: 0.35..0.44."""
    return Decimal("0.35") + Decimal(n % 10) / 100


# --------------------------------------------------------------------------- plumbing


def _die_with_parent() -> None:
    """In the child: SIGTERM when this benchmark dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Replica:
    """One order-manager as a subprocess in its own session (so a terminal's Ctrl-C
    reaches only the benchmark, which stops it with SIGTERM); output to a log file."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.http_port: int | None = None

    async def start(self, within: float = 30.0) -> float:
        """Start it; seconds until it logged that it is ready."""
        started = time.monotonic()
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ibflow_order_manager",
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        while time.monotonic() < started + within:
            match = READY_LINE.search(self.log.read_text(errors="replace"))
            if match:
                self.http_port = int(match.group(1))
                return time.monotonic() - started
            self.check_alive()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {within:g}s:\n{self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return await proc.wait()

    async def metrics(self) -> str:
        """Its ``/metrics`` text."""
        assert self.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
        writer.close()
        return raw.partition(b"\r\n\r\n")[2].decode()


def histogram(text: str, name: str) -> dict[str, float]:
    """``sum``, ``count`` and cumulative ``le`` buckets of an unlabelled histogram."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == f"{name}_sum":
            found["sum"] = float(value)
        elif sample == f"{name}_count":
            found["count"] = float(value)
        elif sample.startswith(f"{name}_bucket"):
            bound = re.search(r'le="([^"]+)"', sample)
            if bound:
                found[bound.group(1)] = float(value)
    return found


def service_histogram(before: dict[str, float], after: dict[str, float]) -> Summary:
    """The service's fill→commit histogram over a phase: mean, bucket of the median/p99."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    if count <= 0:
        return {"count": 0}
    total = after.get("sum", 0.0) - before.get("sum", 0.0)
    bounds = sorted(
        ((float(k), after[k] - before.get(k, 0.0)) for k in after if k not in ("sum", "count")),
        key=lambda kv: kv[0],
    )

    def upper_bound(q: float) -> float:
        return next((bound for bound, n in bounds if n >= q * count), float("inf"))

    return {
        "count": int(count),
        "mean_ms": round(total / count * 1000, 3),
        "p50_at_most_ms": upper_bound(0.5) * 1000,
        "p99_at_most_ms": upper_bound(0.99) * 1000,
    }


def summarise(name: str, samples_ms: Sequence[float]) -> Summary:
    """:func:`latency.summarise` counting messages."""
    return latency.summarise(name, samples_ms, count_key="messages")


# --------------------------------------------------------------------------- the bridge


@dataclass
class FakeBridge:
    """The gateway-bridge's side of the order-manager: accepts every ``PlaceBrokerOrder``
    at once (IB ids assigned here), and publishes fills as the bridge would."""

    nc: NatsClient
    ib_ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    """client order id → (IB order id, permId)."""
    expected_cash: Decimal = START_CASH
    """Starting cash + every published execution's cash effect, computed here."""
    _next_id: int = 1000

    async def start(self) -> None:
        await serve(self.nc, subj.place_broker_order(PORTFOLIO), PlaceBrokerOrder, self._place)

    def assign(self, coid: str) -> None:
        """IB's order id and permId for ``coid`` (once)."""
        if coid not in self.ib_ids:
            self._next_id += 1
            self.ib_ids[coid] = (self._next_id, 900_000_000 + self._next_id)

    async def _place(self, cmd: PlaceBrokerOrder) -> CommandAccepted:
        self.assign(cmd.client_order_id)
        return CommandAccepted.of(
            cmd, client_order_ids=(cmd.client_order_id,), detail="Submitted (bench bridge)"
        )

    def fill(self, coid: str, k: int, n: int) -> tuple[ExecutionReported, CommissionReported]:
        """Fill ``k`` (0-based) of order ``coid``, the ``n``-th of its phase."""
        order_id, perm_id = self.ib_ids[coid]
        price = fill_price(n)
        cum = FILL_SHARES * (k + 1)
        exec_id = f"{coid}.{k + 1:02d}"
        execution = ExecutionReported(
            portfolio_id=PORTFOLIO,
            account_id=ACCOUNT,
            exec_id=exec_id,
            order_id=order_id,
            perm_id=perm_id,
            client_order_id=coid,
            symbol=SYMBOL,
            con_id=CON_ID,
            side=OrderSide.BUY,
            shares=FILL_SHARES,
            price=price,
            cum_qty=cum,
            avg_price=price,
            exchange="ISLAND",
            executed_at=datetime.now(UTC),
        )
        commission = CommissionReported(
            portfolio_id=PORTFOLIO, exec_id=exec_id, commission=commission_of(n), currency="USD"
        )
        self.expected_cash -= FILL_SHARES * price + commission.commission
        return execution, commission


def plan(prefix: str, orders: int, executions: int) -> list[tuple[str, int]]:
    """``(client order id, fill index)`` in publishing order: the k-th fill of every
    order before any (k+1)-th, so consecutive fills hit different orders."""
    coids = [f"{prefix}-{j:05d}" for j in range(orders)]
    return [(coids[n % orders], n // orders) for n in range(executions)]


async def submit_orders(nc: NatsClient, prefix: str, count: int) -> Summary:
    """Create ``count`` orders through the order-manager's SubmitOrder; all must be
    accepted and SUBMITTED."""
    slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    details: list[str] = []

    async def one(j: int) -> None:
        cmd = SubmitOrder(
            portfolio_id=PORTFOLIO,
            client_order_id=f"{prefix}-{j:05d}",
            symbol=SYMBOL,
            side=OrderSide.BUY,
            order_type=OrderType.LMT,
            quantity=ORDER_QUANTITY,
            limit_price=LIMIT_PRICE,
            purpose=OrderPurpose.MANUAL,
            requested_by="user:bench",
        )
        async with slots:
            accepted = await request(nc, subj.SUBMIT_ORDER, cmd, CommandAccepted, timeout=30)
        details.append(accepted.detail or "")

    started = time.perf_counter()
    await asyncio.gather(*(one(j) for j in range(count)))
    seconds = time.perf_counter() - started
    not_submitted = [d for d in details if not d.startswith("SUBMITTED")]
    if not_submitted:
        raise RuntimeError(f"{len(not_submitted)} submits not SUBMITTED, e.g. {not_submitted[0]}")
    return {"orders": count, "seconds": round(seconds, 2), "orders_per_s": round(count / seconds)}


TEMPLATE = "template-00000"
"""An order created through SubmitOrder at setup and never filled: the burst orders are
copies of its row (the ``SUBMITTED`` row a submit and the bridge's answer leave)."""


async def clone_orders(
    db: asyncpg.Connection[Any], bridge: FakeBridge, prefix: str, count: int
) -> Summary:
    """Create ``count`` orders as copies of :data:`TEMPLATE` (only the client order id
    differs) and add their reservations to the portfolio, in one transaction: what
    ``count`` submits would leave, without spending minutes on them."""
    coids = [f"{prefix}-{j:05d}" for j in range(count)]
    started = time.perf_counter()
    async with db.transaction():
        await db.execute(
            """
            INSERT INTO orders
            SELECT (jsonb_populate_record(t, jsonb_build_object('client_order_id', c))).*
              FROM orders t, unnest($2::text[]) AS c WHERE t.client_order_id = $1
            """,
            TEMPLATE,
            coids,
        )
        await db.execute(
            "UPDATE portfolios SET reserved_cash = reserved_cash + $2::numeric *"
            " (SELECT reserved_cash FROM orders WHERE client_order_id = $1),"
            " revision = revision + 1 WHERE id = $3",
            TEMPLATE,
            count,
            PORTFOLIO,
        )
    for coid in coids:
        bridge.assign(coid)
    return {
        "orders": count,
        "how": f"copies of {TEMPLATE}",
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------- CPU


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of its reaped children) of ``pid``
    (user + system); None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return int(fields[1]), own, reaped


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and all its descendants: the live ones, and
    through ``root``'s reaped-children time the ones that exited (PostgreSQL's
    backends are children of the postmaster)."""
    stats: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = st
    if root not in stats:
        return 0.0
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in stats.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    return stats[root][2] + sum(stats[pid][1] for pid in family if pid in stats)


class CpuMeter:
    """CPU seconds of each process of the run over a phase, as % of one core."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.wall = time.perf_counter()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: tree_cpu(pid) for name, pid in self.processes.items()}
        own = _stat(os.getpid())
        sample["bench (this process)"] = own[1] if own is not None else 0.0
        return sample

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        end = self._sample()
        return {name: round((end[name] - self.start[name]) / wall * 100, 1) for name in self.start}


ACTIVITY = """
SELECT state, wait_event_type, wait_event, query
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND datname = current_database()
   AND pid <> ALL($1::int[])
"""


def _statement(query: str) -> str:
    """A short name of a statement: its first ~80 characters, whitespace collapsed."""
    text = " ".join(query.split())
    return text if len(text) <= 80 else text[:77] + "..."


class WaitSampler:
    """What the other PostgreSQL sessions are doing, sampled every ``interval`` seconds
    from ``pg_stat_activity``: running, waiting for a lock, for the WAL flush, or idle
    inside a transaction waiting for its client (a round trip, or Python work between
    two statements). Summed as backend-milliseconds per execution."""

    def __init__(self, pg_url: str, interval: float = 0.005) -> None:
        self.pg_url = pg_url
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._rounds = 0
        self._wall = 0.0

    async def start(self, exclude: list[int]) -> None:
        conn = await asyncpg.connect(self.pg_url)
        pids = [*exclude, int(await conn.fetchval("SELECT pg_backend_pid()"))]
        self._counts, self._rounds = {}, 0
        started = time.perf_counter()

        async def sample() -> None:
            try:
                while True:
                    for row in await conn.fetch(ACTIVITY, pids):
                        key = self._classify(row)
                        self._counts[key] = self._counts.get(key, 0) + 1
                    self._rounds += 1
                    self._wall = time.perf_counter() - started
                    await asyncio.sleep(self.interval)
            finally:
                await conn.close()

        self._task = asyncio.create_task(sample())

    @staticmethod
    def _classify(row: asyncpg.Record) -> tuple[str, str]:
        state = row["state"] or "?"
        statement = _statement(row["query"] or "")
        if state == "idle":
            return "idle, no transaction", ""
        if state.startswith("idle in transaction"):
            return "in transaction, waiting for its client after", statement
        if row["wait_event_type"] == "Lock":
            return f"waiting for a lock ({row['wait_event']})", statement
        if row["wait_event"]:
            return f"waiting: {row['wait_event_type']}/{row['wait_event']}", statement
        return "running", statement

    async def stop(self, executions: int) -> Summary:
        if self._task is None:
            return {}
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not self._rounds:
            return {}
        per_sample_ms = self._wall / self._rounds * 1000
        by_state: dict[str, float] = {}
        rows: list[Summary] = []
        for (state, statement), n in sorted(self._counts.items(), key=lambda kv: -kv[1]):
            ms = n * per_sample_ms / executions
            by_state[state] = by_state.get(state, 0.0) + ms
            if state != "idle, no transaction":
                rows.append({"state": state, "statement": statement, "ms_per_execution": ms})
        return {
            "samples": self._rounds,
            "interval_ms": round(per_sample_ms, 2),
            "backend_ms_per_execution_by_state": {k: round(v, 3) for k, v in by_state.items()},
            "top": [
                r | {"ms_per_execution": round(float(r["ms_per_execution"]), 3)} for r in rows[:25]
            ],
        }


class Profiler:
    """``py-spy record`` (raw collapsed stacks, non-blocking) of the replicas, and a
    :class:`WaitSampler` of PostgreSQL, during a phase (only with ``--profile``)."""

    def __init__(self, out_dir: Path | None, pg_url: str) -> None:
        self.out_dir = out_dir
        self.sampler = WaitSampler(pg_url)
        self.procs: list[asyncio.subprocess.Process] = []
        self.files: list[str] = []

    async def start(self, label: str, pids: dict[str, int], exclude: list[int]) -> None:
        if self.out_dir is None:
            return
        command = shutil.which("py-spy")
        base = [command] if command else [shutil.which("uvx") or "uvx", "py-spy"]
        for name, pid in pids.items():
            path = self.out_dir / f"{label}-{name}.txt"
            self.files.append(str(path))
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    *base,
                    "record",
                    *("--pid", str(pid), "--rate", "200", "--format", "raw"),
                    *("--output", str(path), "--nonblocking"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            )
        await self.sampler.start(exclude)

    async def stop(self, executions: int) -> Summary:
        if self.out_dir is None:
            return {}
        waits = await self.sampler.stop(executions)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        self.procs = []
        return waits


# --------------------------------------------------------------------------- database

COMMIT_TIMES = """
SELECT exec_id,
       extract(epoch FROM pg_xact_commit_timestamp(xid(bench_xid)))::float8 AS inserted,
       extract(epoch FROM received_at)::float8 AS began,
       extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS last_touched
  FROM executions WHERE exec_id = ANY($1::text[])
"""


async def wait_booked(
    db: asyncpg.Connection[Any], prefix: str, count: int, within: float, stall: float = 5.0
) -> tuple[list[tuple[float, int]], bool]:
    """Poll (every 50 ms) until ``count`` executions of ``prefix`` are booked with their
    commission; the (seconds, booked) series and whether all were. Gives up after
    ``within`` seconds, or after ``stall`` seconds without progress (something was lost:
    the checks then say what)."""
    started = time.perf_counter()
    series: list[tuple[float, int]] = []
    last: tuple[int, int] = (-1, -1)
    last_change = started
    while True:
        row = await db.fetchrow(
            "SELECT count(*) AS booked, count(commission) AS commissioned"
            " FROM executions WHERE exec_id LIKE $1",
            f"{prefix}-%",
        )
        assert row is not None
        now = time.perf_counter()
        booked, commissioned = int(row["booked"]), int(row["commissioned"])
        series.append((round(now - started, 3), booked))
        if booked >= count and commissioned >= count:
            return series, True
        if (booked, commissioned) != last:
            last, last_change = (booked, commissioned), now
        if now - started > within or now - last_change > stall:
            print(
                f"  {prefix}: gave up waiting: {booked}/{count} executions booked,"
                f" {commissioned} with their commission",
                flush=True,
            )
            return series, False
        await asyncio.sleep(0.05)


async def verify(
    db: asyncpg.Connection[Any], js: JetStreamContext, bridge: FakeBridge, prefix: str, n: int
) -> tuple[dict[str, bool], Summary]:
    """The exactness checks (module docstring) after the phase ``prefix`` settled, and
    the figures behind them. Cash checks are of the whole portfolio (every phase so far)."""
    like = f"{prefix}-%"
    counts = await db.fetchrow(
        """
        SELECT (SELECT count(*) FROM executions WHERE exec_id LIKE $1) AS executions,
               (SELECT count(*) FROM transactions WHERE exec_id LIKE $1) AS transactions,
               (SELECT count(*) FROM executions WHERE exec_id LIKE $1
                   AND commission IS NULL) AS without_commission,
               (SELECT count(*) FROM pending_commissions WHERE exec_id LIKE $1) AS parked,
               (SELECT count(*) FROM pending_commissions p JOIN executions e USING (exec_id))
                   AS parked_with_execution_booked,
               (SELECT coalesce(sum(p.commission), 0)
                  FROM pending_commissions p JOIN executions e USING (exec_id))
                   AS parked_with_execution_booked_amount
        """,
        like,
    )
    assert counts is not None
    bad_orders = await db.fetchval(
        """
        SELECT count(*) FROM orders o
          LEFT JOIN (SELECT client_order_id, sum(quantity) AS q, sum(quantity * price) AS v,
                            coalesce(sum(commission), 0) AS c, count(*) AS fills
                       FROM executions GROUP BY client_order_id) e USING (client_order_id)
         WHERE o.client_order_id LIKE $1
           AND (o.filled_quantity IS DISTINCT FROM e.q
                OR o.filled_notional IS DISTINCT FROM e.v
                OR o.commission IS DISTINCT FROM e.c
                OR e.fills IS DISTINCT FROM $2::bigint
                OR o.status <> 'FILLED' OR o.reserved_cash <> 0)
        """,
        like,
        FILLS_PER_ORDER,
    )
    money = await db.fetchrow(
        """
        SELECT p.cash, p.reserved_cash,
               (SELECT coalesce(sum(cash_delta), 0) FROM transactions
                 WHERE portfolio_id = p.id) AS deltas,
               (SELECT coalesce(sum(reserved_cash), 0) FROM orders
                 WHERE portfolio_id = p.id) AS reservations,
               (SELECT count(*) FROM transactions t JOIN executions e USING (exec_id)
                 WHERE t.commission IS DISTINCT FROM coalesce(e.commission, 0))
                 AS commission_mismatch
          FROM portfolios p WHERE p.id = $1
        """,
        PORTFOLIO,
    )
    assert money is not None
    dead = (await js.stream_info(DEAD_LETTER_STREAM.name)).state.messages
    drained = True
    for durable in DURABLES:
        info = await js.consumer_info(EVENTS_STREAM.name, durable)
        drained = drained and not info.num_pending and not info.num_ack_pending
    details = {k: int(v) if isinstance(v, int) else str(v) for k, v in counts.items()}
    details |= {
        "orders_not_matching_their_executions": int(bad_orders),
        "cash": str(money["cash"]),
        "expected_cash": str(bridge.expected_cash),
        "cash_minus_expected": str(money["cash"] - bridge.expected_cash),
        "dead_lettered": int(dead),
    }
    if counts["parked_with_execution_booked"]:
        print(
            f"  {counts['parked_with_execution_booked']} commission(s) still parked in"
            " pending_commissions although their execution is booked (never applied;"
            f" {counts['parked_with_execution_booked_amount']} in all);"
            f" cash - expected = {details['cash_minus_expected']}",
            flush=True,
        )
    checks = {
        "executions_rows_exact": counts["executions"] == n,
        "transactions_rows_exact": counts["transactions"] == n,
        "every_commission_booked": counts["without_commission"] == 0 and counts["parked"] == 0,
        "orders_filled_equal_sum_of_executions": bad_orders == 0,
        "cash_equals_start_plus_cash_deltas": money["cash"] == START_CASH + money["deltas"],
        "cash_equals_bench_expectation": money["cash"] == bridge.expected_cash,
        "transaction_commission_equals_execution": money["commission_mismatch"] == 0,
        "reserved_equals_orders_reservations": money["reserved_cash"] == money["reservations"],
        "nothing_dead_lettered": dead == 0,
        "consumers_drained": drained,
    }
    return checks, details


async def execution_budget(db: asyncpg.Connection[Any], prefix: str, consumers: int) -> Summary:
    """Where an execution consumer's time goes: inside its booking transaction (BEGIN →
    commit record, from ``received_at`` and the commit timestamp) or between two of them
    (the WAL flush and the reply to COMMIT, the ack, the next message's decoding, the
    pool's connection reset, fetching, the event loop serving the other workers)."""
    rows = await db.fetch(
        "SELECT extract(epoch FROM received_at)::float8 AS began,"
        " extract(epoch FROM pg_xact_commit_timestamp(xid(bench_xid)))::float8 AS committed"
        " FROM executions WHERE exec_id LIKE $1",
        f"{prefix}-%",
    )
    if len(rows) < 2:
        return {}
    durations = sorted((r["committed"] - r["began"]) * 1000 for r in rows)
    span = max(r["committed"] for r in rows) - min(r["began"] for r in rows)
    per_consumer_ms = span * 1000 * consumers / len(rows)
    inside = statistics.fmean(durations)
    return {
        "consumers": consumers,
        "wall_ms_per_execution_per_consumer": round(per_consumer_ms, 3),
        "in_transaction_mean_ms": round(inside, 3),
        "in_transaction_p50_ms": round(statistics.median(durations), 3),
        "between_transactions_ms": round(per_consumer_ms - inside, 3),
    }


async def redeliveries(js: JetStreamContext) -> int:
    total = 0
    for durable in DURABLES:
        total += (await js.consumer_info(EVENTS_STREAM.name, durable)).num_redelivered or 0
    return total


# --------------------------------------------------------------------------- phases


async def bench_floor(
    js: JetStreamContext,
    db: asyncpg.Connection[Any],
    pg_url: str,
    count: int,
    rate: float,
    drain_count: int,
) -> tuple[Summary, Summary]:
    """``run_floor`` at ``rate`` (latency), then ``drain_count`` messages as fast as
    possible (throughput)."""
    latency = await run_floor(js, pg_url, count, rate)
    # a fresh stream: run_floor reuses its message ids, which the first run's stream
    # would drop as duplicates inside its window
    await js.delete_stream(FLOOR_STREAM.name)
    await provision(js, streams=[FLOOR_STREAM])
    await db.execute("TRUNCATE bench_transactions, bench_executions")
    drain = await run_floor(js, pg_url, drain_count, 1e9)
    drain["scenario"] = "floor drain: nats-py + asyncpg, 1 txn/msg"
    return latency, drain


@dataclass
class Run:
    """What every phase needs: connections, the bridge played here, the processes."""

    nc: NatsClient
    js: JetStreamContext
    db: asyncpg.Connection[Any]
    bridge: FakeBridge
    servers: dict[str, int]
    """PostgreSQL's postmaster and nats-server, by name: pids (for the CPU figures)."""
    profiler: Profiler
    replicas: list[Replica] = field(default_factory=list)

    def processes(self) -> dict[str, int]:
        return {r.name: r.pid for r in self.replicas} | self.servers


async def bench_latency(run: Run, prefix: str, count: int, rate: float, *, submit: bool) -> Summary:
    """Executions (each followed by its commission) at ``rate``: publish → commit.

    The orders are created through SubmitOrder when ``submit`` (the submit rate is
    reported), else as copies of the template order."""
    orders = max(count // FILLS_PER_ORDER, 1)
    if submit:
        setup = await submit_orders(run.nc, prefix, orders)
    else:
        setup = await clone_orders(run.db, run.bridge, prefix, orders)
    fills = plan(prefix, orders, count)
    replica = run.replicas[0]
    before = histogram(await replica.metrics(), "ibflow_fill_commit_seconds")
    published: dict[str, float] = {}
    commission_published: dict[str, float] = {}
    cpu = CpuMeter(run.processes())
    start = time.perf_counter()
    for n, (coid, k) in enumerate(fills):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        execution, commission = run.bridge.fill(coid, k, n)
        published[execution.exec_id] = time.time()
        await publish(run.js, subj.execution(PORTFOLIO), execution)
        commission_published[execution.exec_id] = time.time()
        await publish(run.js, subj.commission(PORTFOLIO), commission)
    offered_s = time.perf_counter() - start
    _, complete = await wait_booked(run.db, prefix, count, within=120)
    cpu_percent = cpu.stop()
    checks, details = await verify(run.db, run.js, run.bridge, prefix, count)
    after = histogram(await replica.metrics(), "ibflow_fill_commit_seconds")
    rows = await run.db.fetch(COMMIT_TIMES, list(published))
    by_id = {row["exec_id"]: row for row in rows}
    commit: list[float] = []
    delivery: list[float] = []
    txn: list[float] = []
    commission_commit: list[float] = []
    for exec_id, sent in published.items():  # in sending order
        row = by_id.get(exec_id)
        if row is None:
            continue
        commit.append((row["inserted"] - sent) * 1000)
        delivery.append((row["began"] - sent) * 1000)
        txn.append((row["inserted"] - row["began"]) * 1000)
        if row["last_touched"] != row["inserted"]:  # commission booked by its own txn
            commission_commit.append((row["last_touched"] - commission_published[exec_id]) * 1000)
    name = f"order-manager @{rate:g}/s: ExecutionReported -> committed"
    return {
        "offered_rate": rate,
        "achieved_rate": round(count / offered_s, 1),
        "setup": setup,
        "execution_committed": summarise(name, commit),
        "delivery": summarise("  publish -> its transaction begins", delivery),
        "transaction": summarise("  transaction begins -> commit record", txn),
        "commission_committed": summarise(
            "  CommissionReported -> committed (own txn)", commission_commit
        )
        if len(commission_commit) >= 2
        else {"messages": len(commission_commit)},
        "commissions_parked_first": count - len(commission_commit),
        "service_histogram": service_histogram(before, after),
        "cpu_percent_of_one_core": cpu_percent,
        "complete": complete,
        "checks": checks,
        "check_details": details,
        "exact": all(checks.values()),
    }


async def bench_burst(run: Run, prefix: str, orders: int, executions: int) -> Summary:
    """``executions`` fills (+ commissions) over ``orders`` fresh orders, published
    pipelined as fast as JetStream takes them; first publish → all committed."""
    js, db = run.js, run.db
    setup = await clone_orders(db, run.bridge, prefix, orders)
    events = [
        run.bridge.fill(coid, k, n) for n, (coid, k) in enumerate(plan(prefix, orders, executions))
    ]
    redelivered_before = await redeliveries(js)
    execution_subject, commission_subject = subj.execution(PORTFOLIO), subj.commission(PORTFOLIO)
    await run.profiler.start(
        prefix,
        {r.name: r.pid for r in run.replicas},
        [int(await db.fetchval("SELECT pg_backend_pid()"))],
    )
    cpu = CpuMeter(run.processes())
    first_publish = time.time()
    started = time.perf_counter()
    futures: list[asyncio.Future[PubAck]] = []
    for execution, commission in events:
        for subject, event in ((execution_subject, execution), (commission_subject, commission)):
            futures.append(
                await js.publish_async(
                    subject, event.to_json(), wait_stall=10, headers=message_headers(event)
                )
            )
    acks = await asyncio.gather(*futures)
    published_s = time.perf_counter() - started
    if any(ack.duplicate for ack in acks):
        raise RuntimeError("a burst event was dropped as a duplicate")
    series, complete = await wait_booked(db, prefix, executions, within=max(120.0, executions / 20))
    cpu_percent = cpu.stop()
    waits = await run.profiler.stop(executions)
    polled_s = time.perf_counter() - started
    for replica in run.replicas:
        replica.check_alive()
    ends = await db.fetchrow(
        "SELECT max(extract(epoch FROM pg_xact_commit_timestamp(xid(bench_xid))))::float8"
        " AS executions, max(extract(epoch FROM pg_xact_commit_timestamp(xmin)))::float8"
        " AS everything FROM executions WHERE exec_id LIKE $1",
        f"{prefix}-%",
    )
    assert ends is not None
    executions_s = ends["executions"] - first_publish
    everything_s = max(ends["everything"], ends["executions"]) - first_publish
    outbox_started = time.perf_counter()
    for _ in range(1200):  # at most ~60 s
        if not await db.fetchval("SELECT count(*) FROM ibflow_outbox"):
            break
        await asyncio.sleep(0.05)
    outbox_s = polled_s + time.perf_counter() - outbox_started
    checks, details = await verify(db, js, run.bridge, prefix, executions)
    budget = await execution_budget(db, prefix, len(run.replicas))
    # steady rate: booked between 10 % and 90 % of the burst, by the poller's clock
    lo = next((t for t, b in series if b >= executions * 0.1), 0.0)
    hi = next((t for t, b in series if b >= executions * 0.9), 0.0)
    count = len(run.replicas)
    return {
        "scenario": f"order-manager, {count} replica{'s' if count > 1 else ''}",
        "replicas": count,
        "orders": orders,
        "executions": executions,
        "events": 2 * executions,
        "setup": setup,
        "published_s": round(published_s, 3),
        "first_publish_to_last_execution_committed_s": round(executions_s, 3),
        "first_publish_to_last_commission_committed_s": round(everything_s, 3),
        "executions_per_s": round(executions / executions_s, 1),
        "events_per_s": round(2 * executions / everything_s, 1),
        "steady_executions_per_s_10_to_90pct": round(executions * 0.8 / (hi - lo), 1)
        if hi > lo
        else None,
        "outbox_drained_s": round(outbox_s, 3),
        "redelivered": await redeliveries(js) - redelivered_before,
        "cpu_percent_of_one_core": cpu_percent,
        "per_execution": budget,
        "postgres_sessions": waits,
        "booked_series": series[:: max(len(series) // 60, 1)],
        "complete": complete,
        "checks": checks,
        "check_details": details,
        "exact": all(checks.values()),
    }


# --------------------------------------------------------------------------- setup


async def seed(pg_url: str) -> str:
    """Migrations, the bench column, the portfolio, the instrument, the floor's tables;
    the PostgreSQL version."""
    await apply_migrations(pg_url, "ibflow.db", "ibflow_order_manager")
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "ALTER TABLE executions ADD COLUMN bench_xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
        )
        await conn.execute(
            "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)"
            " VALUES ($1, 'order-manager bench', 4002, 21, $2, $3)",
            PORTFOLIO,
            ACCOUNT,
            START_CASH,
        )
        await conn.execute(
            "INSERT INTO instruments (symbol, currency, primary_exchange, con_id)"
            " VALUES ($1, 'USD', 'NASDAQ', $2)",
            SYMBOL,
            CON_ID,
        )
        await conn.execute(FLOOR_SCHEMA)
        if await conn.fetchval("SHOW track_commit_timestamp") != "on":
            raise RuntimeError("track_commit_timestamp is off: commit times cannot be read")
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def replica_environment(nats_url: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IBFLOW_")}
    if "IBFLOW_EVENT_LOOP" in os.environ:  # A/B the event loop: uvloop (default) / asyncio
        env["IBFLOW_EVENT_LOOP"] = os.environ["IBFLOW_EVENT_LOOP"]
    env.update(
        IBFLOW_NATS_URL=nats_url,
        IBFLOW_DATABASE_URL=database_url,
        IBFLOW_HTTP_HOST="127.0.0.1",
        IBFLOW_HTTP_PORT="0",
        IBFLOW_LOG_LEVEL="INFO",  # the ready line is INFO; nothing is logged per message
        IBFLOW_LOG_FORMAT="text",
        PYTHONUNBUFFERED="1",
    )
    return env


async def _report_nats_error(exc: Exception) -> None:
    print(f"nats client error: {exc!r}", file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the phases, stop everything (also on Ctrl-C or SIGTERM:
    the first one cancels the run, the teardown then runs to its end)."""
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
    replicas: list[Replica] = []
    exit_codes: dict[str, int | None] = {}
    nc: NatsClient | None = None
    db: asyncpg.Connection[Any] | None = None
    nats_server: NatsServer | None = None
    pg: PostgresServer | None = None
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-") as tmp:
        try:
            # Own sessions: the terminal's Ctrl-C reaches only this process, which stops
            # the replicas while NATS and PostgreSQL are still up, then them.
            nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
            pg = PostgresServer.start(
                Path(tmp) / "pg",
                settings={"track_commit_timestamp": "on"},
                die_with_parent=False,
            )
            results["postgres"] = await seed(pg.url())
            nc = await nats.connect(nats_server.url, error_cb=_report_nats_error)
            results["nats_server"] = str(nc.connected_server_version)
            js = nc.jetstream()
            await provision(js, streams=[EVENTS_STREAM, DEAD_LETTER_STREAM, FLOOR_STREAM])
            db = await asyncpg.connect(pg.url())

            print(
                f"floor: {args.latency_executions} msgs at {args.rate:g}/s, then a drain",
                flush=True,
            )
            floor_latency, floor_drain = await bench_floor(
                js, db, pg.url(), args.latency_executions, args.rate, args.latency_executions
            )
            results["floor"] = {"latency": floor_latency, "drain": floor_drain}

            bridge = FakeBridge(nc)
            await bridge.start()
            servers = {"postgres": pg.process.pid, "nats-server": nats_server.process.pid}
            profile_dir = None
            if args.profile:
                profile_dir = RESULTS / f"order_manager-{args.stamp}-py-spy"
                profile_dir.mkdir(parents=True, exist_ok=True)
            run = Run(nc, js, db, bridge, servers, Profiler(profile_dir, pg.url()), replicas)
            env = replica_environment(nats_server.url, pg.url())
            first = Replica("order-manager-1", env, Path(tmp) / "order-manager-1.log")
            replicas.append(first)
            ready_s = await first.start()
            print(f"order-manager-1 pid {first.pid} ready in {ready_s:.1f}s", flush=True)
            template = await submit_orders(nc, TEMPLATE.rsplit("-", 1)[0], 1)
            results["template_order"] = template

            results["latency_light"] = await bench_latency(
                run, "light", args.light_executions, args.light_rate, submit=False
            )
            print("latency:", results["latency_light"]["execution_committed"], flush=True)
            results["latency"] = await bench_latency(
                run, "lat", args.latency_executions, args.rate, submit=True
            )
            print("latency:", results["latency"]["execution_committed"], flush=True)

            bursts = [await bench_burst(run, "one", args.orders, args.executions)]
            print(_burst_line(bursts[-1]), flush=True)
            second = Replica("order-manager-2", env, Path(tmp) / "order-manager-2.log")
            replicas.append(second)
            ready_s = await second.start()
            print(f"order-manager-2 pid {second.pid} ready in {ready_s:.1f}s", flush=True)
            bursts.append(await bench_burst(run, "two", args.orders, args.executions))
            print(_burst_line(bursts[-1]), flush=True)
            results["bursts"] = bursts
            results["profiles"] = run.profiler.files
            for replica in replicas:
                replica.check_alive()
        finally:
            for replica in reversed(replicas):
                exit_codes[replica.name] = await replica.stop()
                errors = [
                    line
                    for line in replica.tail(100_000).splitlines()
                    if " ERROR " in line or "Traceback" in line
                ]
                if errors:
                    print(f"{replica.name}: {len(errors)} error lines, e.g. {errors[0]}")
                    results.setdefault("replica_errors", {})[replica.name] = errors[:20]
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)
            if pg is not None:
                pg.stop()
            if nats_server is not None:
                nats_server.stop()
    results["replica_exit_codes"] = exit_codes
    return results


def _burst_line(b: Summary) -> str:
    return (
        f"{b['scenario']}: {b['executions']} executions ({b['events']} events) in"
        f" {b['first_publish_to_last_execution_committed_s']} s -> {b['executions_per_s']}/s;"
        f" exact: {b['exact']}" + ("" if b["exact"] else f" {b['checks']}")
    )


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _cpu_line(cpu: dict[str, float]) -> str:
    return "  CPU, % of one core (2 cores = 200 %): " + ", ".join(
        f"{name} {value}" for name, value in cpu.items()
    )


def _print_waits(waits: Summary) -> None:
    if not waits:
        return
    states = waits["backend_ms_per_execution_by_state"]
    print(
        f"  PostgreSQL sessions, backend-ms per execution (pg_stat_activity every"
        f" {waits['interval_ms']} ms): " + ", ".join(f"{k} {v}" for k, v in states.items())
    )
    for row in waits["top"][:12]:
        print(f"    {row['ms_per_execution']:>7} {row['state']}: {row['statement']}")


def _latency_rows(lat: Summary) -> list[Summary]:
    rows = [lat["execution_committed"], lat["delivery"], lat["transaction"]]
    if "p50_ms" in lat["commission_committed"]:
        rows.append(lat["commission_committed"])
    return rows


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Print the tables; the ratios to the floor."""
    floor = results["floor"]["latency"]
    drain = results["floor"]["drain"]
    phases = (results["latency_light"], results["latency"])
    print(
        "\nlatency: publish -> committed (this process plays the bridge: the order-manager's"
        " consumption path only; the bridge's own publish latency is in"
        " bench/gateway_bridge.py)"
    )
    columns = ("n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms")
    print(f"{'path':58} " + " ".join(f"{c:>8}" for c in columns))
    keys = ("messages", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")
    floor_name = f"floor @{args.rate:g}/s: nats-py + asyncpg, 1 txn/msg"
    print(f"{floor_name:58} " + " ".join(f"{floor[k]:>8}" for k in keys))
    ratios: dict[str, Any] = {}
    for lat in phases:
        for r in _latency_rows(lat):
            print(f"{r['scenario']:58} " + " ".join(f"{r[k]:>8}" for k in keys))
        hist = lat["service_histogram"]
        committed = lat["execution_committed"]
        key = f"latency_at_{lat['offered_rate']:g}_per_s"
        ratios[key] = {
            "p50": ratio(committed["p50_ms"], floor["p50_ms"]),
            "p99": ratio(committed["p99_ms"], floor["p99_ms"]),
        }
        print(
            f"  ratio to the floor: p50 {ratios[key]['p50']}x, p99 {ratios[key]['p99']}x;"
            f" offered {lat['offered_rate']:g}/s, published at {lat['achieved_rate']}/s;"
            f" commissions parked (came first): {lat['commissions_parked_first']}"
        )
        print(
            f"  service's own ibflow_fill_commit_seconds (creation here -> after its commit):"
            f" mean {hist.get('mean_ms')} ms, p50 <= {hist.get('p50_at_most_ms')} ms,"
            f" p99 <= {hist.get('p99_at_most_ms')} ms (n {hist.get('count')})"
        )
        print(_cpu_line(lat["cpu_percent_of_one_core"]))
        print(
            f"  exact: {lat['exact']}"
            + ("" if lat["exact"] else f" {lat['checks']} {lat['check_details']}")
        )

    print(
        f"\nthroughput: {args.executions} executions over {args.orders} orders, each followed"
        " by its commission, published pipelined"
    )
    columns = ("execs/s", "events/s", "steady/s", "s", "outbox s", "x floor")
    print(f"{'scenario':58} " + " ".join(f"{c:>9}" for c in columns))
    drain_rate = drain["rate_msg_s"]
    print(
        f"{drain['scenario']:58} {drain_rate:>9} {drain_rate:>9} {'':>9}"
        f" {round(drain['messages'] / drain_rate, 2):>9} {'':>9} {'1.0':>9}"
    )
    for b in results["bursts"]:
        x_floor = ratio(b["executions_per_s"], drain_rate)
        ratios[f"throughput_{b['replicas']}_replicas"] = x_floor
        print(
            f"{b['scenario']:58} {b['executions_per_s']:>9} {b['events_per_s']:>9}"
            f" {b['steady_executions_per_s_10_to_90pct']!s:>9}"
            f" {b['first_publish_to_last_execution_committed_s']:>9}"
            f" {b['outbox_drained_s']:>9} {x_floor!s:>9}"
        )
        print(_cpu_line(b["cpu_percent_of_one_core"]))
        budget = b["per_execution"]
        if budget:
            print(
                f"  per execution and consumer ({budget['consumers']}):"
                f" {budget['wall_ms_per_execution_per_consumer']} ms, of which"
                f" {budget['in_transaction_mean_ms']} ms inside its booking transaction"
                f" (BEGIN -> commit record; p50 {budget['in_transaction_p50_ms']}) and"
                f" {budget['between_transactions_ms']} ms between two"
            )
        _print_waits(b.get("postgres_sessions") or {})
        print(
            f"  exact: {b['exact']}"
            + ("" if b["exact"] else f" {b['checks']} {b['check_details']}")
            + f"; redelivered {b['redelivered']}"
        )
    submit = results["latency"]["setup"]
    print(
        f"\nsetup: {submit['orders']} SubmitOrder at {submit['orders_per_s']}/s"
        f" ({SUBMIT_CONCURRENCY} in flight, the bridge answering at once)"
    )
    print(f"replica exit codes: {results['replica_exit_codes']}")
    if results.get("profiles"):
        print("py-spy profiles:", *results["profiles"], sep="\n  ")
    return ratios


def main() -> None:
    """Command line: run, print the tables, write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="latency: executions/s offered")
    parser.add_argument(
        "--latency-executions", type=int, default=1000, help="latency: executions (and floor msgs)"
    )
    parser.add_argument(
        "--light-rate", type=float, default=50.0, help="second latency pass: executions/s"
    )
    parser.add_argument(
        "--light-executions", type=int, default=500, help="second latency pass: executions"
    )
    parser.add_argument("--executions", type=int, default=5000, help="throughput: burst size")
    parser.add_argument("--orders", type=int, default=1000, help="throughput: orders per burst")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record every replica during the bursts (raw stacks next to the results)",
    )
    args = parser.parse_args()
    if (
        args.rate <= 0
        or args.light_rate <= 0
        or args.latency_executions < 100
        or args.light_executions < 100
        or args.latency_executions % FILLS_PER_ORDER
        or args.light_executions % FILLS_PER_ORDER
        or args.orders < 1
        or args.executions != args.orders * FILLS_PER_ORDER
    ):
        parser.error(
            "need rates > 0, --latency-executions and --light-executions >= 100 and multiples"
            f" of {FILLS_PER_ORDER}, and --executions = {FILLS_PER_ORDER} x --orders (every"
            f" order is filled in {FILLS_PER_ORDER} parts)"
        )
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = asyncio.run(main_async(args))
    ratios = report(results, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"order_manager-{args.stamp}.json"
    meta = {
        "when": args.stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "postgres": results.pop("postgres"),
        "nats_server": results.pop("nats_server"),
        "rate": args.rate,
        "latency_executions": args.latency_executions,
        "light_rate": args.light_rate,
        "light_executions": args.light_executions,
        "executions": args.executions,
        "orders": args.orders,
        "profiled": args.profile,
        "order": f"LMT BUY {ORDER_QUANTITY} {SYMBOL} @ {LIMIT_PRICE}, {FILLS_PER_ORDER} fills",
        "bridge": "played by the benchmark (ibflow.bus.publish / publish_async, same headers)",
    }
    out.write_text(
        json.dumps({"meta": meta, "results": results, "ratios": ratios}, indent=2) + "\n"
    )
    print(f"written {out}")
    phases = [results["latency_light"], results["latency"], *results["bursts"]]
    if not all(phase["exact"] for phase in phases):
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
