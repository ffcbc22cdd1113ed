"""The position book: every broker fact, order-manager update and decision that changes
a position, each in one database transaction with its ``PositionChanged`` in the outbox.

Facts come from durable consumers (each message claimed in ``ibflow_inbox`` in the
transaction of its writes, acked after the commit):

* ``OrderBookUpdated`` (the order-manager's record): an entry with a ``position_id``
  creates the ``PENDING`` position (levels from the entry); an exit of a position records
  it (``CLOSING``); a terminal status ends the entry or exit;
* the bridge's ``OrderStatusChanged`` (``Cancelled``/``ApiCancelled``/``Filled``),
  ``ExecutionReported`` and ``CommissionReported``, joined to positions by client order id
  (entry, or one of the exits). A status or fill of an order no position knows yet is
  *parked* (``position_parked_facts``) and applied when the position appears (the
  order-manager's update may arrive after the bridge's events); a commission that
  overtakes its fill is parked in ``position_executions``. A fact of an order whose
  ``OrderBookUpdated`` said *manual* is skipped instead, without a transaction
  (:class:`~.domain.ManualOrders`): no position will ever own it.

Decisions (:meth:`PositionBook.exit`), the exit ordering: the position row is locked
and the decision taken again on the stored state (two replicas, or two ticks, decide
once: the second waits on the lock and finds the position ``CLOSING``). The exit's
``SubmitOrder`` (deterministic client order id ``exit:<position>[:<attempt>]``) is then
handed to NATS *before* the exit is recorded (``CLOSING``, the exact body kept) and
committed; the answer is awaited only after the commit, and recorded in a second
transaction. The order-manager, not our commit, is the exactly-once guard: it keeps one
order per client order id and answers a repeat as a duplicate (``conflict`` if the terms
changed, which :class:`~.orders.Outcome` ``EXISTS`` reads as "the exit exists"). So:

* the record fails to commit after the send (or the process dies between the two): the
  position stays ``OPEN``; the order-manager's ``OrderBookUpdated`` of the exit records it
  (``CLOSING``, by position id), and a decision taken before that re-sends the *same* id
  (the attempt number counts recorded exits only), answered as a duplicate;
* the exit's status or fill arrives before the record commits: it waits for the row
  (``_load_by_order``) and applies after the commit, or is parked under the row lock if
  the record failed, and drained by whichever records the exit later (the
  ``OrderBookUpdated``, or the next decision's transaction);
* the answer arrives before the commit: it waits in its task until the commit is done;
* no order-manager receives the request (NATS answers "no responders", e.g. while the
  order-manager reconnects after a nats-server restart): nothing was recorded or placed
  anywhere, so the *same* exit is sent again, in the background, a few times over about
  4 s (``_REDELIVERY_DELAYS``), then left ``CLOSING`` for the periodic re-send
  (:meth:`PositionBook.resend_unacknowledged`): one exit per position, not one per tick;
* the order-manager answers that nothing was placed for a reason that may pass (the
  gateway not ready: it has recorded the id as rejected): the exit ends and the next
  tick uses the next attempt's id (``exit:<position>:2``);
* a crash after the commit without an answer is covered by re-sending the stored order
  (:meth:`PositionBook.resend_unacknowledged`), answered as a duplicate.

Locks, in the order each transaction takes them (after its inbox claim, if it has one).
One global order: the execution lock, the position row(s), the order lock, the parked
facts' rows, the execution locks of parked fills (the one exception, below):

* a fill (:meth:`PositionBook.on_execution`) and a commission
  (:meth:`PositionBook.on_commission`): the execution lock of its execId
  (:func:`~.repository.lock_execution`), then the position row (``FOR UPDATE``; for an
  exit id no position knows yet, the positions that id names, in id order);
* a fill or status that no position knows, before it is parked: the order lock of its
  client order id (:func:`~.repository.lock_order_facts`), then a second lookup that
  waits for nothing. A position committed since the first lookup is not locked there
  (that would take the row after the order lock): the transaction is rolled back and
  the fact applied in a new one, which finds the position;
* an order-manager update, an exit decision: the position row, then, draining the facts
  parked for the order (``_drain``), the order lock, the ``position_parked_facts`` rows
  and the execution lock of each parked fill, oldest first;
* a status, the answer to an exit, new levels: the position row only.

The order lock serialises parking and draining per order: a fact parked by a
transaction that has not committed when a drain reads the parked facts would otherwise
stay parked (the position was created, and drained, in a transaction the fact's lookup
did not see). Now either the fact is parked first, and the drain waits for its commit,
or the drain is first, and the fact waits for the drain's commit, then finds the
position. Whoever holds the order lock waits for no lock a waiter for it holds: a parker
takes nothing after it (a read and an insert), and a drainer only the parked facts' rows
(locked by drainers of the same order only, which wait for the order lock first) and
the execution locks of parked fills (next paragraph).

Draining takes the row before the execution lock, and cannot deadlock with a fill: it
locks only the execIds of parked fills, and a parked fill's message (``exec:<execId>``)
is claimed in the transaction that parked it, so any later delivery of that fill stops
at its claim, before the execution lock; a commission of a parked fill is not booked,
so it parks itself under the execution lock and does not wait for the row. (A hash
collision of two execIds' or orders' advisory keys could still close a cycle:
PostgreSQL then aborts one transaction, and its message is redelivered.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel

from ibflow.bus import subjects
from ibflow.bus.errors import Reject
from ibflow.contracts import (
    CommissionReported,
    ExecutionReported,
    OrderBookUpdated,
    OrderStatusChanged,
    SubmitOrder,
)
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import (
    ExitReason,
    IbOrderStatus,
    OrderPurpose,
    OrderType,
    PositionStatus,
)
from ibflow.db.inbox import claim
from ibflow.db.outbox import Notify, StagedRow, enqueue_many
from ibflow.db.pool import AnyConnection
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.domain import (
    ExitDecision,
    IllegalTransition,
    ManualOrders,
    NoExit,
    NoExitReason,
    PositionDomainError,
    PositionState,
    Transition,
    exit_position_ids,
)
from ibflow_position_monitor.metrics import (
    EXIT_REFUSALS,
    EXITS_SENT,
    MANUAL_FACTS_SKIPPED,
    PARKED_FACTS,
    POSITIONS_ENTERED,
    TICK_TO_EXIT,
    UNATTRIBUTED,
)
from ibflow_position_monitor.orders import REQUESTER, OrderClient, Outcome, SubmitAnswer

__all__ = ["NEW_YORK", "Decide", "PositionBook", "session_date_of"]

log = logging.getLogger("ibflow.position_monitor.book")

NEW_YORK: Final = ZoneInfo("America/New_York")

_ENDED_AT_IB: Final = frozenset(
    {IbOrderStatus.CANCELLED.value, IbOrderStatus.API_CANCELLED.value, IbOrderStatus.FILLED.value}
)

_REDELIVERY_DELAYS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Seconds before each re-send of an exit no order-manager received (then the periodic
re-send of unacknowledged exits takes over)."""

Decide = Callable[[PositionState], ExitDecision | NoExit]
"""Takes the exit decision on the stored (locked) state of a position."""


def session_date_of(moment: dt.datetime) -> dt.date:
    """The New York calendar date of ``moment`` (a position's session)."""
    return moment.astimezone(NEW_YORK).date()


class Changes(list[repo.Stored]):
    """The positions one transaction changed, and the outbox rows it staged for them
    (handed to the relay once it commits)."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[StagedRow] = []


class PositionBook:
    """Our positions (see the module docstring).

    ``notify`` hands the outbox rows of a commit to the relay; ``on_change``
    is told every committed position (the market watch keeps its open positions from it);
    ``manual`` remembers the manual orders whose facts are skipped.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        orders: OrderClient,
        notify: Notify,
        *,
        on_change: Callable[[repo.Stored], None] = lambda _stored: None,
        clock: Callable[[], dt.datetime] = utc_now,
        manual: ManualOrders | None = None,
    ) -> None:
        self._pool = pool
        self._manual = ManualOrders() if manual is None else manual
        self._orders = orders
        self._notify = notify
        self._on_change = on_change
        self._clock = clock
        self._redeliveries: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ plumbing

    async def _commit(
        self,
        conn: AnyConnection,
        stored: repo.Stored,
        transition: Transition,
        changed: Changes,
        **kw: Any,
    ) -> repo.Stored:
        """Save ``transition`` (if anything changed) and enqueue its ``PositionChanged``."""
        if not transition.changed and not kw:
            return stored
        saved = await repo.save(conn, stored, transition, now=self._clock(), **kw)
        await self._announce(conn, saved, transition.entered, changed)
        return saved

    async def _announce(
        self,
        conn: AnyConnection,
        saved: repo.Stored,
        entered: PositionStatus | None,
        changed: Changes,
    ) -> None:
        state = saved.state
        await enqueue_many(
            conn,
            [(subjects.position_changed(state.portfolio_id), repo.to_event(saved))],
            staged=changed.staged,
        )
        if entered is not None:
            POSITIONS_ENTERED.labels(state.portfolio_id, entered.value).inc()
            log.info("position %s %s", state.position_id, entered.value)
        changed.append(saved)

    def _committed(self, changed: Changes) -> None:
        if not changed:
            return
        self._notify(changed.staged)
        for stored in changed:
            self._on_change(stored)

    # ------------------------------------------------------------------ order-manager

    async def on_order_updated(self, msg: OrderBookUpdated, consumer: str, msg_id: str) -> None:
        """The order-manager's record of an entry or exit of a position (a manual order's
        is only remembered, to skip its facts)."""
        if msg.position_id is None or msg.purpose is OrderPurpose.MANUAL:
            self._manual.add(msg.client_order_id)
            return
        changed = Changes()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim(conn, consumer, msg_id):
                return
            if msg.purpose is OrderPurpose.ENTRY:
                await self._entry_updated(conn, msg, changed)
            elif msg.purpose is OrderPurpose.EXIT:
                await self._exit_updated(conn, msg, changed)
        self._committed(changed)

    async def _entry_updated(
        self, conn: AnyConnection, msg: OrderBookUpdated, changed: Changes
    ) -> None:
        assert msg.position_id is not None
        stored = await repo.load(conn, msg.position_id, lock=True)
        if stored is None:
            stored = await self._create(conn, msg, changed)
            if stored is None:
                return
        elif stored.state.entry_client_order_id != msg.client_order_id:
            UNATTRIBUTED.labels("entry").inc()
            log.warning(
                "entry %s names position %s, whose entry is %s: not attributed",
                msg.client_order_id,
                msg.position_id,
                stored.state.entry_client_order_id,
            )
            return
        if msg.status.is_terminal:
            stored = await self._commit(
                conn,
                stored,
                stored.state.entry_ended(broker_filled=msg.filled_quantity),
                changed,
            )
        await self._drain(conn, msg.client_order_id, changed)

    async def _create(
        self, conn: AnyConnection, msg: OrderBookUpdated, changed: Changes
    ) -> repo.Stored | None:
        assert msg.position_id is not None
        try:
            state = PositionState.new(
                position_id=msg.position_id,
                portfolio_id=msg.portfolio_id,
                symbol=msg.symbol,
                side=repo.side_of_entry(msg.side),
                planned_quantity=msg.quantity,
                entry_client_order_id=msg.client_order_id,
                stop_loss=msg.stop_loss,
                take_profit=msg.take_profit,
            )
        except (PositionDomainError, ValueError) as exc:
            raise Reject(f"entry {msg.client_order_id} cannot open a position: {exc}") from exc
        try:
            async with conn.transaction():
                stored = await repo.insert_position(
                    conn, state, session_date=session_date_of(msg.created_at), now=self._clock()
                )
        except asyncpg.UniqueViolationError as exc:
            UNATTRIBUTED.labels("entry").inc()
            log.error(
                "entry %s: position %s not created (%s): the portfolio already has an active"
                " %s position this session",
                msg.client_order_id,
                msg.position_id,
                exc.constraint_name,
                msg.symbol,
            )
            return None
        await self._announce(conn, stored, PositionStatus.PENDING, changed)
        return stored

    async def _exit_updated(
        self, conn: AnyConnection, msg: OrderBookUpdated, changed: Changes
    ) -> None:
        assert msg.position_id is not None
        stored = await repo.load(conn, msg.position_id, lock=True)
        if stored is None:
            UNATTRIBUTED.labels("exit").inc()
            log.warning(
                "exit %s names unknown position %s: recorded in the log only",
                msg.client_order_id,
                msg.position_id,
            )
            return
        state = stored.state
        coid = msg.client_order_id
        try:
            if msg.status.is_terminal:
                transition = state.exit_ended(
                    coid, broker_filled=msg.filled_quantity, reason=msg.exit_reason
                )
            else:
                transition = state.submit_exit(coid, msg.exit_reason or ExitReason.MANUAL)
        except IllegalTransition as exc:
            log.warning("exit %s of %s not recorded: %s", coid, state.position_id, exc)
            transition = Transition(state, state)
        accepted = True if coid == transition.state.exit_client_order_id else None
        if accepted and stored.exit_accepted:
            accepted = None
        kw: dict[str, Any] = {} if accepted is None else {"exit_accepted": True}
        await self._commit(conn, stored, transition, changed, **kw)
        await self._drain(conn, coid, changed)

    # ------------------------------------------------------------------ bridge facts

    async def on_status(self, msg: OrderStatusChanged, consumer: str, msg_id: str) -> None:
        """IB's status of an order: an entry or exit that ended (cancelled, filled)."""
        coid = msg.client_order_id
        if coid is None or msg.ib_status not in _ENDED_AT_IB or self._skipped(coid, "status"):
            return

        async def apply(conn: AnyConnection, stored: repo.Stored, changed: Changes) -> None:
            await self._apply_status(conn, stored, msg, changed)

        await self._apply_or_park(
            coid, "status", msg, consumer=consumer, msg_id=msg_id, apply=apply
        )

    def _skipped(self, coid: str, kind: str) -> bool:
        """Whether ``coid`` is a manual order's (its fact is then skipped, and counted)."""
        if coid not in self._manual:
            return False
        MANUAL_FACTS_SKIPPED.labels(kind).inc()
        return True

    async def _apply_or_park(
        self,
        coid: str,
        kind: str,
        msg: BaseModel,
        *,
        consumer: str,
        msg_id: str,
        apply: Callable[[AnyConnection, repo.Stored, Changes], Awaitable[None]],
        lock: Callable[[AnyConnection], Awaitable[None]] | None = None,
    ) -> None:
        """Claim ``msg_id``, take ``lock``, then ``apply`` the fact to the position of
        order ``coid``, or park it if no position knows the order; all in one transaction,
        one more if a position appeared while the fact was being parked (module
        docstring, *Locks*)."""
        for attempt in range(1, _ATTEMPTS + 1):
            changed = Changes()
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    if not await claim(conn, consumer, msg_id):
                        return
                    if lock is not None:
                        await lock(conn)
                    stored = await _load_by_order(conn, coid)
                    if stored is None:
                        await _park(conn, coid, kind, msg_id, msg.model_dump_json())
                        return
                    await apply(conn, stored, changed)
            except _AppearedError:
                _appeared(coid, attempt)
                continue
            self._committed(changed)
            return

    async def _apply_status(
        self,
        conn: AnyConnection,
        stored: repo.Stored,
        msg: OrderStatusChanged,
        changed: Changes,
    ) -> repo.Stored:
        coid = msg.client_order_id
        assert coid is not None
        state = stored.state
        if coid == state.entry_client_order_id:
            transition = state.entry_ended(broker_filled=msg.filled)
        else:
            transition = state.exit_ended(coid, broker_filled=msg.filled)
        return await self._commit(conn, stored, transition, changed)

    async def on_execution(self, msg: ExecutionReported, consumer: str, msg_id: str) -> None:
        """A fill: booked against the position of its order (entry grows, exit reduces).

        Raises :class:`Reject` (dead letter) for a fill the position must refuse
        (overfill, wrong side, an execId booked with other figures).
        """
        coid = msg.client_order_id
        if coid is None:
            UNATTRIBUTED.labels("execution").inc()
            return
        if self._skipped(coid, "execution"):
            return

        async def lock(conn: AnyConnection) -> None:
            await repo.lock_execution(conn, msg.exec_id)

        async def apply(conn: AnyConnection, stored: repo.Stored, changed: Changes) -> None:
            await self._book(conn, stored, msg, changed)

        await self._apply_or_park(
            coid, "execution", msg, consumer=consumer, msg_id=msg_id, apply=apply, lock=lock
        )

    async def _book(
        self,
        conn: AnyConnection,
        stored: repo.Stored,
        msg: ExecutionReported,
        changed: Changes,
    ) -> repo.Stored:
        assert msg.client_order_id is not None
        commission = await repo.parked_commission(conn, msg.exec_id)
        try:
            transition = stored.state.on_execution(
                msg.exec_id,
                client_order_id=msg.client_order_id,
                side=msg.side,
                shares=msg.shares,
                price=msg.price,
                commission=commission,
            )
        except PositionDomainError as exc:
            raise Reject(f"execution {msg.exec_id} of {stored.position_id}: {exc}") from exc
        return await self._commit(
            conn, stored, transition, changed, executed_at={msg.exec_id: msg.executed_at}
        )

    async def on_commission(self, msg: CommissionReported, consumer: str, msg_id: str) -> None:
        """A fill's commission: charged to its position's realized P&L, or parked until
        the fill is booked."""
        if msg.client_order_id is not None and self._skipped(msg.client_order_id, "commission"):
            return
        changed = Changes()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim(conn, consumer, msg_id):
                return
            await repo.lock_execution(conn, msg.exec_id)
            position_id = await repo.booked_position_of(conn, msg.exec_id)
            stored = None if position_id is None else await repo.load(conn, position_id, lock=True)
            if stored is None:
                await repo.park_commission(conn, msg.exec_id, msg.commission, self._clock())
                return
            try:
                transition = stored.state.on_commission(msg.exec_id, msg.commission)
            except (PositionDomainError, ValueError) as exc:
                raise Reject(f"commission of {msg.exec_id}: {exc}") from exc
            await self._commit(conn, stored, transition, changed)
        self._committed(changed)

    async def _drain(self, conn: AnyConnection, coid: str, changed: Changes) -> None:
        """Apply the facts parked for ``coid`` now that a position knows the order (under
        the order lock, after the position row: module docstring, *Locks*)."""
        await repo.lock_order_facts(conn, coid)
        parked = await repo.parked_for(conn, coid)
        if not parked:
            return
        for row in parked:
            stored = await repo.load_by_order(conn, coid, lock=True)
            assert stored is not None
            if row["kind"] == "execution":
                execution = ExecutionReported.model_validate_json(row["payload"])
                await repo.lock_execution(conn, execution.exec_id)
                try:
                    await self._book(conn, stored, execution, changed)
                except Reject as exc:
                    log.error("parked execution %s refused: %s", execution.exec_id, exc.reason)
            else:
                status = OrderStatusChanged.model_validate_json(row["payload"])
                await self._apply_status(conn, stored, status, changed)
        await repo.delete_parked(conn, [row["id"] for row in parked])
        log.info("applied %d parked fact(s) of %s", len(parked), coid)

    # ------------------------------------------------------------------ exits

    async def exit(
        self,
        position_id: str,
        decide: Decide,
        *,
        reference_price: Decimal | None = None,
        tick_at: float | None = None,
        despite_refusal: bool = False,
    ) -> ExitDecision | NoExit:
        """Take ``decide`` on the locked, stored position; on an :class:`ExitDecision`
        send the exit to the order-manager, record it (``CLOSING``) and commit while the
        request travels, then record the answer (module docstring, exit ordering).

        ``tick_at`` (``time.perf_counter()`` of the tick that triggered it) feeds the
        tick-to-exit histogram. ``reference_price`` values a market exit for the
        order-manager (the trigger price, else this, else the average entry price).
        A position whose last exit the order-manager refused for good is not exited
        again unless ``despite_refusal`` (the close-out, a flatten). Raises what the
        recording transaction raised (after the answer to an exit already sent).
        """
        changed = Changes()
        sending: asyncio.Task[SubmitAnswer] | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                stored = await repo.load(conn, position_id, lock=True)
                if stored is None:
                    return NoExit(NoExitReason.NOT_OPEN, f"position {position_id} does not exist")
                if stored.exit_refusal and not despite_refusal:
                    return NoExit(
                        NoExitReason.NOT_OPEN,
                        f"{position_id}: its last exit was refused ({stored.exit_refusal})",
                    )
                decision = decide(stored.state)
                if isinstance(decision, NoExit):
                    return decision
                body = _exit_order(decision, reference_price or stored.state.avg_entry_price)
                transition = stored.state.submit_exit(decision.client_order_id, decision.reason)
                sending = asyncio.create_task(self._orders.submit(body))
                # one loop turn: the task hands the request to the NATS client (its flusher
                # writes it next), so it travels during the UPDATE and COMMIT round trips
                await asyncio.sleep(0)
                await self._commit(conn, stored, transition, changed, exit_order=body)
                # facts of this id parked while an earlier send of it was not recorded
                await self._drain(conn, decision.client_order_id, changed)
        except Exception as exc:
            if sending is not None:
                await self._not_recorded(position_id, body, sending, exc)
            raise
        except BaseException:
            if sending is not None:
                sending.cancel()
            raise
        self._committed(changed)
        EXITS_SENT.labels(decision.portfolio_id, decision.reason.value).inc()
        log.info(
            "exit %s of %s: %s %s %s (%s%s)",
            decision.client_order_id,
            decision.position_id,
            decision.side.value,
            decision.quantity,
            decision.symbol,
            decision.reason.value,
            "" if decision.trigger_price is None else f" at {decision.trigger_price}",
        )
        answer = await sending
        if answer.outcome is Outcome.UNDELIVERED:
            self._redeliver(position_id, decision.client_order_id, body)
        if tick_at is not None and answer.outcome is Outcome.ACCEPTED:
            TICK_TO_EXIT.observe(time.perf_counter() - tick_at)
        if decision.cancel_entry_remainder:
            await self.cancel_entry(
                decision.portfolio_id, stored.state.entry_client_order_id, "exit sent"
            )
        await self._after_submit(position_id, decision.client_order_id, answer)
        return decision

    async def _not_recorded(
        self,
        position_id: str,
        body: dict[str, Any],
        sending: asyncio.Task[SubmitAnswer],
        exc: Exception,
    ) -> None:
        """The exit ``body`` left but its record did not commit: wait for the answer
        (the task must not be dropped) and say what the order-manager did with it."""
        coid = body["client_order_id"]
        try:
            answer = await sending
        except Exception:
            log.exception(
                "exit %s of %s sent, not recorded (%r): no answer", coid, position_id, exc
            )
            return
        log.error(
            "exit %s of %s sent, but not recorded (%r); order-manager: %s (%s): %s",
            coid,
            position_id,
            exc,
            answer.outcome.value,
            answer.detail,
            "its OrderBookUpdated records it, and the next decision re-sends the same id"
            if answer.outcome in (Outcome.ACCEPTED, Outcome.AMBIGUOUS, Outcome.EXISTS)
            else "nothing placed; the position stays OPEN",
        )

    def _redeliver(self, position_id: str, coid: str, body: dict[str, Any]) -> None:
        """In the background (a close-out of many positions does not wait for it): send
        the same exit again while no order-manager receives it, a few times over about
        4 s, and record the first answer that says more; after that the exit is left to
        :meth:`resend_unacknowledged`."""

        async def redeliver() -> None:
            for delay in _REDELIVERY_DELAYS:
                await asyncio.sleep(delay)
                answer = await self._orders.submit(body)
                if answer.outcome is not Outcome.UNDELIVERED:
                    await self._after_submit(position_id, coid, answer)
                    return

        def done(task: asyncio.Task[None]) -> None:
            self._redeliveries.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("re-sending exit %s failed", coid, exc_info=task.exception())

        task = asyncio.get_running_loop().create_task(redeliver(), name=f"redeliver {coid}")
        self._redeliveries.add(task)
        task.add_done_callback(done)

    async def _after_submit(self, position_id: str, coid: str, answer: SubmitAnswer) -> None:
        if answer.outcome is Outcome.AMBIGUOUS:
            log.warning("exit %s: outcome unknown (%s): re-sent later", coid, answer.detail)
            return
        if answer.outcome is Outcome.UNDELIVERED:
            log.warning(
                "exit %s of %s: no order-manager received it (%s); the exit stays recorded"
                " and is re-sent with the same id",
                coid,
                position_id,
                answer.detail,
            )
            return
        changed = Changes()
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repo.load(conn, position_id, lock=True)
            if stored is None or stored.state.exit_client_order_id != coid:
                return
            state = stored.state
            if answer.outcome in (Outcome.ACCEPTED, Outcome.EXISTS):
                if answer.outcome is Outcome.EXISTS:
                    log.warning(
                        "exit %s of %s: the order-manager already has it on other terms"
                        " (%s): an earlier send whose record did not commit; kept",
                        coid,
                        position_id,
                        answer.detail,
                    )
                if not stored.exit_accepted:
                    await self._commit(
                        conn, stored, Transition(state, state), changed, exit_accepted=True
                    )
            else:
                EXIT_REFUSALS.labels(state.portfolio_id, answer.code or "unknown").inc()
                permanent = answer.outcome is Outcome.REFUSED
                log.warning(
                    "exit %s of %s refused (%s: %s)%s",
                    coid,
                    position_id,
                    answer.code,
                    answer.detail,
                    "; tick exits wait for new levels or a manual flatten"
                    if permanent
                    else "; retried on the next tick",
                )
                transition = state.exit_ended(coid, broker_filled=Decimal(0))
                refusal = f"{answer.code}: {answer.detail}"[:500] if permanent else None
                await self._commit(conn, stored, transition, changed, exit_refusal=refusal)
        self._committed(changed)

    async def resend_unacknowledged(self, older_than: dt.timedelta) -> int:
        """Re-send exits recorded but not acknowledged for ``older_than`` (same id and
        terms: the order-manager answers a duplicate); how many were re-sent."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, exit_client_order_id FROM positions WHERE status = 'CLOSING'"
                " AND exit_working AND NOT exit_accepted AND exit_order IS NOT NULL"
                " AND exit_sent_at < now() - $1::interval",
                older_than,
            )
        for row in rows:
            async with self._pool.acquire() as conn:
                stored = await repo.load(conn, row["id"])
            if stored is None or stored.exit_order is None:
                continue
            log.warning("exit %s unacknowledged: re-sending", row["exit_client_order_id"])
            answer = await self._orders.submit(stored.exit_order)
            await self._after_submit(row["id"], row["exit_client_order_id"], answer)
        return len(rows)

    async def cancel_entry(self, portfolio_id: str, client_order_id: str, reason: str) -> bool:
        """Ask the order-manager to cancel a working entry's remainder; logged if not."""
        problem = await self._orders.cancel(portfolio_id, client_order_id, reason)
        if problem is not None:
            log.warning("cancel of entry %s not accepted: %s", client_order_id, problem)
            return False
        return True

    # ------------------------------------------------------------------ commands

    async def set_levels(
        self,
        portfolio_id: str,
        position_id: str,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
    ) -> repo.Stored:
        """Replace a position's stop and target (clears a standing exit refusal).

        Raises :class:`LookupError` for an unknown position (or another portfolio's) and
        the domain's :class:`PositionDomainError` for levels it refuses.
        """
        changed = Changes()
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repo.load(conn, position_id, lock=True)
            if stored is None or stored.state.portfolio_id != portfolio_id:
                raise LookupError(
                    f"position_id: position {position_id!r} does not exist in portfolio"
                    f" {portfolio_id!r}"
                )
            transition = stored.state.set_levels(stop_loss, take_profit)
            stored = await self._commit(conn, stored, transition, changed, exit_refusal=None)
        self._committed(changed)
        return stored

    async def active(self, portfolio_id: str | None = None) -> list[repo.Stored]:
        """Active positions (PENDING, OPEN, CLOSING), of one portfolio or all."""
        async with self._pool.acquire() as conn:
            return await repo.active_positions(conn, portfolio_id=portfolio_id)


async def _load_by_order(conn: AnyConnection, coid: str) -> repo.Stored | None:
    """The locked position of order ``coid``; for an exit id no position knows (yet),
    after waiting for the transaction that may be recording it.

    An exit is sent before its record commits (exit ordering), so its status or fill can
    arrive while :meth:`PositionBook.exit` still holds the position: the row does not
    match ``coid`` yet, and ``FOR UPDATE`` does not wait for a row it does not match.
    Locking the position by the id the exit id names does wait; if the record committed
    the fact applies now, and if it did not the fact is parked under that lock, so the
    order-manager's update that records the exit (it locks the row, then drains) sees it.
    """
    stored = await repo.load_by_order(conn, coid, lock=True)
    if stored is not None:
        return stored
    candidates = exit_position_ids(coid)
    if not candidates or not await repo.lock_positions(conn, candidates):
        return None
    return await repo.load_by_order(conn, coid, lock=True)


_ATTEMPTS: Final = 3
"""Transactions a status or fill takes at most: a position that appears between its
lookup and its parking (:class:`_AppearedError`) costs one more."""


class _AppearedError(Exception):
    """A position knows the order of a fact about to be parked: the transaction is
    rolled back and the fact applied in a new one."""


async def _park(conn: AnyConnection, coid: str, kind: str, msg_id: str, payload: str) -> None:
    """Park a fact of ``coid``, which no position knew at the lookup: under the order
    lock, which a drain of ``coid`` holds until its commit (:meth:`PositionBook._drain`).
    Raises :class:`_AppearedError` if a position knows ``coid`` now (committed since the
    lookup: a new statement under READ COMMITTED sees it), instead of locking its row
    here: a drain holding that row waits for the order lock (module docstring, *Locks*).
    """
    await repo.lock_order_facts(conn, coid)
    if await repo.order_known(conn, coid):
        raise _AppearedError(coid)
    await repo.park_fact(conn, coid, kind, msg_id, payload)
    PARKED_FACTS.labels(kind).inc()


def _appeared(coid: str, attempt: int) -> None:
    """Log a position that appeared while a fact of ``coid`` was being parked; raise if
    that was the last attempt (the message is redelivered)."""
    if attempt >= _ATTEMPTS:
        raise RuntimeError(
            f"the position of order {coid} appeared while its fact was parked"
            f" {attempt} times, and was not found again"
        )
    log.info("order %s: its position was committed while a fact was being parked", coid)


def _exit_order(decision: ExitDecision, reference: Decimal | None) -> dict[str, Any]:
    """The ``SubmitOrder`` of an exit decision, as JSON-able data (stored and re-sent)."""
    cmd = SubmitOrder(
        portfolio_id=decision.portfolio_id,
        client_order_id=decision.client_order_id,
        symbol=decision.symbol,
        side=decision.side,
        order_type=decision.order_type,
        quantity=decision.quantity,
        limit_price=decision.limit_price if decision.order_type is OrderType.LMT else None,
        purpose=OrderPurpose.EXIT,
        position_id=decision.position_id,
        exit_reason=decision.reason,
        reference_price=decision.trigger_price or reference,
        requested_by=REQUESTER,
    )
    envelope = {"event_id", "ts_event", "ts_init", "correlation_id", "causation_id"}
    body: dict[str, Any] = cmd.model_dump(mode="json", exclude=envelope)
    return body
