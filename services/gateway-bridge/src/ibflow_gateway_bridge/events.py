"""Broker events of one portfolio, published to JetStream exactly once.

:class:`BrokerEventPublisher` registers on the connection's
:class:`~ibflow_gateway_bridge.ib.IbClient` callbacks and turns every broker fact into
its contract (:mod:`~ibflow_gateway_bridge.ib.mapping`):

* order status → ``OrderStatusChanged`` on ``ibflow.evt.v1.order.status.<p>``
  (keyed by our client order id = IB ``orderRef``, and ``permId``);
* execution → one ``ExecutionReported`` per ``execId`` (partial fills are several);
* commission → ``CommissionReported`` once IB's figure is known (a pending report is
  skipped; the real one arrives later as its own callback);
* position → ``BrokerPositionReported``;
* account values → ``AccountValuesReported``, coalesced: ib_async delivers one tag at a
  time, the publisher sends the account's full set at most every ``account_interval``.

ib_async's callbacks are synchronous, so events go through one ordered queue served by
one task (:meth:`BrokerEventPublisher.run`): it sends what is queued (up to 64 at a time)
in order on the one connection (:func:`ibflow.bus.publish_batch`: the PubAcks pipelined
and awaited together), and retries a failed publish with capped backoff, never
dropping one (a retried event may land after later ones; consumers apply facts, not
deltas, so that is harmless). The ``Nats-Msg-Id`` is the
contract's ``dedupe_key()`` (``exec:<execId>``, ``comm:<execId>``,
``ost:<permId>:<status>:<filled>:<remaining>[:<prices>]``): a fact replayed after a reconnect (or
by :mod:`~ibflow_gateway_bridge.reconciliation`) is stored once inside the stream's
duplicate window. The latest account values and positions are also kept in the
``IBFLOW_BRIDGE_STATE`` KV bucket under ``account.<p>`` and ``positions.<p>`` (JSON
arrays of the contracts, one per account / per account and contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import nats.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from prometheus_client import Counter

from ibflow.bus import BusError, publish, publish_batch
from ibflow.bus import subjects as subj
from ibflow.contracts.account import AccountValuesReported, BrokerPositionReported
from ibflow.contracts.base import Envelope
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged
from ibflow.contracts.gateway import BrokerSnapshotCompleted
from ibflow.runtime.cancellation import raise_if_cancelled
from ibflow_gateway_bridge.ib import mapping
from ibflow_gateway_bridge.ib.adapter import (
    AccountValue,
    CommissionReport,
    Fill,
    Position,
    Trade,
)
from ibflow_gateway_bridge.supervisor import PortfolioConnection, ensure_state_bucket, state_key

__all__ = ["EVENTS_PUBLISHED", "BrokerEventPublisher"]

log = logging.getLogger("ibflow_gateway_bridge.events")

EVENTS_PUBLISHED: Final = Counter(
    "ibflow_bridge_events_published_total",
    "Broker events acknowledged by JetStream (duplicates included), by kind.",
    ["portfolio", "kind"],
)

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Envelope)
_RETRY_BASE: Final = 0.1
_RETRY_CAP: Final = 5.0
_PIPELINE: Final = 64
"""Queued events published with their PubAcks awaited together (one batch at a time)."""


@dataclass(frozen=True, slots=True)
class _Item:
    subject: str
    msg: Envelope
    kind: str


class BrokerEventPublisher:
    """Publishes one portfolio's broker events (a runtime ``Worker``).

    Registers its callbacks at construction; :meth:`run` serves the queue until
    :meth:`stop`, which drains what is queued (up to ``drain_timeout``) first.
    """

    def __init__(
        self,
        portfolio_id: str,
        js: JetStreamContext,
        connection: PortfolioConnection,
        *,
        account_interval: float = 0.5,
        publish_timeout: float = 5.0,
        drain_timeout: float = 10.0,
    ) -> None:
        self.portfolio_id = portfolio_id
        self._js = js
        self._account_interval = account_interval
        self._publish_timeout = publish_timeout
        self._drain_timeout = drain_timeout
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._kv: KeyValue | None = None
        self._account_raw: dict[tuple[str, str, str, str], AccountValue] = {}
        self._account_dirty: set[str] = set()
        self._account_flushed: dict[str, float] = {}
        self._latest_accounts: dict[str, AccountValuesReported] = {}
        self._latest_positions: dict[tuple[str, int], BrokerPositionReported] = {}
        self._counters = {
            kind: EVENTS_PUBLISHED.labels(portfolio_id, kind)
            for kind in ("order_status", "execution", "commission", "position", "account")
        }
        self._counters["snapshot"] = EVENTS_PUBLISHED.labels(portfolio_id, "snapshot")
        client = connection.client
        client.on_order_status(self.order_status)
        client.on_execution(self.execution)
        client.on_commission(self._live_commission)
        client.on_position(self.position)
        client.on_account_value(self._account_value)

    # ------------------------------------------------------------------ broker facts

    def order_status(self, trade: Trade, *, snapshot_id: uuid.UUID | None = None) -> None:
        """Queue ``OrderStatusChanged`` for ``trade``'s current status."""
        event = self._map(lambda: mapping.order_status_changed(self.portfolio_id, trade))
        if event is not None:
            self.submit(self._with_snapshot(event, snapshot_id))

    def execution(
        self, trade: Trade | None, fill: Fill, *, snapshot_id: uuid.UUID | None = None
    ) -> None:
        """Queue ``ExecutionReported`` for ``fill`` (client order id from its orderRef)."""
        event = self._map(lambda: mapping.execution_reported(self.portfolio_id, fill, trade=trade))
        if event is not None:
            self.submit(self._with_snapshot(event, snapshot_id))

    def commission(self, trade: Trade | None, fill: Fill | None, report: CommissionReport) -> bool:
        """Queue ``CommissionReported`` if the report is final; False while pending."""
        event = self._map(
            lambda: mapping.commission_reported(self.portfolio_id, report, fill=fill, trade=trade)
        )
        if event is None:
            return False
        self.submit(event)
        return True

    def _live_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        self.commission(trade, fill, report)

    def position(self, position: Position, *, snapshot_id: uuid.UUID | None = None) -> None:
        """Queue ``BrokerPositionReported`` for ``position``."""
        event = self._map(lambda: mapping.broker_position_reported(self.portfolio_id, position))
        if event is not None:
            self.submit(self._with_snapshot(event, snapshot_id))

    def account_values(
        self, values: list[AccountValue], *, snapshot_id: uuid.UUID | None = None
    ) -> int:
        """Queue one ``AccountValuesReported`` per account in ``values`` at once; how many."""
        events = self._map(lambda: mapping.account_values_reported(self.portfolio_id, values))
        for event in events or []:
            self.submit(self._with_snapshot(event, snapshot_id))
        return len(events or [])

    def submit(self, msg: Envelope) -> None:
        """Queue ``msg`` for publishing on its subject (in order; never dropped)."""
        self._queue.put_nowait(_route(self.portfolio_id, msg))

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until everything queued so far is acknowledged (``TimeoutError`` if not)."""
        async with asyncio.timeout(timeout):
            await self._queue.join()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Publish queued events (and coalesced account values) until :meth:`stop` (also
        when :meth:`stop` came first: then it drains and returns at once)."""
        accounts = asyncio.create_task(self._account_loop(), name=f"acct-{self.portfolio_id}")
        publisher = asyncio.create_task(self._publish_loop(), name=f"evt-{self.portfolio_id}")
        try:
            await self._stopping.wait()
        finally:
            accounts.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accounts
            self._flush_accounts(force=True)
            try:
                async with asyncio.timeout(self._drain_timeout):
                    await self._queue.join()
            except TimeoutError:
                log.error(
                    "%s: %d broker event(s) not published at stop",
                    self.portfolio_id,
                    self._queue.qsize(),
                )
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher

    def stop(self) -> None:
        """Ask :meth:`run` to drain the queue and return."""
        self._stopping.set()

    # ------------------------------------------------------------------ internals

    def _map(self, build: Callable[[], _T]) -> _T | None:
        try:
            return build()
        except mapping.MappingError as exc:
            log.error("%s: broker data not mappable, skipped: %s", self.portfolio_id, exc)
            return None

    @staticmethod
    def _with_snapshot(event: _E, snapshot_id: uuid.UUID | None) -> _E:
        if snapshot_id is None:
            return event
        return event.model_copy(update={"snapshot_id": snapshot_id})

    def _account_value(self, value: AccountValue) -> None:
        if not value.account:
            return
        key = (value.account, value.tag, value.currency, value.modelCode)
        self._account_raw[key] = value
        self._account_dirty.add(value.account)

    async def _account_loop(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self._account_interval / 2)
            self._flush_accounts()

    def _flush_accounts(self, *, force: bool = False) -> None:
        now = time.monotonic()
        for account in list(self._account_dirty):
            last = self._account_flushed.get(account, -1e9)
            if not force and now - last < self._account_interval:
                continue
            self._account_dirty.discard(account)
            self._account_flushed[account] = now
            values = [v for k, v in self._account_raw.items() if k[0] == account]
            self.account_values(values)

    async def _publish_loop(self) -> None:
        while True:
            raise_if_cancelled()
            batch = [await self._queue.get()]
            while len(batch) < _PIPELINE and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._publish_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _publish_batch(self, batch: list[_Item]) -> None:
        """Publish ``batch`` with every PubAck awaited together: the messages leave in
        queue order on the one connection, so JetStream stores them in that order; one
        that failed is retried alone afterwards (its ``Nats-Msg-Id`` makes that safe).
        The KV state the batch changed is written once per key at the end."""
        results = await publish_batch(
            self._js, [(item.subject, item.msg) for item in batch], timeout=self._publish_timeout
        )
        changed: set[str] = set()
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BusError):
                await self._publish(item)
            self._counters[item.kind].inc()
            changed.update(self._remember_state(item.msg))
        for key in sorted(changed):
            await self._store_state(key)

    async def _publish(self, item: _Item) -> None:
        delay = _RETRY_BASE
        attempt = 0
        while True:
            raise_if_cancelled()
            attempt += 1
            try:
                await publish(self._js, item.subject, item.msg, timeout=self._publish_timeout)
                return
            except (BusError, nats.errors.Error) as exc:
                log.error(
                    "%s: publishing %s failed (try %d), retrying in %.1fs: %s",
                    self.portfolio_id,
                    item.msg.type_name(),
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP)

    def _remember_state(self, msg: Envelope) -> tuple[str, ...]:
        """Keep ``msg`` as the latest account values / position; the KV keys it changed."""
        if isinstance(msg, AccountValuesReported):
            self._latest_accounts[msg.account_id] = msg
            return ("account",)
        if isinstance(msg, BrokerPositionReported):
            self._latest_positions[(msg.account_id, msg.con_id)] = msg
            return ("positions",)
        return ()

    async def _store_state(self, key: str) -> None:
        values: list[Envelope] = list(
            self._latest_accounts.values() if key == "account" else self._latest_positions.values()
        )
        payload = json.dumps([json.loads(v.to_json()) for v in values]).encode()
        try:
            if self._kv is None:
                self._kv = await ensure_state_bucket(self._js)
            await self._kv.put(state_key(self.portfolio_id, key), payload)
        except nats.errors.Error as exc:
            log.warning("%s: storing %s state failed: %s", self.portfolio_id, key, exc)


def _route(portfolio_id: str, msg: Envelope) -> _Item:
    if isinstance(msg, OrderStatusChanged):
        return _Item(subj.order_status(portfolio_id), msg, "order_status")
    if isinstance(msg, ExecutionReported):
        return _Item(subj.execution(portfolio_id), msg, "execution")
    if isinstance(msg, CommissionReported):
        return _Item(subj.commission(portfolio_id), msg, "commission")
    if isinstance(msg, BrokerPositionReported):
        return _Item(subj.broker_position(portfolio_id), msg, "position")
    if isinstance(msg, AccountValuesReported):
        return _Item(subj.account_values(portfolio_id), msg, "account")
    if isinstance(msg, BrokerSnapshotCompleted):
        return _Item(subj.broker_snapshot(portfolio_id), msg, "snapshot")
    raise TypeError(f"not a broker event: {type(msg).__name__}")
