"""A small port over :class:`ib_async.IB`: camelCase and eventkit stop here.

:class:`IbClient` exposes what the bridge needs of one API connection with snake_case
methods and plain callables as callbacks:

* :meth:`IbClient.connect` runs ib_async's connect (handshake, then its startup sync of
  positions, open/completed orders, account updates and executions) and turns every
  failure into an :class:`IbConnectError`, including IB's 326 (client id in use), which
  ib_async itself would only notice when its own timeout expires;
* :meth:`IbClient.current_time` is the heartbeat round trip (``reqCurrentTime``);
* ``on_*`` register callbacks. Errors and disconnects arrive as plain values; order,
  execution, commission, position and account-value callbacks receive ib_async objects,
  meant to be handed straight to :mod:`ibflow_gateway_bridge.ib.mapping`.

A callback that raises is logged and never breaks ib_async's event dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from ib_async import IB, AccountValue, CommissionReport, Fill, Position, Trade

__all__ = [
    "CONNECT_FAILURE_CODES",
    "AccountValue",
    "AccountValueCallback",
    "CommissionCallback",
    "CommissionReport",
    "DisconnectedCallback",
    "ErrorCallback",
    "ExecutionCallback",
    "Fill",
    "IbClient",
    "IbConnectError",
    "OrderStatusCallback",
    "Position",
    "PositionCallback",
    "SocketConnectedCallback",
    "Trade",
]

log = logging.getLogger("ibflow_gateway_bridge.ib")

CLIENT_ID_IN_USE: Final = 326
CONNECT_FAILURE_CODES: Final = frozenset({CLIENT_ID_IN_USE, 502, 503, 504})
"""IB error codes that, received while connecting, mean the connect has failed:
326 client id in use, 502 cannot connect, 503 version too old, 504 not connected."""

ErrorCallback: TypeAlias = Callable[[int | None, int, str], None]
"""``cb(req_id, code, message)``; ``req_id`` is ``None`` for IB's ``-1`` (not a request)."""
DisconnectedCallback: TypeAlias = Callable[[], None]
SocketConnectedCallback: TypeAlias = Callable[[], None]
OrderStatusCallback: TypeAlias = Callable[[Trade], None]
ExecutionCallback: TypeAlias = Callable[[Trade, Fill], None]
CommissionCallback: TypeAlias = Callable[[Trade, Fill, CommissionReport], None]
PositionCallback: TypeAlias = Callable[[Position], None]
AccountValueCallback: TypeAlias = Callable[[AccountValue], None]


class IbConnectError(ConnectionError):
    """Connecting to the Gateway failed; ``code`` is IB's error code when IB gave one."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"{message} (IB code {code})" if code is not None else message)
        self.code = code
        self.message = message

    @property
    def client_id_in_use(self) -> bool:
        """True for IB's 326: another API client holds this client id."""
        return self.code == CLIENT_ID_IN_USE


def _safe(name: str, callback: Callable[..., None]) -> Callable[..., None]:
    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("%s callback %r failed", name, callback)

    return call


class IbClient:
    """One API connection to an IB Gateway (or TWS, or the simulator).

    Not thread-safe; use it from the event loop that connected it. ``on_disconnected``
    callbacks run when the connection is lost, not after :meth:`disconnect`.
    """

    def __init__(self) -> None:
        self._ib = IB()
        self._closing = False
        self._connect_failure: asyncio.Future[IbConnectError] | None = None
        self._error_callbacks: list[ErrorCallback] = []
        self._disconnected_callbacks: list[DisconnectedCallback] = []
        self._socket_callbacks: list[SocketConnectedCallback] = []
        self._ib.errorEvent += self._handle_error
        self._ib.disconnectedEvent += self._handle_disconnected
        self._ib.client.apiStart += self._handle_api_start
        self._ib.client.apiError += self._handle_api_error

    # ------------------------------------------------------------------ connection

    async def connect(
        self,
        host: str,
        port: int,
        client_id: int,
        timeout: float,  # noqa: ASYNC109 - passed on to ib_async's own per-step waits
        *,
        account: str = "",
    ) -> None:
        """Connect and wait for ib_async's startup sync to complete.

        Raises :class:`IbConnectError` when the socket cannot be opened, IB refuses the
        session (326 client id in use, 502, 503, 504), the peer closes the socket, a sync
        request fails, or ``timeout`` seconds pass for any step. Leaves the client
        disconnected on failure.
        """
        if self._ib.isConnected():
            raise IbConnectError(None, "already connected")
        self._closing = False
        loop = asyncio.get_running_loop()
        failure: asyncio.Future[IbConnectError] = loop.create_future()
        self._connect_failure = failure
        attempt = asyncio.ensure_future(
            self._ib.connectAsync(
                host,
                port,
                clientId=client_id,
                timeout=timeout,
                account=account,
                raiseSyncErrors=True,
            )
        )
        try:
            await asyncio.wait({attempt, failure}, return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                self._silent_disconnect()
                raise failure.result()
            try:
                attempt.result()
            except IbConnectError:
                raise
            except TimeoutError as exc:
                raise IbConnectError(
                    None, f"connecting to {host}:{port} timed out after {timeout:g}s"
                ) from exc
            except OSError as exc:
                raise IbConnectError(None, f"cannot connect to {host}:{port}: {exc}") from exc
        except asyncio.CancelledError:
            attempt.cancel()
            self._silent_disconnect()
            raise
        finally:
            self._connect_failure = None
            if not failure.done():
                failure.cancel()

    def disconnect(self) -> None:
        """Close the connection (no ``on_disconnected`` callback for it); idempotent."""
        self._silent_disconnect()

    def _silent_disconnect(self) -> None:
        self._closing = True
        try:
            self._ib.disconnect()
            # ib_async only disconnects a socket that got past the handshake; one still
            # connecting (or refused with 326) is closed here.
            self._ib.client.disconnect()  # type: ignore[no-untyped-call]
        finally:
            self._closing = False

    @property
    def connected(self) -> bool:
        """True while the API session is up (handshake done, socket open)."""
        return bool(self._ib.isConnected())

    @property
    def server_version(self) -> int | None:
        """The Gateway's API server version, once connected."""
        version = self._ib.client.serverVersion()
        return int(version) if version else None

    @property
    def managed_accounts(self) -> list[str]:
        """The account ids this session manages (IB's ``managedAccounts``)."""
        return list(self._ib.managedAccounts())

    async def current_time(self, timeout: float) -> datetime:  # noqa: ASYNC109
        """The Gateway's clock (``reqCurrentTime``), UTC; the heartbeat round trip.

        Raises :class:`TimeoutError` when no answer arrives within ``timeout`` seconds
        and :class:`ConnectionError` when not connected or the connection drops.
        """
        if not self._ib.isConnected():
            raise ConnectionError("not connected")
        answer: datetime = await asyncio.wait_for(self._ib.reqCurrentTimeAsync(), timeout)
        if answer.tzinfo is None:
            return answer.replace(tzinfo=UTC)
        return answer.astimezone(UTC)

    # ------------------------------------------------------------------ callbacks

    def on_error(self, callback: ErrorCallback) -> None:
        """Call ``callback(req_id, code, message)`` for every error or notice IB sends."""
        self._error_callbacks.append(callback)

    def on_disconnected(self, callback: DisconnectedCallback) -> None:
        """Call ``callback()`` when an established connection is lost."""
        self._disconnected_callbacks.append(callback)

    def on_socket_connected(self, callback: SocketConnectedCallback) -> None:
        """Call ``callback()`` when the API handshake completed (before the startup sync)."""
        self._socket_callbacks.append(callback)

    def on_order_status(self, callback: OrderStatusCallback) -> None:
        """Call ``callback(trade)`` on every order status change (``orderStatusEvent``)."""
        self._ib.orderStatusEvent += _safe("order status", callback)

    def on_execution(self, callback: ExecutionCallback) -> None:
        """Call ``callback(trade, fill)`` on every execution (``execDetailsEvent``)."""
        self._ib.execDetailsEvent += _safe("execution", callback)

    def on_commission(self, callback: CommissionCallback) -> None:
        """Call ``callback(trade, fill, report)`` on every commission report."""
        self._ib.commissionReportEvent += _safe("commission", callback)

    def on_position(self, callback: PositionCallback) -> None:
        """Call ``callback(position)`` on every position update (``positionEvent``)."""
        self._ib.positionEvent += _safe("position", callback)

    def on_account_value(self, callback: AccountValueCallback) -> None:
        """Call ``callback(value)`` on every account value update (``accountValueEvent``)."""
        self._ib.accountValueEvent += _safe("account value", callback)

    # ------------------------------------------------------------------ ib_async events

    def _handle_error(self, req_id: int, code: int, message: str, _contract: Any = None) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done() and code in CONNECT_FAILURE_CODES:
            failure.set_result(IbConnectError(code, message))
        request = None if req_id == -1 else req_id
        for callback in list(self._error_callbacks):
            _safe("error", callback)(request, code, message)

    def _handle_api_error(self, message: str) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done():
            failure.set_result(IbConnectError(None, message))

    def _handle_api_start(self) -> None:
        for callback in list(self._socket_callbacks):
            _safe("socket connected", callback)()

    def _handle_disconnected(self) -> None:
        failure = self._connect_failure
        if failure is not None and not failure.done():
            failure.set_result(IbConnectError(None, "connection closed while connecting"))
            return
        if self._closing:
            return
        for callback in list(self._disconnected_callbacks):
            _safe("disconnected", callback)()
