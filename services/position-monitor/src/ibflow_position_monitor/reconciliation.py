"""Our book against the broker's holdings (failure mode 12), per broker snapshot.

The bridge publishes a snapshot's holdings as ``BrokerPositionReported`` events carrying
the snapshot's id, then ``BrokerSnapshotCompleted``. The holdings are recorded in
``broker_positions``; when the completion arrives (and once every holding it counts is
recorded: the two consumers run independently) the portfolio's active positions are
compared with them (:func:`~.domain.reconcile`):

* a snapshot whose positions query failed is *unknown*: ``ReconciliationReported``
  with ``complete=false`` and nothing concluded, nothing adopted;
* every difference is a ``reconciliation_reports`` row (once per snapshot and symbol),
  a ``PositionDriftDetected`` event and a metric; rows of symbols back in sync are
  resolved;
* a holding unknown to us is adopted as an external ``OPEN`` position (no stop or
  target; the close-out exits it), priced at IB's average cost over the multiplier;
* a snapshot that shows drift is held back once for ``reconcile_settle`` seconds
  (redelivered), so that fills still in flight through the other consumers are booked
  first and are not mistaken for drift.

Holdings reported outside a snapshot (live position updates) are not compared: they
race with the executions that caused them.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg

from ibflow.bus import subjects
from ibflow.bus.errors import Retry
from ibflow.contracts import (
    BrokerPositionReported,
    BrokerSnapshotCompleted,
    PositionDriftDetected,
    ReconciliationItem,
    ReconciliationReported,
)
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import BrokerQuery, PositionStatus
from ibflow.db.inbox import claim
from ibflow.db.outbox import enqueue
from ibflow.db.pool import AnyConnection
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.book import session_date_of
from ibflow_position_monitor.domain import (
    UNKNOWN,
    AdoptExternal,
    PositionState,
    Reconciliation,
    book_of,
    reconcile,
)
from ibflow_position_monitor.metrics import ADOPTED, DRIFT_DETECTED, OPEN_DRIFT, POSITIONS_ENTERED

__all__ = ["Reconciler"]

log = logging.getLogger("ibflow.position_monitor.reconciliation")


class Reconciler:
    """Records snapshot holdings and compares them with our book (module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        notify: Callable[[], None],
        *,
        on_change: Callable[[repo.Stored], None] = lambda _stored: None,
        settle: float = 2.0,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._notify = notify
        self._on_change = on_change
        self._settle = settle
        self._clock = clock

    async def on_broker_position(self, msg: BrokerPositionReported) -> None:
        """Record one holding of a snapshot (live updates outside a snapshot are skipped)."""
        if msg.snapshot_id is None:
            return
        async with self._pool.acquire() as conn:
            await repo.record_broker_position(
                conn,
                snapshot_id=msg.snapshot_id,
                portfolio_id=msg.portfolio_id,
                account_id=msg.account_id,
                con_id=msg.con_id,
                symbol=msg.symbol,
                position=msg.position,
                avg_cost=msg.avg_cost,
            )

    async def on_snapshot(
        self, msg: BrokerSnapshotCompleted, consumer: str, msg_id: str, *, first: bool
    ) -> Reconciliation | None:
        """Compare the portfolio's book with the completed snapshot ``msg``.

        Raises :class:`Retry` while holdings it counts are not recorded yet, and once
        (``first``) when it shows drift, to let fills in flight land.
        """
        if BrokerQuery.POSITIONS not in msg.queries:
            return None
        known = BrokerQuery.POSITIONS not in msg.failed_queries
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO broker_snapshots (snapshot_id, portfolio_id, account_id,"
                " positions_known, position_count, completed_at) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT DO NOTHING",
                msg.snapshot_id,
                msg.portfolio_id,
                msg.account_id,
                known,
                msg.position_count if known else None,
                msg.ts_event,
            )
            if known:
                holdings = await repo.snapshot_holdings(conn, msg.snapshot_id)
                if holdings.rows < (msg.position_count or 0):
                    raise Retry(0.2)
        return await self.reconcile(
            msg.portfolio_id, msg.snapshot_id, consumer, msg_id, settle_first=first
        )

    async def reconcile_latest(self, portfolio_id: str, reason: str) -> Reconciliation | None:
        """Compare with the latest recorded snapshot of ``portfolio_id`` (``None``: none)."""
        async with self._pool.acquire() as conn:
            snapshot_id = await conn.fetchval(
                "SELECT snapshot_id FROM broker_snapshots WHERE portfolio_id = $1"
                " ORDER BY completed_at DESC LIMIT 1",
                portfolio_id,
            )
        if snapshot_id is None:
            return None
        return await self.reconcile(
            portfolio_id, snapshot_id, "position-monitor-reconcile", reason, settle_first=False
        )

    async def _compare(
        self, conn: AnyConnection, portfolio_id: str, snapshot_id: uuid.UUID
    ) -> tuple[Reconciliation, repo.Holdings | None]:
        snapshot = await conn.fetchrow(
            "SELECT account_id, positions_known FROM broker_snapshots WHERE snapshot_id = $1",
            snapshot_id,
        )
        known = snapshot is not None and snapshot["positions_known"]
        positions = await repo.active_positions(conn, portfolio_id=portfolio_id)
        book = book_of(portfolio_id, [p.state for p in positions])
        holdings = (
            await repo.snapshot_holdings(conn, snapshot_id, snapshot["account_id"])
            if snapshot is not None and known
            else None
        )
        result = reconcile(
            book,
            UNKNOWN if holdings is None else holdings.quantities,
            session_date=session_date_of(self._clock()),
            snapshot_id=snapshot_id,
        )
        return result, holdings

    async def reconcile(
        self,
        portfolio_id: str,
        snapshot_id: uuid.UUID,
        consumer: str,
        msg_id: str,
        *,
        settle_first: bool,
    ) -> Reconciliation:
        """Compare, report, adopt, publish (module docstring)."""
        if settle_first and self._settle > 0:
            async with self._pool.acquire() as conn:
                preview, _ = await self._compare(conn, portfolio_id, snapshot_id)
            if preview.drifts:
                log.info(
                    "%s: snapshot %s shows drift in %s: settling %.1fs first",
                    portfolio_id,
                    snapshot_id,
                    ", ".join(d.symbol for d in preview.drifts),
                    self._settle,
                )
                raise Retry(self._settle)
        adopted: list[repo.Stored] = []
        async with self._pool.acquire() as conn, conn.transaction():
            result, holdings = await self._compare(conn, portfolio_id, snapshot_id)
            if not await claim(conn, consumer, msg_id):
                return result
            adoptions = {a.symbol: a for a in result.adoptions}
            for drift in result.drifts:
                adoption = adoptions.get(drift.symbol)
                adopted_id: str | None = None
                if adoption is not None and holdings is not None:
                    stored = await self._adopt(conn, adoption, holdings)
                    if stored is not None:
                        adopted.append(stored)
                        adopted_id = stored.position_id
                new = await repo.insert_reconciliation_report(
                    conn,
                    portfolio_id,
                    drift,
                    snapshot_id=snapshot_id,
                    adopted_position_id=adopted_id,
                )
                if not new:
                    continue
                DRIFT_DETECTED.labels(portfolio_id, drift.kind.value).inc()
                log.warning(
                    "%s drift in %s: ours %s, broker %s (%s)%s",
                    portfolio_id,
                    drift.symbol,
                    drift.ours,
                    drift.broker,
                    drift.kind.value,
                    f"; adopted as {adopted_id}" if adopted_id else "",
                )
                await enqueue(
                    conn,
                    subjects.position_drift(portfolio_id),
                    PositionDriftDetected(
                        portfolio_id=portfolio_id,
                        symbol=drift.symbol,
                        kind=drift.kind.value,
                        book_quantity=drift.ours,
                        broker_quantity=drift.broker,
                        settling=drift.settling,
                        snapshot_id=snapshot_id,
                        adopted_position_id=adopted_id,
                    ),
                )
            if result.complete:
                await repo.resolve_reports(conn, portfolio_id, [d.symbol for d in result.drifts])
            await enqueue(
                conn,
                subjects.reconciliation(portfolio_id),
                ReconciliationReported(
                    portfolio_id=portfolio_id,
                    snapshot_id=snapshot_id,
                    complete=result.complete,
                    items=tuple(
                        ReconciliationItem(
                            symbol=h.symbol, book_quantity=h.ours, broker_quantity=h.broker
                        )
                        for h in result.holdings
                    ),
                ),
            )
            counts = await repo.open_drift_counts(conn)
        self._notify()
        OPEN_DRIFT.labels(portfolio_id).set(counts.get(portfolio_id, 0))
        for stored in adopted:
            self._on_change(stored)
        if not result.complete:
            log.warning(
                "%s: broker positions unknown in %s: nothing concluded", portfolio_id, snapshot_id
            )
        return result

    async def _adopt(
        self, conn: AnyConnection, adoption: AdoptExternal, holdings: repo.Holdings
    ) -> repo.Stored | None:
        cost = abs(holdings.avg_costs.get(adoption.symbol, Decimal(0)))
        if cost <= 0:
            log.error(
                "%s: cannot adopt %s: the broker gives no average cost",
                adoption.portfolio_id,
                adoption.symbol,
            )
            return None
        state = PositionState.adopted(
            position_id=adoption.position_id,
            portfolio_id=adoption.portfolio_id,
            symbol=adoption.symbol,
            side=adoption.side,
            quantity=adoption.quantity,
            price=cost,
        )
        try:
            async with conn.transaction():
                existing = await repo.load(conn, adoption.position_id)
                if existing is not None:
                    return None
                stored = await repo.insert_position(
                    conn, state, session_date=session_date_of(self._clock()), now=self._clock()
                )
        except asyncpg.UniqueViolationError as exc:
            log.error("%s: %s not adopted: %s", adoption.portfolio_id, adoption.symbol, exc)
            return None
        await enqueue(conn, subjects.position_changed(adoption.portfolio_id), repo.to_event(stored))
        POSITIONS_ENTERED.labels(adoption.portfolio_id, PositionStatus.OPEN.value).inc()
        ADOPTED.labels(adoption.portfolio_id).inc()
        return stored
