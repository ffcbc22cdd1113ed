"""The connection state machine of one portfolio's IB connection.

Pure: it is fed facts (the connect attempt started, the socket is up, the initial
synchronisation finished, IB reported error code N, the heartbeat went unanswered,
the socket closed) and answers with the :class:`Transition` they cause, or ``None``
when nothing changes. The supervisor does the I/O: it publishes every transition as
``GatewayConnectionChanged``, replays market data when ``resubscribe`` is set and
tears the connection down and reconnects (with backoff) when ``reconnect`` is set.

States (:class:`~ibflow.contracts.enums.ConnectionState`)::

    DISCONNECTED --connect_started--> CONNECTING --socket_connected--> SYNCHRONISING
    SYNCHRONISING --synchronised--> READY | DEGRADED (a data farm is down)
    READY <--farm down / all farms OK--> DEGRADED
    SYNCHRONISING | READY | DEGRADED --1100--> IB_CONNECTIVITY_LOST
    IB_CONNECTIVITY_LOST --1101 (resubscribe) / 1102--> READY | DEGRADED
                                                        (SYNCHRONISING if never synchronised)
    any connected state --326 / heartbeat_missed (reconnect)--> DISCONNECTED
    any state --disconnected--> DISCONNECTED

Rules worth knowing:

* **Inputs that make no sense in the current state are ignored** and return
  ``None``: ``synchronised()`` while ``DISCONNECTED``, ``socket_connected()`` while
  ``READY``, ``heartbeat_missed()`` before the socket is up, a 1102 while ``READY``,
  a repeated 1100 (IB can send hundreds in a row), ...
* **Conditions are remembered, not only states.** Which data farms are down and
  whether IB's servers are unreachable are tracked from ``CONNECTING`` on (IB sends
  the farm status codes while ib_async is still connecting), so ``synchronised()``
  and the 1101/1102 recoveries land directly on the right state. A new connection
  attempt and every ``DISCONNECTED`` forget them.
* **A synchronisation that finishes during a 1100 is kept**: ``synchronised()``
  while ``IB_CONNECTIVITY_LOST`` returns ``None`` but is recorded, so the later
  1101/1102 goes to ``READY``/``DEGRADED``. If it has not finished by then, the
  recovery returns to ``SYNCHRONISING`` and the pending ``synchronised()`` call
  completes it.
* **A self-transition (``previous == current``) is returned only to ask for a
  resubscription**: a 1101 while already ``READY``/``DEGRADED`` (the 1100 before it
  was missed, the subscriptions are lost all the same), or a market data/HMDS farm
  coming back while another farm keeps the connection ``DEGRADED``. Otherwise a
  returned transition always changes the state.
* Orders are accepted in ``READY`` and ``DEGRADED``: a broken data farm does not stop
  order routing (:attr:`ConnectionMachine.accepts_orders`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ibflow.contracts.enums import ConnectionState
from ibflow_gateway_bridge.domain.error_codes import (
    CLIENT_ID_IN_USE,
    CONNECTIVITY_LOST,
    CONNECTIVITY_RESTORED_DATA_KEPT,
    CONNECTIVITY_RESTORED_DATA_LOST,
    FARM_DOWN,
    FARM_OK,
    HMDS_FARM,
    MARKET_DATA_FARM,
    SECDEF_FARM,
)

__all__ = ["ConnectionMachine", "Transition"]

_S = ConnectionState

_CONNECTED = frozenset({_S.SYNCHRONISING, _S.READY, _S.DEGRADED, _S.IB_CONNECTIVITY_LOST})
"""States in which the socket to the Gateway is up (and the heartbeat runs)."""

_TRACKING = _CONNECTED | {_S.CONNECTING}
"""States in which farm and IB connectivity notices are recorded."""

_ORDERS_ACCEPTED = frozenset({_S.READY, _S.DEGRADED})

_STATE_CODES = (
    CLIENT_ID_IN_USE
    | CONNECTIVITY_LOST
    | CONNECTIVITY_RESTORED_DATA_LOST
    | CONNECTIVITY_RESTORED_DATA_KEPT
    | FARM_DOWN
    | FARM_OK
)
"""The IB codes that can change the state."""

_RESUBSCRIBE_FARMS = frozenset({"market data", "hmds"})
"""Farms whose recovery asks for the market data subscriptions to be replayed."""

REASON_CLIENT_ID_IN_USE = "client id in use"
"""``Transition.reason`` after error 326."""

REASON_ZOMBIE = "zombie: no answer to reqCurrentTime"
"""``Transition.reason`` after :meth:`ConnectionMachine.heartbeat_missed`."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of connection state, and what the caller must do about it.

    ``reason`` is human-readable (it becomes the event's ``error_message`` for
    failures). ``resubscribe``: replay every market data subscription (after 1101,
    or a data farm coming back). ``reconnect``: tear the connection down and connect
    again with backoff (zombie, 326, socket lost). A new socket reaching ``READY``
    through :meth:`ConnectionMachine.synchronised` carries ``resubscribe=False``:
    replaying subscriptions after a reconnect is part of the caller's synchronisation.
    """

    previous: ConnectionState
    current: ConnectionState
    reason: str
    resubscribe: bool = False
    reconnect: bool = False

    @property
    def changed(self) -> bool:
        """Whether the state changed (``False`` only for a resubscribe request)."""
        return self.previous is not self.current


def _farm_kind(code: int) -> str:
    if code in MARKET_DATA_FARM:
        return "market data"
    if code in HMDS_FARM:
        return "hmds"
    if code in SECDEF_FARM:
        return "sec-def"
    return "unknown"  # pragma: no cover - every FARM_DOWN/FARM_OK code has a kind


def _farm_name(message: str) -> str:
    """``"usfarm"`` from ``"Market data farm connection is broken:usfarm"`` ("" if none)."""
    _, colon, name = message.rpartition(":")
    return name.strip() if colon else ""


class ConnectionMachine:
    """State of one portfolio's IB connection; see the module docstring for the rules.

    Every method returns the :class:`Transition` its input causes, or ``None`` when
    the input changes nothing (including inputs that are invalid in the current
    state, which are ignored). Not thread-safe; one instance per connection, driven
    from one event loop.
    """

    __slots__ = ("_farms_down", "_ib_lost", "_state", "_synchronised")

    def __init__(self) -> None:
        self._state: ConnectionState = _S.DISCONNECTED
        self._farms_down: set[tuple[str, str]] = set()
        self._ib_lost = False
        self._synchronised = False

    @property
    def state(self) -> ConnectionState:
        """The current state; ``DISCONNECTED`` on creation."""
        return self._state

    @property
    def accepts_orders(self) -> bool:
        """Whether order commands may be sent: ``READY`` or ``DEGRADED``."""
        return self._state in _ORDERS_ACCEPTED

    @property
    def farms_down(self) -> frozenset[str]:
        """The data farms reported broken, e.g. ``{"market data:usfarm"}``."""
        return frozenset(f"{kind}:{name}" if name else kind for kind, name in self._farms_down)

    # -- lifecycle of the socket ---------------------------------------------------

    def connect_started(self) -> Transition | None:
        """A connection attempt starts: ``DISCONNECTED`` → ``CONNECTING``.

        Ignored in any other state (call :meth:`disconnected` first).
        """
        if self._state is not _S.DISCONNECTED:
            return None
        self._forget_conditions()
        return self._move(_S.CONNECTING, "connecting")

    def socket_connected(self) -> Transition | None:
        """The API handshake succeeded: ``CONNECTING`` → ``SYNCHRONISING``.

        Ignored in any other state.
        """
        if self._state is not _S.CONNECTING:
            return None
        return self._move(_S.SYNCHRONISING, "connected, synchronising")

    def synchronised(self) -> Transition | None:
        """The initial synchronisation (reconciliation) finished.

        ``SYNCHRONISING`` → ``READY``, or ``DEGRADED`` if a data farm is down, or
        ``IB_CONNECTIVITY_LOST`` if a 1100 arrived while still ``CONNECTING``. While
        ``IB_CONNECTIVITY_LOST`` it is recorded for the recovery and returns ``None``;
        ignored in any other state.
        """
        if self._state is _S.IB_CONNECTIVITY_LOST:
            self._synchronised = True
            return None
        if self._state is not _S.SYNCHRONISING:
            return None
        self._synchronised = True
        return self._settle("synchronised")

    def heartbeat_missed(self) -> Transition | None:
        """``reqCurrentTime`` got no answer in time: the connection is a zombie.

        Any connected state → ``DISCONNECTED`` with ``reconnect=True``; ignored while
        ``DISCONNECTED`` or ``CONNECTING`` (no heartbeat runs then).
        """
        if self._state not in _CONNECTED:
            return None
        return self._drop(REASON_ZOMBIE, reconnect=True)

    def disconnected(self, reason: str, *, reconnect: bool = True) -> Transition | None:
        """The socket closed or the attempt failed: any state → ``DISCONNECTED``.

        ``reconnect`` defaults to ``True`` (a lost socket is reconnected); pass
        ``False`` for a deliberate disconnect (shutdown, portfolio disabled). Returns
        ``None`` if already ``DISCONNECTED``.
        """
        if self._state is _S.DISCONNECTED:
            return None
        return self._drop(reason, reconnect=reconnect)

    # -- IB error codes ------------------------------------------------------------

    def broker_error(self, code: int, message: str) -> Transition | None:
        """Apply IB error ``code`` (with IB's ``message``) to the state.

        * 1100 → ``IB_CONNECTIVITY_LOST`` (from a connected state);
        * 1101 → back to ``READY``/``DEGRADED`` with ``resubscribe=True``;
        * 1102 → back to ``READY``/``DEGRADED``;
        * 2103/2105/2157 (farm down) → ``DEGRADED``, remembering which farm;
        * 2104/2106/2158 (farm OK) → ``READY`` once no farm is down (``resubscribe``
          when a market data or HMDS farm that was down comes back);
        * 326 → ``DISCONNECTED`` with ``reconnect=True``, reason "client id in use";
        * any other code → ``None``.

        All of them are ignored while ``DISCONNECTED``.
        """
        if self._state is _S.DISCONNECTED or code not in _STATE_CODES:
            return None
        if code in CLIENT_ID_IN_USE:
            return self._drop(REASON_CLIENT_ID_IN_USE, reconnect=True)
        if code in CONNECTIVITY_LOST:
            return self._ib_connectivity_lost(code, message)
        if code in FARM_DOWN:
            return self._farm_down(code, message)
        if code in FARM_OK:
            return self._farm_ok(code, message)
        resubscribe = code in CONNECTIVITY_RESTORED_DATA_LOST
        return self._ib_connectivity_restored(code, message, resubscribe=resubscribe)

    def _ib_connectivity_lost(self, code: int, message: str) -> Transition | None:
        self._ib_lost = True
        if self._state not in _CONNECTED or self._state is _S.IB_CONNECTIVITY_LOST:
            return None
        return self._move(_S.IB_CONNECTIVITY_LOST, _describe(code, message))

    def _ib_connectivity_restored(
        self, code: int, message: str, *, resubscribe: bool
    ) -> Transition | None:
        self._ib_lost = False
        reason = _describe(code, message)
        if self._state is _S.IB_CONNECTIVITY_LOST:
            if not self._synchronised:
                return self._move(_S.SYNCHRONISING, reason, resubscribe=resubscribe)
            return self._settle(reason, resubscribe=resubscribe)
        if resubscribe and self._state in _ORDERS_ACCEPTED:
            # The 1100 was missed, but the subscriptions are gone all the same.
            return Transition(self._state, self._state, reason, resubscribe=True)
        return None

    def _farm_down(self, code: int, message: str) -> Transition | None:
        self._farms_down.add((_farm_kind(code), _farm_name(message)))
        if self._state is not _S.READY:
            return None  # DEGRADED already, or settled later by synchronised()/recovery
        return self._move(_S.DEGRADED, _describe(code, message))

    def _farm_ok(self, code: int, message: str) -> Transition | None:
        kind, name = _farm_kind(code), _farm_name(message)
        restored = {
            farm
            for farm in self._farms_down
            if farm[0] == kind and (not name or farm[1] in (name, ""))
        }
        self._farms_down -= restored
        if self._state is not _S.DEGRADED:
            return None
        resubscribe = any(farm_kind in _RESUBSCRIBE_FARMS for farm_kind, _ in restored)
        reason = _describe(code, message)
        if not self._farms_down:
            return self._move(_S.READY, reason, resubscribe=resubscribe)
        if resubscribe:
            return Transition(_S.DEGRADED, _S.DEGRADED, reason, resubscribe=True)
        return None

    # -- helpers -------------------------------------------------------------------

    def _settle(self, reason: str, *, resubscribe: bool = False) -> Transition | None:
        """Move to the state the remembered conditions call for once synchronised."""
        if self._ib_lost:
            target = _S.IB_CONNECTIVITY_LOST
        elif self._farms_down:
            target = _S.DEGRADED
        else:
            target = _S.READY
        if target is self._state:
            if resubscribe:
                return Transition(self._state, self._state, reason, resubscribe=True)
            return None
        return self._move(target, reason, resubscribe=resubscribe)

    def _drop(self, reason: str, *, reconnect: bool) -> Transition:
        self._forget_conditions()
        return self._move(_S.DISCONNECTED, reason, reconnect=reconnect)

    def _forget_conditions(self) -> None:
        self._farms_down.clear()
        self._ib_lost = False
        self._synchronised = False

    def _move(
        self,
        target: ConnectionState,
        reason: str,
        *,
        resubscribe: bool = False,
        reconnect: bool = False,
    ) -> Transition:
        transition = Transition(self._state, target, reason, resubscribe, reconnect)
        self._state = target
        return transition

    def __repr__(self) -> str:
        farms = sorted(self.farms_down)
        return f"ConnectionMachine(state={self._state.value!r}, farms_down={farms})"


def _describe(code: int, message: str) -> str:
    """``"IB 1100: Connectivity between IB and TWS has been lost."`` (code alone if no text)."""
    text = message.strip()
    return f"IB {code}: {text}" if text else f"IB {code}"
