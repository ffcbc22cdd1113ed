"""The transactional outbox against real PostgreSQL and a real nats-server (JetStream)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from ibflow.bus import NoStreamError
from ibflow.bus.publisher import MSG_ID_HEADER, TYPE_HEADER
from ibflow.contracts.base import Event
from ibflow.db import (
    OutboxError,
    OutboxRelay,
    StagedRow,
    apply_migrations,
    create_pool,
    enqueue,
    enqueue_many,
    outbox,
    transaction,
)
from ibflow.db.outbox import _TAKE

pytestmark = pytest.mark.integration

STREAM = "OUTBOX_T"
SUBJECT = "outbox.t.fills"
OTHER_SUBJECT = "outbox.t.orders"
UNCAPTURED = "outbox.none.fills"

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


class Probe(Event):
    """A test event with a sequence number and an optional business key."""

    seq: int
    key: str | None = None

    def dedupe_key(self) -> str | None:
        return self.key


class RollbackError(Exception):
    pass


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await apply_migrations(database_url, "ibflow.db")
    pool = await create_pool(database_url, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["outbox.t.>"])
    return js


@pytest.fixture
async def start_relay(pool: Pool) -> AsyncIterator[Callable[..., Awaitable[OutboxRelay]]]:
    """Start relays as background tasks; all are stopped (and must not have failed) at the end."""
    running: list[tuple[OutboxRelay, asyncio.Task[None]]] = []

    async def start(js: JetStreamContext, **kw: Any) -> OutboxRelay:
        relay = OutboxRelay(pool, js, **kw)
        running.append((relay, asyncio.create_task(relay.run())))
        return relay

    try:
        yield start
    finally:
        for relay, task in running:
            await asyncio.wait_for(relay.stop(), 10)
            await task  # re-raises if run() failed


async def wait_for_value(
    probe: Callable[[], Awaitable[object]], expected: object, within: float = 10.0
) -> None:
    """Poll ``probe()`` until it returns ``expected``; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (value := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {within}s, expected {expected!r}")
        await asyncio.sleep(0.02)


async def stored(js: JetStreamContext, stream: str = STREAM) -> list[tuple[str, str, bytes]]:
    """``(subject, Nats-Msg-Id, data)`` of every message in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    result = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        assert msg.headers is not None
        result.append((msg.subject or "", msg.headers[MSG_ID_HEADER], msg.data or b""))
    return result


async def stream_count(js: JetStreamContext, stream: str = STREAM) -> int:
    return (await js.stream_info(stream)).state.messages


async def outbox_ids(pool: Pool) -> list[int]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM ibflow_outbox ORDER BY id")]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_enqueued_message_is_published_after_commit(
    pool: Pool, js: JetStreamContext, start_relay: Callable[..., Awaitable[OutboxRelay]]
) -> None:
    # A long poll interval: only notify() can explain a quick publish.
    relay = await start_relay(js, poll_interval=60.0)
    event = Probe(seq=1, key="exec-0001.01")
    relayed_before = metric("ibflow_outbox_relayed_total", subject_root=SUBJECT)

    async with transaction(pool) as conn:
        await enqueue(conn, SUBJECT, event, headers={"X-Extra": "yes"})
        relay.notify()  # too early: the row is not committed, the relay cannot see it
        await asyncio.sleep(0.3)
        assert await stream_count(js) == 0
    relay.notify()

    await wait_for_value(lambda: stream_count(js), 1, within=2.0)
    msg = await js.get_msg(STREAM, 1)
    assert msg.subject == SUBJECT
    assert msg.data == event.to_json()
    assert msg.headers is not None
    assert msg.headers[MSG_ID_HEADER] == "exec-0001.01" == event.msg_id()
    assert msg.headers[TYPE_HEADER] == "Probe"
    assert msg.headers["X-Extra"] == "yes"
    await wait_for_value(lambda: outbox_ids(pool), [])
    assert relay.published == 1
    assert metric("ibflow_outbox_relayed_total", subject_root=SUBJECT) == relayed_before + 1


async def test_rolled_back_transaction_publishes_nothing(
    pool: Pool, js: JetStreamContext, start_relay: Callable[..., Awaitable[OutboxRelay]]
) -> None:
    relay = await start_relay(js, poll_interval=0.05)

    async def enqueue_then_fail() -> None:
        async with transaction(pool) as conn:
            await enqueue(conn, SUBJECT, Probe(seq=1))
            await enqueue_many(conn, [(SUBJECT, Probe(seq=2)), (OTHER_SUBJECT, Probe(seq=3))])
            raise RollbackError

    with pytest.raises(RollbackError):
        await enqueue_then_fail()
    relay.notify()
    # A committed marker afterwards: once it is stored, the relay has looked past the rest.
    async with transaction(pool) as conn:
        await enqueue(conn, SUBJECT, Probe(seq=4))
    relay.notify()

    await wait_for_value(lambda: outbox_ids(pool), [])
    await asyncio.sleep(0.2)  # a few more polls
    assert [Probe.from_json(data).seq for _, _, data in await stored(js)] == [4]


async def test_enqueue_outside_transaction_is_refused(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(OutboxError, match=r"enqueue\(\) must run inside the transaction"):
            await enqueue(conn, SUBJECT, Probe(seq=1))
        with pytest.raises(OutboxError, match=r"enqueue_many\(\) must run inside"):
            await enqueue_many(conn, [(SUBJECT, Probe(seq=2))])
        async with conn.transaction():
            for subject in ("", "outbox.t.*", "outbox.>", "outbox..x", "outbox.t x"):
                with pytest.raises(ValueError, match="not a subject"):
                    await enqueue(conn, subject, Probe(seq=3))
            assert await enqueue_many(conn, []) == 0
    assert await outbox_ids(pool) == []


async def test_rows_left_by_a_crashed_relay_are_published_by_the_next_one(
    pool: Pool,
    js: JetStreamContext,
    database_url: str,
    start_relay: Callable[..., Awaitable[OutboxRelay]],
) -> None:
    events = [Probe(seq=i) for i in range(5)]
    async with transaction(pool) as conn:
        await enqueue_many(conn, [(SUBJECT, e) for e in events])

    # A relay takes the batch, gets the first three stored, and dies before its DELETE
    # commits (its connection is cut: the server rolls its transaction back).
    crashed = await asyncpg.connect(database_url)
    tx = crashed.transaction()
    await tx.start()
    taken = await crashed.fetch(_TAKE, 100)
    assert [r["msg_id"] for r in taken] == [e.msg_id() for e in events]
    for row in taken[:3]:
        await js.publish(row["subject"], row["payload"], headers={MSG_ID_HEADER: row["msg_id"]})

    # Meanwhile a second relay skips the locked rows instead of publishing them again.
    relay = await start_relay(js, poll_interval=0.1)
    await asyncio.sleep(0.4)
    assert relay.published == 0
    assert await stream_count(js) == 3

    crashed.terminate()
    # No notify: the poll finds the rows once the dead transaction's locks are gone.
    await wait_for_value(lambda: outbox_ids(pool), [], within=5.0)
    assert relay.published == 5  # the first three were PubAck duplicates, not stored again
    assert [(s, i) for s, i, _ in await stored(js)] == [(SUBJECT, e.msg_id()) for e in events]


@pytest.mark.parametrize("handed_over", [False, True], ids=["polled", "handed-over"])
async def test_publish_failure_keeps_the_row_and_retries(
    pool: Pool,
    js: JetStreamContext,
    start_relay: Callable[..., Awaitable[OutboxRelay]],
    caplog: pytest.LogCaptureFixture,
    handed_over: bool,
) -> None:
    failures_before = metric("ibflow_outbox_publish_failures_total", subject_root=UNCAPTURED)
    relay = await start_relay(js, poll_interval=60.0, retry_initial=0.05, retry_max=0.2)
    lost = Probe(seq=1)
    if handed_over:
        # a failed hand-over is made pollable at once (not after the 10 s grace)
        relay.notify(await stage(pool, [(UNCAPTURED, lost), (SUBJECT, Probe(seq=2))]))
    else:
        async with transaction(pool) as conn:
            await enqueue(conn, UNCAPTURED, lost)
            await enqueue(conn, SUBJECT, Probe(seq=2))
        relay.notify()

    # The captured message goes out; the other one fails (no stream) and is kept.
    await wait_for_value(lambda: stream_count(js), 1)

    async def retried_three_times() -> bool:
        failures = metric("ibflow_outbox_publish_failures_total", subject_root=UNCAPTURED)
        return failures >= failures_before + 3

    await wait_for_value(retried_three_times, True, within=3.0)

    async def remaining() -> list[tuple[str, str]]:
        rows = await pool.fetch("SELECT subject, msg_id FROM ibflow_outbox")
        return [(r["subject"], r["msg_id"]) for r in rows]

    # (a handed-over row that was published is deleted with the next batch of deletes)
    await wait_for_value(remaining, [(UNCAPTURED, lost.msg_id())], within=3.0)
    assert str(NoStreamError(UNCAPTURED)) in caplog.text  # the reason, logged

    # Once a stream captures the subject, the retry (no notify needed) publishes it.
    await js.add_stream(name="OUTBOX_LATE", subjects=["outbox.none.>"])
    await wait_for_value(lambda: outbox_ids(pool), [], within=5.0)
    assert [(s, i) for s, i, _ in await stored(js, "OUTBOX_LATE")] == [(UNCAPTURED, lost.msg_id())]
    assert relay.published == 2


async def test_two_relays_publish_each_message_once(
    pool: Pool,
    js: JetStreamContext,
    nats_url: str,
    start_relay: Callable[..., Awaitable[OutboxRelay]],
) -> None:
    total = 500
    events = [Probe(seq=i) for i in range(total)]

    async def produce(chunk: list[Probe]) -> None:
        async with transaction(pool) as conn:
            await enqueue_many(conn, [(SUBJECT, e) for e in chunk])

    await asyncio.gather(*(produce(events[i : i + 10]) for i in range(0, total, 10)))

    duplicates_before = metric("ibflow_bus_publish_duplicates_total")
    other = await nats.connect(nats_url)
    try:
        # Each replica has its own NATS connection; small batches make them interleave.
        first = await start_relay(js, batch_size=25, poll_interval=0.05)
        second = await start_relay(other.jetstream(), batch_size=25, poll_interval=0.05)
        first.notify()
        second.notify()
        await wait_for_value(lambda: outbox_ids(pool), [], within=20.0)
        await second.stop()
    finally:
        await other.close()

    assert first.published > 0
    assert second.published > 0
    assert first.published + second.published == total  # no row was published twice
    assert metric("ibflow_bus_publish_duplicates_total") == duplicates_before
    messages = await stored(js)
    assert len(messages) == total
    assert sorted(msg_id for _, msg_id, _ in messages) == sorted(e.msg_id() for e in events)


async def test_order_is_preserved_for_one_relay(
    pool: Pool, js: JetStreamContext, start_relay: Callable[..., Awaitable[OutboxRelay]]
) -> None:
    relay = await start_relay(js, batch_size=64, poll_interval=0.05)
    expected: list[tuple[str, int]] = []
    seq = 0
    # Sequential transactions, some with one message, some with many, on two subjects,
    # while the relay is already publishing.
    for round_ in range(30):
        async with transaction(pool) as conn:
            if round_ % 3 == 0:
                subject = SUBJECT if round_ % 2 else OTHER_SUBJECT
                await enqueue(conn, subject, Probe(seq=seq))
                expected.append((subject, seq))
                seq += 1
            else:
                batch = []
                for i in range(17):
                    subject = SUBJECT if i % 2 else OTHER_SUBJECT
                    batch.append((subject, Probe(seq=seq)))
                    expected.append((subject, seq))
                    seq += 1
                await enqueue_many(conn, batch)
        relay.notify()

    await wait_for_value(lambda: outbox_ids(pool), [], within=20.0)
    got = [(s, Probe.from_json(data).seq) for s, _, data in await stored(js)]
    assert got == expected


async def test_exclusive_relays_keep_id_order_across_replicas(
    pool: Pool,
    js: JetStreamContext,
    nats_url: str,
    start_relay: Callable[..., Awaitable[OutboxRelay]],
) -> None:
    total = 300
    async with transaction(pool) as conn:
        await enqueue_many(conn, [(SUBJECT, Probe(seq=i)) for i in range(total)])
    other = await nats.connect(nats_url)
    try:
        first = await start_relay(js, batch_size=20, poll_interval=0.05, exclusive=True)
        second = await start_relay(
            other.jetstream(), batch_size=20, poll_interval=0.05, exclusive=True
        )
        await wait_for_value(lambda: outbox_ids(pool), [], within=20.0)
        await second.stop()
    finally:
        await other.close()
    assert first.published + second.published == total
    assert [Probe.from_json(data).seq for _, _, data in await stored(js)] == list(range(total))


async def stage(pool: Pool, messages: list[tuple[str, Probe]]) -> list[StagedRow]:
    """Commit ``messages`` as rows for handing over; the rows, not handed to anyone yet."""
    staged: list[StagedRow] = []
    async with transaction(pool) as conn:
        assert await enqueue_many(conn, messages, staged=staged) == len(messages)
    return staged


async def test_handed_over_rows_are_published_without_a_poll_and_deleted_later_together(
    pool: Pool, js: JetStreamContext, start_relay: Callable[..., Awaitable[OutboxRelay]]
) -> None:
    # No poll after the first one (at start, on an empty table): only the hand-over can
    # explain a publish; a long delete delay shows the rows are deleted afterwards.
    relay = await start_relay(js, poll_interval=60.0, delete_delay=2.0)
    await asyncio.sleep(0.1)
    events = [(SUBJECT, Probe(seq=1)), (OTHER_SUBJECT, Probe(seq=2)), (SUBJECT, Probe(seq=3))]
    staged = await stage(pool, events)
    assert [row.id for row in staged] == await outbox_ids(pool)  # in the order given
    assert staged[0].headers[MSG_ID_HEADER] == events[0][1].msg_id()
    assert staged[0].headers[TYPE_HEADER] == "Probe"

    relay.notify(staged)
    await wait_for_value(lambda: stream_count(js), 3, within=2.0)
    assert [(s, i) for s, i, _ in await stored(js)] == [(s, e.msg_id()) for s, e in events]
    assert await outbox_ids(pool) == [row.id for row in staged]  # published, not yet deleted
    assert relay.published == 0

    await wait_for_value(lambda: outbox_ids(pool), [], within=5.0)
    assert relay.published == 3
    assert await stream_count(js) == 3


async def test_committed_rows_never_handed_over_are_polled_after_the_grace(
    pool: Pool,
    js: JetStreamContext,
    start_relay: Callable[..., Awaitable[OutboxRelay]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The producer commits and dies before handing its rows over. Another replica's
    # relay polls often, but leaves them alone until the grace is over (it would
    # otherwise publish them while their own relay does), then publishes them once.
    monkeypatch.setattr(outbox, "HANDOVER_GRACE", 1.0)
    other = await start_relay(js, poll_interval=0.05, delete_delay=0.0)
    events = [(SUBJECT, Probe(seq=i)) for i in range(3)]
    started = time.monotonic()
    await stage(pool, events)
    await asyncio.sleep(0.5)
    assert await stream_count(js) == 0

    await wait_for_value(lambda: outbox_ids(pool), [], within=5.0)
    assert time.monotonic() - started >= 1.0
    assert other.published == 3
    assert [(s, i) for s, i, _ in await stored(js)] == [(s, e.msg_id()) for s, e in events]


async def test_stop_publishes_what_was_handed_over_and_deletes_it(
    pool: Pool, js: JetStreamContext
) -> None:
    relay = OutboxRelay(pool, js, poll_interval=60.0, delete_delay=5.0)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.1)
    staged = await stage(pool, [(SUBJECT, Probe(seq=i)) for i in range(4)])
    relay.notify(staged)
    await asyncio.wait_for(relay.stop(), 5)  # well before the delete delay
    await task
    assert await stream_count(js) == 4
    assert await outbox_ids(pool) == []
    assert relay.published == 4


async def test_exclusive_relay_takes_handed_over_rows_in_its_turn(
    pool: Pool, js: JetStreamContext, start_relay: Callable[..., Awaitable[OutboxRelay]]
) -> None:
    async with transaction(pool) as conn:
        await enqueue(conn, SUBJECT, Probe(seq=0))  # an older row, not handed over
    relay = await start_relay(js, poll_interval=60.0, exclusive=True)
    staged = await stage(pool, [(SUBJECT, Probe(seq=1)), (SUBJECT, Probe(seq=2))])
    relay.notify(staged)
    await wait_for_value(lambda: outbox_ids(pool), [], within=5.0)
    assert [Probe.from_json(data).seq for _, _, data in await stored(js)] == [0, 1, 2]


async def test_stop_before_run_returns_at_once_and_relay_runs_once(
    pool: Pool, js: JetStreamContext
) -> None:
    relay = OutboxRelay(pool, js)
    await relay.stop()
    await asyncio.wait_for(relay.run(), 2)  # returns at once: stop came first
    assert not relay.running
    with pytest.raises(RuntimeError, match="runs only once"):
        await relay.run()
    with pytest.raises(ValueError, match="batch_size"):
        OutboxRelay(pool, js, batch_size=0)
    with pytest.raises(ValueError, match="delete_delay"):
        OutboxRelay(pool, js, delete_delay=outbox.HANDOVER_GRACE)


async def test_missing_table_is_reported(database_url: str, js: JetStreamContext) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        relay = OutboxRelay(pool, js)
        with pytest.raises(OutboxError, match=r"ibflow\.db migrations"):
            await asyncio.wait_for(relay.run(), 5)
    finally:
        with contextlib.suppress(Exception):
            await pool.close()
