"""Session events and operator commands of the position-monitor.

* ``session.close_out``: cancel every working entry that has filled nothing, and exit
  every ``OPEN`` position (market, or a marketable limit as configured). Positions
  already ``CLOSING`` are left alone, so a repeated close-out sends nothing more.
* ``session.position_check``: fresh quotes, then every ``OPEN`` position re-evaluated
  (stale data is never acted on).
* ``FlattenPositions``: market exits (reason ``manual``) for the matching ``OPEN``
  positions, entries of the matching ``PENDING`` ones cancelled.
* ``SetPositionLevels``: new stop and target, evaluated at once on the latest quote.
* ``RequestReconciliation``: a fresh broker snapshot (``RefreshBrokerState``, the
  comparison follows when it completes) or the latest one compared now.

Refusals are error replies naming the field or rule (``not_found``, ``invalid_request``,
``refused``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError, RequestError
from ibflow.contracts import (
    INVALID_REQUEST,
    NOT_FOUND,
    REFUSED,
    CommandAccepted,
    FlattenPositions,
    RefreshBrokerState,
    RequestReconciliation,
    SessionEventEmitted,
    SetPositionLevels,
)
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import ExitReason, PositionStatus
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.domain import (
    CloseOutStyle,
    ExitDecision,
    IllegalTransition,
    InvalidLevels,
    NoExit,
    PositionState,
    close_out_decision,
)
from ibflow_position_monitor.orders import REQUESTER
from ibflow_position_monitor.reconciliation import Reconciler
from ibflow_position_monitor.settings import PositionMonitorSettings
from ibflow_position_monitor.watch import MarketWatch

__all__ = ["CLOSE_OUT", "POSITION_CHECK", "Commands"]

log = logging.getLogger("ibflow.position_monitor.commands")

CLOSE_OUT = "close_out"
POSITION_CHECK = "position_check"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What a close-out or flatten did."""

    exits: tuple[str, ...] = ()
    """Client order ids of the exits sent."""
    cancels: tuple[str, ...] = ()
    """Entries whose cancel was requested."""
    positions: tuple[str, ...] = ()


class Commands:
    """The session event handler and the request/reply handlers."""

    def __init__(
        self,
        nc: NatsClient,
        pool: asyncpg.Pool[Any],
        *,
        book: PositionBook,
        watch: MarketWatch,
        reconciler: Reconciler,
        settings: PositionMonitorSettings,
    ) -> None:
        self._nc = nc
        self._pool = pool
        self._book = book
        self._watch = watch
        self._reconciler = reconciler
        self._settings = settings

    # ------------------------------------------------------------------ session events

    async def on_session(self, event: SessionEventEmitted) -> None:
        """``close_out`` and ``position_check``; other session events are not ours."""
        if event.name == CLOSE_OUT:
            done = await self.flatten(None, (), ExitReason.CLOSE_OUT)
            log.info(
                "close-out %s: %d exit(s), %d entry cancel(s)",
                event.occurrence_id,
                len(done.exits),
                len(done.cancels),
            )
        elif event.name == POSITION_CHECK:
            started = await self._watch.check_all()
            log.info("position check %s: %d exit(s)", event.occurrence_id, started)

    async def flatten(
        self, portfolio_id: str | None, symbols: Iterable[str], reason: ExitReason
    ) -> Outcome:
        """Exit every matching OPEN position and cancel the entries of PENDING ones."""
        wanted = set(symbols)
        exits: list[str] = []
        cancels: list[str] = []
        positions: list[str] = []
        for stored in await self._book.active(portfolio_id):
            state = stored.state
            if wanted and state.symbol not in wanted:
                continue
            if state.status is PositionStatus.PENDING and state.entry_working:
                positions.append(state.position_id)
                if await self._book.cancel_entry(
                    state.portfolio_id, state.entry_client_order_id, reason.value
                ):
                    cancels.append(state.entry_client_order_id)
                continue
            if state.status is not PositionStatus.OPEN:
                continue
            decision = await self._book.exit(
                state.position_id,
                self._closing(reason),
                reference_price=self._watch.reference_price(state.symbol),
                despite_refusal=True,
            )
            if isinstance(decision, ExitDecision):
                positions.append(state.position_id)
                exits.append(decision.client_order_id)
                if decision.cancel_entry_remainder:
                    cancels.append(state.entry_client_order_id)
        return Outcome(tuple(exits), tuple(cancels), tuple(positions))

    def _closing(self, reason: ExitReason) -> Any:
        settings = self._settings
        style = settings.close_out_style if reason is ExitReason.CLOSE_OUT else CloseOutStyle.MARKET
        watch = self._watch
        max_age = dt.timedelta(seconds=settings.stale_after)

        def decide(state: PositionState) -> ExitDecision | NoExit:
            decision = close_out_decision(
                state,
                watch.quote(state.symbol),
                style=style,
                offset_ticks=settings.close_out_offset_ticks,
                now=utc_now(),
                max_age=max_age,
            )
            if isinstance(decision, ExitDecision) and reason is not ExitReason.CLOSE_OUT:
                return dataclasses.replace(decision, reason=reason)
            return decision

        return decide

    # ------------------------------------------------------------------ commands

    async def on_flatten(self, cmd: FlattenPositions) -> CommandAccepted:
        """``FlattenPositions``: exits with reason ``manual``."""
        done = await self.flatten(cmd.portfolio_id, cmd.symbols, ExitReason.MANUAL)
        log.warning(
            "flatten by %s (%s): %d exit(s), %d cancel(s)",
            cmd.requested_by,
            cmd.reason,
            len(done.exits),
            len(done.cancels),
        )
        return CommandAccepted.of(
            cmd,
            position_ids=done.positions,
            client_order_ids=done.exits + done.cancels,
            detail=f"{len(done.exits)} exit(s), {len(done.cancels)} entry cancel(s)",
        )

    async def on_set_levels(self, cmd: SetPositionLevels) -> CommandAccepted:
        """``SetPositionLevels``: new stop and target, evaluated at once."""
        try:
            stored = await self._book.set_levels(
                cmd.portfolio_id, cmd.position_id, cmd.stop_loss, cmd.take_profit
            )
        except LookupError as exc:
            raise RemoteError(NOT_FOUND, str(exc.args[0])) from None
        except InvalidLevels as exc:
            raise RemoteError(INVALID_REQUEST, f"stop_loss/take_profit: {exc}") from None
        except IllegalTransition as exc:
            raise RemoteError(REFUSED, f"status: {exc}") from None
        log.info(
            "levels of %s set by %s: stop %s, target %s",
            cmd.position_id,
            cmd.requested_by,
            cmd.stop_loss,
            cmd.take_profit,
        )
        self._watch.update(stored)
        self._watch.evaluate_symbol(stored.state.symbol)
        return CommandAccepted.of(cmd, position_ids=(cmd.position_id,), detail=repo_status(stored))

    async def on_reconcile(self, cmd: RequestReconciliation) -> CommandAccepted:
        """``RequestReconciliation``: refresh at the broker, or compare with the latest."""
        portfolios = [cmd.portfolio_id] if cmd.portfolio_id else await self._portfolios()
        details: list[str] = []
        for portfolio in portfolios:
            if cmd.refresh:
                refresh = RefreshBrokerState(
                    portfolio_id=portfolio, requested_by=REQUESTER, **cmd.caused()
                )
                try:
                    await request(
                        self._nc,
                        subjects.refresh_broker_state(portfolio),
                        refresh,
                        CommandAccepted,
                        timeout=self._settings.order_timeout,
                    )
                except RequestError as exc:
                    if cmd.portfolio_id:
                        raise RemoteError(exc.code, f"portfolio_id: {exc.message}") from None
                    details.append(f"{portfolio}: {exc.code}")
                    continue
                details.append(f"{portfolio}: snapshot requested")
            else:
                result = await self._reconciler.reconcile_latest(
                    portfolio, f"reconcile-request:{cmd.event_id}:{portfolio}"
                )
                if result is None:
                    details.append(f"{portfolio}: no broker snapshot yet")
                else:
                    details.append(f"{portfolio}: {len(result.drifts)} drift(s)")
        return CommandAccepted.of(cmd, detail="; ".join(details) or "no portfolio")

    async def _portfolios(self) -> list[str]:
        async with self._pool.acquire() as conn:
            try:
                rows = await conn.fetch("SELECT id FROM portfolios WHERE enabled ORDER BY id")
            except asyncpg.UndefinedTableError:
                rows = await conn.fetch(
                    "SELECT DISTINCT portfolio_id AS id FROM positions ORDER BY 1"
                )
        return [row["id"] for row in rows]


def repo_status(stored: repo.Stored) -> str:
    """``"OPEN, stop 95, target 110"`` for a reply."""
    state = stored.state
    return f"{state.status.value}, stop {state.stop_loss}, target {state.take_profit}"
