"""Consumer mechanics: CPU per message of one JetStream pull consumer at a steady rate,
nats-py's ``fetch(batch)`` against ibflow's lingering request (``ibflow.bus.pull``).

One process, an embedded nats-server: ``--messages`` (1,000) published at ``--rate``
(200/s) by a publisher in the same process, consumed and acked one by one by the method
under test. The figure is this process's CPU (user + system) per message, minus the
same run with no consumer at all (the publisher's own cost), so it is the consumer's
share: the pull requests, the waits, the acks. Each method runs ``--rounds`` (3) times,
interleaved.

    uv run python bench/consumer_pull.py [--messages 1000] [--rate 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from ibflow.bus.pull import LingeringPull
from ibflow.testing.embedded import NatsServer

STREAM, DURABLE, SUBJECT = "B", "d", "b.x"

Consume = Callable[[NatsClient, JetStreamContext, int], Awaitable[None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _none(_nc: NatsClient, _js: JetStreamContext, _count: int) -> None:
    return None


async def _fetch(_nc: NatsClient, js: JetStreamContext, count: int) -> None:
    psub = await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)
    got = 0
    while got < count:
        try:
            msgs = await psub.fetch(10, timeout=5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        for msg in msgs:
            await msg.ack()
            got += 1
    await psub.unsubscribe()


async def _lingering(nc: NatsClient, _js: JetStreamContext, count: int) -> None:
    pull = LingeringPull(nc, STREAM, DURABLE, batch=10, expires=5.0)
    await pull.start()
    got = 0
    while got < count:
        for msg in await pull.next_batch():
            await msg.ack()
            got += 1
    await pull.stop()


async def _one(url: str, consume: Consume, count: int, rate: float) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["b.>"])
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT)
    )
    consumer = asyncio.create_task(consume(nc, js, count))
    await asyncio.sleep(0.5)
    before = _cpu()
    start = time.perf_counter()
    for n in range(count):
        await js.publish(SUBJECT, b"%d" % n)
        delay = start + (n + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    async with asyncio.timeout(30):
        await consumer
    spent = _cpu() - before
    await js.delete_stream(STREAM)
    await nc.close()
    return spent / count * 1000


async def main(args: argparse.Namespace) -> None:
    methods: dict[str, Consume] = {"none": _none, "fetch": _fetch, "lingering": _lingering}
    runs: dict[str, list[float]] = {name: [] for name in methods}
    with tempfile.TemporaryDirectory(prefix="ibflow-bench-pull-") as tmp:
        server = NatsServer.start(Path(tmp) / "nats")
        try:
            for _ in range(args.rounds):
                for name, consume in methods.items():
                    runs[name].append(await _one(server.url, consume, args.messages, args.rate))
        finally:
            server.stop()
    base = statistics.median(runs["none"])
    print(f"{args.messages} messages at {args.rate:g}/s, {args.rounds} rounds (medians):")
    for name in ("fetch", "lingering"):
        share = statistics.median(runs[name]) - base
        print(f"  {name:<10} {share:.3f} ms of CPU per message (runs: {runs[name]})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
