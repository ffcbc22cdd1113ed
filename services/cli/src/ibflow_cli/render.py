"""Rich renderings of what the CLI reads: portfolios, orders, positions, sessions, events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final

from rich.console import Group, RenderableType
from rich.markup import escape as _escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ibflow.contracts import (
    AccountValuesReported,
    ApiKeysListed,
    BrokerPositionReported,
    ConnectionState,
    GatewayConnectionChanged,
    OccurrenceState,
    OrderBookUpdated,
    OrderStatus,
    PortfolioChanged,
    PositionChanged,
    ScheduledOccurrence,
    SessionSchedule,
    SessionScheduleReported,
)
from ibflow_cli.diagnose import Diagnosis, Probe

_STATE_STYLE: Final = {
    ConnectionState.READY: "bold green",
    ConnectionState.DEGRADED: "yellow",
    ConnectionState.SYNCHRONISING: "cyan",
    ConnectionState.CONNECTING: "cyan",
    ConnectionState.IB_CONNECTIVITY_LOST: "bold red",
    ConnectionState.DISCONNECTED: "bold red",
}
_ORDER_STYLE: Final = {
    OrderStatus.FILLED: "green",
    OrderStatus.REJECTED: "red",
    OrderStatus.CANCELLED: "dim",
    OrderStatus.UNKNOWN: "bold red",
}
_SUMMARY_FIELDS: Final = (
    "portfolio_id",
    "state",
    "name",
    "client_order_id",
    "position_id",
    "symbol",
    "side",
    "quantity",
    "status",
    "ib_status",
    "filled",
    "filled_quantity",
    "avg_fill_price",
    "price",
    "shares",
    "commission",
    "position",
    "code",
    "reason",
    "message",
    "error_message",
    "cash_balance",
    "realized_pnl",
    "complete",
)


def escape(text: str) -> str:
    """``text`` with Rich markup neutralised."""
    return _escape(text)


def _num(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return format(value.normalize(), "f")


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}Z"


def portfolio_header(
    portfolio: str,
    connection: GatewayConnectionChanged | None,
    accounts: list[AccountValuesReported],
    money: tuple[int, PortfolioChanged] | None,
    halted: bool | None,
) -> RenderableType:
    """One portfolio's connection, account and money, as a panel."""
    lines: list[Text] = []
    if connection is None:
        lines.append(Text("connection: unknown (no state from the gateway-bridge)", style="red"))
    else:
        state = Text(str(connection.state), style=_STATE_STYLE.get(connection.state, ""))
        line = Text("connection: ").append(state)
        line.append(
            f"  {connection.host}:{connection.port} client {connection.client_id}"
            f"  account {connection.account_id or '?'}  ({connection.gateway_type})"
        )
        if connection.last_heartbeat is not None:
            line.append(f"  heartbeat {_time(connection.last_heartbeat)}")
        lines.append(line)
        if connection.error_message and not connection.ready:
            lines.append(Text(f"last error: {connection.error_message}", style="red"))
    for account in accounts:
        lines.append(
            Text(
                f"broker {account.account_id}: net liquidation {_num(account.net_liquidation)}"
                f"  cash {_num(account.total_cash_value)}  buying power"
                f" {_num(account.buying_power)} {account.currency}"
            )
        )
    if money is not None:
        figures = money[1]
        lines.append(
            Text(
                f"book {figures.session_date}: cash {_num(figures.cash_balance)} {figures.currency}"
                f"  realized P&L {_num(figures.realized_pnl)}  commissions"
                f" {_num(figures.commissions)}  exposure {_num(figures.gross_exposure)}"
                f"  open orders {figures.open_orders}"
            )
        )
    if halted is not None:
        lines.append(
            Text("trading: HALTED", style="bold red") if halted else Text("trading: active")
        )
    return Panel(Group(*lines), title=f"[bold]{escape(portfolio)}[/]", title_align="left")


def order_line(order: OrderBookUpdated) -> Text:
    """One order's latest state on one line (``orders place`` follows an order with it)."""
    text = Text(f"{order.client_order_id}  ")
    text.append(str(order.status), style=_ORDER_STYLE.get(order.status, "cyan"))
    text.append(
        f"  {order.side} {_num(order.quantity)} {order.symbol} {order.order_type}"
        f"  filled {_num(order.filled_quantity)}"
        + (f" @ {_num(order.avg_fill_price)}" if order.avg_fill_price is not None else "")
    )
    if order.status_message:
        text.append(f"  ({order.status_message})", style="dim")
    return text


def orders_table(orders: list[OrderBookUpdated], *, title: str) -> RenderableType:
    """Orders as a table (newest last); one line when there is none."""
    if not orders:
        return Text(f"{title}: none")
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("client order id", "status", "order", "limit", "filled", "avg", "created"):
        table.add_column(column, no_wrap=column in {"client order id", "order", "created"})
    for order in orders:
        table.add_row(
            order.client_order_id,
            Text(str(order.status), style=_ORDER_STYLE.get(order.status, "cyan")),
            f"{order.side} {_num(order.quantity)} {order.symbol} {order.order_type}",
            _num(order.limit_price),
            _num(order.filled_quantity),
            _num(order.avg_fill_price),
            f"{order.created_at.astimezone(dt.UTC):%H:%M:%S}",
        )
    return table


def positions_table(
    book: list[PositionChanged], broker: list[BrokerPositionReported] | None
) -> RenderableType:
    """Open positions of the book and the broker's holdings, side by side."""
    if not book:
        ours: RenderableType = Text("open positions: none")
    else:
        ours = _book_table(book)
    held = [h for h in broker or () if h.position != 0]
    if not held:
        flat = "unknown (no snapshot from the gateway-bridge)" if broker is None else "none"
        return Group(ours, Text(f"broker holdings: {flat}"))
    theirs = Table(
        title="broker holdings" + (" (unknown)" if broker is None else f" ({len(held)})"),
        title_justify="left",
    )
    for column in ("account", "symbol", "position", "avg cost"):
        theirs.add_column(column)
    for h in held:
        theirs.add_row(h.account_id, h.symbol, _num(h.position), _num(h.avg_cost))
    return Group(ours, theirs)


def _book_table(book: list[PositionChanged]) -> Table:
    ours = Table(title=f"open positions ({len(book)})", title_justify="left")
    for column in (
        "position",
        "symbol",
        "side",
        "qty",
        "entry",
        "stop",
        "target",
        "status",
        "realized P&L",
    ):
        ours.add_column(column)
    for p in book:
        ours.add_row(
            p.position_id,
            p.symbol,
            str(p.side),
            _num(p.quantity),
            _num(p.avg_entry_price),
            _num(p.stop_loss),
            _num(p.take_profit),
            str(p.status),
            _num(p.realized_pnl),
        )
    return ours


def _occurrences(session: SessionSchedule, *, pending_only: bool) -> Table:
    table = Table(
        title=f"session {session.session_date} ({_time(session.session_open)} -"
        f" {_time(session.session_close)}{', half day' if session.early_close else ''})",
        title_justify="left",
    )
    for column in ("event", "due", "state", "emitted", "note"):
        table.add_column(column)
    for occ in session.occurrences:
        if pending_only and occ.state is not OccurrenceState.PENDING:
            continue
        note = ", ".join(
            part
            for part in (
                "late" if occ.late else "",
                "manual" if occ.manual else "",
                occ.reason or "",
            )
            if part
        )
        table.add_row(
            occ.name, _time(occ.scheduled_for), str(occ.state), _time(occ.emitted_at), note
        )
    return table


def next_session_events(reply: SessionScheduleReported) -> RenderableType:
    """The next pending occurrence of each session event (today's, else the next
    session's), in time order."""
    sessions = [reply.session] if reply.session is not None else []
    sessions.append(reply.next_session)
    nexts: dict[str, ScheduledOccurrence] = {}
    for session in sessions:
        for occ in session.occurrences:
            if occ.state is OccurrenceState.PENDING and occ.name not in nexts:
                nexts[occ.name] = occ
    table = Table(title="next session events", title_justify="left")
    for column in ("event", "due", "in"):
        table.add_column(column)
    for occ in sorted(nexts.values(), key=lambda o: o.scheduled_for):
        left = occ.scheduled_for - reply.as_of
        hours, rest = divmod(int(left.total_seconds()) // 60, 60)
        table.add_row(occ.name, _time(occ.scheduled_for), f"{hours}h{rest:02d}m")
    return table


def schedule(reply: SessionScheduleReported) -> RenderableType:
    """A session's occurrences with their state, and the next session's."""
    parts: list[RenderableType] = [
        Text(f"scheduler time {_time(reply.as_of)}, leader {reply.leader or 'none'}")
    ]
    if reply.session is None:
        parts.append(Text("no session that day (exchange closed)"))
    else:
        parts.append(_occurrences(reply.session, pending_only=False))
    parts.append(_occurrences(reply.next_session, pending_only=False))
    return Group(*parts)


def _clock(value: object) -> str:
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return ""
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def event_line(subject: str, kind: str, data: dict[str, object]) -> Text:
    """One event, prettily: time, type, subject and its telling fields."""
    stamp = _clock(data.get("ts_event") or data.get("ts_init"))
    text = Text(f"{stamp:<12} ", style="dim")
    style = "red" if "Reject" in kind or "Error" in kind or "DeadLetter" in kind else "bold"
    text.append(f"{kind or '?':<26}", style=style)
    text.append(f" {subject}", style="dim")
    for name in _SUMMARY_FIELDS:
        value = data.get(name)
        if value is None or value == "":
            continue
        text.append(f"  {name}=", style="dim")
        text.append(str(value))
    return text


def diagnosis(
    portfolio: str, state: GatewayConnectionChanged | None, result: Diagnosis, tcp: Probe
) -> RenderableType:
    """The outcome of ``test-connection``."""
    lines: list[Text] = []
    if state is not None:
        lines.append(
            Text(
                f"gateway {state.host}:{state.port} ({state.gateway_type}), client id"
                f" {state.client_id}, account {state.account_id or '?'}, state {state.state}"
            )
        )
    if tcp is not Probe.NOT_TRIED:
        lines.append(Text(f"TCP connect to the gateway: {tcp}"))
    verdict = Text(
        "OK" if result.ok else f"PROBLEM: {result.problem}",
        style="bold green" if result.ok else "bold red",
    )
    lines.append(verdict)
    lines.append(Text(result.finding))
    if not result.ok:
        lines.append(Text("fix: ", style="bold").append(result.fix, style=""))
    return Panel(Group(*lines), title=f"test-connection {escape(portfolio)}", title_align="left")


def api_keys(reply: ApiKeysListed) -> RenderableType:
    """The API's keys, without secrets."""
    if not reply.keys:
        return Text("no API key")
    table = Table(title=f"API keys ({len(reply.keys)})", title_justify="left")
    for column in ("id", "name", "scope", "created", "by", "last used", "revoked"):
        table.add_column(column, no_wrap=column == "id")
    for key in reply.keys:
        table.add_row(
            key.key_id,
            key.name,
            key.scope,
            _time(key.created_at),
            key.created_by,
            _time(key.last_used_at),
            _time(key.revoked_at) if key.revoked_at else "",
        )
    return table
