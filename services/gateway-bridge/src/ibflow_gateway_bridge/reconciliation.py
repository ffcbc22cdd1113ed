"""Reload the broker's state after every (re)connect, and on request.

IB does not replay what happened while the bridge was away (failure modes 5 and 13):
a fill during a disconnect, an order left working by an earlier session. On every
transition to ``ready`` the :class:`Reconciler` asks the broker, one query after the
other, for:

* ``account``: the account values ib_async keeps from its account updates;
* ``positions``: ``reqPositions``;
* ``orders``: ``reqAllOpenOrders`` and ``reqCompletedOrders(apiOnly=False)``;
* ``executions``: ``reqExecutions``, with each fill's commission report (waiting up to
  ``commission_grace`` for reports still pending).

What is found is published exactly like the live events (same contracts, hence the
same ``Nats-Msg-Id``: a replayed execution is stored once), each carrying the
snapshot's id, followed by one ``BrokerSnapshotCompleted``. A query that fails or times
out makes its part *unknown*: listed in ``failed_queries``, its count ``None``,
``complete`` false; it is never reported as empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import BrokerQuery, ConnectionState
from ibflow.contracts.gateway import BrokerSnapshotCompleted
from ibflow_gateway_bridge.domain.connection import Transition
from ibflow_gateway_bridge.events import BrokerEventPublisher
from ibflow_gateway_bridge.ib.adapter import Fill, Trade
from ibflow_gateway_bridge.supervisor import PortfolioConnection

__all__ = ["ALL_QUERIES", "Reconciler"]

log = logging.getLogger("ibflow_gateway_bridge.reconciliation")

ALL_QUERIES: Final = (
    BrokerQuery.ACCOUNT,
    BrokerQuery.POSITIONS,
    BrokerQuery.ORDERS,
    BrokerQuery.EXECUTIONS,
)
_T = TypeVar("_T")


class _QueryFailedError(Exception):
    pass


class Reconciler:
    """Broker snapshots of one portfolio: after every transition to ``ready`` and on
    :meth:`reconcile_now`. Snapshots never overlap; a request during one runs after it."""

    def __init__(
        self,
        connection: PortfolioConnection,
        events: BrokerEventPublisher,
        *,
        query_timeout: float = 10.0,
        commission_grace: float = 2.0,
    ) -> None:
        self._connection = connection
        self._events = events
        self._query_timeout = query_timeout
        self._commission_grace = commission_grace
        self._lock = asyncio.Lock()
        self._ready_count = 0
        self._tasks: set[asyncio.Task[BrokerSnapshotCompleted]] = set()
        self.last_snapshot: BrokerSnapshotCompleted | None = None
        """The latest snapshot summary taken."""
        self._order_refs: dict[str, Trade] = {}
        self._refs_epoch: int | None = None
        connection.on_transition(self._on_transition)

    def known_order(self, order_ref: str) -> tuple[bool, Trade | None]:
        """What the last complete orders snapshot of *this* connection says about
        ``order_ref``: ``(True, trade)`` or ``(True, None)`` when that snapshot is
        trustworthy (taken since the latest (re)connect and both order queries
        succeeded), ``(False, None)`` when the caller must ask the broker.

        Orders placed by this session after the snapshot are in the session's own
        trades (``IbClient.trades_by_ref``), so the two together answer "does IB have
        this orderRef?" without querying every order of the account per command.
        """
        if self._refs_epoch != self._ready_count or not self._connection.accepts_orders:
            return False, None
        return True, self._order_refs.get(order_ref)

    @property
    def portfolio_id(self) -> str:
        """The portfolio reconciled."""
        return self._connection.portfolio_id

    async def reconcile_now(
        self,
        queries: tuple[BrokerQuery, ...] = ALL_QUERIES,
        *,
        reason: str = "requested",
    ) -> BrokerSnapshotCompleted:
        """Take a snapshot of ``queries`` now; its summary (already queued for publishing)."""
        async with self._lock:
            return await self._reconcile(queries, reason)

    async def close(self) -> None:
        """Cancel snapshots still running (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ internals

    def _on_transition(self, transition: Transition) -> None:
        if not transition.changed or transition.current is not ConnectionState.READY:
            return
        self._ready_count += 1
        reason = "connected" if self._ready_count == 1 else "reconnected"
        task = asyncio.get_running_loop().create_task(
            self.reconcile_now(reason=reason), name=f"reconcile-{self.portfolio_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[BrokerSnapshotCompleted]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: reconciliation failed: %r", self.portfolio_id, task.exception())

    async def _query(self, name: BrokerQuery, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.warning(
                "%s: broker query %s failed: %r (its part is unknown)",
                self.portfolio_id,
                name,
                exc,
            )
            raise _QueryFailedError(name) from exc

    async def _reconcile(
        self, queries: tuple[BrokerQuery, ...], reason: str
    ) -> BrokerSnapshotCompleted:
        client = self._connection.client
        snapshot_id = uuid.uuid4()
        started_at = utc_now()
        failed: list[BrokerQuery] = []
        counts: dict[BrokerQuery, int] = {}
        log.info("%s: broker snapshot %s (%s)", self.portfolio_id, snapshot_id, reason)
        steps = {
            BrokerQuery.ACCOUNT: self._account,
            BrokerQuery.POSITIONS: self._positions,
            BrokerQuery.ORDERS: self._orders,
            BrokerQuery.EXECUTIONS: self._executions,
        }
        for query, step in steps.items():
            if query not in queries:
                continue
            try:
                counts[query] = await step(snapshot_id)
            except _QueryFailedError:
                failed.append(query)

        accounts = client.managed_accounts if client.connected else []
        summary = BrokerSnapshotCompleted(
            portfolio_id=self.portfolio_id,
            snapshot_id=snapshot_id,
            account_id=self._connection.config.account or (accounts[0] if accounts else None),
            reason=reason,
            queries=queries,
            failed_queries=tuple(failed),
            complete=not failed,
            position_count=counts.get(BrokerQuery.POSITIONS),
            open_order_count=counts.get(BrokerQuery.ORDERS),
            execution_count=counts.get(BrokerQuery.EXECUTIONS),
            started_at=started_at,
        )
        self._events.submit(summary)
        self.last_snapshot = summary
        log.log(
            logging.INFO if summary.complete else logging.WARNING,
            "%s: broker snapshot %s done: complete=%s failed=%s",
            self.portfolio_id,
            snapshot_id,
            summary.complete,
            [q.value for q in failed],
        )
        return summary

    async def _account(self, snapshot_id: uuid.UUID) -> int:
        client = self._connection.client
        values = client.account_values() if client.connected else []
        if not values or self._events.account_values(values, snapshot_id=snapshot_id) == 0:
            log.warning("%s: no account values known (unknown)", self.portfolio_id)
            raise _QueryFailedError(BrokerQuery.ACCOUNT)
        return len(values)

    async def _positions(self, snapshot_id: uuid.UUID) -> int:
        client, timeout = self._connection.client, self._query_timeout
        positions = await self._query(BrokerQuery.POSITIONS, lambda: client.positions(timeout))
        for position in positions:
            self._events.position(position, snapshot_id=snapshot_id)
        return len(positions)

    async def _orders(self, snapshot_id: uuid.UUID) -> int:
        client, timeout = self._connection.client, self._query_timeout
        epoch = self._ready_count
        open_trades = await self._query(BrokerQuery.ORDERS, lambda: client.open_orders(timeout))
        done_trades = await self._query(
            BrokerQuery.ORDERS, lambda: client.completed_orders(timeout)
        )
        refs: dict[str, Trade] = {}
        for trade in [*open_trades, *done_trades]:
            self._events.order_status(trade, snapshot_id=snapshot_id)
            if trade.order.orderRef:
                refs.setdefault(trade.order.orderRef, trade)
        self._order_refs, self._refs_epoch = refs, epoch
        return len(open_trades)

    async def _executions(self, snapshot_id: uuid.UUID) -> int:
        client, timeout = self._connection.client, self._query_timeout
        fills = await self._query(BrokerQuery.EXECUTIONS, lambda: client.executions(timeout))
        for fill in fills:
            self._events.execution(None, fill, snapshot_id=snapshot_id)
        await self._commissions(fills)
        return len(fills)

    async def _commissions(self, fills: list[Fill]) -> None:
        """Publish each fill's commission; wait up to the grace for pending ones (a report
        arriving later is published by the live commission callback)."""
        client = self._connection.client
        pending = [fill.execution.execId for fill in fills]
        deadline = time.monotonic() + self._commission_grace
        while True:
            still: list[str] = []
            for exec_id in pending:
                fill = client.fill(exec_id)
                if fill is None or not self._events.commission(None, fill, fill.commissionReport):
                    still.append(exec_id)
            pending = still
            if not pending or time.monotonic() >= deadline or not client.connected:
                break
            await asyncio.sleep(0.05)
        if pending:
            log.warning(
                "%s: commission still pending for %d execution(s) after the snapshot",
                self.portfolio_id,
                len(pending),
            )
