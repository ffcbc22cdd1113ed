"""One lingering pull request at a time on a durable consumer, instead of nats-py's fetch.

nats-py's ``PullSubscription.fetch`` sends two pull requests for every fetch that finds
nothing waiting (a ``no_wait`` probe, answered "404 no messages", then the lingering
request), and creates a task and a ``wait_for`` for every message it waits for. At a
steady rate every message comes alone, so a consumer paid that per message: measured
here at 200 messages/s, 0.30 ms of the consumer's CPU per message with ``fetch(10)``
and 0.20 ms with this class (``bench/consumer_pull.py``).

:class:`LingeringPull` keeps one request for ``batch`` messages (``expires`` seconds)
open on the consumer's ``$JS.API.CONSUMER.MSG.NEXT`` subject, with its own inbox, and
sends the next when that one is used up or has ended (a 404 or 408 status, or its
expiry passed). Messages the server delivers while a batch is being handled wait in the
inbox, and the next :meth:`LingeringPull.next_batch` returns them at once: fetching the
next batch overlaps handling this one. Messages stored together (an execution, its
status and its commission, published at once) stay one batch: each delivered message
says how many the consumer still has pending, and while that is not zero the batch waits
(briefly) for the next.

Nothing here acks; what the caller does not ack is redelivered after ``ack_wait``, as
with ``fetch``. A request lost with the connection (a nats-server restart) is replaced
after ``expires`` plus a grace, as ``fetch`` would time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DEFAULT_PREFIX, Header, StatusCode

__all__ = ["LingeringPull"]

_GRACE: Final = 0.5
"""Seconds past a request's ``expires`` before it is taken as lost."""

_FOLLOW: Final = 0.02
"""Seconds to wait for a message the server says is pending behind the last one."""

_ENDED: Final = frozenset({StatusCode.NO_MESSAGES.value, StatusCode.REQUEST_TIMEOUT.value})


class LingeringPull:
    """Batches of a durable pull consumer ``stream``/``durable`` (module docstring)."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        durable: str,
        *,
        batch: int,
        expires: float,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if expires <= 0:
            raise ValueError("expires must be > 0")
        self._nc = nc
        self._next_subject = f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._expires = expires
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._open = 0
        """Messages the open request may still deliver (0: none is open)."""
        self._deadline = 0.0
        """When the open request has expired (plus a grace)."""
        self._taken: list[Msg] = []
        """Messages of a batch whose wait was cancelled (handed back by :meth:`stop`)."""

    async def start(self) -> None:
        """Subscribe to the inbox (no request is sent before :meth:`next_batch`)."""

        async def received(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        self._sub = await self._nc.subscribe(self._inbox, cb=received)

    async def stop(self) -> list[Msg]:
        """Unsubscribe; returns the messages delivered but not yet taken (to release)."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        left, self._taken = self._taken, []
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            if _status(msg) is None:
                left.append(msg)
        return left

    async def next_batch(self) -> list[Msg]:
        """The next messages, at most ``batch``: those waiting in the inbox, else the
        first to arrive, with those the server holds for the consumer behind it (each
        message says how many are pending). ``[]`` when the request ended (expired) with
        nothing delivered.

        Raises :class:`nats.errors.ConnectionClosedError` if the connection is closed,
        and :class:`nats.js.errors.APIError` for a status that is not the end of a
        request (409 included when it ends one with nothing delivered: the consumer
        was deleted, or a limit was hit)."""
        now = asyncio.get_running_loop().time()
        if self._open <= 0 or now > self._deadline:
            await self._request(now)
        try:
            async with asyncio.timeout_at(self._deadline):
                first = await self._queue.get()
        except TimeoutError:
            if self._nc.is_closed:
                raise nats.errors.ConnectionClosedError from None
            self._open = 0
            return []
        msgs: list[Msg] = []
        self._take(first, msgs)
        while len(msgs) < self._batch:
            if not self._queue.empty():
                self._take(self._queue.get_nowait(), msgs)
            elif self._open > 0 and msgs and msgs[-1].metadata.num_pending:
                try:
                    async with asyncio.timeout(_FOLLOW):
                        self._take(await self._queue.get(), msgs)
                except TimeoutError:  # another replica's request took them
                    break
                except asyncio.CancelledError:
                    self._taken.extend(msgs)
                    raise
            else:
                break
        return msgs

    def _take(self, msg: Msg, msgs: list[Msg]) -> None:
        status = _status(msg)
        if status is None:
            msgs.append(msg)
            self._open = max(self._open - 1, 0)
        elif status in _ENDED:
            self._open = 0
        elif status != StatusCode.CONTROL_MESSAGE.value:
            self._open = 0
            if not msgs:
                raise nats.js.errors.APIError.from_msg(msg)

    async def _request(self, now: float) -> None:
        request = {"batch": self._batch, "expires": int(self._expires * 1_000_000_000)}
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), self._inbox)
        self._open = self._batch
        self._deadline = now + self._expires + _GRACE


def _status(msg: Msg) -> str | None:
    """The status of a server message to the inbox (404, 408, 409, 100...); ``None`` for
    a message of the stream."""
    headers = msg.headers
    if not headers or msg.data:
        return None
    return headers.get(Header.STATUS)
