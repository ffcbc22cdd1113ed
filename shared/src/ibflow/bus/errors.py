"""Exceptions of :mod:`ibflow.bus`, and the decisions a handler may raise.

Errors (catch ``BusError`` for "anything the bus layer refused or could not do")::

    BusError
    ├── ProvisioningError         a stream/consumer could not be created or updated
    │   └── ConfigDriftError      it exists with a different configuration (fields listed)
    ├── PublishError              no PubAck (timeout, JetStream API error)
    │   └── NoStreamError         no stream captures the subject: the message was NOT stored
    └── RequestError(code, msg)   a request/reply call failed; ``code`` is machine-readable
        ├── RequestTimeout        no reply within the timeout (code "timeout")
        └── RemoteError           the responder replied ``{"error": {"code", "message"}}``

Handler decisions (not errors: a consumer handler raises them to choose the ack)::

    HandlerDecision
    ├── Retry(delay)              nak: redeliver after ``delay`` seconds
    └── Reject(reason)            dead-letter with ``reason`` and term; never redelivered.
                                  In an RPC handler (:func:`ibflow.bus.rpc.serve`):
                                  reply with error code "refused".

A handler that returns normally has its message acked; any other exception is
logged and the message redelivered with a backoff (see :mod:`ibflow.bus.consumer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError


class BusError(Exception):
    """Base of every error raised by :mod:`ibflow.bus`."""


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One configuration field whose current value differs from the desired one."""

    field: str
    current: object
    desired: object

    def __str__(self) -> str:
        return f"{self.field}: {self.current!r} -> {self.desired!r}"


class ProvisioningError(BusError):
    """A stream or consumer could not be created or updated as declared."""


class ConfigDriftError(ProvisioningError):
    """A stream or consumer exists with a configuration that differs from its spec.

    Raised when the difference cannot be applied (an immutable field such as a
    stream's storage or a consumer's deliver policy) or when updating was not
    allowed. ``changes`` lists every differing field; ``immutable`` names the
    ones the server cannot change in place.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        changes: Sequence[FieldChange],
        *,
        immutable: Sequence[str] = (),
        hint: str = "",
    ) -> None:
        self.kind = kind
        self.name = name
        self.changes = tuple(changes)
        self.immutable = tuple(immutable)
        listed = "; ".join(str(change) for change in self.changes)
        message = f"{kind} {name!r} exists with a different configuration: {listed}"
        if self.immutable:
            message += f" (immutable: {', '.join(self.immutable)})"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class PublishError(BusError):
    """A JetStream publish got no positive PubAck: the message may not be stored."""


class NoStreamError(PublishError):
    """No stream captures ``subject``: nothing was stored."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no JetStream stream captures subject {subject!r}: message not stored")


class RequestError(BusError):
    """A request/reply call failed. ``code`` is machine-readable, ``message`` for humans.

    Codes used by ibflow: ``timeout``, ``no_responders``, ``invalid_reply`` (client side),
    and from responders ``invalid_request``, ``refused``, ``internal``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class RequestTimeout(RequestError):  # noqa: N818 - public name of the API
    """No reply arrived within the timeout (the request may still have been handled)."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class RemoteError(RequestError):
    """The responder answered with an error reply ``{"error": {"code", "message"}}``.

    An RPC handler may raise it too: its code and message are sent back as they are.
    """


class HandlerDecision(Exception):  # noqa: N818 - a decision, not an error
    """Base of the ack decisions a handler raises instead of returning."""


class Retry(HandlerDecision):
    """Redeliver the message after ``delay`` seconds (a nak with delay)."""

    def __init__(self, delay: float = 0.0, reason: str = "") -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay
        self.reason = reason
        super().__init__(f"retry in {delay:g}s" + (f": {reason}" if reason else ""))


class Reject(HandlerDecision):
    """Give up on the message for good: dead-letter it with ``reason``, never redeliver."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem of a pydantic error: ``"field.path: message"``, for replies and logs."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"])
        parts.append(f"{location}: {error['msg']}" if location else str(error["msg"]))
    return f"{exc.title}: " + "; ".join(parts)
