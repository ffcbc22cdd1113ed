"""Typed request/reply over core NATS (commands), with structured error replies.

::

    # service side
    async def on_submit(cmd: SubmitOrder) -> CommandAccepted:
        ...
        return CommandAccepted.of(cmd)

    sub = await serve(nc, SUBMIT_SUBJECT, SubmitOrder, on_submit, queue="order-manager")

    # caller side
    accepted = await request(nc, SUBMIT_SUBJECT, SubmitOrder(...), CommandAccepted, timeout=2.0)

A failure is an :class:`~ibflow.contracts.replies.ErrorReply`
``{"error": {"code": ..., "message": ...}}`` (the caller raises
:class:`~ibflow.bus.errors.RemoteError`), never silence: ``invalid_request`` when the
payload is not JSON or not the request model, ``refused`` when the handler raises
:class:`~ibflow.bus.errors.Reject`, the handler's own code when it raises a
:class:`~ibflow.bus.errors.RequestError`, ``internal`` (logged) for anything else.
On the caller side a missing service is ``RequestError("no_responders")``, a slow
one :class:`~ibflow.bus.errors.RequestTimeout`, an unparsable reply
``RequestError("invalid_reply")``.

Requests on one subscription are handled one at a time, in arrival order; scale
out with more subscriptions in the same ``queue`` group. With ``concurrent=True`` each
request is handled in a task of its own as it arrives, for handlers that wait (a rate
limiter, a lock) and must not hold up the requests behind them: more subscriptions
would not do, because the server hands a request to any member of the group, busy or
not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from ibflow.bus.errors import (
    Reject,
    RemoteError,
    RequestError,
    RequestTimeout,
    describe_validation_error,
)
from ibflow.bus.publisher import CORRELATION_HEADER, TYPE_HEADER
from ibflow.contracts.base import Envelope
from ibflow.contracts.replies import INTERNAL, INVALID_REQUEST, REFUSED, ErrorDetail, ErrorReply

logger = logging.getLogger("ibflow.bus")

T = TypeVar("T", bound=BaseModel)
Q = TypeVar("Q", bound=BaseModel)

NO_RESPONDERS: Final = "no_responders"
INVALID_REPLY: Final = "invalid_reply"
UNAVAILABLE: Final = "unavailable"


def error_reply(code: str, message: str) -> bytes:
    """The wire form of an error reply."""
    return ErrorReply.of(code, message).model_dump_json().encode()


def _remote_error(data: bytes) -> ErrorDetail | None:
    if b'"error"' not in data:  # cheap pre-check: most replies are not errors
        return None
    try:
        return ErrorReply.model_validate_json(data).error
    except ValidationError:
        return None


async def request(
    nc: Client,
    subject: str,
    msg: Envelope,
    reply_model: type[T],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the reply wait, passed to nats-py
    headers: Mapping[str, str] | None = None,
) -> T:
    """Send ``msg`` to ``subject`` and return the reply decoded as ``reply_model``.

    Raises :class:`RequestTimeout` after ``timeout`` seconds without a reply,
    :class:`RequestError` with code ``no_responders`` when nobody listens (at once),
    ``invalid_reply`` when the reply does not decode, ``unavailable`` when the
    connection cannot send, and :class:`RemoteError` with the responder's code and
    message when it replied with an error.
    """
    hdrs = dict(headers) if headers else {}
    hdrs[TYPE_HEADER] = msg.type_name()
    if msg.correlation_id is not None:
        hdrs[CORRELATION_HEADER] = str(msg.correlation_id)
    try:
        reply = await nc.request(subject, msg.to_json(), timeout=timeout, headers=hdrs)
    except nats.errors.NoRespondersError:
        raise RequestError(NO_RESPONDERS, f"no service listens on {subject!r}") from None
    except nats.errors.TimeoutError:
        raise RequestTimeout(f"no reply on {subject!r} within {timeout:g}s") from None
    except nats.errors.Error as exc:
        raise RequestError(UNAVAILABLE, f"cannot send to {subject!r}: {exc!r}") from exc
    data = reply.data
    error = _remote_error(data)
    if error is not None:
        raise RemoteError(error.code, error.message)
    try:
        return reply_model.model_validate_json(data)
    except ValidationError as exc:
        raise RequestError(
            INVALID_REPLY, f"reply on {subject!r}: {describe_validation_error(exc)}"
        ) from None


async def serve(
    nc: Client,
    subject: str,
    request_model: type[Q],
    handler: Callable[[Q], Awaitable[BaseModel]],
    *,
    queue: str | None = None,
    concurrent: bool = False,
) -> Subscription:
    """Answer requests on ``subject`` with ``await handler(request)``, as JSON.

    Every request with a reply subject gets exactly one reply: the handler's model,
    or an error reply (see the module docstring); the subscription never dies of a
    bad request or a failing handler. ``queue`` joins a queue group (one member
    answers each request). ``concurrent``: each request in a task of its own, started
    in arrival order (the module docstring). Stop with ``await sub.unsubscribe()`` (or
    drain); requests already started are still answered.
    """

    async def answer(data: bytes) -> bytes:
        try:
            req = request_model.model_validate_json(data)
        except ValidationError as exc:
            return error_reply(INVALID_REQUEST, describe_validation_error(exc))
        try:
            reply = await handler(req)
            return reply.model_dump_json().encode()
        except Reject as exc:
            return error_reply(REFUSED, exc.reason)
        except RequestError as exc:
            return error_reply(exc.code, exc.message)
        except Exception:
            logger.exception("handler of %s failed", subject)
            return error_reply(INTERNAL, f"internal error handling {subject}")

    async def on_request(msg: Msg) -> None:
        if not msg.reply:
            logger.warning("request on %s without a reply subject ignored", subject)
            return
        payload = await answer(msg.data)
        try:
            await nc.publish(msg.reply, payload)
        except nats.errors.Error as exc:
            logger.warning("cannot reply on %s: %r", subject, exc)

    running: set[asyncio.Task[None]] = set()

    async def on_request_in_a_task(msg: Msg) -> None:
        task = asyncio.create_task(on_request(msg), name=f"serve {subject}")
        running.add(task)
        task.add_done_callback(running.discard)

    callback = on_request_in_a_task if concurrent else on_request
    sub = await nc.subscribe(subject, queue=queue or "", cb=callback)
    # the server knows the subscription once flush returns: a service that reports ready
    # after serve() is not answered "no responders" by a request sent right after
    await nc.flush()
    return sub
