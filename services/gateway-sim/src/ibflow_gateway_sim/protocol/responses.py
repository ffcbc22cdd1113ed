"""Encoding of server→client messages at sv 176 (spec §4): one function per message.

Every function returns one complete frame (length prefix included), ready to write.
Layouts follow what ``ib_async`` 2.1.0 / ``ib_insync`` 0.9.86 ``Decoder`` read at server
version 176; every encoder is checked against both real decoders in the unit tests.
Quantities and prices are :class:`~decimal.Decimal` (``float`` accepted for convenience);
``None`` means "unset" and goes out as ``''`` only where the decoders accept that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from ibflow_gateway_sim.protocol import ids
from ibflow_gateway_sim.protocol.framing import Field, encode_message
from ibflow_gateway_sim.protocol.requests import (
    ContractSpec,
    OrderFields,
    TagValues,
)

Number = Decimal | float | int
"""A numeric value accepted by the encoders."""

DEFAULT_ORDER_TYPES: Final = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,DAY,GTC,IOC,LIT,LMT,MIT,MKT,MOC,STP,STPLMT,TRAIL,TRAILLIMIT"
)
"""``contractDetails.orderTypes`` for a US stock."""
DEFAULT_VALID_EXCHANGES: Final = "SMART,AMEX,NYSE,CBOE,ARCA,ISLAND,IEX"
"""``contractDetails.validExchanges`` for a US stock."""

_UNSET_DOUBLE: Final = Decimal(ids.UNSET_DOUBLE)

ERROR_VERSION: Final = 2
"""Version field of error messages (msg 4) below sv 194."""


def _time_text(when: datetime) -> str:
    """``YYYYMMDD HH:MM:SS UTC`` (naive datetimes are taken as UTC)."""
    moment = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return moment.strftime("%Y%m%d %H:%M:%S UTC")


# --- views (the big messages' payloads) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderStateView:
    """``OrderState`` as carried by openOrder (and, partly, completedOrder).

    Margin fields are ``None`` (sent as ``''``) except for what-if answers, where they
    must all be numbers: ib_async does ``float(initMarginChange)``.
    """

    status: str
    """``PendingSubmit``, ``PreSubmitted``, ``Submitted``, ``Filled``, ``Cancelled``, ..."""
    init_margin_before: Decimal | None = None
    maint_margin_before: Decimal | None = None
    equity_with_loan_before: Decimal | None = None
    init_margin_change: Decimal | None = None
    maint_margin_change: Decimal | None = None
    equity_with_loan_change: Decimal | None = None
    init_margin_after: Decimal | None = None
    maint_margin_after: Decimal | None = None
    equity_with_loan_after: Decimal | None = None
    commission: Decimal | None = None
    min_commission: Decimal | None = None
    max_commission: Decimal | None = None
    commission_currency: str = ""
    warning_text: str = ""
    completed_time: str = ""
    """completedOrder only, e.g. ``'20250115 14:30:00 UTC'``."""
    completed_status: str = ""
    """completedOrder only, e.g. ``'Filled'`` or ``'Cancelled by Trader'``."""


@dataclass(frozen=True, slots=True)
class ExecutionView:
    """One fill for execDetails (msg 11)."""

    exec_id: str
    time: datetime
    """Sent as ``'YYYYMMDD HH:MM:SS UTC'`` (both clients parse the zone name)."""
    account: str
    exchange: str
    side: str
    """``BOT`` or ``SLD``."""
    shares: Decimal
    price: Decimal
    perm_id: int
    client_id: int
    order_id: int
    cum_qty: Decimal
    avg_price: Decimal
    liquidation: int = 0
    order_ref: str = ""
    ev_rule: str = ""
    ev_multiplier: Decimal | None = None
    model_code: str = ""
    last_liquidity: int = 1
    """1 added, 2 removed, 3 routed out."""


@dataclass(frozen=True, slots=True)
class ContractDetailsView:
    """contractDetails (msg 10) payload; defaults fit a US stock."""

    contract: ContractSpec
    """``con_id`` must be non-zero; ``primary_exchange``/``local_symbol``/``trading_class`` set."""
    min_tick: Decimal = Decimal("0.01")
    market_name: str = ""
    """Defaults to ``contract.trading_class``."""
    long_name: str = ""
    """Any text: sent escaped to ASCII like TWS does (the clients unicode-escape-decode it)."""
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    time_zone_id: str = "US/Eastern"
    trading_hours: str = ""
    liquid_hours: str = ""
    order_types: str = DEFAULT_ORDER_TYPES
    valid_exchanges: str = DEFAULT_VALID_EXCHANGES
    price_magnifier: int = 1
    under_con_id: int = 0
    contract_month: str = ""
    ev_rule: str = ""
    ev_multiplier: int = 0
    sec_ids: TagValues = ()
    """``(tag, value)`` pairs, e.g. ``(("ISIN", "US0378331005"),)``."""
    agg_group: int = 1
    under_symbol: str = ""
    under_sec_type: str = ""
    market_rule_ids: str = ""
    real_expiration_date: str = ""
    stock_type: str = "COMMON"
    min_size: Decimal = Decimal("0.0001")
    size_increment: Decimal = Decimal("0.0001")
    suggested_size_increment: Decimal = Decimal("100")


@dataclass(frozen=True, slots=True)
class BarView:
    """One historical bar."""

    date: str
    """``'YYYYMMDD'`` (daily), ``'YYYYMMDD HH:MM:SS <tz>'`` (formatDate 1) or epoch seconds."""
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    wap: Decimal
    bar_count: int


# --- connection / misc -----------------------------------------------------------------------


def next_valid_id(order_id: int) -> bytes:
    """9 nextValidId ``[9, 1, orderId]`` (exactly 3 fields: the clients snoop it)."""
    return encode_message(ids.OUT_NEXT_VALID_ID, 1, order_id)


def managed_accounts(accounts: Sequence[str]) -> bytes:
    """15 managedAccounts ``[15, 1, "DU1,DU2"]``; at least one non-empty account required."""
    names = [a for a in accounts if a]
    if not names:
        raise ValueError("managedAccounts needs at least one account")
    return encode_message(ids.OUT_MANAGED_ACCOUNTS, 1, ",".join(names))


def error(req_id: int, code: int, message: str, advanced_json: str = "") -> bytes:
    """4 error ``[4, 2, reqId, code, message, advancedOrderRejectJson]`` (6 fields at sv 176)."""
    return encode_message(ids.OUT_ERROR, ERROR_VERSION, req_id, code, message, advanced_json)


def current_time(when: datetime | int) -> bytes:
    """49 currentTime ``[49, 1, unixSeconds]``."""
    seconds = when if isinstance(when, int) else int(when.timestamp())
    return encode_message(ids.OUT_CURRENT_TIME, 1, seconds)


# --- orders ----------------------------------------------------------------------------------


def order_status(
    order_id: int,
    status: str,
    *,
    filled: Number,
    remaining: Number,
    avg_fill_price: Number,
    perm_id: int,
    parent_id: int,
    last_fill_price: Number,
    client_id: int,
    why_held: str = "",
    mkt_cap_price: Number = 0,
) -> bytes:
    """3 orderStatus, 12 fields, no version field.

    ``client_id`` must be the placing API client's id: the clients look the trade up by
    ``(clientId, orderId)``.
    """
    return encode_message(
        ids.OUT_ORDER_STATUS,
        order_id,
        status,
        filled,
        remaining,
        avg_fill_price,
        perm_id,
        parent_id,
        last_fill_price,
        client_id,
        why_held,
        mkt_cap_price,
    )


def _scale_and_hedge(order: OrderFields) -> list[Field]:
    out: list[Field] = [
        order.scale_init_level_size,
        order.scale_subs_level_size,
        order.scale_price_increment,
    ]
    if _scale_block_present(order.scale_price_increment):
        out += [
            order.scale_price_adjust_value,
            order.scale_price_adjust_interval,
            order.scale_profit_offset,
            order.scale_auto_reset,
            order.scale_init_position,
            order.scale_init_fill_qty,
            order.scale_random_percent,
        ]
    out.append(order.hedge_type)
    if order.hedge_type:
        out.append(order.hedge_param)
    return out


def _scale_block_present(increment: Decimal | None) -> bool:
    return increment is not None and 0 < increment < _UNSET_DOUBLE


def _combo_fields(order: OrderFields) -> list[Field]:
    out: list[Field] = ["", len(order.combo_legs)]  # comboLegsDescrip, nLegs
    for leg in order.combo_legs:
        out += [
            leg.con_id,
            leg.ratio,
            leg.action,
            leg.exchange,
            leg.open_close,
            leg.short_sale_slot,
            leg.designated_location,
            leg.exempt_code,
        ]
    out.append(len(order.order_combo_leg_prices))
    out += list(order.order_combo_leg_prices)
    out.append(len(order.smart_combo_routing_params))
    for tag, value in order.smart_combo_routing_params:
        out += [tag, value]
    return out


def _dnc_and_algo(order: OrderFields) -> list[Field]:
    dnc = order.delta_neutral_contract
    out: list[Field] = [0] if dnc is None else [1, dnc.con_id, dnc.delta, dnc.price]
    out.append(order.algo_strategy)
    if order.algo_strategy:
        out.append(len(order.algo_params))
        for tag, value in order.algo_params:
            out += [tag, value]
    return out


def _peg_bench_and_conditions(order: OrderFields) -> list[Field]:
    out: list[Field] = []
    if order.order_type in ("PEG BENCH", "PEGBENCH"):
        out += [
            order.reference_contract_id,
            order.is_pegged_change_amount_decrease,
            order.pegged_change_amount,
            order.reference_change_amount,
            order.reference_exchange_id,
        ]
    out.append(len(order.conditions))
    if order.conditions:
        for cond in order.conditions:
            out += [cond.cond_type, *cond.fields]
        out += [order.conditions_ignore_rth, order.conditions_cancel_order]
    return out


def _contract_11(contract: ContractSpec) -> list[Field]:
    """The 11 contract fields openOrder/completedOrder carry (no primaryExchange)."""
    return [
        contract.con_id,
        contract.symbol,
        contract.sec_type,
        contract.last_trade_date,
        contract.strike,
        contract.right,
        contract.multiplier,
        contract.exchange,
        contract.currency,
        contract.local_symbol,
        contract.trading_class,
    ]


def open_order(
    order_id: int,
    contract: ContractSpec,
    order: OrderFields,
    state: OrderStateView,
    *,
    client_id: int,
    perm_id: int,
) -> bytes:
    """5 openOrder (spec §4.2), no version field; 128 fields for a plain stock order.

    Echoes ``order`` (as decoded from placeOrder) unchanged. ``perm_id`` must be unique
    and non-zero. ``delta_neutral_order_type`` must be ``''`` unless all 8 delta-neutral
    fields are meaningful.
    """
    o = order
    fields: list[Field] = [
        ids.OUT_OPEN_ORDER,
        order_id,
        *_contract_11(contract),
        o.action,
        o.total_quantity,
        o.order_type,
        o.lmt_price,
        o.aux_price,
        o.tif,
        o.oca_group,
        o.account,
        o.open_close,
        o.origin,
        o.order_ref,
        client_id,
        perm_id,
        o.outside_rth,
        o.hidden,
        o.discretionary_amt,
        o.good_after_time,
        o.shares_allocation,
        o.fa_group,
        o.fa_method,
        o.fa_percentage,
        o.fa_profile,
        o.model_code,
        o.good_till_date,
        o.rule80a,
        o.percent_offset,
        o.settling_firm,
        o.short_sale_slot,
        o.designated_location,
        o.exempt_code,
        o.auction_strategy,
        o.starting_price,
        o.stock_ref_price,
        o.delta,
        o.stock_range_lower,
        o.stock_range_upper,
        o.display_size,
        o.block_order,
        o.sweep_to_fill,
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        o.e_trade_only,
        o.firm_quote_only,
        o.nbbo_price_cap,
        o.parent_id,
        o.trigger_method,
        o.volatility,
        o.volatility_type,
        o.delta_neutral_order_type,
        o.delta_neutral_aux_price,
    ]
    if o.delta_neutral_order_type:
        fields += [
            o.delta_neutral_con_id,
            o.delta_neutral_settling_firm,
            o.delta_neutral_clearing_account,
            o.delta_neutral_clearing_intent,
            o.delta_neutral_open_close,
            o.delta_neutral_short_sale,
            o.delta_neutral_short_sale_slot,
            o.delta_neutral_designated_location,
        ]
    fields += [
        o.continuous_update,
        o.reference_price_type,
        o.trail_stop_price,
        o.trailing_percent,
        None,  # basisPoints
        None,  # basisPointsType
        *_combo_fields(o),
        *_scale_and_hedge(o),
        o.opt_out_smart_routing,
        o.clearing_account,
        o.clearing_intent,
        o.not_held,
        *_dnc_and_algo(o),
        o.solicited,
        o.what_if,
        state.status,
        state.init_margin_before,
        state.maint_margin_before,
        state.equity_with_loan_before,
        state.init_margin_change,
        state.maint_margin_change,
        state.equity_with_loan_change,
        state.init_margin_after,
        state.maint_margin_after,
        state.equity_with_loan_after,
        state.commission,
        state.min_commission,
        state.max_commission,
        state.commission_currency,
        state.warning_text,
        o.randomize_size,
        o.randomize_price,
        *_peg_bench_and_conditions(o),
        o.adjusted_order_type,
        o.trigger_price,
        o.trail_stop_price,
        o.lmt_price_offset,
        o.adjusted_stop_price,
        o.adjusted_stop_limit_price,
        o.adjusted_trailing_amount,
        o.adjustable_trailing_unit,
        o.soft_dollar_tier_name,
        o.soft_dollar_tier_value,
        "",  # softDollarTier.displayName
        o.cash_qty,
        o.dont_use_auto_price_for_hedge,
        o.is_oms_container,
        o.discretionary_up_to_limit_price,
        o.use_price_mgmt_algo,
        o.duration,
        o.post_to_ats,
        o.auto_cancel_parent,
        o.min_trade_qty,
        o.min_compete_size,
        o.compete_against_best_offset,
        o.mid_offset_at_whole,
        o.mid_offset_at_half,
    ]
    return encode_message(*fields)


def open_order_end() -> bytes:
    """53 openOrderEnd ``[53, 1]``."""
    return encode_message(ids.OUT_OPEN_ORDER_END, 1)


def completed_order(
    contract: ContractSpec,
    order: OrderFields,
    state: OrderStateView,
    *,
    perm_id: int,
    filled_quantity: Number,
    parent_perm_id: int = 0,
    auto_cancel_date: str = "",
) -> bytes:
    """101 completedOrder (spec §4.5), no order id, no version field; 97 fields for a stock.

    Only send it inside a reqCompletedOrders reply (the wrappers raise otherwise).
    ``state.status`` / ``completed_time`` / ``completed_status`` describe the final state.
    """
    o = order
    fields: list[Field] = [
        ids.OUT_COMPLETED_ORDER,
        *_contract_11(contract),
        o.action,
        o.total_quantity,
        o.order_type,
        o.lmt_price,
        o.aux_price,
        o.tif,
        o.oca_group,
        o.account,
        o.open_close,
        o.origin,
        o.order_ref,
        perm_id,
        o.outside_rth,
        o.hidden,
        o.discretionary_amt,
        o.good_after_time,
        o.fa_group,
        o.fa_method,
        o.fa_percentage,
        o.fa_profile,
        o.model_code,
        o.good_till_date,
        o.rule80a,
        o.percent_offset,
        o.settling_firm,
        o.short_sale_slot,
        o.designated_location,
        o.exempt_code,
        o.starting_price,
        o.stock_ref_price,
        o.delta,
        o.stock_range_lower,
        o.stock_range_upper,
        o.display_size,
        o.sweep_to_fill,
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        o.trigger_method,
        o.volatility,
        o.volatility_type,
        o.delta_neutral_order_type,
        o.delta_neutral_aux_price,
    ]
    if o.delta_neutral_order_type:
        fields += [
            o.delta_neutral_con_id,
            o.delta_neutral_short_sale,
            o.delta_neutral_short_sale_slot,
            o.delta_neutral_designated_location,
        ]
    fields += [
        o.continuous_update,
        o.reference_price_type,
        o.trail_stop_price,
        o.trailing_percent,
        *_combo_fields(o),
        *_scale_and_hedge(o),
        o.clearing_account,
        o.clearing_intent,
        o.not_held,
        *_dnc_and_algo(o),
        o.solicited,
        state.status,
        o.randomize_size,
        o.randomize_price,
        *_peg_bench_and_conditions(o),
        o.trail_stop_price,
        o.lmt_price_offset,
        o.cash_qty,
        o.dont_use_auto_price_for_hedge,
        o.is_oms_container,
        auto_cancel_date,
        filled_quantity,
        0,  # refFuturesConId
        o.auto_cancel_parent,
        "",  # shareholder
        False,  # imbalanceOnly
        False,  # routeMarketableToBbo
        parent_perm_id,
        state.completed_time,
        state.completed_status,
        o.min_trade_qty,
        o.min_compete_size,
        o.compete_against_best_offset,
        o.mid_offset_at_whole,
        o.mid_offset_at_half,
    ]
    return encode_message(*fields)


def completed_orders_end() -> bytes:
    """102 completedOrdersEnd ``[102]`` (no version field)."""
    return encode_message(ids.OUT_COMPLETED_ORDERS_END)


# --- executions ------------------------------------------------------------------------------


def exec_details(req_id: int, contract: ContractSpec, execution: ExecutionView) -> bytes:
    """11 execDetails, exactly 31 fields; ``req_id`` -1 for live fills."""
    e = execution
    return encode_message(
        ids.OUT_EXECUTION_DATA,
        req_id,
        e.order_id,
        *_contract_11(contract),
        e.exec_id,
        _time_text(e.time),
        e.account,
        e.exchange,
        e.side,
        e.shares,
        e.price,
        e.perm_id,
        e.client_id,
        e.liquidation,
        e.cum_qty,
        e.avg_price,
        e.order_ref,
        e.ev_rule,
        e.ev_multiplier,
        e.model_code,
        e.last_liquidity,
    )


def exec_details_end(req_id: int) -> bytes:
    """55 execDetailsEnd ``[55, 1, reqId]``."""
    return encode_message(ids.OUT_EXECUTION_DATA_END, 1, req_id)


def commission_report(
    exec_id: str,
    commission: Number,
    currency: str,
    *,
    realized_pnl: Number | None = None,
    yield_: Number | None = None,
    yield_redemption_date: int | None = None,
) -> bytes:
    """59 commissionReport, exactly 8 fields; send after the execDetails with ``exec_id``.

    ``None`` realized PnL / yield go out as IB's unset double (the clients turn it into 0).
    """
    return encode_message(
        ids.OUT_COMMISSION_REPORT,
        1,
        exec_id,
        commission,
        currency,
        ids.UNSET_DOUBLE if realized_pnl is None else realized_pnl,
        ids.UNSET_DOUBLE if yield_ is None else yield_,
        yield_redemption_date,
    )


# --- contracts -------------------------------------------------------------------------------


def contract_details(req_id: int, details: ContractDetailsView) -> bytes:
    """10 contractDetails (spec §4.4), no version field (sv >= 164)."""
    d = details
    c = d.contract
    sec_ids: list[Field] = [len(d.sec_ids)]
    for tag, value in d.sec_ids:
        sec_ids += [tag, value]
    return encode_message(
        ids.OUT_CONTRACT_DATA,
        req_id,
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        c.strike,
        c.right,
        c.exchange,
        c.currency,
        c.local_symbol,
        d.market_name or c.trading_class,
        c.trading_class,
        c.con_id,
        d.min_tick,
        c.multiplier,
        d.order_types,
        d.valid_exchanges,
        d.price_magnifier,
        d.under_con_id,
        _unicode_escaped(d.long_name),
        c.primary_exchange,
        d.contract_month,
        d.industry,
        d.category,
        d.subcategory,
        d.time_zone_id,
        d.trading_hours,
        d.liquid_hours,
        d.ev_rule,
        d.ev_multiplier,
        *sec_ids,
        d.agg_group,
        d.under_symbol,
        d.under_sec_type,
        d.market_rule_ids,
        d.real_expiration_date,
        d.stock_type,
        d.min_size,
        d.size_increment,
        d.suggested_size_increment,
    )


def _unicode_escaped(text: str) -> str:
    """ASCII text the clients' ``.encode().decode("unicode-escape")`` turns back into ``text``."""
    return text.replace("\\", "\\\\").encode("ascii", "backslashreplace").decode("ascii")


def contract_details_end(req_id: int) -> bytes:
    """52 contractDetailsEnd ``[52, 1, reqId]``."""
    return encode_message(ids.OUT_CONTRACT_DATA_END, 1, req_id)


# --- positions and account -------------------------------------------------------------------


def position(account: str, contract: ContractSpec, position: Number, avg_cost: Number) -> bytes:
    """61 position, exactly 16 fields (``position == 0`` removes the client's entry)."""
    c = contract
    return encode_message(
        ids.OUT_POSITION_DATA,
        3,
        account,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        c.strike,
        c.right,
        c.multiplier,
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
        position,
        avg_cost,
    )


def position_end() -> bytes:
    """62 positionEnd ``[62, 1]``."""
    return encode_message(ids.OUT_POSITION_END, 1)


def update_account_value(key: str, value: str, currency: str, account: str) -> bytes:
    """6 updateAccountValue ``[6, 2, key, value, currency, account]``.

    ``currency`` is ``''`` for non-monetary tags and ``'BASE'`` for base-currency rows.
    """
    return encode_message(ids.OUT_ACCOUNT_VALUE, 2, key, value, currency, account)


def update_portfolio(
    contract: ContractSpec,
    account: str,
    *,
    position: Number,
    market_price: Number,
    market_value: Number,
    average_cost: Number,
    unrealized_pnl: Number,
    realized_pnl: Number,
) -> bytes:
    """7 updatePortfolio, exactly 20 fields; every number is required (no ``''``).

    Carries ``primary_exchange`` in the exchange slot, like TWS.
    """
    c = contract
    return encode_message(
        ids.OUT_PORTFOLIO_VALUE,
        8,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        c.strike,
        c.right,
        c.multiplier,
        c.primary_exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
        _required(position),
        _required(market_price),
        _required(market_value),
        _required(average_cost),
        _required(unrealized_pnl),
        _required(realized_pnl),
        account,
    )


def _required(value: Number) -> Number:
    """``value`` unchanged; refuses NaN/infinity where the client's ``float()`` needs a number."""
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    if not finite:
        raise ValueError(f"{value!r} cannot be sent where the client needs a number")
    return value


def update_account_time(when: datetime | str) -> bytes:
    """8 updateAccountTime ``[8, 1, "HH:MM"]`` (ignored by both clients)."""
    text = when if isinstance(when, str) else when.strftime("%H:%M")
    return encode_message(ids.OUT_ACCOUNT_UPDATE_TIME, 1, text)


def account_download_end(account: str) -> bytes:
    """54 accountDownloadEnd ``[54, 1, account]``."""
    return encode_message(ids.OUT_ACCOUNT_DOWNLOAD_END, 1, account)


def account_update_multi(
    req_id: int, account: str, key: str, value: str, currency: str, *, model_code: str = ""
) -> bytes:
    """73 accountUpdateMulti ``[73, 1, reqId, account, modelCode, key, value, currency]``."""
    return encode_message(
        ids.OUT_ACCOUNT_UPDATE_MULTI, 1, req_id, account, model_code, key, value, currency
    )


def account_update_multi_end(req_id: int) -> bytes:
    """74 accountUpdateMultiEnd ``[74, 1, reqId]``."""
    return encode_message(ids.OUT_ACCOUNT_UPDATE_MULTI_END, 1, req_id)


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> bytes:
    """63 accountSummary ``[63, 1, reqId, account, tag, value, currency]``."""
    return encode_message(ids.OUT_ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency)


def account_summary_end(req_id: int) -> bytes:
    """64 accountSummaryEnd ``[64, 1, reqId]``."""
    return encode_message(ids.OUT_ACCOUNT_SUMMARY_END, 1, req_id)


# --- market data -----------------------------------------------------------------------------


def tick_price(
    req_id: int, tick_type: int, price: Number, size: Number = 0, attrib_mask: int = 0
) -> bytes:
    """1 tickPrice ``[1, 6, reqId, tickType, price, size, attrMask]``, exactly 7 fields.

    Bid/ask/last sizes travel here (the clients do not expect a separate tickSize).
    attrib_mask bits: 1 canAutoExecute, 2 pastLimit, 4 preOpen.
    """
    return encode_message(
        ids.OUT_TICK_PRICE, 6, req_id, tick_type, _required(price), size, attrib_mask
    )


def tick_size(req_id: int, tick_type: int, size: Number) -> bytes:
    """2 tickSize ``[2, 6, reqId, tickType, size]`` (e.g. volume, type 8 / 74)."""
    return encode_message(ids.OUT_TICK_SIZE, 6, req_id, tick_type, size)


def tick_string(req_id: int, tick_type: int, value: str) -> bytes:
    """46 tickString ``[46, 6, reqId, tickType, value]`` (e.g. 45 lastTimestamp)."""
    return encode_message(ids.OUT_TICK_STRING, 6, req_id, tick_type, value)


def tick_generic(req_id: int, tick_type: int, value: Number) -> bytes:
    """45 tickGeneric ``[45, 6, reqId, tickType, value]`` (e.g. 49 halted)."""
    return encode_message(ids.OUT_TICK_GENERIC, 6, req_id, tick_type, value)


def market_data_type(req_id: int, market_data_type: int) -> bytes:
    """58 marketDataType ``[58, 1, reqId, type]``."""
    return encode_message(ids.OUT_MARKET_DATA_TYPE, 1, req_id, market_data_type)


def tick_req_params(
    req_id: int, min_tick: Number, bbo_exchange: str = "9c0001", snapshot_permissions: int = 3
) -> bytes:
    """81 tickReqParams ``[81, reqId, minTick, bboExchange, snapshotPermissions]`` (no version)."""
    return encode_message(
        ids.OUT_TICK_REQ_PARAMS, req_id, min_tick, bbo_exchange, snapshot_permissions
    )


def tick_snapshot_end(req_id: int) -> bytes:
    """57 tickSnapshotEnd ``[57, 1, reqId]`` (mandatory after a snapshot)."""
    return encode_message(ids.OUT_TICK_SNAPSHOT_END, 1, req_id)


# --- historical data -------------------------------------------------------------------------


def historical_data(req_id: int, start: str, end: str, bars: Iterable[BarView]) -> bytes:
    """17 historicalData ``[17, reqId, start, end, nBars, (8 fields) x n]`` (no version).

    ``start``/``end`` are free text (TWS: ``'YYYYMMDD HH:MM:SS'`` with a zone); the bars'
    values are all required.
    """
    rows = list(bars)
    fields: list[Field] = [ids.OUT_HISTORICAL_DATA, req_id, start, end, len(rows)]
    for bar in rows:
        fields += [
            bar.date,
            _required(bar.open),
            _required(bar.high),
            _required(bar.low),
            _required(bar.close),
            _required(bar.volume),
            _required(bar.wap),
            bar.bar_count,
        ]
    return encode_message(*fields)


def historical_data_update(req_id: int, bar: BarView) -> bytes:
    """90 historicalDataUpdate ``[90, reqId, barCount, date, open, close, high, low, wap, volume]``.

    Note the order: close before high/low, and volume last.
    """
    return encode_message(
        ids.OUT_HISTORICAL_DATA_UPDATE,
        req_id,
        bar.bar_count,
        bar.date,
        bar.open,
        bar.close,
        bar.high,
        bar.low,
        bar.wap,
        bar.volume,
    )
