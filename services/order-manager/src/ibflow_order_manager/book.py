"""The order book: every command and broker fact that changes our orders and money.

Each operation is one (or, for a submit, two) database transactions that write the
order, its executions, transactions and the portfolio's cash together, and enqueue the
resulting events (``OrderBookUpdated``, ``PortfolioChanged``, ``OrderRejected``) in the
transactional outbox, so an event is published if and only if its change committed.

Submit: validate → risk → persist ``PENDING`` with the cash reservation (one
transaction, the portfolio row locked) → send to the bridge → ``SUBMITTED``, or
``REJECTED`` when the bridge proves nothing reached IB, or ``UNKNOWN`` when the answer
is ambiguous (resolved later by :meth:`OrderBook.recover`, which asks the bridge before
anything is re-sent). Broker facts arrive through durable consumers; executions are
booked once per ``execId`` (primary key), commissions once per execution (a commission
that arrives first is parked), and filled quantity is the sum of booked executions.

Locks are always taken order row first, then portfolio row, so concurrent handlers (and
a second replica) serialise on the money without deadlocking.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import ValidationError

from ibflow.bus import subjects
from ibflow.bus.errors import Reject, RemoteError, describe_validation_error
from ibflow.contracts import (
    CONFLICT,
    INVALID_REQUEST,
    NOT_FOUND,
    NOT_READY,
    REFUSED,
    TIMEOUT,
    CancelBrokerOrder,
    CancelOrder,
    CommandAccepted,
    CommissionReported,
    ExecutionReported,
    HaltTrading,
    ModifyBrokerOrder,
    ModifyOrder,
    OrderRejected,
    OrderSide,
    OrderStatus,
    OrderStatusChanged,
    OrderType,
    PlaceBrokerOrder,
    PortfolioChanged,
    ResumeTrading,
    SubmitOrder,
    SubmitRecommendations,
    TradingHalted,
    TradingResumed,
)
from ibflow.contracts.base import Envelope, utc_now
from ibflow.contracts.orders import OrderIntent, OrderTerms
from ibflow.db.outbox import Notify, StagedRow, enqueue_many
from ibflow.db.pool import AnyConnection
from ibflow_order_manager import repository as repo
from ibflow_order_manager.broker import BrokerAnswer, BrokerClient, Outcome
from ibflow_order_manager.domain import (
    IllegalTransition,
    InvalidModification,
    OrderState,
    Overfill,
    ProposedOrder,
    RiskContext,
    Transition,
    cash_delta,
    check_risk,
    crossed_daily_loss,
    is_on_tick,
    reservation,
    tick_size,
)
from ibflow_order_manager.facts import BrokerFact, FactBatch
from ibflow_order_manager.metrics import (
    CASH,
    COMMISSIONS,
    EXECUTIONS_BOOKED,
    FILL_TO_COMMIT,
    MAX_DAILY_LOSS,
    ORDER_TRANSITIONS,
    REALIZED_PNL_TODAY,
    REJECTIONS,
    RESERVED_CASH,
    TRADING_HALTED,
)
from ibflow_order_manager.stats import StatisticsKeeper

log = logging.getLogger("ibflow.order_manager.book")

NEW_YORK = ZoneInfo("America/New_York")
_PRICE_FIELDS = ("limit_price", "stop_price", "trail_stop_price")
_MODIFIABLE_PRICES = (
    "limit_price",
    "stop_price",
    "trailing_amount",
    "trailing_percent",
    "trail_stop_price",
)


class PriceSource(Protocol):
    """Reference prices for orders without a limit price (``quotes.Quotes``)."""

    async def reference_price(
        self, symbol: str, *, portfolio_id: str | None = None
    ) -> Decimal | None:
        """A recent market price of ``symbol``, or ``None``."""


def session_start(now: datetime) -> datetime:
    """Midnight in New York of ``now``'s trading day, in UTC (today's P&L starts here)."""
    local = now.astimezone(NEW_YORK)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _refused(code: str, message: str) -> RemoteError:
    return RemoteError(code, message)


class OrderBook:
    """Our orders and money (see the module docstring).

    ``notify`` is called after every commit that enqueued events (it wakes the outbox
    relay; the hot paths, a submit and a batch of facts, hand it their rows).
    ``prices`` values orders without a limit price when the command gives no
    ``reference_price``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        broker: BrokerClient,
        notify: Notify,
        *,
        prices: PriceSource | None = None,
        clock: Callable[[], datetime] = utc_now,
        resend_window: timedelta = timedelta(seconds=60),
        unconfirmed_after: timedelta = timedelta(seconds=10),
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._notify = notify
        self._prices = prices
        self._clock = clock
        self._resend_window = resend_window
        self._unconfirmed_after = unconfirmed_after
        self._multipliers: dict[str, Decimal] = {}
        self.statistics = StatisticsKeeper(pool)
        """Keeps the planner's statistics of the booking tables fresh."""

    # ------------------------------------------------------------------ submit

    async def submit(self, cmd: SubmitOrder) -> CommandAccepted:
        """Validate, check risk, persist ``PENDING``, send to the bridge (module docstring).

        Raises :class:`RemoteError` naming the field or rule of a refusal.
        """
        reference = await self._reference_price(cmd)
        staged: list[StagedRow] = []
        async with self._pool.acquire() as conn:
            outcome = await self._record(conn, cmd, reference, staged)
        if isinstance(outcome, RemoteError):
            raise outcome
        if isinstance(outcome, CommandAccepted):
            return outcome
        self._notify(staged)
        return await self._send(cmd, outcome)

    async def _reference_price(self, cmd: SubmitOrder) -> Decimal | None:
        if cmd.reference_price is not None:
            return cmd.reference_price
        if cmd.order_type in (OrderType.MKT, OrderType.TRAIL) and self._prices is not None:
            return await self._prices.reference_price(cmd.symbol, portfolio_id=cmd.portfolio_id)
        return None

    async def _duplicate(
        self, conn: AnyConnection, cmd: SubmitOrder, existing: repo.Order
    ) -> CommandAccepted:
        mine = cmd.model_dump(include=set(_TERMS))
        theirs = existing.intent.model_dump(include=set(_TERMS))
        if existing.portfolio_id != cmd.portfolio_id or mine != theirs:
            differing = sorted(k for k in _TERMS if mine.get(k) != theirs.get(k))
            raise _refused(
                CONFLICT,
                f"client_order_id: {cmd.client_order_id} is already used for a different order"
                f" (differs in {', '.join(differing) or 'portfolio_id'})",
            )
        return CommandAccepted.of(
            cmd,
            duplicate=True,
            client_order_ids=(cmd.client_order_id,),
            detail=f"order already exists: {existing.status.value}",
        )

    async def _record(
        self,
        conn: AnyConnection,
        cmd: SubmitOrder,
        reference: Decimal | None,
        staged: list[StagedRow],
    ) -> repo.Order | RemoteError | CommandAccepted:
        """The first transaction: checks and the ``PENDING`` row (its events ``staged``
        for the relay), or the refusal audited."""
        refusal: RemoteError | None = None
        async with conn.transaction():
            # read after the portfolio's lock: an order a concurrent submit of the same id
            # committed while we waited is seen here, and answered as a duplicate
            context = await repo.submit_context(
                conn,
                cmd.portfolio_id,
                cmd.client_order_id,
                cmd.symbol,
                session_start(self._clock()),
            )
            portfolio = context.portfolio
            if context.existing is not None:
                return await self._duplicate(conn, cmd, context.existing)
            if portfolio is None or not portfolio.enabled:
                state = "does not exist" if portfolio is None else "is disabled"
                missing = _refused(
                    NOT_FOUND, f"portfolio_id: portfolio {cmd.portfolio_id!r} {state}"
                )
                await _audit_submit(conn, cmd, "refused", missing.message)
                return missing
            _portfolio_gauges(portfolio)
            REALIZED_PNL_TODAY.labels(portfolio.id).set(float(context.exposure.realized_pnl_today))
            instrument = context.instrument
            refusal = _validate(cmd, portfolio, instrument)
            price = cmd.limit_price or cmd.stop_price or reference
            if refusal is None and price is None:
                refusal = _refused(
                    INVALID_REQUEST,
                    f"reference_price: a {cmd.order_type.value} order needs a reference price"
                    f" and there is no recent market price for {cmd.symbol}",
                )
            if refusal is None:
                assert price is not None
                assert instrument is not None
                refusal, reserved = _risk(cmd, portfolio, instrument, context.exposure, price)
            if refusal is not None:
                REJECTIONS.labels(portfolio.id, _rule_of(refusal)).inc()
                await _audit_submit(conn, cmd, "refused", refusal.message)
                rejected = _rejection(cmd, refusal.message, cmd)
                await enqueue_many(conn, [(subjects.order_rejected(cmd.portfolio_id), rejected)])
            else:
                order, portfolio = await repo.insert_order_reserving(
                    conn,
                    cmd,
                    reserved_cash=reserved,
                    reference_price=reference,
                    audit=_submit_entry(cmd, "accepted"),
                )
                await self._publish(conn, [order], portfolio, cmd, staged=staged)
                return order
        self._notify()
        return refusal

    async def _send(self, cmd: SubmitOrder, order: repo.Order) -> CommandAccepted:
        terms = cmd.model_dump(include=set(_TERMS) | {"portfolio_id", "client_order_id", "purpose"})
        answer = await self._broker.place(
            PlaceBrokerOrder.model_validate({**terms, **cmd.caused()})
        )
        order = await self._after_send(order.client_order_id, answer)
        if answer.outcome is Outcome.NOT_SENT:
            code = NOT_READY if answer.code == NOT_READY else REFUSED
            raise _refused(code, f"not placed: {answer.detail}")
        detail = f"{order.status.value}: {answer.detail}"
        return CommandAccepted.of(cmd, client_order_ids=(cmd.client_order_id,), detail=detail)

    async def _after_send(self, coid: str, answer: BrokerAnswer) -> repo.Order:
        async with self._pool.acquire() as conn, conn.transaction():
            order = await repo.get_order(conn, coid, lock=True)
            assert order is not None
            state = order.state
            try:
                if answer.outcome is Outcome.DONE:
                    transition = state.sent()
                elif answer.outcome is Outcome.NOT_SENT:
                    transition = state.not_sent(answer.detail)
                else:
                    transition = state.mark_unknown(f"submit outcome unknown: {answer.detail}")
            except IllegalTransition:
                # a broker fact overtook the answer (it was placed): keep what we know
                transition = Transition(state, state)
            order = await self._apply(conn, order, transition, sent=True)
        self._notify()
        return order

    # ------------------------------------------------------------------ cancel

    async def cancel(self, cmd: CancelOrder) -> CommandAccepted:
        """Ask IB to cancel the remainder of a working order (idempotent)."""
        coid = cmd.client_order_id
        async with self._pool.acquire() as conn, conn.transaction():
            order = await repo.get_order(conn, coid, lock=True)
            if order is None or order.portfolio_id != cmd.portfolio_id:
                raise _refused(NOT_FOUND, f"client_order_id: no order {coid} in {cmd.portfolio_id}")
            try:
                transition = order.state.request_cancel()
            except IllegalTransition:
                raise _refused(
                    REFUSED, f"order {coid} is {order.status.value}: nothing to cancel"
                ) from None
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command="CancelOrder",
                subject=subjects.CANCEL_ORDER,
                result="accepted" if transition.changed else "duplicate",
                payload=cmd.model_dump(mode="json"),
                portfolio_id=cmd.portfolio_id,
                client_order_id=coid,
                detail=cmd.reason or None,
            )
            if transition.changed:
                order = await self._apply(conn, order, transition)
        self._notify()
        answer = await self._broker.cancel(
            CancelBrokerOrder(portfolio_id=cmd.portfolio_id, client_order_id=coid, **cmd.caused())
        )
        if answer.outcome is Outcome.NOT_SENT and answer.code != NOT_FOUND:
            async with self._pool.acquire() as conn, conn.transaction():
                order = await repo.get_order(conn, coid, lock=True)
                assert order is not None
                await self._apply(conn, order, order.state.cancel_refused(answer.detail))
            self._notify()
            code = NOT_READY if answer.code == NOT_READY else REFUSED
            raise _refused(code, f"cancel not sent: {answer.detail}")
        return CommandAccepted.of(
            cmd,
            duplicate=not transition.changed,
            client_order_ids=(coid,),
            detail=f"cancel requested: {answer.detail}",
        )

    # ------------------------------------------------------------------ modify

    async def modify(self, cmd: ModifyOrder) -> CommandAccepted:
        """Change a working order's quantity or prices (a partly filled order keeps its
        fills: the new quantity is the new total, the remainder follows)."""
        coid = cmd.client_order_id
        async with self._pool.acquire() as conn, conn.transaction():
            order = await repo.get_order(conn, coid, lock=True)
            if order is None or order.portfolio_id != cmd.portfolio_id:
                raise _refused(NOT_FOUND, f"client_order_id: no order {coid} in {cmd.portfolio_id}")
            if order.external:
                raise _refused(REFUSED, f"order {coid} was placed outside ibflow; modify it there")
            changes = cmd.changes()
            terms = order.intent.model_dump(
                include=set(_TERMS) | {"portfolio_id", "client_order_id"}
            )
            try:
                merged = OrderTerms.model_validate({**terms, **changes})
            except ValidationError as exc:
                raise _refused(INVALID_REQUEST, describe_validation_error(exc)) from None
            instrument = await repo.get_instrument(conn, order.intent.symbol)
            portfolio = await repo.get_portfolio(conn, order.portfolio_id, lock=True)
            assert portfolio is not None
            problem = _validate(merged, portfolio, instrument)
            if problem is not None:
                raise problem
            try:
                transition = order.state.modify_quantity(merged.quantity)
            except InvalidModification as exc:
                raise _refused(REFUSED, str(exc)) from None
            reserved = _modified_reservation(order, merged, transition.state, portfolio, instrument)
            more = reserved - order.reserved_cash
            if more > portfolio.available_cash:
                raise _refused(
                    REFUSED,
                    f"cash: the modification needs {more} {portfolio.currency} more,"
                    f" available {portfolio.available_cash}",
                )
            revision = order.revision + 1
        command = ModifyBrokerOrder.model_validate(
            {**merged.model_dump(), "revision": revision, **cmd.caused()}
        )
        answer = await self._broker.modify(command)
        if answer.outcome is Outcome.AMBIGUOUS:
            raise _refused(TIMEOUT, f"modify outcome unknown: {answer.detail}")
        if answer.outcome is Outcome.NOT_SENT:
            code = NOT_READY if answer.code == NOT_READY else REFUSED
            raise _refused(code, f"modify not sent: {answer.detail}")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await repo.get_order(conn, coid, lock=True)
            assert current is not None
            # executions booked since the first transaction count: the reservation is
            # what the order's open quantity needs now (none once they filled it)
            step = current.state.modification_confirmed(merged.quantity)
            portfolio = await repo.get_portfolio(conn, current.portfolio_id, lock=True)
            assert portfolio is not None
            reserved = _modified_reservation(current, merged, step.state, portfolio, instrument)
            prices = {name: getattr(merged, name) for name in _MODIFIABLE_PRICES}
            saved = await repo.save_order(
                conn, current, step, prices=prices, reserved_cash=reserved
            )
            moved = await repo.move_money(
                conn, current.portfolio_id, reserved=reserved - current.reserved_cash
            )
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command="ModifyOrder",
                subject=subjects.MODIFY_ORDER,
                result="accepted",
                payload=cmd.model_dump(mode="json"),
                portfolio_id=cmd.portfolio_id,
                client_order_id=coid,
            )
            await self._publish(conn, [saved], moved, cmd)
        self._notify()
        return CommandAccepted.of(cmd, client_order_ids=(coid,), detail=answer.detail)

    # ------------------------------------------------------------------ stale orders

    async def sweep_stale(self, cause: Envelope) -> list[str]:
        """Cancel the remainder of every order working longer than its portfolio's
        stale limit; the reservation is released when IB confirms the cancel."""
        async with self._pool.acquire() as conn:
            stale = await repo.stale_orders(conn, self._clock())
        cancelled: list[str] = []
        for order in stale:
            cmd = CancelOrder(
                portfolio_id=order.portfolio_id,
                client_order_id=order.client_order_id,
                reason="stale: working longer than the portfolio's limit",
                requested_by="order-manager:stale_sweep",
                **cause.caused(),
            )
            try:
                await self.cancel(cmd)
            except RemoteError as exc:
                log.warning("stale order %s not cancelled: %s", order.client_order_id, exc.message)
                continue
            cancelled.append(order.client_order_id)
        return cancelled

    # ------------------------------------------------------------------ recommendations

    async def record_recommendations(self, cmd: SubmitRecommendations) -> CommandAccepted:
        """Store a session's recommendations (first one per symbol wins)."""
        async with self._pool.acquire() as conn, conn.transaction():
            portfolio = await repo.get_portfolio(conn, cmd.portfolio_id, lock=True)
            if portfolio is None:
                raise _refused(
                    NOT_FOUND, f"portfolio_id: portfolio {cmd.portfolio_id!r} does not exist"
                )
            existing = await repo.recommendations_for(conn, cmd.portfolio_id, cmd.session_date)
            if any(r.status != "pending" for r in existing):
                raise _refused(
                    REFUSED,
                    f"session_date: the morning entry of {cmd.session_date} already ran"
                    f" for {cmd.portfolio_id}",
                )
            new = await repo.insert_recommendations(
                conn, cmd.portfolio_id, cmd.session_date, cmd.items, cmd.source
            )
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command="SubmitRecommendations",
                subject=subjects.SUBMIT_RECOMMENDATIONS,
                result="accepted" if new else "duplicate",
                payload=cmd.model_dump(mode="json"),
                portfolio_id=cmd.portfolio_id,
            )
        skipped = len(cmd.items) - len(new)
        return CommandAccepted.of(
            cmd,
            duplicate=not new,
            detail=f"recorded {len(new)}" + (f", {skipped} already recorded" if skipped else ""),
        )

    # ------------------------------------------------------------------ broker facts

    async def on_facts(self, events: Sequence[BrokerFact]) -> None:
        """Book a batch of the bridge's facts, in stream order, in one transaction.

        Executions are booked once per ``execId`` (their advisory locks held, then
        checked against the table); a commission whose execution is not booked yet is
        parked and taken by the execution when it comes; an order's status follows
        from its facts; each portfolio's cash moves once by the batch's sum. The orders
        are locked in id order, then the portfolios in id order, so concurrent batches
        (a second replica) never deadlock. Raises :class:`Reject` for a fact that can
        never be booked (the consumer then books the batch one fact at a time).
        """
        exec_ids = sorted({e.exec_id for e in events if not isinstance(e, OrderStatusChanged)})
        charged = sorted({e.exec_id for e in events if isinstance(e, CommissionReported)})
        coids = {
            e.client_order_id
            for e in events
            if not isinstance(e, CommissionReported) and e.client_order_id
        }
        staged: list[StagedRow] = []
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await repo.lock_facts(conn, exec_ids, charged, sorted(coids))
            batch = FactBatch(locked.booked, locked.parked)
            for order in locked.orders:
                batch.track(order)
            for event in events:
                if isinstance(event, OrderStatusChanged):
                    await self._fact_status(conn, batch, event)
                elif isinstance(event, ExecutionReported):
                    await self._fact_execution(conn, batch, event)
                else:
                    self._fact_commission(batch, event)
            changed, daily = await self._write_facts(conn, batch, staged)
        _count_booked(batch, daily)
        if batch.fills:
            self.statistics.booked(len(batch.fills))
        now = utc_now()
        for ts_init in batch.fill_times:
            FILL_TO_COMMIT.observe(max((now - ts_init).total_seconds(), 0.0))
        if changed:
            self._notify(staged)

    async def _fact_order(
        self,
        conn: AnyConnection,
        batch: FactBatch,
        event: OrderStatusChanged | ExecutionReported,
        quantity: Decimal,
    ) -> repo.Order | None:
        order = batch.current(event.client_order_id, event.perm_id)
        if order is None:
            side = event.side if isinstance(event, ExecutionReported) else None
            symbol = event.symbol if isinstance(event, ExecutionReported) else None
            found = await self._order_for(
                conn,
                event.portfolio_id,
                event.client_order_id,
                event.perm_id,
                event.order_id,
                symbol=symbol,
                side=side,
                quantity=quantity,
            )
            if found is None:
                return None
            order = batch.track(found)
        if order.portfolio_id != event.portfolio_id:
            raise Reject(
                f"order {order.client_order_id} belongs to {order.portfolio_id}, "
                f"reported for {event.portfolio_id}"
            )
        return order

    async def _fact_status(
        self, conn: AnyConnection, batch: FactBatch, event: OrderStatusChanged
    ) -> None:
        order = await self._fact_order(conn, batch, event, event.filled + event.remaining)
        if order is None:
            return
        transition = order.state.on_broker_status(
            event.ib_status, event.filled, event.remaining, event.error_message
        )
        if not transition.recognised:
            log.warning("unknown IB status %r for %s", event.ib_status, order.client_order_id)
        new_ids = (event.perm_id and event.perm_id != order.perm_id) or (
            event.order_id and event.order_id != order.ib_order_id
        )
        if transition.changed or new_ids:
            batch.apply(order, transition, ib_order_id=event.order_id, perm_id=event.perm_id)

    async def _fact_execution(
        self, conn: AnyConnection, batch: FactBatch, event: ExecutionReported
    ) -> None:
        if event.exec_id in batch.booked:
            return
        order = await self._fact_order(conn, batch, event, event.cum_qty)
        if order is None:
            return
        state = order.state
        needed = state.filled_quantity + event.shares
        if needed > state.quantity and (order.external or event.cum_qty >= needed):
            # IB's order is bigger than our record, and IB's own count vouches for the
            # execution: book it (dead-lettering it would lose money)
            if not order.external:
                log.warning(
                    "execution %s of %s: IB has filled %s of an order we recorded as %s;"
                    " its quantity grows to %s until the modification's answer says more",
                    event.exec_id,
                    order.client_order_id,
                    event.cum_qty,
                    state.quantity,
                    needed,
                )
            state = state.grown_by_broker(needed).state
        try:
            transition = Transition(
                order.state, state.on_execution(event.shares, event.price).state
            )
        except Overfill as exc:
            raise Reject(f"execution {event.exec_id}: {exc}") from None
        multiplier = await self._multiplier(conn, order.intent.symbol)
        gross = cash_delta(event.side, event.shares, event.price, Decimal(0), multiplier)
        parked = batch.take_parked(event.exec_id)
        commission = parked[0] if parked is not None else Decimal(0)
        fill = repo.NewExecution(
            exec_id=event.exec_id,
            order=order,
            side=event.side,
            quantity=event.shares,
            price=event.price,
            executed_at=event.executed_at,
            perm_id=event.perm_id,
            ib_order_id=event.order_id,
            exchange=event.exchange,
            gross=gross,
            commission=parked,
        )
        batch.book(fill, event.ts_init)
        batch.apply(
            order,
            transition,
            cash=gross - commission,
            commission=commission,
            ib_order_id=event.order_id,
            perm_id=event.perm_id,
        )

    def _fact_commission(self, batch: FactBatch, event: CommissionReported) -> None:
        coid = batch.record_commission(event)
        if coid is None:
            return
        order = batch.current(coid, None)
        assert order is not None  # the orders of booked executions are locked up front
        batch.apply(
            order,
            Transition(order.state, order.state),
            cash=-event.commission,
            commission=event.commission,
        )

    async def _write_facts(
        self, conn: AnyConnection, batch: FactBatch, staged: list[StagedRow]
    ) -> tuple[bool, dict[str, tuple[Decimal, bool]]]:
        """Write what ``batch`` gathered (one statement, then the outbox rows, ``staged``
        for the relay): whether
        anything changed, and the daily loss checks it ran (portfolio → today's realized
        P&L, whether it halted the portfolio)."""
        parks = batch.still_parked()
        changes = batch.changes(_reservation_after)
        if not (batch.fills or batch.commissions or parks or changes):
            return False, {}
        saved = repo.stored_orders(changes)
        cash = batch.cash_by_portfolio()
        reserved: dict[str, Decimal] = {}
        for change in changes:
            pid = change.before.portfolio_id
            reserved[pid] = reserved.get(pid, Decimal(0)) + (
                change.reserved_cash - change.before.reserved_cash
            )
        money = [
            (pid, cash.get(pid, Decimal(0)), reserved[pid])
            for pid in sorted(reserved)
            if cash.get(pid, Decimal(0)) != 0 or reserved[pid] != 0
        ]
        moved = await repo.write_facts(
            conn,
            fills=list(batch.fills.values()),
            commissions=batch.commissions,
            parks=parks,
            changes=changes,
            money=money,
        )
        if not changes:
            return bool(parks), {}
        messages: list[tuple[str, Envelope]] = []
        for change, order in zip(changes, saved, strict=True):
            pid = order.portfolio_id
            for status in change.entered:
                ORDER_TRANSITIONS.labels(pid, status.value).inc()
            messages.append((subjects.order_updated(pid), order.book_event()))
            if OrderStatus.REJECTED in change.entered:
                reason = order.state.reason or "rejected"
                rejected = _rejection(order.intent, reason, None)
                messages.append((subjects.order_rejected(pid), rejected))
        for portfolio in moved:
            _portfolio_gauges(portfolio)
            messages.append(
                (subjects.portfolio_changed(portfolio.id), self._portfolio_event(portfolio, None))
            )
        await enqueue_many(conn, messages, staged=staged)
        daily: dict[str, tuple[Decimal, bool]] = {}
        for portfolio in moved:
            if cash.get(portfolio.id, Decimal(0)) != 0:
                checked = await self._check_daily_loss(conn, portfolio, staged)
                if checked is not None:
                    daily[portfolio.id] = checked
        return True, daily

    # ------------------------------------------------------------------ recovery

    async def recover(self, find: Callable[[str, str], Awaitable[bool | None]]) -> int:
        """Resolve ``PENDING`` (older than the resend window) and ``UNKNOWN`` orders, and
        orders the bridge accepted that IB has never reported on (older than the
        unconfirmed window: written into a connection that died), by asking the broker
        (``find(portfolio, client_order_id)`` → found, absent, or ``None`` for unknown).
        Found → acknowledged (its status and executions follow from the bridge); absent →
        rejected/cancelled, its reservation released. Never re-sends. Returns how many
        orders were resolved."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            candidates = await repo.orders_in(conn, (OrderStatus.PENDING, OrderStatus.UNKNOWN))
            unconfirmed = await repo.unconfirmed_orders(conn, now - self._unconfirmed_after)
        resolved = 0
        work = [(order, False) for order in candidates] + [(order, True) for order in unconfirmed]
        for order, sent in work:
            if order.status is OrderStatus.PENDING and now - order.created_at < self._resend_window:
                continue
            found = await find(order.portfolio_id, order.client_order_id)
            if found is None or (found and sent):
                continue  # unknown now, or at IB (its facts follow from the bridge)
            async with self._pool.acquire() as conn, conn.transaction():
                current = await repo.get_order(conn, order.client_order_id, lock=True)
                if current is None:
                    continue
                try:
                    if sent:
                        if current.state != order.state:
                            continue  # a broker fact or a command moved it meanwhile
                        transition = current.state.never_reached_broker()
                    elif current.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN):
                        transition = current.state.resolve_unknown(at_broker=found)
                    else:
                        continue
                except IllegalTransition:
                    continue
                await self._apply(conn, current, transition)
                resolved += 1
            self._notify()
        return resolved

    # ------------------------------------------------------------------ halt

    async def halt(self, cmd: HaltTrading) -> CommandAccepted:
        """Halt new entry and manual orders of one portfolio (or all); exits still go."""
        return await self._trading_state(cmd, halted=True)

    async def resume(self, cmd: ResumeTrading) -> CommandAccepted:
        """Lift a halt of one portfolio (or all)."""
        return await self._trading_state(cmd, halted=False)

    async def _trading_state(
        self, cmd: HaltTrading | ResumeTrading, *, halted: bool
    ) -> CommandAccepted:
        async with self._pool.acquire() as conn, conn.transaction():
            if (
                cmd.portfolio_id is not None
                and await repo.get_portfolio(conn, cmd.portfolio_id) is None
            ):
                raise _refused(
                    NOT_FOUND, f"portfolio_id: portfolio {cmd.portfolio_id!r} does not exist"
                )
            changed = await repo.set_trading_state(
                conn, cmd.portfolio_id, halted=halted, reason=cmd.reason if halted else None
            )
            await repo.audit(
                conn,
                actor=cmd.requested_by,
                command=cmd.type_name(),
                subject=subjects.HALT_TRADING if halted else subjects.RESUME_TRADING,
                result="accepted" if changed else "duplicate",
                payload=cmd.model_dump(mode="json"),
                portfolio_id=cmd.portfolio_id,
                detail=cmd.reason,
            )
            kind = TradingHalted if halted else TradingResumed
            event = kind(
                portfolio_id=cmd.portfolio_id,
                reason=cmd.reason,
                requested_by=cmd.requested_by,
                **cmd.caused(),
            )
            subject = (subjects.trading_halted if halted else subjects.trading_resumed)(
                cmd.portfolio_id
            )
            messages: list[tuple[str, Envelope]] = [(subject, event)]
            messages += [
                (subjects.portfolio_changed(p.id), self._portfolio_event(p, cmd)) for p in changed
            ]
            await enqueue_many(conn, messages)
        for portfolio in changed:
            TRADING_HALTED.labels(portfolio.id).set(int(portfolio.halted))
        self._notify()
        names = ", ".join(p.id for p in changed) or "none (already in that state)"
        return CommandAccepted.of(cmd, duplicate=not changed, detail=f"changed: {names}")

    # ------------------------------------------------------------------ metrics

    async def refresh_metrics(self) -> None:
        """Set every portfolio's gauges (cash, reserved cash, halted, daily loss limit,
        today's realized P&L) from the database, in one statement: the recovery pass
        calls it, so they exist from startup and follow what changes elsewhere (a limit
        edited, a halt by another replica, today's P&L starting over at midnight)."""
        async with self._pool.acquire() as conn:
            figures = await repo.portfolios_with_pnl(conn, session_start(self._clock()))
        for portfolio, pnl in figures:
            _portfolio_gauges(portfolio)
            REALIZED_PNL_TODAY.labels(portfolio.id).set(float(pnl))

    # ------------------------------------------------------------------ helpers

    async def _order_for(
        self,
        conn: AnyConnection,
        portfolio_id: str,
        client_order_id: str | None,
        perm_id: int | None,
        ib_order_id: int | None,
        *,
        symbol: str | None = None,
        side: OrderSide | None = None,
        quantity: Decimal | None = None,
    ) -> repo.Order | None:
        order = None
        if client_order_id:
            order = await repo.get_order(conn, client_order_id, lock=True)
        if order is None and perm_id:
            order = await repo.find_order_by_perm_id(conn, portfolio_id, perm_id, lock=True)
        if order is not None:
            if order.portfolio_id != portfolio_id:
                raise Reject(
                    f"order {order.client_order_id} belongs to {order.portfolio_id}, "
                    f"reported for {portfolio_id}"
                )
            return order
        if await repo.get_portfolio(conn, portfolio_id) is None:
            raise Reject(f"portfolio {portfolio_id!r} does not exist")
        if not quantity or quantity <= 0:
            log.warning(
                "broker order %s/%s unknown to us and without a quantity", client_order_id, perm_id
            )
            return None
        coid = client_order_id or f"ext-{perm_id or ib_order_id}"
        log.warning("recording broker order %s (perm %s) placed outside ibflow", coid, perm_id)
        return await repo.insert_external_order(
            conn,
            client_order_id=coid,
            portfolio_id=portfolio_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            perm_id=perm_id,
            ib_order_id=ib_order_id,
        )

    async def _multiplier(self, conn: AnyConnection, symbol: str) -> Decimal:
        """The contract multiplier of ``symbol`` (a property of the contract, so it is
        read once; an unknown symbol — an external order — counts as 1 and is re-read)."""
        multiplier = self._multipliers.get(symbol)
        if multiplier is None:
            instrument = await repo.get_instrument(conn, symbol)
            if instrument is None:
                return Decimal(1)
            multiplier = self._multipliers[symbol] = instrument.multiplier
        return multiplier

    async def _apply(
        self,
        conn: AnyConnection,
        order: repo.Order,
        transition: Transition,
        *,
        cash: Decimal = Decimal(0),
        commission: Decimal | None = None,
        ib_order_id: int | None = None,
        perm_id: int | None = None,
        sent: bool = False,
    ) -> repo.Order:
        """Store a transition with its money: the reservation follows the open quantity;
        the portfolio moves by ``cash`` and the reservation change; events enqueued."""
        reserved = _reservation_after(order, transition.state)
        saved = await repo.save_order(
            conn,
            order,
            transition,
            reserved_cash=reserved,
            commission=commission,
            ib_order_id=ib_order_id or None,
            perm_id=perm_id or None,
            sent=sent,
        )
        portfolio = await repo.move_money(
            conn, order.portfolio_id, cash=cash, reserved=reserved - order.reserved_cash
        )
        if transition.entered is not None:
            ORDER_TRANSITIONS.labels(order.portfolio_id, transition.entered.value).inc()
        _portfolio_gauges(portfolio)
        messages: list[tuple[str, Envelope]] = []
        if transition.entered is OrderStatus.REJECTED:
            reason = transition.state.reason or "rejected"
            rejected = _rejection(order.intent, reason, None)
            messages.append((subjects.order_rejected(order.portfolio_id), rejected))
        await self._publish(conn, [saved], portfolio, None, extra=messages)
        if cash < 0 or cash > 0:
            # no caller moves cash here (fills are booked by on_facts, which sets the
            # gauges of this check after its commit); the periodic refresh would catch up
            await self._check_daily_loss(conn, portfolio)
        return saved

    async def _check_daily_loss(
        self,
        conn: AnyConnection,
        portfolio: repo.Portfolio,
        staged: list[StagedRow] | None = None,
    ) -> tuple[Decimal, bool] | None:
        """Halt the portfolio if today's realized P&L crossed its daily loss limit:
        ``(that P&L, whether this halted it)``, or ``None`` when not checked (no limit,
        or already halted). ``TradingHalted`` is ``staged`` with the caller's events."""
        limit = portfolio.limits.max_daily_loss
        if portfolio.halted or limit is None:
            return None
        pnl = await repo.realized_pnl_since(conn, portfolio.id, session_start(self._clock()))
        if not crossed_daily_loss(pnl, limit):
            return pnl, False
        reason = f"daily_loss: realized P&L {pnl} crossed the limit -{limit}"
        changed = await repo.set_trading_state(conn, portfolio.id, halted=True, reason=reason)
        if changed:
            log.warning("halting %s: %s", portfolio.id, reason)
            halted = TradingHalted(
                portfolio_id=portfolio.id, reason=reason, requested_by="order-manager"
            )
            await enqueue_many(
                conn, [(subjects.trading_halted(portfolio.id), halted)], staged=staged
            )
        return pnl, bool(changed)

    async def _publish(
        self,
        conn: AnyConnection,
        orders: list[repo.Order],
        portfolio: repo.Portfolio,
        cause: Envelope | None,
        *,
        extra: list[tuple[str, Envelope]] | None = None,
        staged: list[StagedRow] | None = None,
    ) -> None:
        envelope = cause.caused() if cause is not None else {}
        messages: list[tuple[str, Envelope]] = [
            (subjects.order_updated(o.portfolio_id), o.book_event(**envelope)) for o in orders
        ]
        messages.extend(extra or [])
        messages.append(
            (subjects.portfolio_changed(portfolio.id), self._portfolio_event(portfolio, cause))
        )
        await enqueue_many(conn, messages, staged=staged)

    def _portfolio_event(
        self, portfolio: repo.Portfolio, cause: Envelope | None
    ) -> PortfolioChanged:
        now = self._clock()
        return PortfolioChanged(
            portfolio_id=portfolio.id,
            revision=max(portfolio.revision, 1),
            session_date=now.astimezone(NEW_YORK).date(),
            currency=portfolio.currency,
            cash_balance=portfolio.cash,
            trading_halted=portfolio.halted,
            **(cause.caused() if cause is not None else {}),
        )


_TERMS = (
    "symbol",
    "side",
    "order_type",
    "quantity",
    "limit_price",
    "stop_price",
    "trailing_amount",
    "trailing_percent",
    "trail_stop_price",
    "tif",
    "outside_rth",
    "exchange",
    "currency",
)


def _count_booked(batch: FactBatch, daily: dict[str, tuple[Decimal, bool]]) -> None:
    """The metrics of a committed batch of facts: its executions and commissions (what
    it wrote: a replay was left out of it) and its daily loss checks."""
    for fill in batch.fills.values():
        EXECUTIONS_BOOKED.labels(fill.order.portfolio_id).inc()
    for pid, currency, amount in batch.booked_commissions():
        if amount > 0:
            COMMISSIONS.labels(pid, currency).inc(float(amount))
    for pid, (pnl, halted) in daily.items():
        REALIZED_PNL_TODAY.labels(pid).set(float(pnl))
        if halted:
            TRADING_HALTED.labels(pid).set(1)


def _portfolio_gauges(portfolio: repo.Portfolio) -> None:
    """Set the gauges of a portfolio row as read: cash, reserved cash, halted and its
    daily loss limit (no sample without one)."""
    pid = portfolio.id
    CASH.labels(pid).set(float(portfolio.cash))
    RESERVED_CASH.labels(pid).set(float(portfolio.reserved_cash))
    TRADING_HALTED.labels(pid).set(int(portfolio.halted))
    limit = portfolio.limits.max_daily_loss
    if limit is None:
        with contextlib.suppress(KeyError):
            MAX_DAILY_LOSS.remove(pid)
    else:
        MAX_DAILY_LOSS.labels(pid).set(float(limit))


def _submit_entry(cmd: SubmitOrder, result: str, detail: str | None = None) -> repo.AuditEntry:
    return repo.AuditEntry(
        actor=cmd.requested_by,
        command="SubmitOrder",
        subject=subjects.SUBMIT_ORDER,
        result=result,
        payload=cmd.model_dump(mode="json"),
        portfolio_id=cmd.portfolio_id,
        client_order_id=cmd.client_order_id,
        detail=detail,
    )


async def _audit_submit(
    conn: AnyConnection, cmd: SubmitOrder, result: str, detail: str | None = None
) -> None:
    await repo.append_audit(conn, _submit_entry(cmd, result, detail))


def _risk(
    cmd: SubmitOrder,
    portfolio: repo.Portfolio,
    instrument: repo.Instrument,
    exposure: repo.Exposure,
    price: Decimal,
) -> tuple[RemoteError | None, Decimal]:
    """The risk check of a submit: its refusal (``None``: none) and its reservation."""
    held = exposure.position_quantity
    grows = (
        exposure.working_buy_quantity
        if cmd.side is OrderSide.BUY
        else exposure.working_sell_quantity
    )
    reserved = reservation(
        cmd.side,
        cmd.order_type,
        cmd.quantity,
        limit_price=cmd.limit_price,
        stop_price=cmd.stop_price,
        reference_price=price,
        buffer_fraction=portfolio.reservation_buffer,
        multiplier=instrument.multiplier,
    )
    context = RiskContext(
        cash=portfolio.cash,
        reserved_cash=portfolio.reserved_cash,
        limits=portfolio.limits,
        trading_halted=portfolio.halted,
        realized_pnl_today=exposure.realized_pnl_today,
        open_orders=exposure.open_orders,
        position_value=abs(held + (grows if cmd.side is OrderSide.BUY else -grows)) * price,
        position_quantity=held,
        day_trade_position_exists=exposure.day_trade_position_exists,
        fractional_allowed=portfolio.fractional_shares and instrument.fractional,
        currency=portfolio.currency,
    )
    proposed = ProposedOrder(
        symbol=cmd.symbol,
        side=cmd.side,
        quantity=cmd.quantity,
        estimated_price=price,
        purpose=cmd.purpose,
        cash_required=reserved,
    )
    refusal = check_risk(context, proposed)
    if refusal is None:
        return None, reserved
    return _refused(REFUSED, str(refusal)), reserved


def _rejection(intent: OrderIntent, reason: str, cause: Envelope | None) -> OrderRejected:
    """The ``OrderRejected`` of an order refused by us or by IB."""
    return OrderRejected(
        portfolio_id=intent.portfolio_id,
        client_order_id=intent.client_order_id,
        symbol=intent.symbol,
        side=intent.side,
        purpose=intent.purpose,
        position_id=intent.position_id,
        reason=reason,
        **(cause.caused() if cause is not None else {}),
    )


def _rule_of(refusal: RemoteError) -> str:
    """The rule a refusal names: the text before its first colon (``cash``, ``symbol``)."""
    head = refusal.message.split(":", 1)[0].strip()
    return head if head.replace("_", "").isalnum() else "other"


def _modified_reservation(
    order: repo.Order,
    terms: OrderTerms,
    state: OrderState,
    portfolio: repo.Portfolio,
    instrument: repo.Instrument | None,
) -> Decimal:
    """The reservation of a buy after a modification: its open quantity at its new prices."""
    price = terms.limit_price or terms.stop_price or order.reference_price
    if terms.side is not OrderSide.BUY or state.open_quantity <= 0 or price is None:
        return order.reserved_cash if state.open_quantity > 0 else Decimal(0)
    return reservation(
        terms.side,
        terms.order_type,
        state.open_quantity,
        limit_price=terms.limit_price,
        stop_price=terms.stop_price,
        reference_price=price,
        buffer_fraction=portfolio.reservation_buffer,
        multiplier=instrument.multiplier if instrument else Decimal(1),
    )


def _reservation_after(order: repo.Order, state: OrderState) -> Decimal:
    """The reservation for ``state``: the current one scaled to the open quantity."""
    before = order.state.open_quantity
    after = state.open_quantity
    if order.reserved_cash == 0 or after == 0 or before == 0:
        return Decimal(0) if after == 0 or before == 0 else order.reserved_cash
    if after == before:
        return order.reserved_cash
    return order.reserved_cash * after / before


def _validate(
    cmd: OrderTerms, portfolio: repo.Portfolio, instrument: repo.Instrument | None
) -> RemoteError | None:
    """Field checks against the portfolio and the instrument (``None``: all good)."""
    if instrument is None or not instrument.enabled:
        return _refused(INVALID_REQUEST, f"symbol: {cmd.symbol} is not a known, enabled instrument")
    if cmd.currency != portfolio.currency or instrument.currency != portfolio.currency:
        return _refused(
            INVALID_REQUEST,
            f"currency: {cmd.symbol} trades in {instrument.currency}, order says {cmd.currency},"
            f" portfolio {portfolio.id} is in {portfolio.currency}",
        )
    for name in _PRICE_FIELDS:
        price: Decimal | None = getattr(cmd, name)
        if price is not None:
            tick = tick_size(price, instrument.tick_size)
            if not is_on_tick(price, tick):
                return _refused(
                    INVALID_REQUEST, f"{name}: {price} is not on the {tick} tick of {cmd.symbol}"
                )
    return None
