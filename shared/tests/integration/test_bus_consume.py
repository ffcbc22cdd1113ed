"""Publishing and consuming through a real nats-server: dedupe, ack decisions, dead letters."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from pydantic import BaseModel

from ibflow.bus import (
    BatchConsumerRunner,
    BatchSubscriber,
    ConsumerRunner,
    ConsumerSpec,
    Delivery,
    NoStreamError,
    ProvisioningError,
    PublishError,
    Reject,
    Retry,
    Subscriber,
    ensure_consumer,
    ensure_stream,
    publish,
    publish_batch,
)
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_PREFIX, EVENTS_STREAM, dead_letter
from ibflow.contracts.base import Event
from ibflow.contracts.system import MessageDeadLettered

pytestmark = pytest.mark.integration

SUBJECT = f"{EVENTS_PREFIX}.widget_made.p1"


class WidgetMade(Event):
    """Test-only event."""

    widget: str
    size: int = 1


class WidgetShipped(Event):
    """Test-only event with a business dedupe key."""

    shipment: str

    def dedupe_key(self) -> str:
        return f"shipment:{self.shipment}"


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    """JetStream with the events and dead-letter streams provisioned."""
    context = nc.jetstream()
    await ensure_stream(context, EVENTS_STREAM)
    await ensure_stream(context, DEAD_LETTER_STREAM)
    return context


async def make_consumer(
    js: JetStreamContext, durable: str, *, ack_wait_seconds: float = 2.0, max_deliver: int = 5
) -> ConsumerSpec:
    spec = ConsumerSpec(
        stream=EVENTS_STREAM.name,
        durable=durable,
        filter_subjects=(f"{EVENTS_PREFIX}.widget_made.>",),
        ack_wait_seconds=ack_wait_seconds,
        max_deliver=max_deliver,
    )
    await ensure_consumer(js, spec)
    return spec


@contextlib.asynccontextmanager
async def running(runner: ConsumerRunner[WidgetMade]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        await runner.stop()
        await task


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def dead_letters(js: JetStreamContext, durable: str, count: int) -> list[MessageDeadLettered]:
    """The first ``count`` dead letters of ``durable``, waiting for them to arrive."""

    async def arrived() -> bool:
        try:
            info = await js.stream_info(
                DEAD_LETTER_STREAM.name, subjects_filter=dead_letter(durable)
            )
        except nats.js.errors.NotFoundError:
            return False
        return (info.state.subjects or {}).get(dead_letter(durable), 0) >= count

    await eventually(arrived)
    letters: list[MessageDeadLettered] = []
    seq = 0
    while len(letters) < count:
        raw = await js.get_msg(
            DEAD_LETTER_STREAM.name, seq=seq + 1, subject=dead_letter(durable), next=True
        )
        assert raw.data is not None
        assert raw.seq is not None
        seq = raw.seq
        assert (raw.headers or {})["Nats-Msg-Id"].startswith(f"dlq:{durable}:")
        letters.append(MessageDeadLettered.from_json(raw.data))
    return letters


async def settled(js: JetStreamContext, durable: str) -> bool:
    info = await js.consumer_info(EVENTS_STREAM.name, durable)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


def sample(name: str, consumer: str) -> float:
    return REGISTRY.get_sample_value(name, {"consumer": consumer}) or 0.0


# --------------------------------------------------------------------------- publish


async def test_same_msg_id_published_twice_is_stored_once(js: JetStreamContext) -> None:
    duplicates_before = REGISTRY.get_sample_value("ibflow_bus_publish_duplicates_total") or 0.0
    event = WidgetMade(widget="w1")

    first = await publish(js, SUBJECT, event)
    second = await publish(js, SUBJECT, event)

    assert not first.duplicate
    assert second.duplicate is True
    assert second.seq == first.seq
    info = await js.stream_info(EVENTS_STREAM.name)
    assert info.state.messages == 1
    stored = await js.get_msg(EVENTS_STREAM.name, seq=first.seq)
    headers = stored.headers or {}
    assert headers["Nats-Msg-Id"] == str(event.event_id)
    assert headers["Ibflow-Type"] == "WidgetMade"

    # a business dedupe key wins over the event id: two distinct events, one stored
    one = await publish(js, SUBJECT, WidgetShipped(shipment="s-9"))
    two = await publish(js, SUBJECT, WidgetShipped(shipment="s-9"))
    assert two.duplicate is True
    assert two.seq == one.seq
    # and an explicit msg_id wins over both
    three = await publish(js, SUBJECT, WidgetShipped(shipment="s-9"), msg_id="explicit-1")
    assert not three.duplicate
    assert (await js.stream_info(EVENTS_STREAM.name)).state.messages == 3
    duplicates = REGISTRY.get_sample_value("ibflow_bus_publish_duplicates_total") or 0.0
    assert duplicates - duplicates_before == 2


async def test_publish_to_subject_without_stream_fails_loudly(nc: NatsClient) -> None:
    js = nc.jetstream()  # no stream at all
    started = time.monotonic()
    with pytest.raises(NoStreamError, match=r"ibflow\.evt\.v1\.widget_made\.p1") as caught:
        await publish(js, SUBJECT, WidgetMade(widget="w"), timeout=2.0)
    assert isinstance(caught.value, PublishError)
    assert caught.value.subject == SUBJECT
    assert time.monotonic() - started < 1.0  # no-responders, not a timeout

    await ensure_stream(js, EVENTS_STREAM)  # a stream that does not capture the subject
    with pytest.raises(NoStreamError):
        await publish(js, "ibflow.elsewhere.v1.x", WidgetMade(widget="w"), timeout=2.0)


async def test_a_batch_is_stored_in_order_and_a_message_without_stream_fails_alone(
    js: JetStreamContext,
) -> None:
    events = [WidgetMade(widget=f"w{n}") for n in range(5)]
    items = [(SUBJECT, e) for e in events[:2]]
    items += [("ibflow.elsewhere.v1.x", WidgetMade(widget="lost"))]
    items += [(SUBJECT, e) for e in events[2:]]

    outcomes = await publish_batch(js, items, timeout=2.0)

    assert isinstance(outcomes[2], NoStreamError)
    acks = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(acks) == 5
    assert [a.seq for a in acks] == sorted(a.seq for a in acks)
    stored = [await js.get_msg(EVENTS_STREAM.name, seq=a.seq) for a in acks]
    assert [(m.headers or {})["Nats-Msg-Id"] for m in stored] == [str(e.event_id) for e in events]

    again = await publish_batch(js, [(SUBJECT, events[0]), (SUBJECT, events[4])], timeout=2.0)
    assert [getattr(o, "duplicate", None) for o in again] == [True, True]
    assert (await js.stream_info(EVENTS_STREAM.name)).state.messages == 5


# --------------------------------------------------------------------------- consume


async def test_handler_crash_before_ack_sees_message_again(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "crashy")
    seen: list[int] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            raise RuntimeError("database went away")

    runner = ConsumerRunner(js, Subscriber(spec, WidgetMade, handler), error_delays=(0.05,))
    ack = await publish(js, SUBJECT, WidgetMade(widget="w1"))
    async with running(runner):
        await eventually(lambda: settled(js, "crashy"))
    assert seen == [1, 2]
    info = await js.consumer_info(EVENTS_STREAM.name, "crashy")
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq == ack.seq


async def test_runner_killed_mid_handler_message_is_redelivered_after_ack_wait(
    js: JetStreamContext,
) -> None:
    spec = await make_consumer(js, "killed", ack_wait_seconds=0.5)
    entered = asyncio.Event()

    async def hang(msg: WidgetMade, delivery: Delivery) -> None:
        entered.set()
        await asyncio.sleep(60)

    first = ConsumerRunner(js, Subscriber(spec, WidgetMade, hang))
    task = asyncio.create_task(first.run())
    await publish(js, SUBJECT, WidgetMade(widget="w1"))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()  # the process "dies" inside the handler: no ack, no nak
    with pytest.raises(asyncio.CancelledError):
        await task
    killed_at = time.monotonic()

    deliveries: list[tuple[int, float]] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        deliveries.append((delivery.num_delivered, time.monotonic() - killed_at))

    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, handler))):
        await eventually(lambda: settled(js, "killed"))
    assert [n for n, _ in deliveries] == [2]
    assert deliveries[0][1] >= 0.3  # it came back when ack_wait (0.5 s) ran out


async def test_retry_redelivers_after_its_delay(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "patient")
    delay = 0.4
    seen: list[tuple[int, float]] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        seen.append((delivery.num_delivered, time.monotonic()))
        if delivery.num_delivered == 1:
            raise Retry(delay)

    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, handler))):
        await publish(js, SUBJECT, WidgetMade(widget="w1"))
        await eventually(lambda: settled(js, "patient"))
    assert [n for n, _ in seen] == [1, 2]
    waited = seen[1][1] - seen[0][1]
    assert waited >= 0.8 * delay
    assert waited < 1.5  # well before ack_wait (2 s): it was the nak delay, not a timeout


async def test_reject_lands_on_dead_letter_subject_with_reason_and_payload(
    js: JetStreamContext,
) -> None:
    spec = await make_consumer(js, "picky", ack_wait_seconds=0.5)
    calls = 0

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise Reject(f"widget {msg.widget} is too small")

    correlation = uuid.uuid4()
    event = WidgetMade(widget="w7", size=0, correlation_id=correlation)
    before = sample("ibflow_bus_dead_lettered_total", "picky")
    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, handler))):
        ack = await publish(js, SUBJECT, event)
        [letter] = await dead_letters(js, "picky", 1)
        await eventually(lambda: settled(js, "picky"))
        await asyncio.sleep(0.7)  # past ack_wait: a term'ed message never comes back
    assert calls == 1
    assert letter.reason == "widget w7 is too small"
    assert base64.b64decode(letter.payload_b64) == event.to_json()
    assert letter.consumer == "picky"
    assert letter.stream == EVENTS_STREAM.name
    assert letter.subject == SUBJECT
    assert letter.stream_sequence == ack.seq
    assert letter.delivery_count == 1
    assert letter.original_msg_id == str(event.event_id)
    assert letter.headers["Ibflow-Type"] == "WidgetMade"
    assert letter.correlation_id == correlation
    assert sample("ibflow_bus_dead_lettered_total", "picky") - before == 1
    raw = await js.get_last_msg(DEAD_LETTER_STREAM.name, dead_letter("picky"))
    assert (raw.headers or {})["Nats-Msg-Id"] == f"dlq:picky:{ack.stream}:{ack.seq}"


async def test_undecodable_payload_is_dead_lettered_with_reason(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "strict")
    handled: list[WidgetMade] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        handled.append(msg)

    bad_json = b'{"widget": "w1", '
    bad_schema = b'{"widget": ["not", "a", "string"]}'
    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, handler))):
        first = await js.publish(SUBJECT, bad_json)
        second = await js.publish(SUBJECT, bad_schema)
        letters = await dead_letters(js, "strict", 2)
        await eventually(lambda: settled(js, "strict"))
    assert handled == []
    by_seq = {letter.stream_sequence: letter for letter in letters}
    assert by_seq[first.seq].reason.startswith("undecodable payload")
    assert "Invalid JSON" in by_seq[first.seq].reason
    assert base64.b64decode(by_seq[first.seq].payload_b64) == bad_json
    assert "widget" in by_seq[second.seq].reason
    assert "valid string" in by_seq[second.seq].reason
    assert base64.b64decode(by_seq[second.seq].payload_b64) == bad_schema
    assert by_seq[second.seq].original_msg_id == f"{EVENTS_STREAM.name}:{second.seq}"


async def test_max_deliveries_exceeded_is_dead_lettered(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "doomed", max_deliver=3)
    seen: list[int] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        raise RuntimeError(f"boom {delivery.num_delivered}")

    consumed = sample("ibflow_bus_consumed_total", "doomed")
    redelivered = sample("ibflow_bus_redelivered_total", "doomed")
    runner = ConsumerRunner(js, Subscriber(spec, WidgetMade, handler), error_delays=(0.05,))
    async with running(runner):
        await publish(js, SUBJECT, WidgetMade(widget="w1"))
        [letter] = await dead_letters(js, "doomed", 1)
        await eventually(lambda: settled(js, "doomed"))
        await asyncio.sleep(0.2)
    assert seen == [1, 2, 3]
    assert letter.reason.startswith("max deliveries exceeded: ")
    assert "boom 3" in letter.reason
    assert letter.delivery_count == 3
    assert sample("ibflow_bus_consumed_total", "doomed") - consumed == 3
    assert sample("ibflow_bus_redelivered_total", "doomed") - redelivered == 2


async def test_retry_on_last_delivery_is_dead_lettered(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "hopeless", max_deliver=2)

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        raise Retry(0.05, "downstream busy")

    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, handler))):
        await publish(js, SUBJECT, WidgetMade(widget="w1"))
        [letter] = await dead_letters(js, "hopeless", 1)
    assert letter.reason == "max deliveries exceeded: retry in 0.05s: downstream busy"
    assert letter.delivery_count == 2


async def test_dead_letter_publish_failure_naks_instead_of_losing(
    js: JetStreamContext,
) -> None:
    spec = await make_consumer(js, "keeper")
    seen: list[int] = []

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        if len(seen) == 1:
            await js.delete_stream(DEAD_LETTER_STREAM.name)  # the dead letter cannot be stored
            raise Reject("first try")
        if len(seen) == 2:
            await ensure_stream(js, DEAD_LETTER_STREAM)
            raise Reject("second try")

    runner = ConsumerRunner(js, Subscriber(spec, WidgetMade, handler), error_delays=(0.05,))
    async with running(runner):
        await publish(js, SUBJECT, WidgetMade(widget="w1"))
        [letter] = await dead_letters(js, "keeper", 1)
    assert seen == [1, 2]
    assert letter.reason == "second try"
    assert letter.delivery_count == 2


async def test_runner_stop_finishes_in_flight_message(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "graceful", ack_wait_seconds=5.0)
    entered = asyncio.Event()
    finished: list[str] = []

    async def slow(msg: WidgetMade, delivery: Delivery) -> None:
        entered.set()
        await asyncio.sleep(0.3)
        finished.append(msg.widget)

    runner = ConsumerRunner(js, Subscriber(spec, WidgetMade, slow), batch=10)
    for name in ("a", "b", "c"):
        await publish(js, SUBJECT, WidgetMade(widget=name))
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(entered.wait(), 5)
    await runner.stop()
    assert task.done()
    await task
    assert finished == ["a"]  # the in-flight message completed, nothing else started

    # "a" was acked; "b" and "c" were released at once (not after ack_wait = 5 s)
    started = time.monotonic()
    rest: list[str] = []

    async def quick(msg: WidgetMade, delivery: Delivery) -> None:
        rest.append(msg.widget)

    async with running(ConsumerRunner(js, Subscriber(spec, WidgetMade, quick))):
        await eventually(lambda: settled(js, "graceful"), within=3.0)
    assert sorted(rest) == ["b", "c"]
    assert time.monotonic() - started < 3.0


async def test_runner_stop_while_idle_returns_promptly(js: JetStreamContext) -> None:
    spec = await make_consumer(js, "idle")

    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        return None

    runner = ConsumerRunner(js, Subscriber(spec, WidgetMade, handler), fetch_timeout=30.0)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    assert runner.running
    started = time.monotonic()
    await runner.stop()
    await task
    assert time.monotonic() - started < 1.0
    assert not runner.running


async def test_runner_refuses_to_start_without_its_consumer_or_dead_letter_stream(
    js: JetStreamContext,
) -> None:
    async def handler(msg: WidgetMade, delivery: Delivery) -> None:
        return None

    missing = ConsumerSpec(stream=EVENTS_STREAM.name, durable="ghost")
    with pytest.raises(ProvisioningError, match="ghost"):
        await ConsumerRunner(js, Subscriber(missing, WidgetMade, handler)).run()

    spec = await make_consumer(js, "orphan")
    await js.delete_stream(DEAD_LETTER_STREAM.name)
    with pytest.raises(ProvisioningError, match=r"ibflow\.dlq\.v1\.orphan"):
        await ConsumerRunner(js, Subscriber(spec, WidgetMade, handler)).run()
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.stream_info(DEAD_LETTER_STREAM.name)


# --------------------------------------------------------------------------- batches

MADE = f"{EVENTS_PREFIX}.widget_made.p1"
SHIPPED = f"{EVENTS_PREFIX}.widget_shipped.p1"


async def make_batch_consumer(js: JetStreamContext, durable: str) -> ConsumerSpec:
    spec = ConsumerSpec(
        stream=EVENTS_STREAM.name,
        durable=durable,
        filter_subjects=(f"{EVENTS_PREFIX}.widget_made.>", f"{EVENTS_PREFIX}.widget_shipped.>"),
        ack_wait_seconds=2.0,
        max_deliver=5,
    )
    await ensure_consumer(js, spec)
    return spec


def label(model: BaseModel) -> str:
    if isinstance(model, WidgetShipped):
        return model.shipment
    assert isinstance(model, WidgetMade)
    return model.widget


MODELS = {
    f"{EVENTS_PREFIX}.widget_made.*": WidgetMade,
    f"{EVENTS_PREFIX}.widget_shipped.*": WidgetShipped,
}


async def test_messages_published_together_reach_the_handler_as_one_batch_in_order(
    js: JetStreamContext,
) -> None:
    spec = await make_batch_consumer(js, "batched")
    calls: list[list[str]] = []

    async def handler(items: Sequence[tuple[BaseModel, Delivery]]) -> None:
        calls.append([label(m) for m, _ in items])

    for n in range(5):
        await publish(js, MADE, WidgetMade(widget=f"w{n}"))
        await publish(js, SHIPPED, WidgetShipped(shipment=f"s{n}"))
    runner = BatchConsumerRunner(js, BatchSubscriber(spec, MODELS, handler), batch=50)
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: settled(js, "batched"))
    finally:
        await runner.stop()
        await task
    assert calls == [[name for n in range(5) for name in (f"w{n}", f"s{n}")]]


async def test_failed_batch_is_retried_one_by_one_and_only_the_poison_is_dead_lettered(
    js: JetStreamContext,
) -> None:
    spec = await make_batch_consumer(js, "poisoned")
    sizes: list[int] = []
    booked: list[str] = []

    async def handler(items: Sequence[tuple[BaseModel, Delivery]]) -> None:
        sizes.append(len(items))
        names = [m.widget for m, _ in items if isinstance(m, WidgetMade)]
        if "poison" in names:
            raise Reject("poison widget")
        booked.extend(names)

    for name in ("a", "poison", "b"):
        await publish(js, MADE, WidgetMade(widget=name))
    await js.publish(SHIPPED, b'{"shipment": 7}')  # undecodable: dead-lettered on its own
    runner = BatchConsumerRunner(js, BatchSubscriber(spec, MODELS, handler), batch=50)
    task = asyncio.create_task(runner.run())
    try:
        letters = await dead_letters(js, "poisoned", 2)
        await eventually(lambda: settled(js, "poisoned"))
    finally:
        await runner.stop()
        await task
    assert sizes == [3, 1, 1, 1]
    assert booked == ["a", "b"]
    reasons = sorted(letter.reason for letter in letters)
    assert reasons[0].startswith("poison widget")
    assert reasons[1].startswith("undecodable payload")


async def test_message_on_a_subject_without_a_model_is_dead_lettered(js: JetStreamContext) -> None:
    spec = await make_batch_consumer(js, "narrow")
    seen: list[BaseModel] = []

    async def handler(items: Sequence[tuple[BaseModel, Delivery]]) -> None:
        seen.extend(m for m, _ in items)

    only_made = {f"{EVENTS_PREFIX}.widget_made.*": WidgetMade}
    await publish(js, SHIPPED, WidgetShipped(shipment="s1"))
    await publish(js, MADE, WidgetMade(widget="w1"))
    runner = BatchConsumerRunner(js, BatchSubscriber(spec, only_made, handler))
    task = asyncio.create_task(runner.run())
    try:
        [letter] = await dead_letters(js, "narrow", 1)
        await eventually(lambda: settled(js, "narrow"))
    finally:
        await runner.stop()
        await task
    assert [m.widget for m in seen if isinstance(m, WidgetMade)] == ["w1"]
    assert letter.reason == f"no model for subject {SHIPPED!r}"
