"""Publish → consume → commit latency of one message, ibflow's path beside the bare floor.

Starts a real nats-server (default fsync policy) and PostgreSQL (synchronous commit)
from the embedded wheels, then, in the same run, offers N messages at a steady rate to:

* ``floor``: bare nats-py ``js.publish`` → ``fetch(1)`` → asyncpg transaction → ``ack``;
* ``ibflow``: :func:`ibflow.bus.publish` (typed Event, Nats-Msg-Id) → ``ConsumerRunner``
  (decode, handler) → :func:`ibflow.db.inbox_transaction` (inbox claim + the same writes)
  → ack after the commit.

Both do the same database work per message: an execution row, a transaction row and a
cash update (the three writes of a fill). Latency is measured in one process with one
monotonic clock, from just before the publish to just after the commit.

    uv run python bench/publish_consume_commit.py [--messages 2000] [--rate 200]

Prints a table and writes ``bench/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import nats
from nats.js import JetStreamContext

import latency
from ibflow.bus import ConsumerRunner, Subscriber, provision, publish
from ibflow.bus.specs import ConsumerSpec, StreamSpec
from ibflow.bus.subjects import DEAD_LETTER_STREAM
from ibflow.contracts.base import Event, Money, Quantity
from ibflow.db import AnyConnection, apply_migrations, create_pool, inbox_transaction
from ibflow.testing.embedded import NatsServer, PostgresServer

RESULTS = Path(__file__).parent / "results"
STREAM = StreamSpec(name="BENCH", subjects=("bench.>",), max_age_seconds=3600.0)
SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_executions (
    exec_id text PRIMARY KEY, quantity numeric NOT NULL, price numeric NOT NULL);
CREATE TABLE IF NOT EXISTS bench_transactions (
    exec_id text PRIMARY KEY REFERENCES bench_executions, cash_delta numeric NOT NULL);
CREATE TABLE IF NOT EXISTS bench_cash (id int PRIMARY KEY, cash numeric NOT NULL);
INSERT INTO bench_cash VALUES (1, 100000) ON CONFLICT DO NOTHING;
"""
WRITES = (
    "INSERT INTO bench_executions VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    "INSERT INTO bench_transactions VALUES ($1, $2) ON CONFLICT DO NOTHING",
    "UPDATE bench_cash SET cash = cash + $1 WHERE id = 1",
)


Summary = dict[str, float | int | str]


class BenchFill(Event):
    """A fill-shaped event: what order-manager books per execution."""

    exec_id: str
    quantity: Quantity
    price: Money

    def dedupe_key(self) -> str:
        """``exec:<execId>``, as real executions use."""
        return f"exec:{self.exec_id}"


async def book(conn: AnyConnection, fill: BenchFill) -> None:
    """The three writes of a fill, inside the caller's transaction."""
    cash_delta = -fill.quantity * fill.price
    await conn.execute(WRITES[0], fill.exec_id, fill.quantity, fill.price)
    await conn.execute(WRITES[1], fill.exec_id, cash_delta)
    await conn.execute(WRITES[2], cash_delta)


def summarise(name: str, samples_ms: list[float], seconds: float) -> Summary:
    """p50/p99/max and achieved rate of one scenario."""
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "scenario": name,
        "messages": len(ordered),
        "rate_msg_s": round(len(ordered) / seconds, 1),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    } | ({"samples_ms": [round(x, 3) for x in samples_ms]} if latency.KEEP_SAMPLES else {})


async def offer(
    count: int, rate: float, send: Callable[[int], Awaitable[None]], done: asyncio.Event
) -> float:
    """Call ``send(i)`` ``count`` times at ``rate``/s (open loop); wait for ``done``."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    await asyncio.wait_for(done.wait(), timeout=60)
    return time.perf_counter() - start


async def run_floor(
    js: JetStreamContext, pg_url: str, count: int, rate: float
) -> dict[str, float | int | str]:
    """Bare nats-py + asyncpg, the same writes: the floor ibflow is judged against."""
    await js.add_consumer(
        "BENCH", durable_name="floor", filter_subject="bench.floor", ack_policy="explicit"
    )
    psub = await js.pull_subscribe_bind("floor", stream="BENCH")
    conn = await asyncpg.connect(pg_url)
    sent: dict[str, int] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def consume() -> None:
        while len(latencies) < count:
            try:
                msgs = await psub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                data = json.loads(msg.data)
                async with conn.transaction():
                    await book(conn, BenchFill.model_validate(data))
                latencies.append((time.perf_counter_ns() - sent[data["exec_id"]]) / 1e6)
                await msg.ack()
        done.set()

    async def send(i: int) -> None:
        exec_id = f"floor-{i}"
        sent[exec_id] = time.perf_counter_ns()
        fill = BenchFill(exec_id=exec_id, quantity=Decimal(10), price=Decimal("101.25"))
        await js.publish("bench.floor", fill.to_json(), headers={"Nats-Msg-Id": f"exec:{exec_id}"})

    consumer = asyncio.create_task(consume())
    seconds = await offer(count, rate, send, done)
    await consumer
    await conn.close()
    return summarise("floor: nats-py + asyncpg", latencies, seconds)


async def run_ibflow(
    js: JetStreamContext, pg_url: str, count: int, rate: float
) -> dict[str, float | int | str]:
    """ibflow.bus publish → ConsumerRunner → inbox transaction → ack."""
    spec = ConsumerSpec(stream="BENCH", durable="ibflow", filter_subjects=("bench.ibflow",))
    await provision(js, consumers=[spec])
    pool = await create_pool(pg_url, min_size=2, max_size=2)
    sent: dict[str, int] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def handle(fill: BenchFill, delivery: object) -> None:
        async with inbox_transaction(pool, "bench", fill.dedupe_key()) as conn:
            if conn is None:
                return
            await book(conn, fill)
        latencies.append((time.perf_counter_ns() - sent[fill.exec_id]) / 1e6)
        if len(latencies) == count:
            done.set()

    runner = ConsumerRunner(js, Subscriber(spec, BenchFill, handle), batch=10, fetch_timeout=1.0)
    consumer = asyncio.create_task(runner.run())

    async def send(i: int) -> None:
        exec_id = f"ibflow-{i}"
        sent[exec_id] = time.perf_counter_ns()
        await publish(
            js,
            "bench.ibflow",
            BenchFill(exec_id=exec_id, quantity=Decimal(10), price=Decimal("101.25")),
        )

    seconds = await offer(count, rate, send, done)
    await runner.stop()
    await consumer
    await pool.close()
    return summarise("ibflow: bus + runner + inbox", latencies, seconds)


async def main_async(count: int, rate: float) -> list[Summary]:
    """Start the servers, run both scenarios, stop the servers."""
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-") as tmp:
        nats_server = NatsServer.start(Path(tmp) / "nats")
        pg = PostgresServer.start(Path(tmp) / "pg")
        try:
            await apply_migrations(pg.url(), "ibflow.db")
            admin = await asyncpg.connect(pg.url())
            await admin.execute(SCHEMA)
            await admin.close()
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await provision(js, streams=[STREAM, DEAD_LETTER_STREAM])
            results = [
                await run_floor(js, pg.url(), count, rate),
                await run_ibflow(js, pg.url(), count, rate),
            ]
            await nc.close()
            return results
        finally:
            pg.stop()
            nats_server.stop()


def main() -> None:
    """Command line: run, print a table, write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=2000, help="messages per scenario (>= 1000)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="offered messages per second")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.messages, args.rate))
    columns = ("msgs", "msg/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print(f"{'scenario':34} " + " ".join(f"{c:>8}" for c in columns))
    for r in results:
        keys = ("messages", "rate_msg_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")
        print(f"{r['scenario']:34} " + " ".join(f"{r[k]:>8}" for k in keys))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"publish_consume_commit-{stamp}.json"
    meta = {"python": platform.python_version(), "offered_rate": args.rate, "when": stamp}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
