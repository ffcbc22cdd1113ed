"""ibflow's own resources under ``/api/v1/portfolios`` (exact decimal strings)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Path, Query

from ibflow.bus import subjects
from ibflow.contracts import (
    CommandAccepted,
    FlattenPositions,
    HaltTrading,
    Recommendation,
    RequestReconciliation,
    RequestSessionSchedule,
    ResumeTrading,
    SessionScheduleReported,
    SetPositionLevels,
    SubmitRecommendations,
    TriggerSessionEvent,
)
from ibflow.db import transaction
from ibflow_api import repository as repo
from ibflow_api.commands import send, send_audited
from ibflow_api.deps import PORTFOLIO_PATTERN, AdminKey, Ctx, ReadKey, Services, TradeKey
from ibflow_api.errors import ApiError, responses
from ibflow_api.keys import ApiKey, Scope
from ibflow_api.schemas import (
    CommandResponse,
    DayPosition,
    Execution,
    FlattenRequest,
    HaltRequest,
    Order,
    Page,
    PerformanceSummary,
    Portfolio,
    PortfolioCreate,
    PortfolioUpdate,
    PositionLevels,
    RecommendationOut,
    RecommendationsSubmit,
    ReconciliationReport,
    RiskLimits,
    Transaction,
    TriggerRequest,
)

router = APIRouter(prefix="/api/v1", tags=["portfolios"])

READ: Final = responses(401, 403, 404, 503)
WRITE: Final = responses(401, 403, 404, 409, 413, 503)
COMMAND: Final = responses(401, 403, 404, 409, 413, 502, 503, 504)

PortfolioId = Annotated[str, Path(pattern=PORTFOLIO_PATTERN)]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]
Limit = Annotated[int, Query(ge=1, le=repo.MAX_PAGE)]
Symbol = Annotated[str | None, Query(min_length=1, max_length=32)]
PositionIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
EventName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


async def _existing(ctx: Services, portfolio_id: str) -> Portfolio:
    async with ctx.pool.acquire() as conn:
        found = await repo.get_portfolio(conn, portfolio_id)
    if found is None:
        raise ApiError(404, "not_found", f"portfolio {portfolio_id!r} does not exist")
    return found


def _accepted(answer: CommandAccepted) -> CommandResponse:
    return CommandResponse(
        command_id=str(answer.command_id),
        duplicate=answer.duplicate,
        client_order_ids=list(answer.client_order_ids),
        detail=answer.detail,
    )


async def _write(
    ctx: Services,
    *,
    key: ApiKey,
    command: str,
    portfolio_id: str,
    payload: dict[str, Any],
    work: Any,
) -> Portfolio:
    async with transaction(ctx.pool) as conn:
        result: Portfolio = await work(conn)
        await repo.audit(
            conn,
            actor=key.actor,
            command=command,
            subject=f"portfolio:{portfolio_id}",
            portfolio_id=portfolio_id,
            payload=payload,
            result="accepted",
        )
    ctx.relay.notify()
    return result


# ------------------------------------------------------------------ portfolios


@router.get("/portfolios", responses=READ)
async def list_portfolios(ctx: Ctx, _key: ReadKey) -> list[Portfolio]:
    """Every portfolio."""
    async with ctx.pool.acquire() as conn:
        return await repo.list_portfolios(conn)


@router.post("/portfolios", status_code=201, responses=WRITE)
async def create_portfolio(body: PortfolioCreate, ctx: Ctx, key: AdminKey) -> Portfolio:
    """Create a portfolio (admin). The bridge connects it on the ``PortfolioChanged``."""
    values = body.model_dump()
    payload = body.model_dump(mode="json")
    return await _write(
        ctx,
        key=key,
        command="CreatePortfolio",
        portfolio_id=body.id,
        payload=payload,
        work=lambda conn: repo.insert_portfolio(conn, values, key.actor),
    )


@router.get("/portfolios/{portfolio_id}", responses=READ)
async def get_portfolio(ctx: Ctx, _key: ReadKey, portfolio_id: PortfolioId) -> Portfolio:
    """One portfolio."""
    return await _existing(ctx, portfolio_id)


@router.patch("/portfolios/{portfolio_id}", responses=WRITE)
async def update_portfolio(
    body: PortfolioUpdate, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> Portfolio:
    """Change a portfolio's settings (trade scope; ``allow_live: true`` needs admin)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("allow_live") and not key.scope.allows(Scope.ADMIN):
        raise ApiError(403, "forbidden", "allow_live: enabling live trading needs the admin scope")
    for name in (
        "name",
        "broker_host",
        "broker_port",
        "client_id",
        "is_paper",
        "allow_live",
        "enabled",
    ):
        if name in changes and changes[name] is None:
            raise ApiError(422, "invalid_request", f"{name}: may not be null")
    return await _write(
        ctx,
        key=key,
        command="UpdatePortfolio",
        portfolio_id=portfolio_id,
        payload=body.model_dump(mode="json", exclude_unset=True),
        work=lambda conn: repo.update_portfolio(conn, portfolio_id, changes, key.actor),
    )


@router.put("/portfolios/{portfolio_id}/risk-limits", responses=WRITE)
async def set_risk_limits(
    body: RiskLimits, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> Portfolio:
    """Replace the portfolio's risk limits (``null``: no limit)."""
    changes = body.model_dump()
    return await _write(
        ctx,
        key=key,
        command="SetRiskLimits",
        portfolio_id=portfolio_id,
        payload=body.model_dump(mode="json"),
        work=lambda conn: repo.update_portfolio(conn, portfolio_id, changes, key.actor),
    )


@router.post("/portfolios/{portfolio_id}/halt", responses=COMMAND)
async def halt(
    body: HaltRequest, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> CommandResponse:
    """Stop new entry and manual orders (exits still go through)."""
    await _existing(ctx, portfolio_id)
    cmd = HaltTrading(portfolio_id=portfolio_id, reason=body.reason, requested_by=key.actor)
    return _accepted(await send(ctx, subjects.HALT_TRADING, cmd, CommandAccepted))


@router.post("/portfolios/{portfolio_id}/resume", responses=COMMAND)
async def resume(
    body: HaltRequest, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> CommandResponse:
    """Lift a halt."""
    await _existing(ctx, portfolio_id)
    cmd = ResumeTrading(portfolio_id=portfolio_id, reason=body.reason, requested_by=key.actor)
    return _accepted(await send(ctx, subjects.RESUME_TRADING, cmd, CommandAccepted))


@router.post("/portfolios/{portfolio_id}/flatten", responses=COMMAND)
async def flatten(
    body: FlattenRequest, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> CommandResponse:
    """Close the portfolio's day-trade positions now (position-monitor)."""
    await _existing(ctx, portfolio_id)
    cmd = FlattenPositions(
        portfolio_id=portfolio_id,
        symbols=tuple(body.symbols),
        reason=body.reason,
        requested_by=key.actor,
    )
    answer = await send_audited(
        ctx, key, subjects.FLATTEN_POSITIONS, cmd, CommandAccepted, portfolio_id=portfolio_id
    )
    return _accepted(answer)


# ------------------------------------------------------------------ history


@router.get("/portfolios/{portfolio_id}/orders", responses=READ)
async def list_orders(
    *,
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    cursor: Cursor = None,
    limit: Limit = 100,
    status: Annotated[
        Literal[
            "PENDING",
            "SUBMITTED",
            "PARTIALLY_FILLED",
            "FILLED",
            "CANCEL_REQUESTED",
            "CANCELLED",
            "REJECTED",
            "UNKNOWN",
        ]
        | None,
        Query(),
    ] = None,
    symbol: Symbol = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Page[Order]:
    """The portfolio's orders, newest first, filtered by status, symbol and creation time."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        items, nxt = await repo.orders_page(
            conn,
            portfolio_id,
            cursor=cursor,
            limit=limit,
            status=status,
            symbol=symbol,
            created_from=created_from,
            created_to=created_to,
        )
    return Page[Order](items=items, next_cursor=nxt)


@router.get("/portfolios/{portfolio_id}/executions", responses=READ)
async def list_executions(
    *,
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    cursor: Cursor = None,
    limit: Limit = 100,
    symbol: Symbol = None,
    client_order_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[Execution]:
    """The portfolio's fills, newest first."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        items, nxt = await repo.executions_page(
            conn,
            portfolio_id,
            cursor=cursor,
            limit=limit,
            symbol=symbol,
            client_order_id=client_order_id,
        )
    return Page[Execution](items=items, next_cursor=nxt)


@router.get("/portfolios/{portfolio_id}/transactions", responses=READ)
async def list_transactions(
    ctx: Ctx, _key: ReadKey, portfolio_id: PortfolioId, cursor: Cursor = None, limit: Limit = 100
) -> Page[Transaction]:
    """The cash effect of each fill, newest first."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        items, nxt = await repo.transactions_page(conn, portfolio_id, cursor=cursor, limit=limit)
    return Page[Transaction](items=items, next_cursor=nxt)


@router.get("/portfolios/{portfolio_id}/positions", responses=READ)
async def list_positions(
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    session_date: dt.date | None = None,
    active: bool = False,
) -> list[DayPosition]:
    """Day-trade positions with P&L (realized net of commissions; unrealized at the mark)."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        return await repo.day_positions(
            conn, portfolio_id, session_date=session_date, active_only=active
        )


@router.get("/portfolios/{portfolio_id}/performance", responses=READ)
async def performance(
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> PerformanceSummary:
    """Closed positions' realized P&L, win rate and commissions, by day and by week
    (default: the last 30 days)."""
    await _existing(ctx, portfolio_id)
    end = until or dt.datetime.now(repo.NEW_YORK).date()
    start = since or end - dt.timedelta(days=30)
    if start > end:
        raise ApiError(422, "invalid_request", "since: must not be after until")
    async with ctx.pool.acquire() as conn:
        total, days, weeks = await repo.performance(conn, portfolio_id, start, end)
    return PerformanceSummary(
        portfolio_id=portfolio_id, since=start, until=end, total=total, by_day=days, by_week=weeks
    )


# ------------------------------------------------------------------ recommendations


@router.get("/portfolios/{portfolio_id}/recommendations", responses=READ)
async def list_recommendations(
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    session_date: dt.date | None = None,
    status: Literal["pending", "submitted", "skipped", "failed"] | None = None,
) -> list[RecommendationOut]:
    """Recommendations with their status and skip reasons."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        return await repo.recommendations(conn, portfolio_id, session_date, status)


@router.post("/portfolios/{portfolio_id}/recommendations", responses=COMMAND)
async def submit_recommendations(
    body: RecommendationsSubmit, ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> CommandResponse:
    """Recommendations for a session's morning entry (the first per symbol wins)."""
    await _existing(ctx, portfolio_id)
    try:
        items = tuple(Recommendation.model_validate(i.model_dump()) for i in body.items)
        cmd = SubmitRecommendations(
            portfolio_id=portfolio_id,
            session_date=body.session_date,
            items=items,
            source=body.source,
            requested_by=key.actor,
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"items: {exc}") from None
    return _accepted(await send(ctx, subjects.SUBMIT_RECOMMENDATIONS, cmd, CommandAccepted))


# ------------------------------------------------------------------ reconciliation, session


@router.get("/portfolios/{portfolio_id}/reconciliation", responses=READ)
async def reconciliation(
    ctx: Ctx,
    _key: ReadKey,
    portfolio_id: PortfolioId,
    unresolved: bool = False,
    limit: Limit = 100,
) -> list[ReconciliationReport]:
    """Differences found between our book and the broker's positions, newest first."""
    await _existing(ctx, portfolio_id)
    async with ctx.pool.acquire() as conn:
        return await repo.reconciliation_reports(
            conn, portfolio_id, unresolved_only=unresolved, limit=limit
        )


@router.post("/portfolios/{portfolio_id}/reconciliation", responses=COMMAND)
async def request_reconciliation(
    ctx: Ctx, key: TradeKey, portfolio_id: PortfolioId
) -> CommandResponse:
    """Reconcile now (position-monitor; refreshes the broker's state first)."""
    await _existing(ctx, portfolio_id)
    cmd = RequestReconciliation(portfolio_id=portfolio_id, requested_by=key.actor)
    answer = await send_audited(
        ctx, key, subjects.REQUEST_RECONCILIATION, cmd, CommandAccepted, portfolio_id=portfolio_id
    )
    return _accepted(answer)


@router.get("/session/schedule", tags=["session"], responses=responses(401, 403, 502, 503, 504))
async def session_schedule(
    ctx: Ctx, _key: ReadKey, session_date: dt.date | None = None
) -> SessionScheduleReported:
    """The scheduler's plan for a session (default: today's or the next)."""
    cmd = RequestSessionSchedule(session_date=session_date)
    return await send(ctx, subjects.REQUEST_SESSION_SCHEDULE, cmd, SessionScheduleReported)


@router.put("/portfolios/{portfolio_id}/positions/{position_id}/levels", responses=COMMAND)
async def set_position_levels(
    body: PositionLevels,
    ctx: Ctx,
    key: TradeKey,
    portfolio_id: PortfolioId,
    position_id: PositionIdPath,
) -> CommandResponse:
    """Move a position's stop loss and/or take profit (position-monitor)."""
    if body.stop_loss is None and body.take_profit is None:
        raise ApiError(422, "invalid_request", "body: give stop_loss and/or take_profit")
    await _existing(ctx, portfolio_id)
    cmd = SetPositionLevels(
        portfolio_id=portfolio_id,
        position_id=position_id,
        stop_loss=body.stop_loss,
        take_profit=body.take_profit,
        requested_by=key.actor,
    )
    answer = await send_audited(
        ctx, key, subjects.SET_POSITION_LEVELS, cmd, CommandAccepted, portfolio_id=portfolio_id
    )
    return _accepted(answer)


@router.post(
    "/session/events/{name}/trigger",
    tags=["session"],
    responses=responses(401, 403, 404, 409, 413, 502, 503, 504),
)
async def trigger_session_event(
    body: TriggerRequest, ctx: Ctx, key: AdminKey, name: EventName
) -> CommandResponse:
    """Emit a session event now (admin; the scheduler refuses unknown names and, unless
    forced, entry events outside the session)."""
    cmd = TriggerSessionEvent(
        name=name,
        session_date=body.session_date,
        reason=body.reason,
        force=body.force,
        requested_by=key.actor,
    )
    answer = await send_audited(
        ctx, key, subjects.TRIGGER_SESSION_EVENT, cmd, CommandAccepted, portfolio_id=None
    )
    return _accepted(answer)
