"""The morning entry session: a session's recommendations become entry orders, once.

On ``session.morning_entry`` (:meth:`MorningEntry.run`), for each enabled portfolio:

1. every configured :class:`~ibflow_order_manager.strategy.Strategy` is asked for its
   recommendations, which are recorded (source ``strategy:<name>``; the first
   recommendation of a symbol for the session wins, whoever made it);
2. in one transaction, the session's recommendations are read and locked
   (``FOR UPDATE``), and those already decided (status other than ``pending``) are
   left alone;
3. ``MKT`` entries get a reference price (:class:`~ibflow_order_manager.quotes.Quotes`);
4. each pending recommendation, in the order it was recorded, is sized
   (:func:`plan_entries`, rules in :mod:`ibflow_order_manager.domain.sizing`) and, when
   sized, submitted as an entry order through the order book's own submit (validation,
   risk checks, cash reservation, idempotency);
5. each decision is recorded (``submitted`` with its client order id, ``skipped`` or
   ``failed`` with the reason), one :class:`EntrySessionCompleted` is enqueued in the
   outbox (subject ``entry_session(portfolio)``, deduplicated by occurrence), and the
   transaction commits; then ``notify`` wakes the outbox relay.

Choices:

* **Equity** for ``allocation`` is the portfolio's **cash**: a day-trading portfolio is
  flat at the morning entry, so its cash is its equity. (Positions held overnight are
  not valued here; to be refined with position values if such portfolios appear.)
* **Cash budget**: the first entry is planned against the portfolio's available cash
  (cash minus cash reserved by working buys); each submitted buy then lowers the budget
  of the next ones by its estimated cost (what its order reserves). A refused entry
  gives its budget back; an entry found already placed (``duplicate``: the order of an
  earlier, interrupted run) lowers nothing, its reservation is already in the
  portfolio's reserved cash.
* **Close-out**: nothing is submitted at or after the session's close-out time
  (``session_close`` minus 5 minutes); the recommendations still pending then are
  skipped as ``session_closing``.
* **Refusals**: the submit raising a :class:`~ibflow.bus.errors.RequestError` whose
  outcome is known (``refused``, ``invalid_request``, ``not_found``, ``not_ready``,
  ``conflict``, ``no_responders``) skips the recommendation with the error's message
  as the reason. When the outcome is unknown or the order book failed (``timeout``,
  ``internal``, ``unavailable``) it is recorded as ``failed`` with the code and message
  (the order may exist: its id is the deterministic entry id). Any other exception
  rolls back the portfolio's transaction and is raised after the other portfolios ran,
  so the session event is redelivered.
* **Exactly once**: entry client order ids are deterministic (portfolio, session date,
  symbol) and the submit is idempotent, decided recommendations are never looked at
  again, and two runs of one portfolio's session (a duplicated session event on two
  replicas) serialise on the recommendation row locks: the second one finds everything
  decided. A crash after a submit but before the commit loses only the decision; the
  redelivered event submits again, gets ``duplicate`` and records ``submitted``.
* :class:`EntrySessionCompleted` lists every decided recommendation of the portfolio's
  session (earlier occurrences' too), so a redelivery states the same outcome.
* Recommendations recorded while a run holds the locks stay ``pending`` and are
  entered by the next occurrence (a manual ``TriggerSessionEvent``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

import asyncpg

from ibflow.bus import subjects
from ibflow.bus.errors import RequestError
from ibflow.contracts.base import utc_now
from ibflow.contracts.enums import OrderPurpose, OrderSide, OrderType, TimeInForce
from ibflow.contracts.orders import SubmitOrder
from ibflow.contracts.recommendations import EntrySessionCompleted, EntrySkipped, Recommendation
from ibflow.contracts.replies import CommandAccepted
from ibflow.contracts.session import SessionEventEmitted
from ibflow.db.outbox import enqueue
from ibflow.db.pool import AnyConnection
from ibflow_order_manager import repository as repo
from ibflow_order_manager.domain.sizing import (
    Sized,
    Skipped,
    entry_client_order_id,
    entry_position_id,
    size_entry,
)
from ibflow_order_manager.strategy import Strategy, strategy_source

__all__ = [
    "CLOSE_OUT_MARGIN",
    "MORNING_ENTRY",
    "REQUESTED_BY",
    "SESSION_CLOSING",
    "MorningEntry",
    "PlannedEntry",
    "QuoteSource",
    "SubmitFn",
    "plan_entries",
]

log = logging.getLogger("ibflow.order_manager.entry")

MORNING_ENTRY: Final = "morning_entry"
"""The session event this module acts on."""
REQUESTED_BY: Final = "order-manager:morning_entry"
"""The ``requested_by`` of entry orders."""
CLOSE_OUT_MARGIN: Final = timedelta(minutes=5)
"""Nothing is submitted later than this before the session's close."""
SESSION_CLOSING: Final = "session_closing"
"""The skip reason of recommendations still pending at the close-out time."""
DEFAULT_STRATEGY_TIMEOUT: Final = 30.0
"""Seconds a strategy's ``recommend`` may take."""

_FAILED_CODES: Final = frozenset({"timeout", "internal", "unavailable"})
"""Submit errors whose outcome is unknown, or a failure of ours: recorded as ``failed``."""


SubmitFn = Callable[[SubmitOrder], Awaitable[CommandAccepted]]
"""Submits an order (the order book's submit); raises ``RequestError`` when refused."""


class QuoteSource(Protocol):
    """Reference prices of several symbols (:class:`~ibflow_order_manager.quotes.Quotes`)."""

    async def prices(
        self, symbols: Iterable[str], *, portfolio_id: str | None = None
    ) -> Mapping[str, Decimal | None]:
        """A fresh price per symbol as given, ``None`` where there is none."""
        ...


# ---------------------------------------------------------------------- planning (pure)


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    """A recommendation sized into the entry order to submit."""

    recommendation_id: int
    order: SubmitOrder
    sized: Sized

    @property
    def symbol(self) -> str:
        """The symbol to enter."""
        return self.order.symbol

    @property
    def client_order_id(self) -> str:
        """The entry order's deterministic id."""
        return self.order.client_order_id

    @property
    def estimated_cost(self) -> Decimal:
        """Cash the order will reserve (a buy), or its value (a sell)."""
        return self.sized.estimated_cost


def plan_entries(
    portfolio: repo.Portfolio,
    recommendations: Sequence[repo.StoredRecommendation],
    prices: Mapping[str, Decimal | None],
    *,
    equity: Decimal,
    session_date: date,
    available_cash: Decimal | None = None,
    cause: SessionEventEmitted | None = None,
) -> list[PlannedEntry | Skipped]:
    """Size each recommendation into an entry order, or say why it is skipped.

    One result per recommendation, in the same order. ``prices`` maps a symbol to its
    reference price (needed by ``MKT`` entries; an ``LMT`` entry is valued at its
    limit). The recommendations share one cash budget, ``available_cash`` (default: the
    portfolio's cash not reserved by working buys): each planned buy lowers it by its
    estimated cost, so a later one that no longer fits is skipped as
    ``insufficient_cash``. ``equity`` is what an ``allocation`` is a fraction of.

    The orders carry the deterministic entry ids, the recommendation's type, limit,
    stop and target, the reference price used, ``DAY``, ``requested_by``
    ``order-manager:morning_entry`` and, given ``cause``, its correlation.
    """
    budget = portfolio.available_cash if available_cash is None else available_cash
    envelope = cause.caused() if cause is not None else {}
    results: list[PlannedEntry | Skipped] = []
    for stored in recommendations:
        rec = stored.item
        reference = _usable(prices.get(rec.symbol))
        result = size_entry(
            rec,
            equity=equity,
            available_cash=budget,
            reference_price=reference,
            fractional_allowed=portfolio.fractional_shares,
            buffer_fraction=portfolio.reservation_buffer,
        )
        if isinstance(result, Skipped):
            results.append(result)
            continue
        order = _entry_order(
            portfolio,
            rec,
            result,
            reference=reference,
            session_date=session_date,
            envelope=envelope,
        )
        results.append(PlannedEntry(stored.id, order, result))
        if rec.side is OrderSide.BUY:
            budget -= result.estimated_cost
    return results


def _usable(price: Decimal | None) -> Decimal | None:
    if price is None or not price.is_finite() or price <= 0:
        return None
    return price


def _entry_order(
    portfolio: repo.Portfolio,
    rec: Recommendation,
    sized: Sized,
    *,
    reference: Decimal | None,
    session_date: date,
    envelope: Mapping[str, Any],
) -> SubmitOrder:
    return SubmitOrder.model_validate(
        {
            **envelope,
            "portfolio_id": portfolio.id,
            "client_order_id": entry_client_order_id(portfolio.id, session_date, rec.symbol),
            "symbol": rec.symbol,
            "side": rec.side,
            "order_type": rec.entry_type,
            "quantity": sized.quantity,
            "limit_price": rec.limit_price if rec.entry_type is OrderType.LMT else None,
            "tif": TimeInForce.DAY,
            "currency": portfolio.currency,
            "purpose": OrderPurpose.ENTRY,
            "position_id": entry_position_id(portfolio.id, session_date, rec.symbol),
            "stop_loss": rec.stop_loss,
            "take_profit": rec.take_profit,
            "reference_price": sized.estimated_price
            if rec.entry_type is OrderType.MKT
            else reference,
            "requested_by": REQUESTED_BY,
        }
    )


# ---------------------------------------------------------------------- the session


@dataclass(frozen=True, slots=True)
class _Decision:
    status: str
    reason: str | None = None
    client_order_id: str | None = None


class MorningEntry:
    """Runs the morning entry session (see the module docstring).

    ``quotes`` gives reference prices, ``submit`` places an order (the order book's
    submit, in-process or over NATS), ``notify`` wakes the outbox relay after each
    commit, ``strategies`` produce recommendations. ``clock`` is for tests.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        quotes: QuoteSource,
        submit: SubmitFn,
        notify: Callable[[], None],
        strategies: Iterable[Strategy] = (),
        *,
        clock: Callable[[], datetime] = utc_now,
        strategy_timeout: float = DEFAULT_STRATEGY_TIMEOUT,
        close_out_margin: timedelta = CLOSE_OUT_MARGIN,
    ) -> None:
        self._pool = pool
        self._quotes = quotes
        self._submit = submit
        self._notify = notify
        self._strategies = tuple(strategies)
        self._clock = clock
        self._strategy_timeout = strategy_timeout
        self._close_out_margin = close_out_margin

    async def run(self, event: SessionEventEmitted) -> None:
        """Run the entry for every enabled portfolio; ignores other session events.

        A portfolio whose run fails (other than a refused order) is rolled back and
        the first such error re-raised after the others ran, for a redelivery.
        """
        if event.name != MORNING_ENTRY:
            log.debug("session event %s is not the morning entry: ignored", event.name)
            return
        async with self._pool.acquire() as conn:
            portfolios = await repo.list_portfolios(conn)
        failure: BaseException | None = None
        for portfolio in portfolios:
            try:
                await self.run_portfolio(portfolio.id, event)
            except Exception as exc:
                log.exception("morning entry of %s (%s) failed", portfolio.id, event.occurrence_id)
                failure = failure or exc
        if failure is not None:
            raise failure

    async def run_portfolio(
        self, portfolio_id: str, event: SessionEventEmitted
    ) -> EntrySessionCompleted | None:
        """The entry of one portfolio; the :class:`EntrySessionCompleted` it enqueued, or
        ``None`` when the portfolio is unknown or disabled."""
        await self._ask_strategies(portfolio_id, event.session_date)
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repo.recommendations_for(
                conn, portfolio_id, event.session_date, lock=True
            )
            portfolio = await repo.get_portfolio(conn, portfolio_id)
            if portfolio is None or not portfolio.enabled:
                return None
            pending = [r for r in stored if r.status == "pending"]
            if pending:
                await self._enter(conn, portfolio, pending, event)
            completed = await self._completed(conn, portfolio_id, event)
            await enqueue(conn, subjects.entry_session(portfolio_id), completed)
        self._notify()
        log.info(
            "morning entry %s of %s: %d submitted, %d skipped",
            event.occurrence_id,
            portfolio_id,
            len(completed.submitted),
            len(completed.skipped),
        )
        return completed

    # ------------------------------------------------------------------ steps

    async def _ask_strategies(self, portfolio_id: str, session_date: date) -> None:
        for strategy in self._strategies:
            items = await self._recommendations_of(strategy, portfolio_id, session_date)
            if not items:
                continue
            async with self._pool.acquire() as conn, conn.transaction():
                new = await repo.insert_recommendations(
                    conn, portfolio_id, session_date, items, strategy_source(strategy)
                )
            log.info(
                "strategy %s recommended %d for %s (%d new)",
                strategy.name,
                len(items),
                portfolio_id,
                len(new),
            )

    async def _recommendations_of(
        self, strategy: Strategy, portfolio_id: str, session_date: date
    ) -> list[Recommendation]:
        try:
            async with asyncio.timeout(self._strategy_timeout):
                returned = await strategy.recommend(portfolio_id, session_date)
        except TimeoutError:
            log.error(
                "strategy %s gave no recommendations for %s within %gs",
                strategy.name,
                portfolio_id,
                self._strategy_timeout,
            )
            return []
        except Exception:
            log.exception("strategy %s failed for %s", strategy.name, portfolio_id)
            return []
        items: dict[str, Recommendation] = {}
        anything: Iterable[object] = returned  # user code: check what it really returned
        for item in anything:
            if not isinstance(item, Recommendation):
                log.error(
                    "strategy %s returned a %s, not a Recommendation: ignored",
                    strategy.name,
                    type(item).__name__,
                )
                continue
            items.setdefault(item.symbol, item)
        return list(items.values())

    async def _enter(
        self,
        conn: AnyConnection,
        portfolio: repo.Portfolio,
        pending: list[repo.StoredRecommendation],
        event: SessionEventEmitted,
    ) -> None:
        cutoff = event.session_close - self._close_out_margin
        if self._clock() >= cutoff:
            for stored in pending:
                await self._decide(conn, stored, self._closing(cutoff))
            return
        market = sorted({r.item.symbol for r in pending if r.item.entry_type is OrderType.MKT})
        prices = await self._quotes.prices(market, portfolio_id=portfolio.id) if market else {}
        budget = portfolio.available_cash
        for stored in pending:
            if self._clock() >= cutoff:
                await self._decide(conn, stored, self._closing(cutoff))
                continue
            [planned] = plan_entries(
                portfolio,
                [stored],
                prices,
                equity=portfolio.cash,
                session_date=event.session_date,
                available_cash=budget,
                cause=event,
            )
            if isinstance(planned, Skipped):
                await self._decide(conn, stored, _Decision("skipped", planned.message))
                continue
            decision, spent = await self._place(planned)
            if spent and stored.item.side is OrderSide.BUY:
                budget -= planned.estimated_cost
            await self._decide(conn, stored, decision)

    async def _place(self, planned: PlannedEntry) -> tuple[_Decision, bool]:
        """Submit one entry: its decision, and whether it newly took cash."""
        coid = planned.client_order_id
        try:
            accepted = await self._submit(planned.order)
        except RequestError as exc:
            reason = exc.message.strip() or exc.code
            if exc.code in _FAILED_CODES:
                log.error("entry %s failed (%s): %s", coid, exc.code, exc.message)
                return _Decision("failed", f"{exc.code}: {reason}"), False
            log.info("entry %s refused: %s", coid, reason)
            return _Decision("skipped", reason), False
        return _Decision("submitted", client_order_id=coid), not accepted.duplicate

    def _closing(self, cutoff: datetime) -> _Decision:
        now = self._clock()
        return _Decision(
            "skipped",
            f"{SESSION_CLOSING}: no entry after the close-out at {cutoff.isoformat()}"
            f" (now {now.isoformat()})",
        )

    @staticmethod
    async def _decide(
        conn: AnyConnection, stored: repo.StoredRecommendation, decision: _Decision
    ) -> None:
        await repo.decide_recommendation(
            conn,
            stored.id,
            status=decision.status,
            skip_reason=decision.reason,
            client_order_id=decision.client_order_id,
        )

    @staticmethod
    async def _completed(
        conn: AnyConnection, portfolio_id: str, event: SessionEventEmitted
    ) -> EntrySessionCompleted:
        rows = await _decided(conn, portfolio_id, event.session_date)
        submitted = tuple(row["client_order_id"] for row in rows if row["status"] == "submitted")
        skipped = tuple(
            EntrySkipped(symbol=row["symbol"], reason=row["skip_reason"])
            for row in rows
            if row["status"] != "submitted"
        )
        return EntrySessionCompleted(
            portfolio_id=portfolio_id,
            session_date=event.session_date,
            occurrence_id=event.occurrence_id,
            submitted=submitted,
            skipped=skipped,
            **event.caused(),
        )


async def _decided(
    conn: AnyConnection, portfolio_id: str, session_date: date
) -> list[asyncpg.Record]:
    """The decided recommendations of a portfolio's session, with their reasons, by id."""
    return await conn.fetch(
        """
        SELECT symbol, status, skip_reason, client_order_id FROM recommendations
         WHERE portfolio_id = $1 AND session_date = $2 AND status <> 'pending'
         ORDER BY id
        """,
        portfolio_id,
        session_date,
    )
