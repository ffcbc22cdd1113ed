"""``LingeringPull`` against a real nats-server: one pull request per batch (not two per
message), batches of what was stored together, an empty return when a request expires,
and a clear error when the consumer is deleted under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from ibflow.bus.pull import LingeringPull

pytestmark = pytest.mark.integration

STREAM = "PULLTEST"
DURABLE = "puller"
REQUESTS = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}"


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await context.add_stream(name=STREAM, subjects=["pulltest.>"])
    await context.add_consumer(
        STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT)
    )
    return context


@pytest.fixture
async def requests(nc: NatsClient) -> AsyncIterator[list[Msg]]:
    """Every pull request sent to the consumer (a plain subscriber sees them too)."""
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe(REQUESTS, cb=record)
    yield seen
    await sub.unsubscribe()


async def started(nc: NatsClient, *, batch: int = 10, expires: float = 5.0) -> LingeringPull:
    pull = LingeringPull(nc, STREAM, DURABLE, batch=batch, expires=expires)
    await pull.start()
    return pull


async def test_a_steady_stream_costs_one_pull_request_per_batch_not_two_per_message(
    nc: NatsClient, js: JetStreamContext, requests: list[Msg]
) -> None:
    pull = await started(nc, batch=10)
    received: list[bytes] = []
    try:
        for n in range(30):
            await js.publish("pulltest.x", f"m{n}".encode())
            for msg in await pull.next_batch():
                received.append(msg.data)
                await msg.ack()
    finally:
        await pull.stop()
    await nc.flush()

    assert received == [f"m{n}".encode() for n in range(30)]
    assert len(requests) == 3  # one per batch of 10; nats-py's fetch sent about 60


async def test_messages_stored_together_come_as_one_batch(
    nc: NatsClient, js: JetStreamContext
) -> None:
    pull = await started(nc, batch=10)
    try:
        acks = [await js.publish_async(f"pulltest.{n}", b"x") for n in range(4)]
        await asyncio.gather(*acks)
        batch = await pull.next_batch()
    finally:
        await pull.stop()

    assert [msg.subject for msg in batch] == [f"pulltest.{n}" for n in range(4)]


async def test_an_expired_request_returns_nothing_and_the_next_call_asks_again(
    nc: NatsClient, js: JetStreamContext, requests: list[Msg]
) -> None:
    pull = await started(nc, expires=0.2)
    try:
        assert await pull.next_batch() == []
        await js.publish("pulltest.x", b"late")
        batch = await pull.next_batch()
    finally:
        await pull.stop()

    assert [msg.data for msg in batch] == [b"late"]
    assert len(requests) == 2


async def test_a_consumer_deleted_under_an_open_request_is_an_error(
    nc: NatsClient, js: JetStreamContext
) -> None:
    pull = await started(nc)
    try:
        waiting = asyncio.create_task(pull.next_batch())
        await asyncio.sleep(0.1)
        await js.delete_consumer(STREAM, DURABLE)

        with pytest.raises(nats.js.errors.APIError):
            await waiting
    finally:
        await pull.stop()


async def test_stop_hands_back_what_was_delivered_but_not_taken(
    nc: NatsClient, js: JetStreamContext
) -> None:
    pull = await started(nc, batch=2)
    try:
        waiting = asyncio.create_task(pull.next_batch())
        await asyncio.sleep(0.1)
        await js.publish("pulltest.x", b"m0")
        assert [msg.data for msg in await waiting] == [b"m0"]
        # the request for 2 is still open: m1 is delivered, and nobody takes it
        await js.publish("pulltest.x", b"m1")
        await asyncio.sleep(0.3)
    finally:
        left = await pull.stop()

    assert [msg.data for msg in left] == [b"m1"]


async def _consumer_delivering_one_at_a_time(js: JetStreamContext) -> None:
    """The consumer again, with one unacked message at most: the second message is
    pending behind the first but not delivered until the first is acked."""
    await js.delete_consumer(STREAM, DURABLE)
    await js.add_consumer(
        STREAM,
        ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1),
    )


async def test_a_pending_message_that_does_not_come_ends_the_batch_soon(
    nc: NatsClient, js: JetStreamContext
) -> None:
    await _consumer_delivering_one_at_a_time(js)
    pull = await started(nc)
    try:
        await asyncio.gather(*[await js.publish_async("pulltest.x", b"m%d" % n) for n in (0, 1)])
        async with asyncio.timeout(2):
            batch = await pull.next_batch()
    finally:
        await pull.stop()

    assert [msg.data for msg in batch] == [b"m0"]


async def test_a_batch_cancelled_while_it_waits_is_handed_back_by_stop(
    nc: NatsClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ibflow.bus.pull._FOLLOW", 30.0)
    await _consumer_delivering_one_at_a_time(js)
    pull = await started(nc)
    try:
        await asyncio.gather(*[await js.publish_async("pulltest.x", b"m%d" % n) for n in (0, 1)])
        waiting = asyncio.create_task(pull.next_batch())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        left = await pull.stop()

    assert [msg.data for msg in left] == [b"m0"]
