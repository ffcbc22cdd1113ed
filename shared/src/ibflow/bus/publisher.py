"""Publish envelopes to JetStream, deduplicated by ``Nats-Msg-Id``, failing loudly.

Every publish waits for the PubAck: a message is stored, or the caller gets a
:class:`~ibflow.bus.errors.PublishError` (:class:`~ibflow.bus.errors.NoStreamError`
when no stream captures the subject). Headers set on every message:

* ``Nats-Msg-Id``: ``msg_id`` if given, else ``msg.dedupe_key()`` when the message
  defines one returning a value, else ``str(msg.event_id)``. JetStream stores a
  second message with the same id inside the stream's duplicate window only once
  (PubAck ``duplicate=True``);
* ``Ibflow-Type``: the message's class name;
* ``Ibflow-Correlation-Id``: when the message has a correlation id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Counter

from ibflow.bus.errors import BusError, NoStreamError, PublishError
from ibflow.bus.metrics import PUBLISH_DUPLICATES, PUBLISHED, subject_root
from ibflow.contracts.base import Envelope

MSG_ID_HEADER: Final = "Nats-Msg-Id"
TYPE_HEADER: Final = "Ibflow-Type"
CORRELATION_HEADER: Final = "Ibflow-Correlation-Id"

_published_children: dict[str, Counter] = {}


def _published(subject: str) -> Counter:
    root = subject_root(subject)
    child = _published_children.get(root)
    if child is None:
        child = _published_children[root] = PUBLISHED.labels(root)
    return child


def message_id(msg: Envelope) -> str:
    """The default ``Nats-Msg-Id`` of ``msg``: its ``dedupe_key()`` if any, else its event id."""
    dedupe_key = getattr(msg, "dedupe_key", None)
    if callable(dedupe_key):
        key = dedupe_key()
        if key is not None:
            return str(key)
    return str(msg.event_id)


def message_headers(
    msg: Envelope, *, msg_id: str | None = None, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers :func:`publish` sends with ``msg`` (``headers`` first, ours override)."""
    result = dict(headers) if headers else {}
    result[MSG_ID_HEADER] = msg_id if msg_id is not None else message_id(msg)
    result[TYPE_HEADER] = msg.type_name()
    if msg.correlation_id is not None:
        result[CORRELATION_HEADER] = str(msg.correlation_id)
    return result


async def publish(
    js: JetStreamContext,
    subject: str,
    msg: Envelope,
    *,
    msg_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - the PubAck wait, passed to nats-py
) -> PubAck:
    """Publish ``msg`` on ``subject`` and wait for JetStream to store it.

    Returns the PubAck (``duplicate=True`` when the ``Nats-Msg-Id`` was already seen
    inside the duplicate window: nothing new was stored). Raises
    :class:`NoStreamError` when no stream captures ``subject`` and
    :class:`PublishError` on a timeout or JetStream error (the message may or may
    not be stored: publish again with the same ``msg_id``, it is deduplicated).
    """
    hdrs = message_headers(msg, msg_id=msg_id, headers=headers)
    try:
        ack = await js.publish(subject, msg.to_json(), timeout=timeout, headers=hdrs)
    except nats.errors.TimeoutError as exc:
        raise _no_puback(subject, timeout, hdrs) from exc
    except nats.errors.Error as exc:
        error = _publish_error(subject, exc)
        raise error from (None if isinstance(error, NoStreamError) else exc)
    return _counted(subject, ack)


async def publish_batch(
    js: JetStreamContext,
    items: Sequence[tuple[str, Envelope]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the wait for all the PubAcks
) -> list[PubAck | BusError]:
    """Publish ``items`` (``(subject, msg)``) in order, their PubAcks pipelined
    (``js.publish_async``) and awaited together for at most ``timeout``.

    The messages leave in order on the one connection, so a stream stores them in that
    order. Returns, per item, its PubAck or the error :func:`publish` would have raised
    for it (:class:`NoStreamError`, :class:`PublishError`); a single message's failure
    is never raised. Publish a failed one again with the same message: its
    ``Nats-Msg-Id`` makes a message that was stored after all a duplicate. Cheaper per
    message than :func:`publish` (one wait for the batch, not a request each; measured
    15-30 % less CPU per message for batches of 4 to 32). At most the JetStream
    context's pending limit (4,000 by default) is in flight: a bigger batch waits for
    PubAcks before sending the rest.
    """
    sent: list[tuple[str, dict[str, str], asyncio.Future[PubAck] | BusError]] = []
    for subject, msg in items:
        hdrs = message_headers(msg)
        try:
            future = await js.publish_async(subject, msg.to_json(), headers=hdrs)
        except nats.errors.Error as exc:
            sent.append((subject, hdrs, PublishError(f"cannot publish to {subject!r}: {exc!r}")))
            continue
        sent.append((subject, hdrs, future))
    waiting = [f for _, _, f in sent if isinstance(f, asyncio.Future)]
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)
    outcomes: list[PubAck | BusError] = []
    for subject, hdrs, pending in sent:
        if isinstance(pending, BusError):
            outcomes.append(pending)
            continue
        future = pending
        if not future.done():
            future.cancel()
            outcomes.append(_no_puback(subject, timeout, hdrs))
        elif (error := future.exception()) is not None:
            outcomes.append(_publish_error(subject, error))
        else:
            outcomes.append(_counted(subject, future.result()))
    return outcomes


def _counted(subject: str, ack: PubAck) -> PubAck:
    _published(subject).inc()
    if ack.duplicate:
        PUBLISH_DUPLICATES.inc()
    return ack


def _no_puback(subject: str, timeout: float, hdrs: Mapping[str, str]) -> PublishError:
    return PublishError(
        f"no PubAck for {subject!r} within {timeout:g}s (Nats-Msg-Id {hdrs[MSG_ID_HEADER]})"
    )


def _publish_error(subject: str, exc: BaseException) -> BusError:
    """What :func:`publish` raises for a nats-py error other than a timeout."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        return NoStreamError(subject)
    if isinstance(exc, nats.js.errors.APIError):
        return PublishError(
            f"JetStream refused {subject!r}: {exc.description} (err_code {exc.err_code})"
        )
    return PublishError(f"cannot publish to {subject!r}: {exc!r}")


class Publisher:
    """:func:`publish` bound to one JetStream context and default timeout."""

    __slots__ = ("js", "timeout")

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self.js = js
        self.timeout = timeout

    async def publish(
        self,
        subject: str,
        msg: Envelope,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the PubAck wait
    ) -> PubAck:
        """See :func:`publish`; ``timeout`` defaults to the publisher's."""
        return await publish(
            self.js,
            subject,
            msg,
            msg_id=msg_id,
            headers=headers,
            timeout=self.timeout if timeout is None else timeout,
        )
