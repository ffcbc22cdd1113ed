"""The order-manager's client of the gateway-bridge's per-portfolio broker commands.

Every answer is classified by what it proves about the broker, because that decides
what the order-manager may do next:

* ``PLACED``/``DONE``: the bridge accepted (the order is at IB, or the cancel/modify
  was sent);
* ``NOT_SENT``: the bridge proved nothing reached IB — it refused (``invalid_request``,
  ``refused``, ``not_ready``, ``not_found``), IB could not qualify the contract, or no
  bridge serves the portfolio (``no_responders``): the order may be rejected and its
  cash reservation released;
* ``AMBIGUOUS``: no answer in time, or the bridge failed unexpectedly: the order may or
  may not be at IB. It becomes ``UNKNOWN`` and is resolved by looking its client order
  id up at the broker (:func:`BrokerClient.place` with the same id is idempotent at the
  bridge, but recovery never re-sends before looking).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nats.aio.client import Client as NatsClient

from ibflow.bus import subjects
from ibflow.bus.errors import RemoteError, RequestError, RequestTimeout
from ibflow.bus.rpc import NO_RESPONDERS, request
from ibflow.contracts import (
    INTERNAL,
    CancelBrokerOrder,
    CommandAccepted,
    ModifyBrokerOrder,
    PlaceBrokerOrder,
)


class Outcome(StrEnum):
    """What a broker command's answer proves."""

    DONE = "done"
    NOT_SENT = "not_sent"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class BrokerAnswer:
    """The outcome of one broker command, the bridge's error code (if any) and its text."""

    outcome: Outcome
    detail: str
    code: str | None = None
    duplicate: bool = False

    @property
    def done(self) -> bool:
        """The bridge accepted the command."""
        return self.outcome is Outcome.DONE


class BrokerClient:
    """Sends broker commands to the bridge of each portfolio (request/reply)."""

    def __init__(self, nc: NatsClient, *, timeout: float = 10.0) -> None:
        self._nc = nc
        self._timeout = timeout

    async def place(self, cmd: PlaceBrokerOrder) -> BrokerAnswer:
        """Place ``cmd`` (idempotent at the bridge on its client order id)."""
        return await self._send(subjects.place_broker_order(cmd.portfolio_id), cmd)

    async def cancel(self, cmd: CancelBrokerOrder) -> BrokerAnswer:
        """Ask IB to cancel the working order ``cmd`` names."""
        return await self._send(subjects.cancel_broker_order(cmd.portfolio_id), cmd)

    async def modify(self, cmd: ModifyBrokerOrder) -> BrokerAnswer:
        """Re-send a working order with ``cmd``'s terms."""
        return await self._send(subjects.modify_broker_order(cmd.portfolio_id), cmd)

    async def _send(
        self, subject: str, cmd: PlaceBrokerOrder | CancelBrokerOrder | ModifyBrokerOrder
    ) -> BrokerAnswer:
        try:
            accepted = await request(self._nc, subject, cmd, CommandAccepted, timeout=self._timeout)
        except RequestTimeout as exc:
            return BrokerAnswer(Outcome.AMBIGUOUS, exc.message, exc.code)
        except RemoteError as exc:
            outcome = Outcome.AMBIGUOUS if exc.code == INTERNAL else Outcome.NOT_SENT
            return BrokerAnswer(outcome, exc.message, exc.code)
        except RequestError as exc:
            outcome = Outcome.NOT_SENT if exc.code == NO_RESPONDERS else Outcome.AMBIGUOUS
            detail = (
                "no gateway-bridge serves this portfolio"
                if exc.code == NO_RESPONDERS
                else exc.message
            )
            return BrokerAnswer(outcome, detail, exc.code)
        return BrokerAnswer(
            Outcome.DONE, accepted.detail or "accepted", duplicate=accepted.duplicate
        )
