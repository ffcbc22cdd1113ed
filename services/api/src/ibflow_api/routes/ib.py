"""The dashboard-compatible routes: ``/api/v1/ib/...`` (shapes of the NautilusTrader IB
dashboard; every path takes ``?portfolio=``, default: the default portfolio)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Path, Query
from pydantic import ValidationError

from ibflow.bus import subjects
from ibflow.contracts import (
    BrokerQuery,
    CancelOrder,
    CommandAccepted,
    ModifyOrder,
    OrderPurpose,
    RefreshBrokerState,
    SubmitOrder,
)
from ibflow.contracts.base import Envelope
from ibflow.contracts.enums import ConnectionState, OrderSide, OrderType
from ibflow.contracts.gateway import BrokerOrderPreviewed, PreviewBrokerOrder
from ibflow_api import repository as repo
from ibflow_api.bridge_state import BridgeStateUnavailable
from ibflow_api.commands import send, send_audited
from ibflow_api.deps import Ctx, PortfolioIdParam, PortfolioParam, ReadKey, TradeKey
from ibflow_api.errors import ApiError, responses
from ibflow_api.keys import ApiKey
from ibflow_api.schemas import (
    AccountSummary,
    BrokerPosition,
    ConnectionStatus,
    DashboardOrder,
    MessageResponse,
    ModifyOrderRequest,
    OrderPreview,
    OrdersResponse,
    PlaceOrderRequest,
    PlaceOrderResponse,
    PositionsResponse,
    PreviewCheck,
)

router = APIRouter(prefix="/api/v1/ib", tags=["dashboard"])

READ_ERRORS: Final = responses(401, 403, 404, 503)
COMMAND_ERRORS: Final = responses(401, 403, 404, 409, 413, 502, 503, 504)
OrderIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="client order id")
]
_FIELD_NAMES: Final = {"side": "action", "tif": "time_in_force"}


def _session_start() -> dt.datetime:
    today = dt.datetime.now(repo.NEW_YORK).date()
    return dt.datetime.combine(today, dt.time(0), tzinfo=repo.NEW_YORK)


@router.get("/connection/status", responses=READ_ERRORS)
async def connection_status(ctx: Ctx, _key: ReadKey, portfolio: PortfolioParam) -> ConnectionStatus:
    """The bridge's connection to the portfolio's gateway (``state`` ``unknown`` when the
    bridge has reported nothing yet)."""
    try:
        state = await ctx.bridge.connection(portfolio.id)
    except BridgeStateUnavailable as exc:
        raise ApiError(503, "not_ready", str(exc)) from None
    if state is None:
        return ConnectionStatus(
            connected=False,
            gateway_type=None,
            host=portfolio.broker_host,
            port=portfolio.broker_port,
            client_id=portfolio.client_id,
            account_id=portfolio.account,
            connection_time=None,
            last_heartbeat=None,
            error_message="no state reported by the gateway-bridge yet",
            state="unknown",
            server_version=None,
            portfolio_id=portfolio.id,
        )
    return ConnectionStatus(
        connected=state.connected,
        gateway_type=state.gateway_type.value,
        host=state.host,
        port=state.port,
        client_id=state.client_id,
        account_id=state.account_id,
        connection_time=state.connection_time,
        last_heartbeat=state.last_heartbeat,
        error_message=state.error_message,
        state=state.state.value,
        server_version=state.server_version,
        portfolio_id=portfolio.id,
    )


@router.get("/account", responses=READ_ERRORS)
async def account(ctx: Ctx, _key: ReadKey, portfolio: PortfolioParam) -> AccountSummary:
    """The account's latest values; 503 while the broker has not reported them (unknown
    is never shown as zero)."""
    try:
        accounts = await ctx.bridge.accounts(portfolio.id)
    except BridgeStateUnavailable as exc:
        raise ApiError(503, "not_ready", str(exc)) from None
    if not accounts:
        raise ApiError(503, "not_ready", f"account values of {portfolio.id} not reported yet")
    chosen = next((a for a in accounts if a.account_id == portfolio.account), accounts[0])
    return AccountSummary(
        account_id=chosen.account_id,
        net_liquidation=chosen.net_liquidation,
        total_cash_value=chosen.total_cash_value,
        buying_power=chosen.buying_power,
        maintenance_margin=chosen.maintenance_margin,
        initial_margin=chosen.initial_margin,
        excess_liquidity=chosen.excess_liquidity,
        currency=chosen.currency,
        timestamp=chosen.ts_event,
    )


@router.get("/positions", responses=READ_ERRORS)
async def positions(ctx: Ctx, _key: ReadKey, portfolio: PortfolioParam) -> PositionsResponse:
    """The broker's holdings, with ibflow's latest mark per symbol; 503 while unknown."""
    try:
        held = await ctx.bridge.positions(portfolio.id)
        if held is None:
            connection = await ctx.bridge.connection(portfolio.id)
            if connection is None or connection.state is not ConnectionState.READY:
                raise ApiError(503, "not_ready", f"positions of {portfolio.id} not known yet")
            held = []  # synchronised and nothing reported: flat
    except BridgeStateUnavailable as exc:
        raise ApiError(503, "not_ready", str(exc)) from None
    held = [p for p in held if p.position != 0]
    if not held:
        return PositionsResponse(positions=[])
    async with ctx.pool.acquire() as conn:
        marks, realized = await repo.symbol_figures(
            conn, portfolio.id, dt.datetime.now(repo.NEW_YORK).date()
        )
    rows = []
    for p in sorted(held, key=lambda p: p.symbol):
        price = marks.get(p.symbol)
        rows.append(
            BrokerPosition(
                account_id=p.account_id,
                contract_id=p.con_id,
                symbol=p.symbol,
                position=p.position,
                avg_cost=p.avg_cost,
                market_price=price,
                market_value=None if price is None else price * p.position,
                unrealized_pnl=None if price is None else (price - p.avg_cost) * p.position,
                realized_pnl=realized.get(p.symbol),
                timestamp=p.ts_event,
            )
        )
    return PositionsResponse(positions=rows)


def _dashboard_order(row: Any) -> DashboardOrder:
    quantity = row["quantity"]
    return DashboardOrder(
        order_id=row["client_order_id"],
        client_id=row["p_client_id"],
        account_id=row["p_account"],
        contract_id=row["con_id"],
        symbol=row["symbol"],
        action=row["side"],
        order_type=row["order_type"],
        total_quantity=quantity,
        filled_quantity=row["filled_quantity"],
        remaining_quantity=None if quantity is None else quantity - row["filled_quantity"],
        limit_price=row["limit_price"],
        stop_price=row["stop_price"],
        status=row["status"],
        avg_fill_price=row["avg_fill_price"],
        commission=row["commission"],
        timestamp=row["updated_at"],
        portfolio_id=row["portfolio_id"],
        ib_order_id=row["ib_order_id"],
        perm_id=row["perm_id"],
        ib_status=row["ib_status"],
        time_in_force=row["tif"],
        purpose=row["purpose"],
        status_message=row["status_message"],
    )


@router.get("/orders", responses=READ_ERRORS)
async def orders(
    ctx: Ctx,
    _key: ReadKey,
    portfolio: PortfolioParam,
    include_all: Annotated[
        bool, Query(alias="all", description="every order, not only working and today's")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> OrdersResponse:
    """Working orders and those that changed today (New York), newest first."""
    async with ctx.pool.acquire() as conn:
        rows = await repo.dashboard_orders(
            conn, portfolio.id, include_all=include_all, since=_session_start(), limit=limit
        )
    return OrdersResponse(orders=[_dashboard_order(r) for r in rows])


def _client_order_id(body: PlaceOrderRequest, key: ApiKey, idempotency_key: str | None) -> str:
    if body.client_order_id is not None:
        return body.client_order_id
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{key.id}:{idempotency_key}".encode()).hexdigest()
        return f"api-{digest[:32]}"
    return f"api-{uuid.uuid4().hex}"


def _submit_command(
    body: PlaceOrderRequest, portfolio_id: str, coid: str, actor: str
) -> SubmitOrder:
    fields: dict[str, Any] = {
        "portfolio_id": portfolio_id,
        "client_order_id": coid,
        "symbol": body.symbol.strip(),
        "side": body.action,
        "order_type": body.order_type,
        "quantity": body.quantity,
        "limit_price": body.limit_price,
        "stop_price": body.stop_price,
        "trailing_amount": body.trailing_amount,
        "trailing_percent": body.trailing_percent,
        "tif": body.time_in_force,
        "outside_rth": body.outside_rth,
        "reference_price": body.reference_price,
        "purpose": OrderPurpose.MANUAL,
        "requested_by": actor,
    }
    try:
        return SubmitOrder.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = [str(part) for part in error["loc"]]
        field = _FIELD_NAMES.get(loc[0], loc[0]) if loc else ""
        message = error["msg"].removeprefix("Value error, ")
        raise ApiError(
            422, "invalid_request", f"{field}: {message}" if field else message
        ) from None


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="A retry with the same key (and the same API key) places nothing new.",
    ),
]


@router.post("/orders/place", responses=COMMAND_ERRORS)
async def place_order(
    body: PlaceOrderRequest,
    ctx: Ctx,
    key: TradeKey,
    portfolio_id: PortfolioIdParam,
    idempotency_key: IdempotencyKey = None,
) -> PlaceOrderResponse:
    """Place an order through the order-manager (risk checks, halt switch, audit).

    Answered once the broker acknowledged it; 409 with the rule and numbers when refused,
    503 when the gateway is not ready, 504 when no answer came in time (the order may
    exist: retry with the same ``client_order_id`` / ``Idempotency-Key``)."""
    coid = _client_order_id(body, key, idempotency_key)
    cmd = _submit_command(body, portfolio_id, coid, key.actor)
    accepted = await send(ctx, subjects.SUBMIT_ORDER, cmd, CommandAccepted)
    message = "order already placed" if accepted.duplicate else "order placed"
    return PlaceOrderResponse(order_id=coid, message=message, duplicate=accepted.duplicate)


async def _order_portfolio(ctx: Ctx, order_id: str) -> str:
    async with ctx.pool.acquire() as conn:
        row = await repo.find_order(conn, order_id)
    if row is None:
        raise ApiError(404, "not_found", f"no order {order_id}")
    portfolio_id: str = row["portfolio_id"]
    return portfolio_id


@router.post("/orders/{order_id}/cancel", responses=COMMAND_ERRORS)
async def cancel_order(ctx: Ctx, key: TradeKey, order_id: OrderIdPath) -> MessageResponse:
    """Cancel the remainder of a working order (its reservation is released once IB
    confirms)."""
    portfolio_id = await _order_portfolio(ctx, order_id)
    cmd = CancelOrder(portfolio_id=portfolio_id, client_order_id=order_id, requested_by=key.actor)
    await send(ctx, subjects.CANCEL_ORDER, cmd, CommandAccepted)
    return MessageResponse(message="cancel requested")


@router.put("/orders/{order_id}/modify", responses=COMMAND_ERRORS)
async def modify_order(
    body: ModifyOrderRequest, ctx: Ctx, key: TradeKey, order_id: OrderIdPath
) -> MessageResponse:
    """Change a working order's total quantity and/or prices."""
    portfolio_id = await _order_portfolio(ctx, order_id)
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise ApiError(422, "invalid_request", "body: nothing to modify")
    try:
        cmd = ModifyOrder.model_validate(
            {
                "portfolio_id": portfolio_id,
                "client_order_id": order_id,
                "requested_by": key.actor,
                **fields,
            }
        )
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", str(exc.errors()[0]["msg"])) from None
    await send(ctx, subjects.MODIFY_ORDER, cmd, CommandAccepted)
    return MessageResponse(message="modify requested")


async def _refresh(ctx: Ctx, key: ApiKey, portfolio_id: str, what: BrokerQuery) -> MessageResponse:
    cmd = RefreshBrokerState(portfolio_id=portfolio_id, what=(what,), requested_by=key.actor)
    await send_audited(
        ctx,
        key,
        subjects.refresh_broker_state(portfolio_id),
        cmd,
        CommandAccepted,
        portfolio_id=portfolio_id,
    )
    return MessageResponse(message="refresh requested")


@router.post("/account/refresh", responses=COMMAND_ERRORS)
async def refresh_account(ctx: Ctx, key: TradeKey, portfolio: PortfolioParam) -> MessageResponse:
    """Ask the bridge to reload the account values."""
    return await _refresh(ctx, key, portfolio.id, BrokerQuery.ACCOUNT)


@router.post("/positions/refresh", responses=COMMAND_ERRORS)
async def refresh_positions(ctx: Ctx, key: TradeKey, portfolio: PortfolioParam) -> MessageResponse:
    """Ask the bridge to reload the positions."""
    return await _refresh(ctx, key, portfolio.id, BrokerQuery.POSITIONS)


@router.post("/orders/refresh", responses=COMMAND_ERRORS)
async def refresh_orders(ctx: Ctx, key: TradeKey, portfolio: PortfolioParam) -> MessageResponse:
    """Ask the bridge to reload the open and completed orders."""
    return await _refresh(ctx, key, portfolio.id, BrokerQuery.ORDERS)


_FAR_FROM_MARKET: Final = Decimal("0.05")


def estimated_commission(quantity: Decimal, price: Decimal | None) -> Decimal | None:
    """IB's fixed US stock rate: 0.005 per share, at least 1.00, at most 1 % of the value."""
    if price is None:
        return None
    fee = max(Decimal("1.00"), quantity * Decimal("0.005"))
    return min(fee, quantity * price * Decimal("0.01")).quantize(Decimal("0.01"))


@router.post("/orders/preview", responses=responses(401, 403, 404, 413, 503))
async def preview_order(
    body: PlaceOrderRequest, ctx: Ctx, key: ReadKey, portfolio: PortfolioParam
) -> OrderPreview:
    """What an order ticket shows before the user confirms: the checks it would pass,
    an estimate of its cost and commission, and warnings. Places nothing."""
    checks: list[PreviewCheck] = []
    warnings: list[str] = []
    terms: SubmitOrder | None = None
    try:
        terms = _submit_command(body, portfolio.id, "preview", key.actor)
        checks.append(PreviewCheck(name="terms", ok=True, message="valid"))
    except ApiError as exc:
        checks.append(PreviewCheck(name="terms", ok=False, message=exc.message))
    async with ctx.pool.acquire() as conn:
        instrument = await conn.fetchrow(
            "SELECT enabled, currency FROM instruments WHERE symbol = $1", body.symbol.strip()
        )
        last = await conn.fetchval(
            "SELECT price FROM executions WHERE symbol = $1 ORDER BY executed_at DESC LIMIT 1",
            body.symbol.strip(),
        )
    known = instrument is not None and instrument["enabled"]
    checks.append(
        PreviewCheck(
            name="instrument",
            ok=known,
            message="known and enabled"
            if known
            else f"{body.symbol} is not a known, enabled instrument",
        )
    )
    halted = portfolio.trading_state == "halted"
    checks.append(
        PreviewCheck(
            name="trading",
            ok=not halted,
            message=f"halted: {portfolio.halted_reason}" if halted else "active",
        )
    )
    market = body.reference_price or last
    price = body.limit_price or body.stop_price or market
    cost = None if price is None else price * body.quantity
    commission = estimated_commission(body.quantity, price)
    if body.action is OrderSide.BUY and cost is not None:
        available = portfolio.cash - portfolio.reserved_cash
        ok = cost + (commission or 0) <= available
        checks.append(
            PreviewCheck(
                name="cash",
                ok=ok,
                message=f"needs {cost:.2f} {portfolio.currency}, available {available:.2f}",
            )
        )
    if portfolio.max_order_value is not None and cost is not None:
        ok = cost <= portfolio.max_order_value
        checks.append(
            PreviewCheck(
                name="max_order_value",
                ok=ok,
                message=f"{cost:.2f} against the limit {portfolio.max_order_value}",
            )
        )
    try:
        connection = await ctx.bridge.connection(portfolio.id)
        accounts = await ctx.bridge.accounts(portfolio.id)
    except BridgeStateUnavailable:
        connection, accounts = None, None
    ready = connection is not None and connection.state is ConnectionState.READY
    checks.append(
        PreviewCheck(
            name="gateway",
            ok=ready,
            message="ready"
            if ready
            else f"not ready: {connection.state.value if connection else 'unknown'}",
        )
    )
    if accounts and cost is not None:
        buying_power = accounts[0].buying_power
        if buying_power is not None and cost > buying_power:
            warnings.append(f"cost {cost:.2f} exceeds the buying power {buying_power:.2f}")
    if market is not None and body.order_type is not OrderType.MKT:
        given = body.limit_price or body.stop_price
        if given is not None and abs(given - market) / market > _FAR_FROM_MARKET:
            warnings.append(f"price {given} is more than 5% from the market ({market})")
    if market is None:
        warnings.append("no market price known: cost of a MKT/TRAIL order cannot be estimated")
    margin_impact: dict[str, Any] | None = None
    if terms is not None and ready:
        margin_impact = await _what_if(ctx, terms, warnings)
    elif terms is not None:
        warnings.append("IB what-if margin impact not available: the gateway is not ready")
    return OrderPreview(
        valid=all(c.ok for c in checks),
        checks=checks,
        market_price=market,
        estimated_price=price,
        estimated_cost=cost,
        estimated_commission=commission,
        margin_impact=margin_impact,
        warnings=warnings,
    )


_ENVELOPE_FIELDS: Final = frozenset(Envelope.model_fields)


async def _what_if(ctx: Ctx, terms: SubmitOrder, warnings: list[str]) -> dict[str, Any] | None:
    """IB's what-if figures through the bridge (``PreviewBrokerOrder``); ``None`` with a
    warning naming why when IB could not be asked."""
    fields = terms.model_dump(include=set(PreviewBrokerOrder.model_fields) - _ENVELOPE_FIELDS)
    question = PreviewBrokerOrder.model_validate(fields)
    subject = subjects.preview_broker_order(terms.portfolio_id)
    try:
        answer = await send(ctx, subject, question, BrokerOrderPreviewed)
    except ApiError as exc:
        warnings.append(f"IB what-if margin impact not available: {exc.message}")
        return None
    if answer.warning:
        warnings.append(f"IB: {answer.warning}")
    return answer.model_dump(mode="json", exclude={"client_order_id", "warning"})
