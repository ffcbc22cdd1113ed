"""Run a typed handler over a durable pull consumer, with explicit ack decisions.

A :class:`Subscriber` ties a :class:`~ibflow.bus.specs.ConsumerSpec`, the pydantic
model of its messages and an ``async handler(msg, delivery)``. A
:class:`ConsumerRunner` fetches batches and handles each message in order, one at
a time, and decides:

* the handler returns: ``ack()``, after it returned (so it commits inside);
* it raises :class:`~ibflow.bus.errors.Retry`: ``nak(delay)``;
* it raises :class:`~ibflow.bus.errors.Reject`: dead-letter with the reason, ``term()``;
* it raises anything else: log it, ``nak`` with a backoff (the runner never crashes);
* the payload does not decode (bad JSON, schema): dead-letter with the validation
  error, ``term()``; the handler is not called;
* it fails on the last delivery ``max_deliver`` allows: dead-letter with
  ``"max deliveries exceeded: <error>"``, ``term()``.

Dead letters are :class:`~ibflow.contracts.system.MessageDeadLettered` events on
``ibflow.dlq.v1.<durable>`` (``Nats-Msg-Id`` from ``MessageDeadLettered.dedupe_key()``); if that
publish fails the message is nak'ed instead, never dropped. Delivery is at least
once: a crash between the handler's commit and the ack redelivers the message,
so handlers must be idempotent on a business key. Acks are fire-and-forget (not
``ack_sync``); a lost ack is a redelivery, which idempotency absorbs.

Messages are handled sequentially, so a batch must fit in the consumer's
``ack_wait``; run several runners (or processes) on the same durable to scale out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from ibflow.bus.errors import (
    BusError,
    ProvisioningError,
    PublishError,
    Reject,
    Retry,
    describe_validation_error,
)
from ibflow.bus.metrics import CONSUMED, DEAD_LETTERED, HANDLER_SECONDS, REDELIVERED
from ibflow.bus.publisher import CORRELATION_HEADER, MSG_ID_HEADER, publish
from ibflow.bus.specs import ConsumerSpec
from ibflow.bus.subjects import dead_letter as dead_letter_subject
from ibflow.contracts.system import MessageDeadLettered
from ibflow.runtime.cancellation import raise_if_cancelled

logger = logging.getLogger("ibflow.bus")

M = TypeVar("M", bound=BaseModel)

DEFAULT_ERROR_DELAYS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Redelivery delays after an unexpected handler error, by delivery number (last repeats)."""

MAX_REASON_CHARS: Final = 4000


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a message was delivered: the JetStream metadata a handler may need.

    ``msg_id`` is the ``Nats-Msg-Id`` header, or ``"<stream>:<stream_seq>"`` without
    one; ``num_delivered`` is 1 on the first delivery. ``msg`` is the raw nats-py
    message (e.g. ``await delivery.msg.in_progress()`` for long handlers; do not ack it).
    """

    subject: str
    headers: Mapping[str, str]
    msg_id: str
    stream: str
    stream_seq: int
    num_delivered: int
    msg: Msg

    @property
    def redelivered(self) -> bool:
        """Whether this message was delivered before."""
        return self.num_delivered > 1


Handler = Callable[[M, Delivery], Awaitable[None]]
"""``async def handler(msg: Model, delivery: Delivery) -> None``."""


@dataclass(frozen=True, slots=True)
class Subscriber(Generic[M]):
    """A durable consumer, the model its payloads decode to, and the handler."""

    spec: ConsumerSpec
    model: type[M]
    handler: Handler[M]


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class ConsumerRunner(Generic[M]):
    """Fetch from ``subscriber.spec``'s durable and apply the ack rules to each message.

    ``batch`` messages are fetched at a time (handled in order); a fetch waits up
    to ``fetch_timeout`` seconds for the first. ``dead_letter=False`` terms given-up
    messages after logging them instead of publishing dead letters. ``error_delays``
    are the nak delays after an unexpected error by delivery number (default: the
    spec's ``backoff_seconds`` if any, else :data:`DEFAULT_ERROR_DELAYS`).

    A runner runs once: :meth:`run` until :meth:`stop`.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subscriber: Subscriber[M],
        *,
        batch: int = 10,
        fetch_timeout: float = 5.0,
        dead_letter: bool = True,
        error_delays: Sequence[float] | None = None,
        publish_timeout: float = 5.0,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if fetch_timeout <= 0:
            raise ValueError("fetch_timeout must be > 0")
        spec = subscriber.spec
        self.js = js
        self.subscriber = subscriber
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.dead_letter = dead_letter
        self.error_delays = tuple(error_delays or spec.backoff_seconds or DEFAULT_ERROR_DELAYS)
        self.publish_timeout = publish_timeout
        self.dead_letter_subject = dead_letter_subject(spec.durable)
        self._durable = spec.durable
        self._model = subscriber.model
        self._handler = subscriber.handler
        self._max_deliver = spec.max_deliver
        self._consumed = CONSUMED.labels(spec.durable)
        self._redelivered = REDELIVERED.labels(spec.durable)
        self._dead_lettered = DEAD_LETTERED.labels(spec.durable)
        self._seconds = HANDLER_SECONDS.labels(spec.durable)
        self._stopping = False
        self._started = False
        self._stop_requested: asyncio.Future[None] | None = None
        self._done = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is in progress."""
        return self._started and not self._done.is_set()

    async def stop(self) -> None:
        """Stop fetching, let the message being handled finish, wait for :meth:`run` to return.

        Messages fetched but not yet handled are nak'ed for immediate redelivery.
        Safe to call more than once, or before :meth:`run` (which then returns at once).
        """
        self._stopping = True
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)
        if self._started:
            await self._done.wait()

    async def run(self) -> None:
        """Fetch and handle messages until :meth:`stop` is called.

        Raises :class:`ProvisioningError` at start if the consumer (or, with dead
        letters on, a stream for its dead-letter subject) does not exist, and
        :class:`BusError` if the connection is closed under it. Handler errors
        never end the loop; neither do transient fetch errors (logged, retried).
        """
        if self._started:
            raise RuntimeError("a ConsumerRunner runs only once")
        self._started = True
        self._stop_requested = asyncio.get_running_loop().create_future()
        try:
            if self._stopping:
                return
            await self._check_provisioned()
            spec = self.subscriber.spec
            psub = await self.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
            logger.info("consumer %s/%s started", spec.stream, spec.durable)
            try:
                await self._loop(psub)
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
                logger.info("consumer %s/%s stopped", spec.stream, spec.durable)
        finally:
            self._done.set()

    async def _check_provisioned(self) -> None:
        spec = self.subscriber.spec
        try:
            info = await self.js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            raise ProvisioningError(
                f"consumer {spec.stream}/{spec.durable} does not exist: provision it first"
            ) from None
        except nats.errors.Error as exc:
            raise BusError(f"cannot read consumer {spec.stream}/{spec.durable}: {exc!r}") from exc
        self._max_deliver = info.config.max_deliver or -1
        if self.dead_letter:
            try:
                await self.js.find_stream_name_by_subject(self.dead_letter_subject)
            except nats.js.errors.NotFoundError:
                raise ProvisioningError(
                    f"no stream captures {self.dead_letter_subject!r}: provision the dead-letter "
                    "stream (ibflow.bus.subjects.DEAD_LETTER_STREAM) or pass dead_letter=False"
                ) from None
            except nats.errors.Error as exc:
                raise BusError(
                    f"cannot look up the stream of {self.dead_letter_subject!r}: {exc!r}"
                ) from exc

    async def _loop(self, psub: JetStreamContext.PullSubscription) -> None:
        assert self._stop_requested is not None
        stop_requested = self._stop_requested
        failures = 0
        while not stop_requested.done():
            raise_if_cancelled()
            fetch = asyncio.ensure_future(psub.fetch(self.batch, timeout=self.fetch_timeout))
            try:
                await asyncio.wait((fetch, stop_requested), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                fetch.cancel()  # run() itself was cancelled: leave no orphan fetch behind
                raise
            if not fetch.done():
                # Stopping while waiting: a message the server sends after this is
                # redelivered after ack_wait (at least once, never lost).
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
                    await fetch
                return
            try:
                msgs = fetch.result()
            except (nats.errors.TimeoutError, TimeoutError):
                # nothing to fetch; nats-py raises either kind depending on where its
                # pull request ran out (nats.errors.TimeoutError or asyncio's own)
                failures = 0
                continue
            except nats.errors.ConnectionClosedError:
                if stop_requested.done():
                    return
                raise BusError(
                    f"consumer {self._durable}: the NATS connection was closed"
                ) from None
            except nats.errors.Error as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                logger.warning(
                    "consumer %s: fetch failed (%r), retrying in %.1fs", self._durable, exc, delay
                )
                await asyncio.wait((stop_requested,), timeout=delay)
                continue
            failures = 0
            if not await self._handle_fetched(msgs, stop_requested):
                return

    async def _handle_fetched(
        self, msgs: Sequence[Msg], stop_requested: asyncio.Future[None]
    ) -> bool:
        """Handle one fetch; ``False`` when stopping (the rest is released)."""
        for index, msg in enumerate(msgs):
            if stop_requested.done():
                await self._release(msgs[index:])
                return False
            await self.handle(msg)
        return True

    async def _release(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()

    def _delivery(self, msg: Msg) -> Delivery:
        """The message's :class:`Delivery` (and count it as consumed)."""
        meta = msg.metadata
        seq = meta.sequence.stream
        headers = msg.headers or {}
        self._consumed.inc()
        if meta.num_delivered > 1:
            self._redelivered.inc()
        return Delivery(
            subject=msg.subject,
            headers=headers,
            msg_id=headers.get(MSG_ID_HEADER) or f"{meta.stream}:{seq}",
            stream=meta.stream,
            stream_seq=seq,
            num_delivered=meta.num_delivered,
            msg=msg,
        )

    def _decode(self, msg: Msg) -> M | str:
        """The message's model, or why it cannot be decoded."""
        try:
            return self._model.model_validate_json(msg.data)
        except ValidationError as exc:
            return f"undecodable payload: {describe_validation_error(exc)}"

    async def handle(self, msg: Msg) -> None:
        """Decode, call the handler and ack/nak/dead-letter one message (the hot path)."""
        delivery = self._delivery(msg)
        model = self._decode(msg)
        if isinstance(model, str):
            await self._give_up(delivery, model)
            return
        await self._handle_decoded(model, delivery)

    async def _handle_decoded(self, model: M, delivery: Delivery) -> None:
        started = perf_counter()
        try:
            await self._handler(model, delivery)
        except Exception as exc:
            self._seconds.observe(perf_counter() - started)
            await self._decide(delivery, exc)
            return
        self._seconds.observe(perf_counter() - started)
        await self._ack(delivery)

    async def _ack(self, delivery: Delivery) -> None:
        msg = delivery.msg
        if not msg.is_acked:
            try:
                await msg.ack()
            except nats.errors.Error as exc:
                logger.warning(
                    "consumer %s: ack of %s failed (%r): it will be redelivered",
                    self._durable,
                    delivery.msg_id,
                    exc,
                )

    async def _decide(self, delivery: Delivery, exc: Exception) -> None:
        last = 0 < self._max_deliver <= delivery.num_delivered
        if isinstance(exc, Reject):
            await self._give_up(delivery, exc.reason)
        elif isinstance(exc, Retry):
            if last:
                await self._give_up(delivery, f"max deliveries exceeded: {exc}")
            else:
                await self._nak(delivery, exc.delay)
        else:
            logger.error(
                "consumer %s: handler failed on %s (stream seq %d, delivery %d)",
                self._durable,
                delivery.msg_id,
                delivery.stream_seq,
                delivery.num_delivered,
                exc_info=exc,
            )
            if last:
                await self._give_up(delivery, f"max deliveries exceeded: {exc!r}")
            else:
                await self._nak(delivery, self._error_delay(delivery.num_delivered))

    def _error_delay(self, num_delivered: int) -> float:
        delays = self.error_delays
        return delays[min(num_delivered, len(delays)) - 1]

    async def _nak(self, delivery: Delivery, delay: float) -> None:
        if delivery.msg.is_acked:
            return
        try:
            await delivery.msg.nak(delay=delay)
        except nats.errors.Error as exc:
            logger.warning(
                "consumer %s: nak of %s failed (%r): redelivered after ack_wait",
                self._durable,
                delivery.msg_id,
                exc,
            )

    async def _give_up(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter the message, then term it; nak it if the dead letter is not stored."""
        msg = delivery.msg
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        if self.dead_letter:
            letter = MessageDeadLettered(
                consumer=self._durable,
                stream=delivery.stream,
                subject=delivery.subject,
                stream_sequence=delivery.stream_seq,
                delivery_count=delivery.num_delivered,
                reason=reason,
                original_msg_id=delivery.msg_id,
                payload_b64=base64.b64encode(msg.data).decode("ascii"),
                headers=dict(delivery.headers),
                correlation_id=_uuid_or_none(delivery.headers.get(CORRELATION_HEADER)),
            )
            try:
                await publish(
                    self.js,
                    self.dead_letter_subject,
                    letter,
                    timeout=self.publish_timeout,
                )
            except PublishError as exc:
                logger.error(
                    "consumer %s: cannot dead-letter %s (%s): nak'ed instead; reason was: %s",
                    self._durable,
                    delivery.msg_id,
                    exc,
                    reason,
                )
                await self._nak(delivery, self._error_delay(delivery.num_delivered))
                return
            self._dead_lettered.inc()
            logger.warning(
                "consumer %s: dead-lettered %s (stream seq %d, delivery %d): %s",
                self._durable,
                delivery.msg_id,
                delivery.stream_seq,
                delivery.num_delivered,
                reason,
            )
        else:
            logger.error(
                "consumer %s: dropped %s (stream seq %d, delivery %d, dead letters off): %s",
                self._durable,
                delivery.msg_id,
                delivery.stream_seq,
                delivery.num_delivered,
                reason,
            )
        if not msg.is_acked:
            try:
                await msg.term()
            except nats.errors.Error as exc:
                logger.warning(
                    "consumer %s: term of %s failed (%r)", self._durable, delivery.msg_id, exc
                )


BatchHandler = Callable[[Sequence[tuple[BaseModel, Delivery]]], Awaitable[None]]
"""``async def handler(items: Sequence[tuple[Model, Delivery]]) -> None``."""


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS subject ``pattern`` (``*`` one token, ``>``
    the rest)."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return len(have) > index
        if index >= len(have) or part not in ("*", have[index]):
            return False
    return len(have) == len(want)


@dataclass(frozen=True, slots=True)
class BatchSubscriber:
    """A durable consumer handled one fetched batch at a time, possibly over several
    subjects: ``models`` maps subject patterns (wildcards allowed) to the model their
    payloads decode to; the first matching pattern wins."""

    spec: ConsumerSpec
    models: Mapping[str, type[BaseModel]]
    handler: BatchHandler


class BatchConsumerRunner(ConsumerRunner[BaseModel]):
    """A :class:`ConsumerRunner` that hands the handler every decodable message of a
    fetch at once, in stream order, so it can commit them in one transaction.

    * the handler returns: every message of the batch is acked;
    * it raises: the batch is handled again one message at a time (the handler gets
      one-item batches) and each message gets the usual decision (ack, ``Retry``,
      ``Reject``, backoff), so one poison message never holds up the rest;
    * a payload that does not decode, or whose subject matches no model, is
      dead-lettered on its own and left out of the batch.

    The handler must be idempotent per message, as for :class:`ConsumerRunner`, and a
    batch must fit in ``ack_wait``.
    """

    def __init__(self, js: JetStreamContext, subscriber: BatchSubscriber, **options: Any) -> None:
        async def one(model: BaseModel, delivery: Delivery) -> None:
            await subscriber.handler(((model, delivery),))

        super().__init__(js, Subscriber(subscriber.spec, BaseModel, one), **options)
        self._models = tuple(subscriber.models.items())
        self._batch_handler = subscriber.handler

    def _decode(self, msg: Msg) -> BaseModel | str:
        for pattern, model in self._models:
            if subject_matches(pattern, msg.subject):
                try:
                    return model.model_validate_json(msg.data)
                except ValidationError as exc:
                    return f"undecodable payload: {describe_validation_error(exc)}"
        return f"no model for subject {msg.subject!r}"

    async def _handle_fetched(
        self, msgs: Sequence[Msg], stop_requested: asyncio.Future[None]
    ) -> bool:
        items: list[tuple[BaseModel, Delivery]] = []
        for msg in msgs:
            delivery = self._delivery(msg)
            model = self._decode(msg)
            if isinstance(model, str):
                await self._give_up(delivery, model)
            else:
                items.append((model, delivery))
        if len(items) == 1:
            await self._handle_decoded(*items[0])
        elif items:
            started = perf_counter()
            try:
                await self._batch_handler(items)
            except Exception as exc:
                logger.info(
                    "consumer %s: a batch of %d failed (%r): handling it one message at a time",
                    self._durable,
                    len(items),
                    exc,
                )
                for index, (model, delivery) in enumerate(items):
                    if stop_requested.done():
                        await self._release([d.msg for _, d in items[index:]])
                        return False
                    await self._handle_decoded(model, delivery)
            else:
                self._seconds.observe(perf_counter() - started)
                for _, delivery in items:
                    await self._ack(delivery)
        return not stop_requested.done()
