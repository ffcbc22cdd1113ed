"""The position-monitor's client of the order-manager: exits and cancels.

Every answer is classified by what it proves, because that decides the position's next
step (see :class:`Outcome`). Exits go through the order-manager like any order (risk,
audit, the halt switch, which lets exits pass), never straight to the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from nats.aio.client import Client as NatsClient

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError, RequestError, RequestTimeout
from ibflow.bus.rpc import NO_RESPONDERS
from ibflow.contracts import (
    CONFLICT,
    NOT_READY,
    TIMEOUT,
    CancelOrder,
    CommandAccepted,
    SubmitOrder,
)

__all__ = ["REQUESTER", "OrderClient", "Outcome", "SubmitAnswer"]

REQUESTER: Final = "position-monitor"
"""``requested_by`` of everything this service asks for."""

_TRANSIENT_CODES: Final = frozenset({NOT_READY, "no_responders", "unavailable"})


class Outcome(StrEnum):
    """What the order-manager's answer to an exit proves."""

    ACCEPTED = "accepted"
    """It has the order (new, or a duplicate of the same client order id)."""
    NOT_PLACED_TRANSIENT = "not_placed_transient"
    """Nothing was placed, for a reason that may pass (the gateway not ready): the
    position reopens and the next tick may retry."""
    UNDELIVERED = "undelivered"
    """No order-manager received the request (NATS answered "no responders", e.g. while
    the order-manager reconnects after a nats-server restart): nothing was recorded or
    placed anywhere, so the same client order id is sent again, never a new one."""
    REFUSED = "refused"
    """Nothing was placed, and retrying the same thing would be refused again."""
    AMBIGUOUS = "ambiguous"
    """No answer in time: the order may exist. Re-send the same id later, never a new one."""
    EXISTS = "exists"
    """It already has an order with this client order id, on other terms (``conflict``):
    an earlier send of this exit whose record did not commit, decided again on a
    position that changed since (see ``book.py``, exit ordering). The exit exists: its
    facts, not these terms, decide the position."""


@dataclass(frozen=True, slots=True)
class SubmitAnswer:
    """The outcome, the order-manager's code (if any) and its words."""

    outcome: Outcome
    detail: str
    code: str | None = None


def _remote_outcome(code: str) -> Outcome:
    """What an error answer of the order-manager to a ``SubmitOrder`` proves."""
    if code in (TIMEOUT, "internal"):
        return Outcome.AMBIGUOUS
    if code in _TRANSIENT_CODES:
        return Outcome.NOT_PLACED_TRANSIENT
    if code == CONFLICT:
        return Outcome.EXISTS
    return Outcome.REFUSED


class OrderClient:
    """Sends ``SubmitOrder`` / ``CancelOrder`` to the order-manager (request/reply)."""

    def __init__(self, nc: NatsClient, *, timeout: float = 15.0) -> None:
        self._nc = nc
        self._timeout = timeout

    async def submit(self, body: Mapping[str, Any]) -> SubmitAnswer:
        """Submit the exit ``body`` (a ``SubmitOrder`` as JSON-able data)."""
        cmd = SubmitOrder.model_validate(body)
        try:
            accepted = await request(
                self._nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=self._timeout
            )
        except RequestTimeout as exc:
            return SubmitAnswer(Outcome.AMBIGUOUS, exc.message, TIMEOUT)
        except RemoteError as exc:
            return SubmitAnswer(_remote_outcome(exc.code), exc.message, exc.code)
        except RequestError as exc:
            if exc.code == NO_RESPONDERS:
                return SubmitAnswer(Outcome.UNDELIVERED, exc.message, exc.code)
            outcome = (
                Outcome.NOT_PLACED_TRANSIENT if exc.code in _TRANSIENT_CODES else Outcome.AMBIGUOUS
            )
            return SubmitAnswer(outcome, exc.message, exc.code)
        return SubmitAnswer(Outcome.ACCEPTED, accepted.detail or "accepted")

    async def cancel(self, portfolio_id: str, client_order_id: str, reason: str) -> str | None:
        """Ask the order-manager to cancel an order's remainder; ``None`` if accepted,
        else why not (logged by the caller: a cancel is retried by the next decision)."""
        cmd = CancelOrder(
            portfolio_id=portfolio_id,
            client_order_id=client_order_id,
            reason=reason,
            requested_by=REQUESTER,
        )
        try:
            await request(
                self._nc, subjects.CANCEL_ORDER, cmd, CommandAccepted, timeout=self._timeout
            )
        except RequestError as exc:
            return f"{exc.code}: {exc.message}"
        return None
