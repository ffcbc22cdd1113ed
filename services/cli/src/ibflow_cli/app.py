"""The ``ibflow`` command tree (Typer + Rich), every command over NATS only.

See ``docs/operators.md`` for every command, the subject it uses, a plain ``nats``
CLI equivalent and the exit codes (:mod:`ibflow_cli.bus`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Final

import nats.errors
import typer
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import TypeAdapter, ValidationError
from rich.console import Console

from ibflow.bus import subjects
from ibflow.bus.publisher import TYPE_HEADER
from ibflow.bus.subjects import ALL_PORTFOLIOS
from ibflow.contracts import (
    AccountValuesReported,
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeysListed,
    BrokerErrorReported,
    BrokerPositionReported,
    CancelOrder,
    CommandAccepted,
    CreateApiKey,
    FlattenPositions,
    GatewayConnectionChanged,
    HaltTrading,
    ListApiKeys,
    OrderBookUpdated,
    OrderPurpose,
    OrderSide,
    OrderStatus,
    OrderType,
    PortfolioChanged,
    PositionChanged,
    PositionStatus,
    RequestReconciliation,
    RequestSessionSchedule,
    ResumeTrading,
    RevokeApiKey,
    SessionScheduleReported,
    SubmitOrder,
    TimeInForce,
    TradingHalted,
    TradingResumed,
    TriggerSessionEvent,
)
from ibflow_cli import render
from ibflow_cli.bus import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Bus,
    CliError,
    Options,
    build,
    default_actor,
    event_dict,
    with_bus,
)
from ibflow_cli.diagnose import Probe, diagnose, probe

app = typer.Typer(
    name="ibflow",
    help="Operate ibflow over NATS: status, orders, positions, halts, sessions, events. "
    "Exit codes: 0 ok, 1 refused (the reason is printed), 2 bad usage or input, "
    "3 NATS or the service unreachable / no answer in time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
orders_app = typer.Typer(
    help="List, place and cancel orders (the order-manager).", no_args_is_help=True
)
session_app = typer.Typer(help="The scheduler's trading-session events.", no_args_is_help=True)
keys_app = typer.Typer(help="The API's keys (served by the api).", no_args_is_help=True)
app.add_typer(orders_app, name="orders")
app.add_typer(session_app, name="session")
app.add_typer(keys_app, name="api-key")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_ACCOUNTS: Final = TypeAdapter(list[AccountValuesReported])
_POSITIONS: Final = TypeAdapter(list[BrokerPositionReported])
_OPEN_POSITION: Final = frozenset(
    {PositionStatus.PENDING, PositionStatus.OPEN, PositionStatus.CLOSING}
)


# --------------------------------------------------------------------------- plumbing


@app.callback()
def _global(
    ctx: typer.Context,
    nats_url: Annotated[
        str, typer.Option("--nats-url", envvar="IBFLOW_NATS_URL", help="NATS server(s)")
    ] = "nats://127.0.0.1:4222",
    creds: Annotated[
        str | None,
        typer.Option("--creds", envvar="IBFLOW_NATS_CREDS", help="NATS credentials file"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds to wait for an answer")
    ] = 10.0,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor", envvar="IBFLOW_OPERATOR", help="requested_by of commands (operator:<login>)"
        ),
    ] = None,
) -> None:
    ctx.obj = Options(nats_url, creds, timeout, actor or default_actor())


def _run(ctx: typer.Context, body: Callable[[Bus], Awaitable[int]]) -> None:
    options: Options = ctx.obj
    try:
        code = asyncio.run(with_bus(options, body))
    except CliError as exc:
        err.print(f"[bold red]error:[/] {render.escape(exc.message)}")
        raise typer.Exit(exc.code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _portfolio_scope(portfolio: str | None, all_portfolios: bool) -> str | None:
    if (portfolio is None) == (not all_portfolios):
        raise CliError(EXIT_USAGE, "give a portfolio id or --all (not both)")
    return portfolio


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(EXIT_USAGE, f"{what}: add --yes to confirm (no terminal to ask)")
    if not typer.confirm(f"{what}?"):
        raise CliError(EXIT_REFUSED, "not confirmed")


def _accepted(reply: CommandAccepted, what: str) -> None:
    extra = " (already done: duplicate)" if reply.duplicate else ""
    detail = f": {reply.detail}" if reply.detail else ""
    out.print(f"[green]accepted[/] {what}{extra}{detail}")


# --------------------------------------------------------------------------- reads


async def _orders(bus: Bus, portfolio: str) -> list[OrderBookUpdated]:
    """Every order of the portfolio still in the stream, at its latest revision."""
    latest: dict[str, OrderBookUpdated] = {}
    for event in await bus.replay(subjects.order_updated(portfolio), OrderBookUpdated):
        seen = latest.get(event.client_order_id)
        if seen is None or event.revision >= seen.revision:
            latest[event.client_order_id] = event
    return sorted(latest.values(), key=lambda order: order.created_at)


async def _positions(bus: Bus, portfolio: str) -> list[PositionChanged]:
    latest: dict[str, PositionChanged] = {}
    for event in await bus.replay(subjects.position_changed(portfolio), PositionChanged):
        seen = latest.get(event.position_id)
        if seen is None or event.revision >= seen.revision:
            latest[event.position_id] = event
    return [p for p in latest.values() if p.status in _OPEN_POSITION]


async def _connection(bus: Bus, portfolio: str) -> GatewayConnectionChanged | None:
    data = await bus.bridge_value(f"connection.{portfolio}")
    if data is None:
        return None
    try:
        return GatewayConnectionChanged.model_validate_json(data)
    except ValidationError:
        return None


async def _accounts(bus: Bus, portfolio: str) -> list[AccountValuesReported]:
    data = await bus.bridge_value(f"account.{portfolio}")
    try:
        return _ACCOUNTS.validate_json(data) if data else []
    except ValidationError:
        return []


async def _broker_positions(bus: Bus, portfolio: str) -> list[BrokerPositionReported] | None:
    """The broker's holdings; ``None`` when unknown. A ready connection whose snapshot
    listed no position stores no key: that one is flat."""
    data = await bus.bridge_value(f"positions.{portfolio}")
    if not data:
        connection = await _connection(bus, portfolio)
        return [] if connection is not None and connection.ready else None
    try:
        return _POSITIONS.validate_json(data)
    except ValidationError:
        return None


async def _halted(bus: Bus, portfolio: str) -> bool | None:
    """Halted by a halt of the portfolio or of every portfolio (the later event wins)."""

    async def scope(token: str) -> bool | None:
        halted = await bus.last(subjects.trading_halted(token), TradingHalted)
        resumed = await bus.last(subjects.trading_resumed(token), TradingResumed)
        if halted is None:
            return None if resumed is None else False
        return resumed is None or halted[0] > resumed[0]

    mine, everyone = await scope(portfolio), await scope(ALL_PORTFOLIOS)
    if mine is None and everyone is None:
        return None
    return bool(mine) or bool(everyone)


async def _schedule(bus: Bus, date: dt.date | None) -> SessionScheduleReported:
    return await bus.ask(
        subjects.REQUEST_SESSION_SCHEDULE,
        build(RequestSessionSchedule, session_date=date),
        SessionScheduleReported,
    )


async def _portfolios(bus: Bus, only: str | None) -> list[str]:
    known = await bus.portfolios()
    if only is None:
        return known
    if only not in known:
        raise CliError(
            EXIT_REFUSED,
            f"portfolio {only!r}: the gateway-bridge keeps no state for it "
            f"(known: {', '.join(known) or 'none'})",
        )
    return [only]


# --------------------------------------------------------------------------- status


@app.command()
def status(
    ctx: typer.Context,
    portfolio: Annotated[str | None, typer.Argument(help="one portfolio (default: all)")] = None,
) -> None:
    """Every portfolio's connection, money, positions, working orders; next session events."""

    async def body(bus: Bus) -> int:
        ids = await _portfolios(bus, portfolio)
        if not ids:
            out.print("no portfolio yet: the gateway-bridge has not stored any connection state")
        for pid in ids:
            connection = await _connection(bus, pid)
            accounts = await _accounts(bus, pid)
            money = await bus.last(subjects.portfolio_changed(pid), PortfolioChanged)
            halted = await _halted(bus, pid)
            out.print(render.portfolio_header(pid, connection, accounts, money, halted))
            orders = await _orders(bus, pid)
            working = [o for o in orders if not o.status.is_terminal]
            recent = [o for o in orders if o.status.is_terminal][-5:]
            out.print(
                render.positions_table(
                    await _positions(bus, pid), await _broker_positions(bus, pid)
                )
            )
            out.print(render.orders_table(working, title="working orders"))
            if recent:
                out.print(render.orders_table(recent, title="last finished orders"))
        try:
            schedule = await _schedule(bus, None)
        except CliError as exc:
            err.print(f"[yellow]session schedule unavailable:[/] {render.escape(exc.message)}")
        else:
            out.print(render.next_session_events(schedule))
        return EXIT_OK

    _run(ctx, body)


@app.command()
def positions(
    ctx: typer.Context,
    portfolio: Annotated[str | None, typer.Argument(help="one portfolio (default: all)")] = None,
) -> None:
    """Open positions (the position-monitor's) and the broker's holdings (the bridge's)."""

    async def body(bus: Bus) -> int:
        for pid in await _portfolios(bus, portfolio):
            out.print(f"[bold]{pid}[/]")
            out.print(
                render.positions_table(
                    await _positions(bus, pid), await _broker_positions(bus, pid)
                )
            )
        return EXIT_OK

    _run(ctx, body)


# --------------------------------------------------------------------------- orders


@orders_app.command("list")
def orders_list(
    ctx: typer.Context,
    portfolio: Annotated[str | None, typer.Argument(help="one portfolio (default: all)")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="finished orders too")] = False,
    limit: Annotated[int, typer.Option(min=1, help="at most this many (newest)")] = 50,
) -> None:
    """Orders as the order-manager last published them (working ones unless --all)."""

    async def body(bus: Bus) -> int:
        for pid in await _portfolios(bus, portfolio):
            orders = await _orders(bus, pid)
            shown = orders if show_all else [o for o in orders if not o.status.is_terminal]
            title = f"{pid}: {'orders' if show_all else 'working orders'} ({len(shown)})"
            out.print(render.orders_table(shown[-limit:], title=title))
        return EXIT_OK

    _run(ctx, body)


@orders_app.command("place")
def orders_place(  # noqa: PLR0917 - Typer maps parameters to arguments and options
    ctx: typer.Context,
    portfolio: Annotated[str, typer.Argument(help="portfolio id")],
    side: Annotated[OrderSide, typer.Argument(case_sensitive=False, help="BUY or SELL")],
    quantity: Annotated[str, typer.Argument(help="shares (a decimal)")],
    symbol: Annotated[str, typer.Argument(help="e.g. AAPL")],
    order_type: Annotated[
        OrderType, typer.Option("--type", case_sensitive=False, help="order type")
    ] = OrderType.MKT,
    limit: Annotated[str | None, typer.Option("--limit", help="limit price")] = None,
    stop: Annotated[str | None, typer.Option("--stop", help="stop (trigger) price")] = None,
    tif: Annotated[TimeInForce, typer.Option(case_sensitive=False)] = TimeInForce.DAY,
    client_order_id: Annotated[
        str | None, typer.Option("--id", help="client order id (default: generated)")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="seconds to follow the order until it is done (0: no)")
    ] = 15.0,
) -> None:
    """Place a manual order through the order-manager (risk checks and halts apply)."""

    async def body(bus: Bus) -> int:
        coid = (
            client_order_id or f"op-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
        )
        command = build(
            SubmitOrder,
            portfolio_id=portfolio,
            client_order_id=coid,
            symbol=symbol.upper(),
            side=side,
            order_type=order_type,
            quantity=_decimal("quantity", quantity),
            limit_price=_decimal("--limit", limit),
            stop_price=_decimal("--stop", stop),
            tif=tif,
            purpose=OrderPurpose.MANUAL,
            requested_by=bus.options.actor,
        )
        updates = await bus.nc.subscribe(subjects.order_updated(portfolio))
        try:
            reply = await bus.ask(subjects.SUBMIT_ORDER, command, CommandAccepted)
            _accepted(reply, f"order {coid}: {side} {quantity} {command.symbol} {order_type}")
            if wait <= 0:
                return EXIT_OK
            return await _follow(updates, coid, wait)
        finally:
            await updates.unsubscribe()

    _run(ctx, body)


async def _follow(updates: Subscription, coid: str, within: float) -> int:
    """Print the order's transitions until it is done or ``within`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await updates.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            break
        try:
            order = OrderBookUpdated.model_validate_json(msg.data)
        except ValidationError:
            continue
        if order.client_order_id != coid:
            continue
        out.print(render.order_line(order))
        if order.status.is_terminal:
            return EXIT_REFUSED if order.status is OrderStatus.REJECTED else EXIT_OK
    out.print(f"order {coid} is not done after {within:g}s; follow it with `ibflow orders list`")
    return EXIT_OK


def _decimal(name: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise CliError(EXIT_USAGE, f"{name}: not a decimal number ({value!r})") from None
    if not number.is_finite():
        raise CliError(EXIT_USAGE, f"{name}: not a finite number ({value!r})")
    return number


@orders_app.command("cancel")
def orders_cancel(
    ctx: typer.Context,
    portfolio: Annotated[str, typer.Argument(help="portfolio id")],
    client_order_id: Annotated[str, typer.Argument(help="the order's client order id")],
    reason: Annotated[str, typer.Option(help="why (audited)")] = "operator cancel",
) -> None:
    """Cancel one of our working orders."""

    async def body(bus: Bus) -> int:
        command = build(
            CancelOrder,
            portfolio_id=portfolio,
            client_order_id=client_order_id,
            reason=reason,
            requested_by=bus.options.actor,
        )
        reply = await bus.ask(subjects.CANCEL_ORDER, command, CommandAccepted)
        _accepted(reply, f"cancel of {client_order_id}")
        return EXIT_OK

    _run(ctx, body)


# --------------------------------------------------------------------------- control

PortfolioArg = Annotated[str | None, typer.Argument(help="portfolio id (or --all)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every portfolio")]
ReasonOpt = Annotated[str, typer.Option(help="why (audited)")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


@app.command()
def halt(
    ctx: typer.Context,
    portfolio: PortfolioArg = None,
    all_portfolios: AllOpt = False,
    reason: ReasonOpt = "operator halt",
) -> None:
    """Stop new entry and manual orders (exits still go through)."""

    async def body(bus: Bus) -> int:
        scope = _portfolio_scope(portfolio, all_portfolios)
        command = build(
            HaltTrading, portfolio_id=scope, reason=reason, requested_by=bus.options.actor
        )
        reply = await bus.ask(subjects.HALT_TRADING, command, CommandAccepted)
        _accepted(reply, f"halt of {scope or 'every portfolio'}")
        return EXIT_OK

    _run(ctx, body)


@app.command()
def resume(
    ctx: typer.Context,
    portfolio: PortfolioArg = None,
    all_portfolios: AllOpt = False,
    reason: ReasonOpt = "operator resume",
) -> None:
    """Lift a halt."""

    async def body(bus: Bus) -> int:
        scope = _portfolio_scope(portfolio, all_portfolios)
        command = build(
            ResumeTrading, portfolio_id=scope, reason=reason, requested_by=bus.options.actor
        )
        reply = await bus.ask(subjects.RESUME_TRADING, command, CommandAccepted)
        _accepted(reply, f"resume of {scope or 'every portfolio'}")
        return EXIT_OK

    _run(ctx, body)


@app.command()
def flatten(  # noqa: PLR0917 - Typer maps parameters to arguments and options
    ctx: typer.Context,
    portfolio: PortfolioArg = None,
    all_portfolios: AllOpt = False,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", help="only these symbols (repeatable)")
    ] = None,
    reason: ReasonOpt = "operator flatten",
    yes: YesOpt = False,
) -> None:
    """Close open positions now with market orders (the position-monitor)."""

    async def body(bus: Bus) -> int:
        scope = _portfolio_scope(portfolio, all_portfolios)
        symbols = tuple(s.upper() for s in symbol or ())
        command = build(
            FlattenPositions,
            portfolio_id=scope,
            symbols=symbols,
            reason=reason,
            requested_by=bus.options.actor,
        )
        what = f"flatten {', '.join(symbols) or 'every position'} of {scope or 'every portfolio'}"
        _confirm(what, yes)
        reply = await bus.ask(subjects.FLATTEN_POSITIONS, command, CommandAccepted)
        _accepted(reply, what)
        if reply.client_order_ids:
            out.print("exit orders: " + ", ".join(reply.client_order_ids))
        return EXIT_OK

    _run(ctx, body)


@app.command()
def reconcile(
    ctx: typer.Context,
    portfolio: PortfolioArg = None,
    all_portfolios: AllOpt = False,
    refresh: Annotated[bool, typer.Option(help="take a fresh broker snapshot first")] = True,
) -> None:
    """Compare the position-monitor's book with the broker's holdings now."""

    async def body(bus: Bus) -> int:
        scope = _portfolio_scope(portfolio, all_portfolios)
        command = build(
            RequestReconciliation,
            portfolio_id=scope,
            refresh=refresh,
            requested_by=bus.options.actor,
        )
        reply = await bus.ask(subjects.REQUEST_RECONCILIATION, command, CommandAccepted)
        _accepted(reply, f"reconciliation of {scope or 'every portfolio'}")
        out.print(
            "the result arrives as ReconciliationReported: ibflow events tail "
            "--subject 'ibflow.evt.v1.position.>'"
        )
        return EXIT_OK

    _run(ctx, body)


# --------------------------------------------------------------------------- session


@session_app.command("schedule")
def session_schedule(
    ctx: typer.Context,
    date: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="session date (default today)")
    ] = None,
) -> None:
    """A session's events with their state, and the next session's."""

    async def body(bus: Bus) -> int:
        reply = await _schedule(bus, date.date() if date else None)
        out.print(render.schedule(reply))
        return EXIT_OK

    _run(ctx, body)


@session_app.command("trigger")
def session_trigger(  # noqa: PLR0917 - Typer maps parameters to arguments and options
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="event name, e.g. morning_entry, close_out")],
    date: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="session date (default today)")
    ] = None,
    force: Annotated[bool, typer.Option(help="even outside the session (audited)")] = False,
    reason: ReasonOpt = "operator trigger",
    yes: YesOpt = False,
) -> None:
    """Emit a session event now (manual, with the next sequence number of the day)."""

    async def body(bus: Bus) -> int:
        command = build(
            TriggerSessionEvent,
            name=name,
            session_date=date.date() if date else None,
            force=force,
            reason=reason,
            requested_by=bus.options.actor,
        )
        _confirm(f"trigger {name}" + (" (forced)" if force else ""), yes)
        reply = await bus.ask(subjects.TRIGGER_SESSION_EVENT, command, CommandAccepted)
        _accepted(reply, f"session event {name}")
        return EXIT_OK

    _run(ctx, body)


# --------------------------------------------------------------------------- events


@app.command()
def events(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="tail")] = "tail",
    subject: Annotated[
        str, typer.Option("--subject", "-s", help="subject filter (wildcards * and >)")
    ] = "ibflow.evt.v1.>",
    count: Annotated[
        int, typer.Option(min=0, help="stop after this many messages (0: until Ctrl-C)")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """`events tail`: print events live, prettily, until Ctrl-C."""
    if action != "tail":
        err.print(f"[bold red]error:[/] unknown action {action!r}: only `events tail`")
        raise typer.Exit(EXIT_USAGE)

    async def body(bus: Bus) -> int:
        done = asyncio.Event()
        seen = 0

        async def on_msg(msg: Msg) -> None:
            nonlocal seen
            kind = (msg.headers or {}).get(TYPE_HEADER, "")
            if as_json:
                line = {"subject": msg.subject, "type": kind, "data": event_dict(msg)}
                sys.stdout.write(json.dumps(line, default=str) + "\n")
                sys.stdout.flush()
            else:
                out.print(render.event_line(msg.subject, kind, event_dict(msg)))
            seen += 1
            if count and seen >= count:
                done.set()

        sub = await bus.nc.subscribe(subject, cb=on_msg)
        await bus.nc.flush()
        err.print(f"following {subject} on {bus.options.nats_url} (Ctrl-C stops)")
        try:
            await done.wait()
        finally:
            await sub.unsubscribe()
        return EXIT_OK

    _run(ctx, body)


# --------------------------------------------------------------------------- test-connection


@app.command("test-connection")
def connection_test(
    ctx: typer.Context,
    portfolio: Annotated[str, typer.Argument(help="portfolio id")],
    tcp: Annotated[
        bool, typer.Option(help="also try a plain TCP connect to the gateway's host:port")
    ] = True,
) -> None:
    """Why a portfolio's IB connection is not ready, and the fix (exit 0 when it is)."""

    async def body(bus: Bus) -> int:
        state = await _connection(bus, portfolio)
        last_error = await bus.last(subjects.broker_error(portfolio), BrokerErrorReported)
        accounts = tuple(a.account_id for a in await _accounts(bus, portfolio))
        outcome = Probe.NOT_TRIED
        ready = state is not None and state.ready
        if tcp and state is not None and not ready:
            outcome = await asyncio.to_thread(probe, state.host, state.port)
        result = diagnose(
            portfolio,
            state,
            last_error=None if last_error is None else last_error[1],
            reported_accounts=accounts,
            tcp=outcome,
        )
        out.print(render.diagnosis(portfolio, state, result, outcome))
        return EXIT_OK if result.ok else EXIT_REFUSED

    _run(ctx, body)


# --------------------------------------------------------------------------- api keys


class KeyScope(StrEnum):
    """``--scope`` of ``api-key create``."""

    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


@keys_app.command("create")
def api_key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="what the key is for")],
    scope: Annotated[KeyScope, typer.Option(case_sensitive=False)] = KeyScope.READ,
) -> None:
    """Create a key and print it: it is shown this once and cannot be read back."""

    async def body(bus: Bus) -> int:
        command = build(CreateApiKey, name=name, scope=scope.value, requested_by=bus.options.actor)
        reply = await bus.ask(subjects.CREATE_API_KEY, command, ApiKeyCreated)
        out.print(f"id:    {reply.key.key_id}\nname:  {reply.key.name}\nscope: {reply.key.scope}")
        sys.stdout.write(f"key:   {reply.secret}\n")
        sys.stdout.flush()
        err.print("Store the key now: it is not shown again.")
        return EXIT_OK

    _run(ctx, body)


@keys_app.command("list")
def api_key_list(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="revoked keys too")] = False,
) -> None:
    """The keys (never their secrets), oldest first."""

    async def body(bus: Bus) -> int:
        command = build(ListApiKeys, include_revoked=show_all, requested_by=bus.options.actor)
        reply = await bus.ask(subjects.LIST_API_KEYS, command, ApiKeysListed)
        out.print(render.api_keys(reply))
        return EXIT_OK

    _run(ctx, body)


@keys_app.command("revoke")
def api_key_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="the key's id (12 hex characters)")],
    reason: ReasonOpt = "",
) -> None:
    """Revoke a key now (the api stops accepting it within its key cache delay)."""

    async def body(bus: Bus) -> int:
        command = build(RevokeApiKey, key_id=key_id, reason=reason, requested_by=bus.options.actor)
        reply = await bus.ask(subjects.REVOKE_API_KEY, command, ApiKeyRevoked)
        out.print(f"[green]revoked[/] {reply.key.key_id} ({reply.key.name}, {reply.key.scope})")
        return EXIT_OK

    _run(ctx, body)
