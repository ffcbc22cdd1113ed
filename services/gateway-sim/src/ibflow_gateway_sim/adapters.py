"""Translation between the wire layer (:mod:`.protocol`) and the engine (:mod:`.domain`).

Pure functions: decoded placeOrder → :class:`~.domain.OrderRequest`, engine snapshots →
the views the response encoders take, quotes → tick frames, and the small text formats
IB uses (times, durations, bar sizes).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

from ibflow_gateway_sim.domain import (
    Bar,
    CommissionCharged,
    Instrument,
    OrderRequest,
    Quote,
    SimExecution,
    SimOrder,
)
from ibflow_gateway_sim.protocol import (
    BarView,
    ContractDetailsView,
    ContractSpec,
    ExecutionView,
    OrderFields,
    OrderStateView,
    ids,
    responses,
)

__all__ = [
    "bar_view",
    "commission_frame",
    "contract_details_view",
    "contract_of",
    "echo_fields",
    "execution_view",
    "format_bar_date",
    "order_request",
    "order_state",
    "parse_bar_size",
    "parse_duration",
    "parse_ib_time",
    "quote_frames",
]

_EASTERN: Final = ZoneInfo("America/New_York")


def contract_of(inst: Instrument) -> ContractSpec:
    """The full contract IB reports for ``inst`` (what qualifyContracts fills in)."""
    return ContractSpec(
        con_id=inst.con_id,
        symbol=inst.symbol,
        sec_type=inst.sec_type,
        strike=Decimal("0.0"),
        exchange=inst.exchange,
        primary_exchange=inst.primary_exchange,
        currency=inst.currency,
        local_symbol=inst.local_symbol,
        trading_class=inst.trading_class,
    )


def _hours(now: datetime, start: str, end: str) -> str:
    today = now.astimezone(_EASTERN).date()
    days = [today + timedelta(days=n) for n in range(2)]
    return ";".join(f"{d:%Y%m%d}:{start}-{d:%Y%m%d}:{end}" for d in days)


def contract_details_view(inst: Instrument, now: datetime) -> ContractDetailsView:
    """contractDetails payload for ``inst`` (US stock hours in US/Eastern)."""
    return ContractDetailsView(
        contract=contract_of(inst),
        min_tick=inst.min_tick,
        market_name=inst.trading_class,
        long_name=inst.long_name.encode("ascii", "replace").decode().replace("\\", "/"),
        industry=inst.industry,
        category=inst.category,
        subcategory=inst.category,
        trading_hours=_hours(now, "0400", "2000"),
        liquid_hours=_hours(now, "0930", "1600"),
        market_rule_ids="26,26,26,26,26,26,26",
        sec_ids=(("ISIN", f"US{inst.con_id:010d}"),),
    )


def parse_ib_time(text: str) -> datetime | None:
    """Parse IB's ``YYYYMMDD HH:MM:SS[ tz]`` / ``YYYYMMDD-HH:MM:SS`` / ``YYYYMMDD``.

    No zone (or UTC/GMT) means UTC. Returns ``None`` for ``''`` or anything unparsable.
    """
    match = re.fullmatch(r"(\d{8})(?:[ -]+(\d{1,2}:\d{2}:\d{2})(?:\s+(\S+))?)?", text.strip())
    if match is None:
        return None
    try:
        moment = datetime.strptime(f"{match[1]} {match[2] or '00:00:00'}", "%Y%m%d %H:%M:%S")
        zone = match[3]
        if zone is None or zone.upper() in ("UTC", "GMT"):
            return moment.replace(tzinfo=UTC)
        return moment.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (KeyError, ValueError):
        return None


def order_request(fields: OrderFields, inst: Instrument) -> OrderRequest:
    """The engine's view of a decoded placeOrder.

    Raises :class:`ValueError` with IB-style reason text when the order cannot be
    expressed (e.g. an action other than BUY/SELL).
    """
    action = fields.action.upper()
    if action not in ("BUY", "SELL"):
        raise ValueError(f"Invalid action {fields.action!r}")
    good_till = parse_ib_time(fields.good_till_date) if fields.good_till_date else None
    return OrderRequest(
        symbol=inst.symbol,
        con_id=inst.con_id,
        action="BUY" if action == "BUY" else "SELL",
        quantity=fields.total_quantity,
        order_type=fields.order_type.upper(),
        account=fields.account,
        lmt_price=fields.lmt_price,
        aux_price=fields.aux_price,
        trailing_percent=fields.trailing_percent,
        trail_stop_price=fields.trail_stop_price,
        tif=fields.effective_tif.upper(),
        outside_rth=fields.outside_rth,
        parent_id=fields.parent_id,
        transmit=fields.transmit,
        oca_group=fields.oca_group,
        oca_type=fields.oca_type,
        order_ref=fields.order_ref,
        all_or_none=fields.all_or_none,
        good_till_date=good_till,
    )


def fields_from_request(request: OrderRequest) -> OrderFields:
    """OrderFields for an order the simulator did not receive over the wire."""
    return OrderFields(
        action=request.action,
        total_quantity=request.quantity,
        order_type=request.order_type,
        lmt_price=request.lmt_price,
        aux_price=request.aux_price,
        tif=request.tif,
        account=request.account,
        order_ref=request.order_ref,
        parent_id=request.parent_id,
        outside_rth=request.outside_rth,
        oca_group=request.oca_group,
        oca_type=request.oca_type,
        trailing_percent=request.trailing_percent,
        trail_stop_price=request.trail_stop_price,
    )


def echo_fields(fields: OrderFields | None, order: SimOrder) -> OrderFields:
    """The order fields to echo in openOrder for ``order``.

    The client's own fields, with what TWS fills in: the account, the effective tif and
    the current total quantity.
    """
    base = fields if fields is not None else fields_from_request(order.request)
    return replace(
        base,
        account=order.account,
        tif=base.effective_tif,
        total_quantity=order.quantity,
        transmit=True,
    )


def order_state(order: SimOrder) -> OrderStateView:
    """openOrder's orderState for an order snapshot."""
    return OrderStateView(status=order.status)


def execution_view(execution: SimExecution) -> ExecutionView:
    """execDetails payload for one engine execution."""
    order = execution.order
    return ExecutionView(
        exec_id=execution.exec_id,
        time=execution.time,
        account=execution.account,
        exchange=execution.exchange,
        side=execution.side,
        shares=execution.shares,
        price=execution.price,
        perm_id=order.perm_id,
        client_id=order.client_id,
        order_id=order.order_id,
        cum_qty=execution.cum_qty,
        avg_price=execution.avg_price,
        order_ref=order.request.order_ref,
        last_liquidity=execution.liquidity,
    )


def commission_frame(event: CommissionCharged) -> bytes:
    """commissionReport (59) for one engine commission (unset realized P&L when none)."""
    return responses.commission_report(
        event.exec_id, event.commission, event.currency, realized_pnl=event.realized_pnl
    )


# --- market data ------------------------------------------------------------------------------

_LIVE: Final = {
    "bid": ids.TICK_BID,
    "ask": ids.TICK_ASK,
    "last": ids.TICK_LAST,
    "high": ids.TICK_HIGH,
    "low": ids.TICK_LOW,
    "close": ids.TICK_CLOSE,
    "open": ids.TICK_OPEN,
    "volume": ids.TICK_VOLUME,
    "time": ids.TICK_LAST_TIMESTAMP,
}
_DELAYED: Final = {
    "bid": ids.TICK_DELAYED_BID,
    "ask": ids.TICK_DELAYED_ASK,
    "last": ids.TICK_DELAYED_LAST,
    "high": ids.TICK_DELAYED_HIGH,
    "low": ids.TICK_DELAYED_LOW,
    "close": ids.TICK_DELAYED_CLOSE,
    "open": ids.TICK_DELAYED_OPEN,
    "volume": ids.TICK_DELAYED_VOLUME,
    "time": ids.TICK_DELAYED_LAST_TIMESTAMP,
}


def quote_frames(
    req_id: int, quote: Quote, previous: Quote | None, *, delayed: bool
) -> list[bytes]:
    """Tick frames moving a client from ``previous`` (``None``: nothing yet) to ``quote``.

    Bid/ask/last carry their sizes inside tickPrice (spec §4.1); a zero bid/ask size is
    never sent (ib_async would blank the price). Delayed data uses the delayed tick ids.
    """
    t = _DELAYED if delayed else _LIVE
    frames: list[bytes] = []
    p = previous
    if (
        quote.bid > 0
        and quote.bid_size > 0
        and (p is None or (p.bid, p.bid_size) != (quote.bid, quote.bid_size))
    ):
        frames.append(responses.tick_price(req_id, t["bid"], quote.bid, quote.bid_size, 1))
    if (
        quote.ask > 0
        and quote.ask_size > 0
        and (p is None or (p.ask, p.ask_size) != (quote.ask, quote.ask_size))
    ):
        frames.append(responses.tick_price(req_id, t["ask"], quote.ask, quote.ask_size, 1))
    traded = p is None or (p.last, p.last_size, p.volume) != (
        quote.last,
        quote.last_size,
        quote.volume,
    )
    if quote.last > 0 and traded:
        frames.append(responses.tick_price(req_id, t["last"], quote.last, quote.last_size))
    if p is None or p.volume != quote.volume:
        frames.append(responses.tick_size(req_id, t["volume"], quote.volume))
    for name in ("high", "low", "open", "close"):
        value: Decimal = getattr(quote, name)
        if value > 0 and (p is None or getattr(p, name) != value):
            frames.append(responses.tick_price(req_id, t[name], value))
    if quote.last > 0 and traded:
        frames.append(responses.tick_string(req_id, t["time"], str(int(quote.ts.timestamp()))))
    return frames


# --- historical data --------------------------------------------------------------------------

_DURATION_UNITS: Final = {"S": 1, "D": 86_400, "W": 7 * 86_400, "M": 30 * 86_400, "Y": 365 * 86_400}
_BAR_UNITS: Final = {
    "sec": 1,
    "secs": 1,
    "min": 60,
    "mins": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86_400,
    "days": 86_400,
    "week": 7 * 86_400,
    "weeks": 7 * 86_400,
    "month": 30 * 86_400,
    "months": 30 * 86_400,
}


def parse_duration(text: str) -> int:
    """``'5 D'`` → seconds. Raises :class:`ValueError` for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([SDWMY])\s*", text.upper())
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"invalid duration {text!r}")
    return int(match[1]) * _DURATION_UNITS[match[2]]


def parse_bar_size(text: str) -> int:
    """``'5 mins'`` → seconds. Raises :class:`ValueError` for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]+)\s*", text.lower())
    if match is None or match[2] not in _BAR_UNITS or int(match[1]) <= 0:
        raise ValueError(f"invalid bar size {text!r}")
    return int(match[1]) * _BAR_UNITS[match[2]]


def format_bar_date(moment: datetime, bar_seconds: int, format_date: int) -> str:
    """A bar's date as IB sends it: ``YYYYMMDD`` for daily+ bars, else
    ``YYYYMMDD HH:MM:SS UTC`` (formatDate 1) or epoch seconds (formatDate 2)."""
    if bar_seconds >= 86_400:
        day: date = moment.astimezone(UTC).date()
        return f"{day:%Y%m%d}"
    if format_date == 2:
        return str(int(moment.timestamp()))
    return moment.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def bar_view(bar: Bar, bar_seconds: int, format_date: int) -> BarView:
    """historicalData row for one engine bar."""
    return BarView(
        date=format_bar_date(bar.time, bar_seconds, format_date),
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        wap=bar.wap,
        bar_count=bar.count,
    )
