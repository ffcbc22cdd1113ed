"""The transactional outbox: events published after a database change are never lost.

A service that changes the database and must announce it does not publish directly:
a crash between its commit and its publish would lose the event, and a publish
before the commit would announce a change that may still roll back. It inserts the
message into ``ibflow_outbox`` in the *same* transaction as its writes, and an
:class:`OutboxRelay` publishes committed rows to JetStream::

    async with transaction(pool) as conn:
        await conn.execute("INSERT INTO fills ...")
        await enqueue(conn, subjects.execution(portfolio), event)
    relay.notify()  # after the commit: publish now instead of at the next poll

The message and the writes commit together or not at all: a rolled-back transaction
publishes nothing, a committed one is published even if the process dies right after
the commit (the next relay, here or in another replica, finds the row).

**The relay.** Each batch is one transaction: ``SELECT ... ORDER BY id LIMIT n FOR
UPDATE SKIP LOCKED``, publish every row in id order on one NATS connection with
pipelined PubAcks (``js.publish_async``; JetStream stores messages from one
connection in the order they arrive, so a stream sees them in id order), then
``DELETE`` the rows JetStream acknowledged and commit. A row whose publish failed
(no stream captures its subject, no PubAck in time, JetStream refused it) is kept
and retried after a backoff: a row is deleted only after its positive PubAck. Two
relays (two replicas) never publish the same row concurrently: the second one skips
the rows the first one holds locked.

**Waking up.** The relay publishes as soon as :meth:`OutboxRelay.notify` is called
(an in-process :class:`asyncio.Event`: no sleep between the notify and the batch) and
otherwise every ``poll_interval`` (default 1 s), which picks up rows left by a crashed
process, committed by another replica, or committed without a notify. PostgreSQL
``LISTEN``/``NOTIFY`` was not used: ``pg_notify`` in every producing transaction
serialises commits on the notification queue lock and needs a dedicated listening
connection with its own reconnect logic, for a gain (sub-second cross-replica
latency) that the poll already bounds. Call ``notify()`` *after* the commit: before
it, the relay may look before the row is visible and the message waits for the poll.

**Handing committed rows over (no read back).** A producer on the hot path can save
the relay's read: ``enqueue_many(conn, messages, staged=rows)`` inserts the rows with
``relay_after`` = now + :data:`HANDOVER_GRACE` and appends them (id, subject, payload,
headers) to ``rows``; after the commit, ``relay.notify(rows)`` publishes them from
memory at once. The relay deletes what JetStream acknowledged in one ``DELETE`` for
everything it published in the last ``delete_delay`` seconds (instead of a transaction
per batch: take, publish, delete, commit). Every relay's poll leaves such a row alone
until its ``relay_after``, so another replica does not publish it at the same time;
if the process dies before its relay published or deleted it, the next poll (of any
replica) publishes it after the grace, with the same ``Nats-Msg-Id`` (a duplicate
inside the stream's window, never lost). A row whose publish fails is made pollable
at once (``relay_after`` reset) and retried by the poll with its backoff. Only hand
over rows of a transaction that committed, and never rows staged inside a savepoint
that rolled back. An ``exclusive`` relay does not publish handed rows itself: it makes
them pollable and takes them in its turn, so id order across replicas holds.

**At least once, deduplicated by** ``Nats-Msg-Id``. Every row carries ``msg_id``
(:meth:`~ibflow.contracts.base.Envelope.msg_id` unless given) and is published with
it as ``Nats-Msg-Id``. A row can be published more than once: when the relay dies
(or its database connection breaks) after JetStream stored the batch but before its
``DELETE`` committed, and when a PubAck is lost (timeout) although the message was
stored. The row stays, the next batch publishes it again and JetStream, inside the
stream's duplicate window (default 2 minutes), acknowledges it as a duplicate without
storing it twice. A republish *after* the window stores it a second time: when no
relay takes the rows over for that long (every replica down; or a relay that hangs
instead of dying keeps its rows locked until PostgreSQL drops its connection: keep
TCP keepalives or ``idle_in_transaction_session_timeout`` well under the window), or
when publishing keeps failing for longer than the window after a lost PubAck. So
consumers still deduplicate on the business key or ``msg_id`` (:func:`ibflow.db.claim`)
in the transaction of their own writes; the outbox never loses a committed message.

**Order.** One relay publishes in id order, and ids follow commit order for
transactions that run one after the other. Concurrent transactions may commit in
another order than they took ids, and two relays publish their batches concurrently,
so across replicas order is only by id per batch unless ``exclusive=True``: relays
then take turns (a transaction-level advisory lock per batch), so the stream follows
id order across replicas too, at one more round trip per batch. A publish that fails
while later ones in the same pipelined batch succeed is stored after them when it is
retried.

The table comes from the ``ibflow.db`` migrations (``0002_outbox.sql``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import asyncpg
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Counter, Gauge

from ibflow.bus.errors import NoStreamError, PublishError
from ibflow.bus.metrics import PUBLISH_DUPLICATES, PUBLISHED, subject_root
from ibflow.bus.publisher import MSG_ID_HEADER, message_headers
from ibflow.contracts.base import Envelope
from ibflow.db.errors import DbError
from ibflow.db.pool import AnyConnection, json_dumps
from ibflow.runtime.cancellation import raise_if_cancelled, wait_event

__all__ = [
    "HANDOVER_GRACE",
    "OUTBOX_LOCK_KEY",
    "OUTBOX_TABLE",
    "Notify",
    "OutboxError",
    "OutboxRelay",
    "StagedRow",
    "enqueue",
    "enqueue_many",
]

log = logging.getLogger("ibflow.db")

OUTBOX_TABLE: Final = "ibflow_outbox"
OUTBOX_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"ibflow.outbox").digest()[:8], "big", signed=True
)
"""The ``pg_advisory_xact_lock`` key exclusive relays take turns on (first 8 bytes of a sha256)."""
HANDOVER_GRACE: Final = 10.0
"""Seconds a row handed over in memory stays out of every relay's poll (``relay_after``):
well above a publish and its deferred delete, well under JetStream's 2-minute
duplicate window."""

RELAYED: Final = Counter(
    "ibflow_outbox_relayed_total",
    "Outbox rows published with a positive PubAck and deleted, by subject root.",
    ["subject_root"],
)
RELAY_FAILURES: Final = Counter(
    "ibflow_outbox_publish_failures_total",
    "Outbox rows whose publish failed (kept for a retry), by subject root.",
    ["subject_root"],
)
DEPTH: Final = Gauge(
    "ibflow_outbox_depth",
    "Rows waiting in ibflow_outbox, sampled by the relay about once per poll interval.",
)
OLDEST_AGE: Final = Gauge(
    "ibflow_outbox_oldest_age_seconds",
    "Age of the oldest row in the relay's last batch, by the database clock (0: none found).",
)

_INSERT = (
    "INSERT INTO ibflow_outbox (subject, msg_id, payload, headers) "
    "VALUES ($1, $2, $3, $4::text::jsonb)"
)
# WITH ORDINALITY + ORDER BY: ids are drawn in the order the messages were given.
_INSERT_MANY = (
    "INSERT INTO ibflow_outbox (subject, msg_id, payload, headers) "
    "SELECT m.subject, m.msg_id, m.payload, m.headers::jsonb "
    "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) "
    "WITH ORDINALITY AS m (subject, msg_id, payload, headers, n) ORDER BY m.n"
)
_INSERT_STAGED = (
    "INSERT INTO ibflow_outbox (subject, msg_id, payload, headers, relay_after) "
    "SELECT m.subject, m.msg_id, m.payload, m.headers::jsonb, "
    "now() + make_interval(secs => $5::float8) "
    "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) "
    "WITH ORDINALITY AS m (subject, msg_id, payload, headers, n) ORDER BY m.n "
    "RETURNING id"
)
_LOCK = "SELECT pg_advisory_xact_lock($1)"
_TAKE = (
    "SELECT id, subject, msg_id, payload, headers::text AS headers, "
    "extract(epoch FROM now() - created_at)::float8 AS age "
    "FROM ibflow_outbox WHERE relay_after <= now() "
    "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_DELETE = "DELETE FROM ibflow_outbox WHERE id = ANY($1::bigint[])"
_RELEASE = "UPDATE ibflow_outbox SET relay_after = '-infinity' WHERE id = ANY($1::bigint[])"
_COUNT = "SELECT count(*) FROM ibflow_outbox"


class OutboxError(DbError):
    """The outbox was misused (:func:`enqueue` outside a transaction) or its table is missing."""


@dataclass(frozen=True, slots=True)
class StagedRow:
    """An outbox row as inserted by ``enqueue_many(..., staged=...)``: what the relay
    needs to publish it without reading it back (:meth:`OutboxRelay.notify`)."""

    id: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    """Every header to publish with, ``Nats-Msg-Id`` included."""


def _check_subject(subject: str) -> str:
    tokens = subject.split(".")
    if not subject or any(
        not t or t in ("*", ">") or any(ch.isspace() for ch in t) for t in tokens
    ):
        raise ValueError(f"not a subject one can publish to: {subject!r}")
    return subject


def _row(
    subject: str,
    msg: Envelope,
    msg_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[str, str, bytes, str]:
    """``(subject, msg_id, payload, headers JSON)`` with the headers :func:`publish` would send."""
    hdrs = message_headers(msg, msg_id=msg_id, headers=headers)
    return _check_subject(subject), hdrs.pop(MSG_ID_HEADER), msg.to_json(), json_dumps(hdrs)


def _require_transaction(conn: AnyConnection, name: str) -> None:
    if not conn.is_in_transaction():
        raise OutboxError(
            f"{name}() must run inside the transaction that holds the writes it announces"
        )


class Notify(Protocol):
    """What a producer calls after a commit that enqueued messages (an
    :meth:`OutboxRelay.notify`): with the rows the transaction staged, to hand them
    over; without, to have the table polled now."""

    def __call__(self, staged: Sequence[StagedRow] = (), /) -> None: ...


async def enqueue(
    conn: AnyConnection,
    subject: str,
    msg: Envelope,
    *,
    msg_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Add ``msg`` to the outbox, to be published on ``subject`` once the transaction commits.

    Must run inside the caller's open transaction, so that the message commits or rolls
    back with the writes it announces; raises :class:`OutboxError` otherwise, and
    :class:`ValueError` for a subject with wildcards or empty tokens. The row holds
    ``msg.to_json()`` and the headers :func:`ibflow.bus.publish` would send
    (``Nats-Msg-Id`` is ``msg_id`` if given, else the message's id; ``headers`` are added,
    ours override). One round trip. Call :meth:`OutboxRelay.notify` after the commit.
    """
    _require_transaction(conn, "enqueue")
    await conn.execute(_INSERT, *_row(subject, msg, msg_id, headers))


async def enqueue_many(
    conn: AnyConnection,
    messages: Iterable[tuple[str, Envelope]],
    *,
    staged: list[StagedRow] | None = None,
) -> int:
    """Add ``(subject, msg)`` pairs to the outbox in one round trip; return how many.

    Same rules as :func:`enqueue` (each message's own id as ``Nats-Msg-Id``); the
    messages are published in the order given. With ``staged``, the rows are for
    handing over (module documentation): they stay out of the relays' polls for
    :data:`HANDOVER_GRACE` seconds and are appended to ``staged``, to be given to
    :meth:`OutboxRelay.notify` once the transaction has committed.
    """
    _require_transaction(conn, "enqueue_many")
    rows = [_row(subject, msg) for subject, msg in messages]
    if not rows:
        return 0
    subjects, msg_ids, payloads, headers = (list(column) for column in zip(*rows, strict=True))
    if staged is None:
        await conn.execute(_INSERT_MANY, subjects, msg_ids, payloads, headers)
        return len(rows)
    inserted = await conn.fetch(
        _INSERT_STAGED, subjects, msg_ids, payloads, headers, HANDOVER_GRACE
    )
    # ids are drawn in the order given (ORDER BY m.n), whatever order RETURNING uses
    ids = sorted(record["id"] for record in inserted)
    for row_id, (subject, msg_id, payload, stored) in zip(ids, rows, strict=True):
        staged.append(StagedRow(row_id, subject, payload, _with_msg_id(stored, msg_id)))
    return len(rows)


def _with_msg_id(stored: str | None, msg_id: str) -> dict[str, str]:
    """The headers to publish a row with: its stored headers (JSON) and ``Nats-Msg-Id``."""
    headers = {str(k): str(v) for k, v in json.loads(stored).items()} if stored else {}
    headers[MSG_ID_HEADER] = msg_id
    return headers


def _describe(subject: str, exc: BaseException | None, timeout: float) -> str:
    if exc is None:
        return f"no PubAck for {subject!r} within {timeout:g}s"
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        return str(NoStreamError(subject))
    if isinstance(exc, nats.js.errors.APIError):
        return f"JetStream refused {subject!r}: {exc.description} (err_code {exc.err_code})"
    return str(PublishError(f"cannot publish to {subject!r}: {exc!r}"))


class OutboxRelay:
    """Publish committed outbox rows to JetStream, in id order; a runtime worker.

    ``pool``: the service's asyncpg pool (one connection per batch); ``js``: the
    JetStream context to publish with (one NATS connection, so order holds).
    ``batch_size`` rows are taken per transaction; ``poll_interval`` seconds is the
    longest wait without a :meth:`notify`; ``publish_timeout`` bounds the wait for a
    batch's PubAcks; after a failed batch the relay waits ``retry_initial`` seconds,
    doubling up to ``retry_max``. ``exclusive=True`` makes the relays of all replicas
    take turns so that the stream follows id order across replicas (see the module
    documentation). Rows handed over (:meth:`notify` with rows) are deleted together,
    ``delete_delay`` seconds after the first of them was published (or as soon as
    ``batch_size`` are waiting).

    :meth:`run` until :meth:`stop`; ``published`` counts the rows this relay published
    and deleted. Database errors are logged and retried; a missing ``ibflow_outbox``
    table raises :class:`OutboxError`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        js: JetStreamContext,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_timeout: float = 5.0,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        exclusive: bool = False,
        delete_delay: float = 0.2,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if poll_interval <= 0 or publish_timeout <= 0:
            raise ValueError("poll_interval and publish_timeout must be > 0")
        if not 0 < retry_initial <= retry_max:
            raise ValueError("retry delays must satisfy 0 < retry_initial <= retry_max")
        if not 0 <= delete_delay < HANDOVER_GRACE:
            raise ValueError(f"delete_delay must be >= 0 and < {HANDOVER_GRACE:g}")
        self.pool = pool
        self.js = js
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.exclusive = exclusive
        self.delete_delay = delete_delay
        self.published = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._started = False
        self._poll_requested = True
        self._handed: list[StagedRow] = []
        self._unpollable: list[int] = []
        self._published: list[StagedRow] = []
        self._delete_at = 0.0
        self._counters: dict[str, tuple[Counter, Counter, Counter]] = {}

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is in progress."""
        return self._started and not self._done.is_set()

    def notify(self, staged: Sequence[StagedRow] = ()) -> None:
        """Publish now: call after committing a transaction that enqueued messages.

        Without ``staged``: poll the table now. With the rows ``enqueue_many(...,
        staged=...)`` gave (of a committed transaction only): publish them from memory,
        without reading them back. Cheap and idempotent (sets an :class:`asyncio.Event`);
        call it from the event loop the relay runs on.
        """
        if staged:
            self._handed.extend(staged)
        else:
            self._poll_requested = True
        self._wake.set()

    async def stop(self) -> None:
        """Let the batch in hand finish (publish, delete, commit), publish the rows handed
        over and delete what was published, then wait for :meth:`run`.

        Safe to call more than once, or before :meth:`run` (which then returns at once).
        """
        self._stop.set()
        self._wake.set()
        if self._started:
            await self._done.wait()

    async def run(self) -> None:
        """Relay batches until :meth:`stop` is called."""
        if self._started:
            raise RuntimeError("an OutboxRelay runs only once")
        self._started = True
        loop = asyncio.get_running_loop()
        failures = 0
        next_poll = next_sample = loop.time()
        try:
            while not self._stop.is_set():
                raise_if_cancelled()
                self._wake.clear()
                await self._relay_handed()
                await self._delete_published(force=False)
                if self._poll_requested or loop.time() >= next_poll:
                    self._poll_requested = False
                    try:
                        await self._make_pollable()
                        taken, failed = await self._relay_batch()
                        if loop.time() >= next_sample:
                            DEPTH.set(await self.pool.fetchval(_COUNT))
                            next_sample = loop.time() + self.poll_interval
                    except asyncpg.UndefinedTableError as exc:
                        raise OutboxError(
                            f"{exc}: apply the ibflow.db migrations (0002_outbox.sql)"
                        ) from exc
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        failures += 1
                        delay = self._retry_delay(failures)
                        log.warning(
                            "outbox relay: database error (%r), retrying in %.2fs", exc, delay
                        )
                        self._poll_requested = True
                        await self._sleep(delay)
                        continue
                    if failed:
                        failures += 1
                        self._poll_requested = True
                        await self._sleep(self._retry_delay(failures))
                        continue
                    failures = 0
                    self._poll_requested = taken >= self.batch_size
                    next_poll = loop.time() + self.poll_interval
                if not (self._poll_requested or self._handed):
                    until = next_poll if not self._published else min(next_poll, self._delete_at)
                    await self._idle(until - loop.time())
            await self._relay_handed()
            await self._delete_published(force=True)
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await self._make_pollable()  # else the next relay takes them after the grace
        finally:
            self._done.set()

    # ------------------------------------------------------------------ internals

    def _retry_delay(self, failures: int) -> float:
        return float(min(self.retry_initial * 2 ** (failures - 1), self.retry_max))

    async def _sleep(self, seconds: float) -> None:
        """Back off for ``seconds``; only :meth:`stop` cuts it short."""
        await wait_event(self._stop, seconds)

    async def _idle(self, seconds: float) -> None:
        """Wait for a :meth:`notify`, a :meth:`stop` or ``seconds``."""
        if seconds > 0:
            await wait_event(self._wake, seconds)

    def _metrics(self, subject: str) -> tuple[Counter, Counter, Counter]:
        root = subject_root(subject)
        children = self._counters.get(root)
        if children is None:
            children = self._counters[root] = (
                RELAYED.labels(root),
                RELAY_FAILURES.labels(root),
                PUBLISHED.labels(root),
            )
        return children

    async def _relay_handed(self) -> None:
        """Publish the rows handed over; the acknowledged wait for :meth:`_delete_published`,
        the others (and all of them for an exclusive relay) are made pollable."""
        rows, self._handed = self._handed, []
        if not rows:
            return
        if self.exclusive:
            self._unpollable += [row.id for row in rows]
            self._poll_requested = True
            return
        outcomes = await self._publish([(row.subject, row.payload, row.headers) for row in rows])
        if self._count([(row.id, row.subject) for row in rows], outcomes, "left to the poll"):
            self._poll_requested = True
        for row, outcome in zip(rows, outcomes, strict=True):
            if not isinstance(outcome, PubAck):
                self._unpollable.append(row.id)
                continue
            if not self._published:
                self._delete_at = asyncio.get_running_loop().time() + self.delete_delay
            self._published.append(row)

    async def _make_pollable(self) -> None:
        """Reset ``relay_after`` of handed rows this relay did not publish, so that its
        poll takes them now rather than after the grace."""
        if self._unpollable:
            await self.pool.execute(_RELEASE, self._unpollable)
            self._unpollable = []

    async def _delete_published(self, *, force: bool) -> None:
        """Delete the handed rows JetStream acknowledged, all in one statement, once the
        first has waited ``delete_delay`` (or ``batch_size`` are waiting, or ``force``).
        On a database error they are kept for the next try (and, should the process die
        first, republished after the grace: duplicates inside the window)."""
        rows = self._published
        if not rows:
            return
        due = asyncio.get_running_loop().time() >= self._delete_at
        if not (force or due or len(rows) >= self.batch_size):
            return
        try:
            await self.pool.execute(_DELETE, [row.id for row in rows])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._delete_at = asyncio.get_running_loop().time() + self.retry_max
            log.warning(
                "outbox relay: deleting %d published row(s) failed (%r), retrying", len(rows), exc
            )
            return
        self._published = []
        for row in rows:
            self._metrics(row.subject)[0].inc()
        self.published += len(rows)

    async def _relay_batch(self) -> tuple[int, int]:
        """One batch: take, publish, delete what was acked, commit; ``(taken, failed)``."""
        async with self.pool.acquire() as conn, conn.transaction():
            if self.exclusive:
                await conn.execute(_LOCK, OUTBOX_LOCK_KEY)
            rows = await conn.fetch(_TAKE, self.batch_size)
            if not rows:
                OLDEST_AGE.set(0)
                return 0, 0
            OLDEST_AGE.set(rows[0]["age"])
            outcomes = await self._publish(
                [
                    (row["subject"], row["payload"], _with_msg_id(row["headers"], row["msg_id"]))
                    for row in rows
                ]
            )
            acked = [
                row["id"]
                for row, outcome in zip(rows, outcomes, strict=True)
                if isinstance(outcome, PubAck)  # never a row whose publish failed
            ]
            if acked:
                await conn.execute(_DELETE, acked)
        # Committed: count only what is really gone from the table.
        failed = self._count(
            [(row["id"], row["subject"]) for row in rows], outcomes, "kept for a retry"
        )
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, PubAck):
                self._metrics(row["subject"])[0].inc()
        self.published += len(acked)
        return len(rows), failed

    def _count(
        self, rows: Sequence[tuple[int, str]], outcomes: Sequence[PubAck | str], fate: str
    ) -> int:
        """Count the publishes of ``(id, subject)`` rows and log the failed ones (kept
        for the poll, as ``fate`` says); returns how many failed."""
        failed = 0
        first_failure = ""
        for (row_id, subject), outcome in zip(rows, outcomes, strict=True):
            _, failures, published = self._metrics(subject)
            if isinstance(outcome, PubAck):
                published.inc()
                if outcome.duplicate:
                    PUBLISH_DUPLICATES.inc()
            else:
                failures.inc()
                failed += 1
                first_failure = first_failure or f"row {row_id}: {outcome}"
        if failed:
            log.warning(
                "outbox relay: %d of %d message(s) not published, %s (first: %s)",
                failed,
                len(rows),
                fate,
                first_failure,
            )
        return failed

    async def _publish(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[PubAck | str]:
        """Publish ``(subject, payload, headers)`` in order, pipelined; per message its
        PubAck, or why it failed."""
        futures: list[asyncio.Future[PubAck]] = []
        outcomes: list[PubAck | str] = ["not sent: an earlier send of the batch failed"] * len(
            messages
        )
        for index, (subject, payload, headers) in enumerate(messages):
            try:
                future = await self.js.publish_async(
                    subject, payload, wait_stall=self.publish_timeout, headers=headers
                )
            except nats.errors.Error as exc:
                outcomes[index] = _describe(subject, exc, self.publish_timeout)
                break
            futures.append(future)
        if not futures:
            return outcomes
        try:
            await asyncio.wait(futures, timeout=self.publish_timeout)
        finally:
            for future in futures:
                future.cancel()  # no-op when done; else frees its slot in nats-py's semaphore
        for index, ((subject, _, _), future) in enumerate(zip(messages, futures, strict=False)):
            if future.cancelled():
                outcomes[index] = _describe(subject, None, self.publish_timeout)
            elif (error := future.exception()) is not None:
                outcomes[index] = _describe(subject, error, self.publish_timeout)
            else:
                outcomes[index] = future.result()
        return outcomes
