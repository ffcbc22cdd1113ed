"""Answers to commands (request/reply on core NATS).

A handler answers every command with exactly one of :class:`CommandAccepted` or
:class:`ErrorReply`; the two are told apart by the top-level ``error`` key
(:func:`parse_reply`). Accepted means recorded and under way, not done: the outcome
comes as events carrying the command's ``event_id`` as ``causation_id``.
"""

from __future__ import annotations

import json
import uuid
from typing import Final, Self

from ibflow.contracts.base import Command, Contract, Event

INVALID_REQUEST: Final = "invalid_request"
"""The command did not parse or validate."""
NOT_FOUND: Final = "not_found"
"""It refers to an order, position or portfolio that does not exist."""
REFUSED: Final = "refused"
"""Valid but not allowed now: halted, a risk limit, a terminal order."""
CONFLICT: Final = "conflict"
"""An idempotency key was reused with different content."""
NOT_READY: Final = "not_ready"
"""The handler (or the gateway behind it) is not ready, e.g. IB disconnected; retry later."""
TIMEOUT: Final = "timeout"
"""Nobody answered in time; the outcome is unknown (check the events before retrying)."""
INTERNAL: Final = "internal"
"""The handler failed unexpectedly."""

ERROR_CODES: Final = frozenset(
    {INVALID_REQUEST, NOT_FOUND, REFUSED, CONFLICT, NOT_READY, TIMEOUT, INTERNAL}
)


class CommandAccepted(Event):
    """The handler accepted a command (or had already accepted it: ``duplicate``)."""

    command_id: uuid.UUID
    """The command's ``event_id``."""
    command_type: str
    duplicate: bool = False
    """The same command (by its ``dedupe_key``) was accepted before; nothing new was done."""
    client_order_ids: tuple[str, ...] = ()
    """Orders created or affected."""
    position_ids: tuple[str, ...] = ()
    """Positions affected."""
    detail: str | None = None

    @classmethod
    def of(cls, command: Command, **fields: object) -> Self:
        """The acceptance of ``command``: its id, type, and correlation."""
        return cls.model_validate(
            {
                "command_id": command.event_id,
                "command_type": command.type_name(),
                **command.caused(),
                **fields,
            }
        )


class ErrorDetail(Contract):
    """What went wrong: a machine code (one of ``ERROR_CODES``) and a human message."""

    code: str
    message: str


class ErrorReply(Contract):
    """A command was not accepted: ``{"error": {"code": ..., "message": ...}}``.

    Deliberately not an envelope: it is also what a handler sends when the request could
    not even be parsed.
    """

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str) -> Self:
        """An error reply with ``code`` and ``message``."""
        return cls(error=ErrorDetail(code=code, message=message))


def parse_reply(data: bytes | str) -> CommandAccepted | ErrorReply:
    """Decode a command's reply into whichever of the two it is."""
    raw = json.loads(data)
    if isinstance(raw, dict) and "error" in raw:
        return ErrorReply.model_validate(raw)
    return CommandAccepted.model_validate(raw)
