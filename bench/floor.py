"""The floor of this machine, measured in the run it judges: what bare clients get from
the same servers ibflow uses, with nothing of ibflow in between.

One embedded nats-server (JetStream, default fsync policy) and PostgreSQL (synchronous
commit), and gateway-sim as its own process (``python -m ibflow_gateway_sim``):

* **JetStream publish → consume → 3-row transaction → ack**, per message
  (``publish_consume_commit.run_floor``: ``js.publish`` → ``fetch(1)`` → BEGIN + 3 writes
  + COMMIT → ``ack``) at ``rate``/s (latency) and as a drain (throughput, the publisher
  running alongside), ``bench/order_manager.py``'s ``bench_floor``;
* the same, **batched**: messages published pipelined (``publish_async``), a durable
  pull consumer ``fetch(100)`` → one transaction of three set-based statements
  (``unnest``) for the whole batch → every message acked: messages/s;
* **NATS request/reply**: sequential ``nc.request`` to a responder on another
  connection of this process: round-trip p50/p99;
* **ib_async placing directly** against gateway-sim (client id 77): LMT BUY 10 AAPL @
  100.00 (rests) ``placeOrder`` → first ``orderStatus`` Submitted, and MKT BUY 10 AAPL
  ``placeOrder`` → ``orderStatus`` Filled, one at a time at ``direct_rate``/s.

    uv run python bench/floor.py [--messages 1000] [--rate 200] [--orders 200]

Used by ``bench/run.py`` (``make bench``); alone it prints the figures and writes
``bench/results/floor-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import ib_async
import nats
import yaml
from nats.js import JetStreamContext

sys.path.insert(0, str(Path(__file__).parent))

import gateway_bridge as gb
import latency
from ibflow.bus import provision
from ibflow.db import apply_migrations
from ibflow.testing.embedded import NatsServer, PostgresServer
from latency import Summary
from order_manager import bench_floor
from publish_consume_commit import SCHEMA, STREAM

RESULTS = Path(__file__).parent / "results"
BATCH = 100
BATCH_WRITES = (
    "INSERT INTO bench_executions SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[])"
    " ON CONFLICT DO NOTHING",
    "INSERT INTO bench_transactions SELECT * FROM unnest($1::text[], $2::numeric[])"
    " ON CONFLICT DO NOTHING",
    "UPDATE bench_cash SET cash = cash + $1 WHERE id = 1",
)


async def run_batched(js: JetStreamContext, pg_url: str, count: int) -> Summary:
    """``count`` fills published pipelined; fetch(100) → one transaction per batch (the
    same three writes, set-based) → ack all. First publish → last ack: messages/s."""
    subject = "bench.batched"
    await js.add_consumer(
        STREAM.name, durable_name="batched", filter_subject=subject, ack_policy="explicit"
    )
    psub = await js.pull_subscribe_bind("batched", stream=STREAM.name)
    conn = await asyncpg.connect(pg_url)
    txn_ms: list[float] = []
    started = time.perf_counter()

    async def publish_all() -> None:
        futures = []
        for i in range(count):
            body = json.dumps({"exec_id": f"batched-{i}", "quantity": "10", "price": "101.25"})
            futures.append(
                await js.publish_async(
                    subject, body.encode(), headers={"Nats-Msg-Id": f"exec:batched-{i}"}
                )
            )
        await asyncio.gather(*futures)

    publisher = asyncio.create_task(publish_all())
    done = 0
    while done < count:
        try:
            msgs = await psub.fetch(BATCH, timeout=1)
        except nats.errors.TimeoutError:
            continue
        rows = [json.loads(m.data) for m in msgs]
        ids = [r["exec_id"] for r in rows]
        qty = [Decimal(r["quantity"]) for r in rows]
        px = [Decimal(r["price"]) for r in rows]
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute(BATCH_WRITES[0], ids, qty, px)
            await conn.execute(BATCH_WRITES[1], ids, [-q * p for q, p in zip(qty, px, strict=True)])
            await conn.execute(BATCH_WRITES[2], sum((-q * p for q, p in zip(qty, px, strict=True))))
        txn_ms.append((time.perf_counter() - t0) * 1000)
        for m in msgs:
            await m.ack()
        done += len(msgs)
    seconds = time.perf_counter() - started
    await publisher
    await conn.close()
    return {
        "scenario": f"floor batched: fetch({BATCH}) -> 1 txn per batch -> ack all",
        "messages": count,
        "seconds": round(seconds, 3),
        "rate_msg_s": round(count / seconds, 1),
        "batches": len(txn_ms),
        "txn_mean_ms": round(sum(txn_ms) / len(txn_ms), 3),
    }


async def run_request_reply(nc: nats.NATS, responder: nats.NATS, count: int) -> Summary:
    """Sequential request/reply round trips (responder on its own connection)."""

    async def answer(msg: Any) -> None:
        await msg.respond(msg.data)

    sub = await responder.subscribe("bench.rr", cb=answer)
    await responder.flush()
    samples: list[float] = []
    payload = b"x" * 200
    for _ in range(count):
        t0 = time.perf_counter()
        await nc.request("bench.rr", payload, timeout=5)
        samples.append((time.perf_counter() - t0) * 1000)
    await sub.unsubscribe()
    return latency.summarise("floor: NATS request/reply round trip", samples, count_key="requests")


async def run_direct_mkt(sim_port: int, count: int, rate: float) -> Summary:
    """ib_async MKT BUY ``placeOrder`` → ``orderStatus`` Filled, one at a time."""
    ib = ib_async.IB()
    await ib.connectAsync("127.0.0.1", sim_port, clientId=gb.DIRECT_CLIENT_ID + 1, timeout=10)
    try:
        contract = ib_async.Stock(gb.SYMBOL, "SMART", "USD")
        await ib.qualifyContractsAsync(contract)
        loop = asyncio.get_running_loop()
        samples: list[float] = []
        async for _ in gb.pace(count, rate):
            done: asyncio.Future[float] = loop.create_future()

            def on_status(trade: Any, done: asyncio.Future[float] = done) -> None:
                if trade.orderStatus.status == "Filled" and not done.done():
                    done.set_result(time.perf_counter())

            started = time.perf_counter()
            trade = ib.placeOrder(contract, ib_async.MarketOrder("BUY", float(gb.QUANTITY)))
            trade.statusEvent += on_status
            at = await asyncio.wait_for(done, 30)
            samples.append((at - started) * 1000)
    finally:
        ib.disconnect()
    return gb.summarise("floor: ib_async MKT placeOrder -> Filled", samples)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the servers and the simulator, measure, stop them (also when cancelled)."""
    result: dict[str, Any] = {}
    sim: gb.Child | None = None
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-floor-") as tmp:
        nats_server = NatsServer.start(Path(tmp) / "nats", die_with_parent=False)
        pg = PostgresServer.start(Path(tmp) / "pg", die_with_parent=False)
        nc = responder = None
        try:
            await apply_migrations(pg.url(), "ibflow.db")
            db = await asyncpg.connect(pg.url())
            await db.execute(SCHEMA)
            nc = await nats.connect(nats_server.url)
            responder = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await provision(js, streams=[STREAM])
            print(f"floor: JetStream -> 3-row txn -> ack, {args.messages} at {args.rate:g}/s")
            per_msg, drain = await bench_floor(
                js, db, pg.url(), args.messages, args.rate, args.messages
            )
            result["per_message"] = per_msg
            result["per_message_drain"] = drain
            result["batched"] = await run_batched(js, pg.url(), args.batched)
            print(f"  batched: {result['batched']['rate_msg_s']} msg/s", flush=True)
            await db.close()
            result["request_reply"] = await run_request_reply(nc, responder, args.requests)

            sim_port, control_port = gb.free_port(), gb.free_port()
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
            await sim.start()
            await gb.wait_http(sim, control_port, "/health", 20)
            print(f"floor: ib_async direct, {args.orders} LMT and MKT at {args.direct_rate:g}/s")
            result["direct_lmt"] = await gb.bench_direct(sim_port, args.orders, args.direct_rate)
            result["direct_lmt"]["scenario"] = "floor: ib_async LMT placeOrder -> Submitted"
            result["direct_mkt"] = await run_direct_mkt(sim_port, args.orders, args.direct_rate)
            sim.check_alive()
        finally:
            for client in (nc, responder):
                if client is not None:
                    try:
                        await asyncio.wait_for(client.close(), 5)
                    except Exception as exc:
                        print(f"closing a NATS client: {exc!r}", file=sys.stderr)
            if sim is not None:
                await sim.stop()
            pg.stop()
            nats_server.stop()
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=1000, help="per-message floor msgs")
    parser.add_argument("--rate", type=float, default=200.0, help="per-message floor: msgs/s")
    parser.add_argument("--batched", type=int, default=5000, help="batched floor: messages")
    parser.add_argument("--requests", type=int, default=1000, help="request/reply round trips")
    parser.add_argument("--orders", type=int, default=200, help="ib_async direct: orders each")
    parser.add_argument("--direct-rate", type=float, default=20.0, help="ib_async: orders/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for value in result.values():
        print(value)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"floor-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "results": result}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
