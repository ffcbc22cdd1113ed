"""Fault injection: the Python API tests and the HTTP control API use to misbehave.

Every method acts immediately on a running :class:`~.server.GatewaySimulator`:

* :meth:`Faults.drop_connections`: close every client socket (the listener stays up).
* :meth:`Faults.connectivity_lost` / :meth:`Faults.connectivity_restored`: IB↔gateway
  link down (1100 to every session; new orders and modifications are rejected with 201,
  no ticks, no matching) and back (1101 with every market-data subscription dropped,
  or 1102 with data kept).
* :meth:`Faults.set_farm`: a data farm down/up (market 2103/2104: ticks stop/resume;
  hmds 2105/2106: historical requests fail with 162; secdef 2157/2158: notice only).
* :meth:`Faults.freeze`: stop/resume the random walk (set_price still works).
* :meth:`Faults.reject_next`: the next NEW order (any client) gets ``error(orderId,
  code, text)`` instead of being accepted.
* :meth:`Faults.delay`: hold execution messages (and everything after them, so order
  is kept) / commission reports for N seconds before sending them. The engine state
  (positions, executions) changes at once; only what the clients see is late.
* :meth:`Faults.silence`: a zombie gateway: sockets stay open, nothing is answered or
  pushed. Requests and order events are queued (ticks are dropped) and flushed, in
  order, when the silence ends.
* :meth:`Faults.restart`: the gateway restarts: all clients dropped, state and order
  ids kept, transient faults (connectivity, farms, silence) cleared.
* :meth:`Faults.set_price`: move a symbol to a price and run matching at once.
* :meth:`Faults.account_state`: cash, account values, positions, open orders and
  executions of an account, as plain JSON-able data.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ibflow_gateway_sim.domain import Quote
from ibflow_gateway_sim.protocol import errors

if TYPE_CHECKING:
    from ibflow_gateway_sim.server import GatewaySimulator

__all__ = ["Farm", "FaultState", "Faults", "UnknownAccountError", "UnknownSymbolError"]

log = logging.getLogger("ibflow_gateway_sim.faults")

Farm = Literal["market", "hmds", "secdef"]

_FARM_CODES: dict[str, tuple[int, int]] = {
    "market": (errors.MARKET_DATA_FARM_BROKEN, errors.MARKET_DATA_FARM_OK),
    "hmds": (errors.HMDS_FARM_BROKEN, errors.HMDS_FARM_OK),
    "secdef": (errors.SECDEF_FARM_BROKEN, errors.SECDEF_FARM_OK),
}


class UnknownSymbolError(KeyError):
    """The symbol is not in the simulator's universe."""


class UnknownAccountError(KeyError):
    """The account id is not one of the simulator's accounts."""


@dataclass
class FaultState:
    """The faults currently in effect (read by the server and the sessions)."""

    connectivity_lost: bool = False
    farms_down: set[str] = field(default_factory=set)
    silenced: bool = False
    silenced_clients: set[int] = field(default_factory=set)
    reject_next: deque[tuple[int, str]] = field(default_factory=deque)
    fill_delay: float = 0.0
    commission_delay: float = 0.0
    current_time_delay: float = 0.0

    def clear_transient(self) -> None:
        """What a gateway restart clears: connectivity, farms and silence."""
        self.connectivity_lost = False
        self.farms_down.clear()
        self.silenced = False
        self.silenced_clients.clear()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able snapshot (for ``GET /health``)."""
        return {
            "connectivity_lost": self.connectivity_lost,
            "farms_down": sorted(self.farms_down),
            "silenced": self.silenced,
            "silenced_clients": sorted(self.silenced_clients),
            "reject_next": [{"code": c, "text": t} for c, t in self.reject_next],
            "fill_delay": self.fill_delay,
            "commission_delay": self.commission_delay,
            "current_time_delay": self.current_time_delay,
        }


class Faults:
    """Fault injection on one simulator (``sim.faults``)."""

    def __init__(self, sim: GatewaySimulator, state: FaultState) -> None:
        self._sim = sim
        self.state = state

    def drop_connections(self) -> int:
        """Close every client socket; returns how many were closed."""
        count = self._sim.drop_connections()
        log.warning("fault: dropped %d connection(s)", count)
        return count

    def connectivity_lost(self) -> None:
        """Send 1100 to every session; reject orders and stop data until restored."""
        self.state.connectivity_lost = True
        log.warning("fault: IB connectivity lost (1100)")
        self._sim.broadcast(errors.connectivity_lost())

    def connectivity_restored(self, *, data_lost: bool) -> None:
        """Send 1101 (market-data subscriptions dropped) or 1102 (data maintained)."""
        was_lost = self.state.connectivity_lost
        self.state.connectivity_lost = False
        log.warning(
            "fault: IB connectivity restored (%s)%s",
            1101 if data_lost else 1102,
            "" if was_lost else " without a preceding loss",
        )
        if data_lost:
            self._sim.drop_market_data()
        self._sim.broadcast(errors.connectivity_restored(data_lost=data_lost))
        self._sim.run_matching()

    def set_farm(self, farm: Farm, up: bool) -> None:
        """Take a data farm down (2103/2105/2157) or bring it back (2104/2106/2158)."""
        broken, ok = _FARM_CODES[farm]
        if up:
            self.state.farms_down.discard(farm)
        else:
            self.state.farms_down.add(farm)
        log.warning("fault: %s farm %s", farm, "up" if up else "down")
        self._sim.broadcast(errors.notice(ok if up else broken))
        if up and farm == "market":
            self._sim.resend_quotes()

    def freeze(self, on: bool = True) -> None:
        """Freeze (no random moves) or unfreeze the market."""
        self._sim.market.freeze(on)
        log.warning("fault: market %s", "frozen" if on else "unfrozen")

    def reject_next(
        self, code: int = errors.ORDER_REJECTED, text: str = "Simulated reject"
    ) -> None:
        """Answer the next new order with ``error(orderId, code, text)``.

        For code 201 the text is prefixed with ``Order rejected - reason:`` unless it
        already is.
        """
        if code == errors.ORDER_REJECTED and not text.startswith("Order rejected"):
            text = f"Order rejected - reason:{text}"
        self.state.reject_next.append((code, text))
        log.warning("fault: next order will be rejected with %d %r", code, text)

    def delay(
        self,
        *,
        fills: float | None = None,
        commissions: float | None = None,
        current_time: float | None = None,
    ) -> None:
        """Hold fills / commission reports / ``reqCurrentTime`` answers for that many
        seconds (``None`` keeps, 0 ends). A held ``currentTime`` with data still flowing
        is a busy gateway (answers queued behind a backlog), not a silent one."""
        if fills is not None:
            self.state.fill_delay = max(fills, 0.0)
        if commissions is not None:
            self.state.commission_delay = max(commissions, 0.0)
        if current_time is not None:
            self.state.current_time_delay = max(current_time, 0.0)
        log.warning(
            "fault: fill delay %.3fs, commission delay %.3fs, currentTime delay %.3fs",
            self.state.fill_delay,
            self.state.commission_delay,
            self.state.current_time_delay,
        )

    def silence(self, on: bool, client_id: int | None = None) -> None:
        """Go silent (a zombie: sockets open, nothing answered) or speak again.

        ``client_id`` limits the silence to that client; ``None`` is the whole gateway.
        """
        if client_id is None:
            self.state.silenced = on
            if not on:
                self.state.silenced_clients.clear()
        elif on:
            self.state.silenced_clients.add(client_id)
        else:
            self.state.silenced_clients.discard(client_id)
        who = "gateway" if client_id is None else f"client {client_id}"
        log.warning("fault: %s %s", who, "silenced" if on else "speaking again")
        if not on:
            self._sim.resume_sessions()

    async def restart(self) -> None:
        """Restart the gateway: drop every client, keep state, clear transient faults."""
        await self._sim.restart()

    def set_price(self, symbol: str, price: Decimal | str | float) -> Quote:
        """Move ``symbol`` to ``price`` (rounded to the tick) and run matching at once."""
        if self._sim.universe.by_symbol(symbol) is None:
            raise UnknownSymbolError(symbol)
        return self._sim.set_price(symbol, Decimal(str(price)))

    def account_state(self, account_id: str) -> dict[str, Any]:
        """Cash, values, positions, open orders and executions of ``account_id``."""
        state = self._sim.account_state(account_id)
        if state is None:
            raise UnknownAccountError(account_id)
        return state
