"""One supervised IB connection per portfolio: connect, watch, reconnect, publish.

:class:`PortfolioConnection` owns an :class:`~ibflow_gateway_bridge.ib.IbClient` and a
:class:`~ibflow_gateway_bridge.domain.connection.ConnectionMachine`. Its :meth:`run`
loop, until :meth:`stop`:

1. refuses to connect at all when :func:`check_live_allowed` gives a reason (live port
   or live account without ``allow_live``): one error log line and one
   ``GatewayConnectionChanged`` carrying the reason, then it idles until stopped;
2. connects (``connecting`` → ``synchronising`` once the API handshake is done →
   ``ready`` once ib_async's startup sync of positions, orders, account and executions
   has returned);
3. while connected, probes the Gateway with ``reqCurrentTime`` every
   ``heartbeat_interval`` seconds; no answer within ``heartbeat_timeout`` is a zombie
   gateway → ``heartbeat_missed()`` and a forced reconnect — unless data kept arriving
   meanwhile (a reader busy with a burst: probed again, up to :data:`BUSY_PROBES` times);
4. feeds every IB error to ``broker_error()`` (1100/1101/1102, farm codes, 326...) and
   reconnects when the machine asks for it or the socket drops, after
   :func:`reconnect_delay` (capped exponential backoff with jitter); 326 (client id in
   use) alternates between the client id and the configured ``fallback_client_id``.

Every :class:`Transition` is published, in order, as ``GatewayConnectionChanged`` on
``ibflow.evt.v1.gateway.connection.<portfolio>``, and the latest one is stored in the
JetStream KV bucket ``IBFLOW_BRIDGE_STATE`` under ``connection.<portfolio>`` (the KV
entry is also refreshed, not re-published, on every successful heartbeat, so its
``last_heartbeat`` stays current).

``Nats-Msg-Id`` of a transition is ``conn:<portfolio>:<boot id>:<sequence>``. A
transition has no identity in the domain (the same pair of states recurs all day), so
the id is the transition's position in this connection's life: retries of one publish
reuse it (JetStream stores it once), distinct transitions never share it. The
sequence restarts with the process, so the boot id (random per
:class:`PortfolioConnection`) keeps a restarted bridge's first transitions from being
discarded as duplicates of the previous process's inside the duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from ibflow.bus import BusError, publish
from ibflow.bus.subjects import gateway_connection
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import ConnectionState, GatewayType
from ibflow.contracts.gateway import GatewayConnectionChanged
from ibflow.runtime.cancellation import raise_if_cancelled, wait_event
from ibflow_gateway_bridge.domain.backoff import reconnect_delay
from ibflow_gateway_bridge.domain.connection import ConnectionMachine, Transition
from ibflow_gateway_bridge.domain.error_codes import classify
from ibflow_gateway_bridge.domain.safety import check_live_allowed
from ibflow_gateway_bridge.ib import IbClient, IbConnectError
from ibflow_gateway_bridge.repository import PortfolioConfig

__all__ = [
    "CONNECTION_STATE",
    "ERRORS",
    "RECONNECTS",
    "SECONDS_SINCE_HEALTHY",
    "STATE_BUCKET",
    "STATE_CODES",
    "ConnectionTimings",
    "PortfolioConnection",
    "ensure_state_bucket",
    "state_key",
]

log = logging.getLogger("ibflow_gateway_bridge.supervisor")

STATE_BUCKET: Final = "IBFLOW_BRIDGE_STATE"
"""JetStream KV bucket of the bridge's latest per-portfolio state."""

BUSY_PROBES: Final = 3
"""Heartbeats re-sent in a row, after one went unanswered while the Gateway kept sending
data, before the connection is declared a zombie anyway."""

STATE_CODES: Final = {
    ConnectionState.DISCONNECTED: 0,
    ConnectionState.CONNECTING: 1,
    ConnectionState.SYNCHRONISING: 2,
    ConnectionState.READY: 3,
    ConnectionState.DEGRADED: 4,
    ConnectionState.IB_CONNECTIVITY_LOST: 5,
}
"""Value of ``ibflow_bridge_connection_state`` per state."""

CONNECTION_STATE: Final = Gauge(
    "ibflow_bridge_connection_state",
    "Connection state per portfolio: 0 disconnected, 1 connecting, 2 synchronising, "
    "3 ready, 4 degraded, 5 ib_connectivity_lost.",
    ["portfolio"],
)
SECONDS_SINCE_HEALTHY: Final = Gauge(
    "ibflow_bridge_seconds_since_healthy",
    "Seconds since the last healthy API round trip (sync or heartbeat); +Inf if never.",
    ["portfolio"],
)
RECONNECTS: Final = Counter(
    "ibflow_bridge_reconnects_total",
    "Reconnections after an established connection was lost or abandoned.",
    ["portfolio"],
)
ERRORS: Final = Counter(
    "ibflow_bridge_errors_total",
    "IB errors and connection failures by class (IB codes via domain.error_codes.classify; "
    "plus connect and heartbeat).",
    ["portfolio", "class"],
)

_LIVE_TWS_PORTS: Final = frozenset({7496, 7497})
_TRANSIENT_STATES: Final = frozenset(
    {ConnectionState.CONNECTING, ConnectionState.SYNCHRONISING, ConnectionState.READY}
)


def state_key(portfolio_id: str, what: str = "connection") -> str:
    """Key of a portfolio's entry in :data:`STATE_BUCKET` (``connection.<portfolio>``)."""
    return f"{what}.{portfolio_id}"


async def ensure_state_bucket(js: JetStreamContext) -> KeyValue:
    """The :data:`STATE_BUCKET` KV bucket, created (history 1) if it does not exist."""
    try:
        return await js.key_value(STATE_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=STATE_BUCKET,
                history=1,
                description="gateway-bridge: latest connection/account state per portfolio",
            )
        )


@dataclass(frozen=True, slots=True)
class ConnectionTimings:
    """Timeouts and intervals of a :class:`PortfolioConnection`, in seconds."""

    heartbeat_interval: float = 10.0
    """Time between two ``reqCurrentTime`` probes while connected."""
    heartbeat_timeout: float = 5.0
    """No heartbeat answer within this = zombie gateway, forced reconnect."""
    connect_timeout: float = 10.0
    """Budget of each connect step (socket, handshake, every startup sync request)."""
    reconnect_base: float = 1.0
    """First reconnect delay (before jitter); doubles per failed attempt."""
    reconnect_cap: float = 60.0
    """Longest reconnect delay."""
    publish_timeout: float = 5.0
    """PubAck wait of one transition event."""


class PortfolioConnection:
    """The supervised IB connection of one portfolio (a runtime ``Worker``).

    ``gateway_type`` defaults to TWS on ports 7496/7497, else IB Gateway. Callbacks
    registered with :meth:`on_transition` see every transition after it is queued for
    publishing (e.g. to resubscribe market data when ``transition.resubscribe``).
    """

    def __init__(
        self,
        config: PortfolioConfig,
        js: JetStreamContext,
        *,
        timings: ConnectionTimings | None = None,
        gateway_type: GatewayType | None = None,
        client: IbClient | None = None,
        rng: random.Random | None = None,
        boot_id: str | None = None,
    ) -> None:
        self.config = config
        self.timings = timings or ConnectionTimings()
        self.gateway_type = gateway_type or (
            GatewayType.TWS if config.port in _LIVE_TWS_PORTS else GatewayType.IB_GATEWAY
        )
        self.boot_id = boot_id or uuid.uuid4().hex[:12]
        self._js = js
        self._client = client or IbClient()
        self._machine = ConnectionMachine()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._client_id = config.client_id
        self._sequence = 0
        self._stopping = asyncio.Event()
        self._lost = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[GatewayConnectionChanged, str]] = asyncio.Queue()
        self._transition_callbacks: list[Callable[[Transition], None]] = []
        self._supervise_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._kv: KeyValue | None = None
        self._last_healthy: float | None = None
        self._last_heartbeat: datetime | None = None
        self._connection_time: datetime | None = None
        self._last_event: GatewayConnectionChanged | None = None
        self._refusal: str | None = None

        portfolio = config.id
        self._state_gauge = CONNECTION_STATE.labels(portfolio)
        self._state_gauge.set(STATE_CODES[self._machine.state])
        SECONDS_SINCE_HEALTHY.labels(portfolio).set_function(self._seconds_since_healthy)
        self._reconnects = RECONNECTS.labels(portfolio)

        self._client.on_socket_connected(self._on_socket_connected)
        self._client.on_error(self._on_broker_error)
        self._client.on_disconnected(self._on_disconnected)

    # ------------------------------------------------------------------ public state

    @property
    def portfolio_id(self) -> str:
        """The portfolio this connection serves."""
        return self.config.id

    @property
    def state(self) -> ConnectionState:
        """The connection state machine's current state."""
        return self._machine.state

    @property
    def accepts_orders(self) -> bool:
        """True when orders may be sent (``ready`` or ``degraded``)."""
        return self._machine.accepts_orders

    @property
    def last_healthy_round_trip(self) -> float | None:
        """``time.monotonic()`` of the last healthy API round trip, ``None`` if none yet."""
        return self._last_healthy

    @property
    def client_id(self) -> int:
        """The client id used by the current (or next) connection attempt."""
        return self._client_id

    @property
    def refusal(self) -> str | None:
        """Why the connection was refused by the live-trading guard, if it was."""
        return self._refusal

    @property
    def client(self) -> IbClient:
        """The IB client (for the order, account and market data workers)."""
        return self._client

    def on_transition(self, callback: Callable[[Transition], None]) -> None:
        """Call ``callback(transition)`` for every state transition."""
        self._transition_callbacks.append(callback)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Supervise the connection until :meth:`stop`; publishes every transition."""
        self._done.clear()
        publisher = asyncio.create_task(self._publish_loop(), name=f"conn-pub-{self.config.id}")
        self._supervise_task = asyncio.create_task(self._supervise(), name=f"conn-{self.config.id}")
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervise_task
        finally:
            self._client.disconnect()
            self._apply(self._machine.disconnected("stopped", reconnect=False))
            try:
                async with asyncio.timeout(self.timings.publish_timeout * 2):
                    await self._outbox.join()
            except TimeoutError:
                log.error("%s: gave up publishing the last connection states", self.config.id)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            self._done.set()

    async def stop(self) -> None:
        """Disconnect cleanly and let :meth:`run` return (waits for it, up to 10 s)."""
        self._stopping.set()
        task = self._supervise_task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await wait_event(self._done, 10.0)

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        config = self.config
        refusal = check_live_allowed(
            config.port, config.account, config.is_paper, config.allow_live
        )
        if refusal is not None:
            self._refuse(refusal)
            await self._stopping.wait()
            return
        attempt = 0
        while not self._stopping.is_set():
            raise_if_cancelled()
            self._lost = asyncio.Event()
            self._apply(self._machine.connect_started())
            try:
                await self._client.connect(
                    config.host,
                    config.port,
                    self._client_id,
                    self.timings.connect_timeout,
                    account=config.account or "",
                )
            except IbConnectError as exc:
                self._connect_failed(exc)
                await self._sleep(self._delay(attempt))
                attempt += 1
                continue
            self._connection_time = utc_now()
            self._healthy()
            attempt = 0
            accounts = self._client.managed_accounts
            actual = config.account or (accounts[0] if accounts else None)
            refusal = check_live_allowed(config.port, actual, config.is_paper, config.allow_live)
            if refusal is not None:
                self._client.disconnect()
                self._apply(self._machine.disconnected(refusal, reconnect=False))
                self._refuse(refusal)
                await self._stopping.wait()
                return
            self._apply(self._machine.synchronised())
            if not self._lost.is_set():
                await self._watch()
            if self._stopping.is_set():
                return
            self._reconnects.inc()
            self._client.disconnect()
            self._apply(self._machine.disconnected("reconnecting"))
            self._connection_time = None
            await self._sleep(self._delay(attempt))
            attempt += 1

    def _delay(self, attempt: int) -> float:
        return reconnect_delay(
            attempt, base=self.timings.reconnect_base, cap=self.timings.reconnect_cap, rng=self._rng
        )

    async def _watch(self) -> None:
        """Heartbeat until the connection is lost (or abandoned)."""
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"hb-{self.config.id}")
        try:
            await self._lost.wait()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self) -> None:
        timings = self.timings
        while not self._lost.is_set():
            raise_if_cancelled()
            await asyncio.sleep(timings.heartbeat_interval)
            try:
                answer = await self._probe()
            except TimeoutError:
                log.warning(
                    "%s: no heartbeat answer within %gs: zombie gateway, reconnecting",
                    self.config.id,
                    timings.heartbeat_timeout,
                )
                ERRORS.labels(self.config.id, "heartbeat").inc()
                self._apply(self._machine.heartbeat_missed())
                self._lost.set()
                return
            except ConnectionError:
                self._lost.set()
                return
            log.debug("%s: heartbeat, gateway time %s", self.config.id, answer.isoformat())
            self._healthy()
            await self._store_latest()

    async def _probe(self) -> datetime:
        """One heartbeat round trip. An unanswered probe while the Gateway kept sending
        data is a busy reader (the answer waits behind a backlog, e.g. a burst of fills),
        not a zombie: probe again, up to :data:`BUSY_PROBES` times in a row."""
        timeout = self.timings.heartbeat_timeout
        for busy in range(BUSY_PROBES + 1):
            sent = time.monotonic()
            try:
                return await self._client.current_time(timeout)
            except TimeoutError:
                if busy == BUSY_PROBES or self._client.last_received <= sent:
                    raise
                log.info(
                    "%s: heartbeat unanswered within %gs while the gateway is still sending:"
                    " busy, probing again",
                    self.config.id,
                    timeout,
                )
        raise AssertionError("unreachable")

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    def _connect_failed(self, exc: IbConnectError) -> None:
        config = self.config
        if exc.code is None:  # IB's codes are counted by _on_broker_error
            ERRORS.labels(config.id, "connect").inc()
        log.warning(
            "%s: connecting to %s:%d as client %d failed: %s",
            config.id,
            config.host,
            config.port,
            self._client_id,
            exc,
        )
        # IB's code (326...) already reached the machine through the error callback.
        self._apply(self._machine.disconnected(str(exc)))
        fallback = config.fallback_client_id
        if exc.client_id_in_use and fallback is not None:
            self._client_id = fallback if self._client_id == config.client_id else config.client_id
            log.warning(
                "%s: client id in use, next attempt as client %d", config.id, self._client_id
            )

    def _refuse(self, reason: str) -> None:
        config = self.config
        self._refusal = reason
        log.error(
            "%s: refusing to connect to %s:%d (account %s): %s",
            config.id,
            config.host,
            config.port,
            config.account,
            reason,
        )
        self._emit(ConnectionState.DISCONNECTED, None, error_message=reason)

    # ------------------------------------------------------------------ ib callbacks

    def _on_socket_connected(self) -> None:
        self._apply(self._machine.socket_connected())

    def _on_broker_error(self, req_id: int | None, code: int, message: str) -> None:
        ERRORS.labels(self.config.id, classify(code).value).inc()
        transition = self._machine.broker_error(code, message)
        self._apply(transition)
        if transition is not None and transition.reconnect:
            self._lost.set()

    def _on_disconnected(self) -> None:
        log.warning("%s: connection to the gateway lost", self.config.id)
        self._apply(self._machine.disconnected("connection lost"))
        self._lost.set()

    # ------------------------------------------------------------------ publishing

    def _healthy(self) -> None:
        self._last_healthy = time.monotonic()
        self._last_heartbeat = utc_now()

    def _seconds_since_healthy(self) -> float:
        if self._last_healthy is None:
            return math.inf
        return time.monotonic() - self._last_healthy

    def _apply(self, transition: Transition | None) -> None:
        if transition is None:
            return
        if transition.changed:
            self._publish_transition(transition)
        for callback in list(self._transition_callbacks):
            try:
                callback(transition)
            except Exception:
                log.exception("%s: transition callback failed", self.config.id)

    def _publish_transition(self, transition: Transition) -> None:
        current = transition.current
        self._state_gauge.set(STATE_CODES[current])
        log_level = logging.INFO if current in _TRANSIENT_STATES else logging.WARNING
        log.log(
            log_level,
            "%s: %s -> %s (%s)",
            self.config.id,
            transition.previous,
            current,
            transition.reason,
        )
        error = None if current in _TRANSIENT_STATES else transition.reason
        self._emit(current, transition.previous, error_message=error)

    def _emit(
        self,
        state: ConnectionState,
        previous: ConnectionState | None,
        *,
        error_message: str | None,
    ) -> None:
        self._sequence += 1
        event = self._snapshot(state, previous, error_message=error_message)
        self._last_event = event
        msg_id = f"conn:{self.config.id}:{self.boot_id}:{self._sequence}"
        self._outbox.put_nowait((event, msg_id))

    def _snapshot(
        self,
        state: ConnectionState,
        previous: ConnectionState | None,
        *,
        error_message: str | None,
    ) -> GatewayConnectionChanged:
        config = self.config
        connected = self._client.connected and state is not ConnectionState.DISCONNECTED
        accounts = self._client.managed_accounts if connected else []
        return GatewayConnectionChanged(
            portfolio_id=config.id,
            state=state,
            previous_state=previous,
            connected=connected,
            gateway_type=self.gateway_type,
            host=config.host,
            port=config.port,
            client_id=self._client_id,
            account_id=config.account or (accounts[0] if accounts else None),
            connection_time=self._connection_time if connected else None,
            last_heartbeat=self._last_heartbeat,
            error_message=error_message,
            server_version=self._client.server_version if connected else None,
        )

    async def _publish_loop(self) -> None:
        subject = gateway_connection(self.config.id)
        while True:
            raise_if_cancelled()
            event, msg_id = await self._outbox.get()
            try:
                for attempt in range(3):
                    try:
                        await publish(
                            self._js,
                            subject,
                            event,
                            msg_id=msg_id,
                            timeout=self.timings.publish_timeout,
                        )
                        await self._put_state(event)
                        break
                    except (BusError, nats.errors.Error) as exc:
                        log.error(
                            "%s: publishing connection state %s failed (try %d): %s",
                            self.config.id,
                            event.state,
                            attempt + 1,
                            exc,
                        )
                        await asyncio.sleep(0.2 * (attempt + 1))
            finally:
                self._outbox.task_done()

    async def _put_state(self, event: GatewayConnectionChanged) -> None:
        if self._kv is None:
            self._kv = await ensure_state_bucket(self._js)
        await self._kv.put(state_key(self.config.id), event.to_json())

    async def _store_latest(self) -> None:
        """Refresh the KV entry with the current ``last_heartbeat`` (no event)."""
        last = self._last_event
        if last is None or not self._outbox.empty():
            return
        fresh = last.model_copy(update={"last_heartbeat": self._last_heartbeat})
        try:
            await self._put_state(fresh)
        except nats.errors.Error as exc:
            log.warning("%s: storing the heartbeat failed: %s", self.config.id, exc)
