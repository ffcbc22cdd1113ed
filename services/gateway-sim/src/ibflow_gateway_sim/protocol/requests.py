"""Decoding of client→server messages (spec §3) into frozen dataclasses.

:func:`decode_request` takes the fields of one message (as returned by
:func:`~ibflow_gateway_sim.protocol.framing.read_message`) and returns one of the
``Request`` dataclasses below. Ids the simulator does not handle decode to
:class:`UnknownRequest`; malformed known messages raise :class:`DecodeError`.

Numbers that are quantities or prices are parsed with :class:`~decimal.Decimal` (the clients
send ``'10'`` or ``'5.0'``); IB's "unset" (sent as ``''``) becomes ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final

from ibflow_gateway_sim.protocol import ids


class DecodeError(Exception):
    """A known client message is malformed (a field does not parse, too few/many fields)."""

    def __init__(self, msg_id: int, reason: str) -> None:
        super().__init__(f"msg {msg_id} ({ids.IN_NAMES.get(msg_id, '?')}): {reason}")
        self.msg_id = msg_id
        self.reason = reason


# --- shared pieces ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """The 12 contract fields every request carries, in wire order."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    """``lastTradeDateOrContractMonth``."""
    strike: Decimal = Decimal("0.0")
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""


@dataclass(frozen=True, slots=True)
class MktDataComboLeg:
    """A BAG leg as reqMktData sends it (4 fields)."""

    con_id: int
    ratio: int
    action: str
    exchange: str


@dataclass(frozen=True, slots=True)
class ComboLegSpec:
    """A BAG leg as placeOrder / openOrder carry it (8 fields)."""

    con_id: int
    ratio: int
    action: str
    exchange: str
    open_close: int = 0
    short_sale_slot: int = 0
    designated_location: str = ""
    exempt_code: int = -1


@dataclass(frozen=True, slots=True)
class DeltaNeutralContractSpec:
    """``contract.deltaNeutralContract``: conId, delta, price."""

    con_id: int
    delta: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class OrderConditionSpec:
    """One order condition, kept as its raw wire fields (``cond_type`` first, then the rest).

    Field counts per type (``cond_type`` included): Price(1) 7, Time(3) 4, Margin(4) 4,
    Execution(5) 5, Volume(6) 6, PercentChange(7) 6.
    """

    cond_type: int
    fields: tuple[str, ...]
    """The fields after ``cond_type``, unparsed."""


CONDITION_FIELD_COUNTS: Final[dict[int, int]] = {1: 7, 3: 4, 4: 4, 5: 5, 6: 6, 7: 6}
"""Wire fields per order condition type, ``condType`` included."""

TagValues = tuple[tuple[str, str], ...]
"""``(tag, value)`` pairs (algo params, smart combo routing params)."""


@dataclass(frozen=True, slots=True)
class OrderFields:
    """Every order field placeOrder carries at sv 176, after the 12 contract fields.

    Kept complete so the server can echo the order back unchanged in openOrder /
    completedOrder. Attribute names are IB's in snake_case; optional numerics are ``None``
    when unset (``''`` on the wire). ``sec_id_type``/``sec_id``, the BAG ``combo_legs`` and
    ``delta_neutral_contract`` are contract attributes that travel inside placeOrder, kept
    here for the same reason. Only ``action``, ``total_quantity`` and ``order_type`` are
    required to build one by hand; the other defaults are what the clients send for an
    unset field.
    """

    action: str
    """``BUY`` or ``SELL`` (not validated here)."""
    total_quantity: Decimal
    order_type: str
    lmt_price: Decimal | None = None
    aux_price: Decimal | None = None
    """Stop price for STP / STP LMT, trailing amount for TRAIL."""
    tif: str = ""
    """``''`` means DAY."""
    oca_group: str = ""
    account: str = ""
    open_close: str = "O"
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    block_order: bool = False
    sweep_to_fill: bool = False
    display_size: int | None = 0
    trigger_method: int = 0
    outside_rth: bool = False
    hidden: bool = False
    sec_id_type: str = ""
    sec_id: str = ""
    combo_legs: tuple[ComboLegSpec, ...] = ()
    order_combo_leg_prices: tuple[Decimal | None, ...] = ()
    smart_combo_routing_params: TagValues = ()
    shares_allocation: str = ""
    discretionary_amt: Decimal | None = Decimal("0.0")
    good_after_time: str = ""
    good_till_date: str = ""
    fa_group: str = ""
    fa_method: str = ""
    fa_percentage: str = ""
    fa_profile: str = ""
    model_code: str = ""
    short_sale_slot: int = 0
    designated_location: str = ""
    exempt_code: int = -1
    oca_type: int = 0
    rule80a: str = ""
    settling_firm: str = ""
    all_or_none: bool = False
    min_qty: int | None = None
    percent_offset: Decimal | None = None
    e_trade_only: bool = False
    firm_quote_only: bool = False
    nbbo_price_cap: Decimal | None = None
    auction_strategy: int | None = 0
    starting_price: Decimal | None = None
    stock_ref_price: Decimal | None = None
    delta: Decimal | None = None
    stock_range_lower: Decimal | None = None
    stock_range_upper: Decimal | None = None
    override_percentage_constraints: bool = False
    volatility: Decimal | None = None
    volatility_type: int | None = None
    delta_neutral_order_type: str = ""
    delta_neutral_aux_price: Decimal | None = None
    delta_neutral_con_id: int | None = 0
    delta_neutral_settling_firm: str = ""
    delta_neutral_clearing_account: str = ""
    delta_neutral_clearing_intent: str = ""
    delta_neutral_open_close: str = ""
    delta_neutral_short_sale: bool = False
    delta_neutral_short_sale_slot: int | None = 0
    delta_neutral_designated_location: str = ""
    continuous_update: bool = False
    reference_price_type: int | None = None
    trail_stop_price: Decimal | None = None
    trailing_percent: Decimal | None = None
    scale_init_level_size: int | None = None
    scale_subs_level_size: int | None = None
    scale_price_increment: Decimal | None = None
    scale_price_adjust_value: Decimal | None = None
    scale_price_adjust_interval: int | None = None
    scale_profit_offset: Decimal | None = None
    scale_auto_reset: bool = False
    scale_init_position: int | None = None
    scale_init_fill_qty: int | None = None
    scale_random_percent: bool = False
    scale_table: str = ""
    active_start_time: str = ""
    active_stop_time: str = ""
    hedge_type: str = ""
    hedge_param: str = ""
    opt_out_smart_routing: bool = False
    clearing_account: str = ""
    clearing_intent: str = ""
    not_held: bool = False
    delta_neutral_contract: DeltaNeutralContractSpec | None = None
    algo_strategy: str = ""
    algo_params: TagValues = ()
    algo_id: str = ""
    what_if: bool = False
    order_misc_options: str = ""
    """Already rendered ``tag=value;`` text."""
    solicited: bool = False
    randomize_size: bool = False
    randomize_price: bool = False
    reference_contract_id: int | None = 0
    is_pegged_change_amount_decrease: bool = False
    pegged_change_amount: Decimal | None = Decimal("0.0")
    reference_change_amount: Decimal | None = Decimal("0.0")
    reference_exchange_id: str = ""
    conditions: tuple[OrderConditionSpec, ...] = ()
    conditions_ignore_rth: bool = False
    conditions_cancel_order: bool = False
    adjusted_order_type: str = ""
    trigger_price: Decimal | None = None
    lmt_price_offset: Decimal | None = None
    adjusted_stop_price: Decimal | None = None
    adjusted_stop_limit_price: Decimal | None = None
    adjusted_trailing_amount: Decimal | None = None
    adjustable_trailing_unit: int = 0
    ext_operator: str = ""
    soft_dollar_tier_name: str = ""
    soft_dollar_tier_value: str = ""
    cash_qty: Decimal | None = None
    mifid2_decision_maker: str = ""
    mifid2_decision_algo: str = ""
    mifid2_execution_trader: str = ""
    mifid2_execution_algo: str = ""
    dont_use_auto_price_for_hedge: bool = False
    is_oms_container: bool = False
    discretionary_up_to_limit_price: bool = False
    use_price_mgmt_algo: bool = False
    duration: int | None = None
    post_to_ats: int | None = None
    auto_cancel_parent: bool = False
    advanced_error_override: str = ""
    manual_order_time: str = ""
    min_trade_qty: int | None = None
    min_compete_size: int | None = None
    compete_against_best_offset: Decimal | None = None
    mid_offset_at_whole: Decimal | None = None
    mid_offset_at_half: Decimal | None = None

    @property
    def is_buy(self) -> bool:
        """``action == "BUY"``."""
        return self.action == "BUY"

    @property
    def effective_tif(self) -> str:
        """``tif`` with IB's default: ``''`` means ``DAY``."""
        return self.tif or "DAY"


# --- the requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartApi:
    """71 ``[71, 2, clientId, optionalCapabilities]``."""

    client_id: int
    optional_capabilities: str = ""


@dataclass(frozen=True, slots=True)
class ReqIds:
    """8 ``[8, 1, numIds]``; answer with nextValidId."""

    num_ids: int


@dataclass(frozen=True, slots=True)
class ReqCurrentTime:
    """49 ``[49, 1]``; answer with currentTime."""


@dataclass(frozen=True, slots=True)
class ReqMarketDataType:
    """59 ``[59, 1, type]`` (1 live, 2 frozen, 3 delayed, 4 delayed-frozen); no reply."""

    market_data_type: int


@dataclass(frozen=True, slots=True)
class ReqPositions:
    """61 ``[61, 1]``: position subscription; answer positions + positionEnd."""


@dataclass(frozen=True, slots=True)
class CancelPositions:
    """64 ``[64, 1]``."""


@dataclass(frozen=True, slots=True)
class ReqOpenOrders:
    """5 ``[5, 1]``: this client's open orders + openOrderEnd."""


@dataclass(frozen=True, slots=True)
class ReqAllOpenOrders:
    """16 ``[16, 1]``: every client's open orders + openOrderEnd."""


@dataclass(frozen=True, slots=True)
class ReqAutoOpenOrders:
    """15 ``[15, 1, autoBind]`` (clientId 0 only); no reply."""

    auto_bind: bool


@dataclass(frozen=True, slots=True)
class ReqCompletedOrders:
    """99 ``[99, apiOnly]`` (no version field); completedOrder* + completedOrdersEnd."""

    api_only: bool


@dataclass(frozen=True, slots=True)
class ReqAccountUpdates:
    """6 ``[6, 2, subscribe, acctCode]``."""

    subscribe: bool
    account: str


@dataclass(frozen=True, slots=True)
class ReqAccountUpdatesMulti:
    """76 ``[76, 1, reqId, account, modelCode, ledgerAndNLV]``."""

    req_id: int
    account: str
    model_code: str
    ledger_and_nlv: bool


@dataclass(frozen=True, slots=True)
class CancelAccountUpdatesMulti:
    """77 ``[77, 1, reqId]``."""

    req_id: int


@dataclass(frozen=True, slots=True)
class ReqAccountSummary:
    """62 ``[62, 1, reqId, groupName, tags]``; ``tags`` split from the CSV."""

    req_id: int
    group_name: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CancelAccountSummary:
    """63 ``[63, 1, reqId]``."""

    req_id: int


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """reqExecutions filter; empty strings / ``client_id == 0`` mean "any"."""

    client_id: int = 0
    account: str = ""
    time: str = ""
    """``'yyyymmdd hh:mm:ss'`` (executions at or after) or ``''``."""
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    side: str = ""


@dataclass(frozen=True, slots=True)
class ReqExecutions:
    """7 ``[7, 3, reqId, <filter 7>]``; execDetails* (+commissionReport) + execDetailsEnd."""

    req_id: int
    filter: ExecutionFilter


@dataclass(frozen=True, slots=True)
class ReqContractDetails:
    """9 ``[9, 8, reqId, <contract 12>, includeExpired, secIdType, secId, issuerId]``."""

    req_id: int
    contract: ContractSpec
    include_expired: bool = False
    sec_id_type: str = ""
    sec_id: str = ""
    issuer_id: str = ""


@dataclass(frozen=True, slots=True)
class ReqMktData:
    """1 ``[1, 11, reqId, <contract 12>, (BAG legs), dnc, ticks, snapshot, regSnap, opts]``."""

    req_id: int
    contract: ContractSpec
    combo_legs: tuple[MktDataComboLeg, ...] = ()
    delta_neutral_contract: DeltaNeutralContractSpec | None = None
    generic_tick_list: str = ""
    snapshot: bool = False
    regulatory_snapshot: bool = False
    mkt_data_options: str = ""


@dataclass(frozen=True, slots=True)
class CancelMktData:
    """2 ``[2, 2, reqId]``."""

    req_id: int


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """3 placeOrder (spec §3.1, no version field): new order, or modify if the id exists."""

    order_id: int
    contract: ContractSpec
    order: OrderFields


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """4 ``[4, 1, orderId, manualOrderCancelTime]``."""

    order_id: int
    manual_order_cancel_time: str = ""


@dataclass(frozen=True, slots=True)
class ReqGlobalCancel:
    """58 ``[58, 1]``."""


@dataclass(frozen=True, slots=True)
class ReqHistoricalData:
    """20 reqHistoricalData (no version field)."""

    req_id: int
    contract: ContractSpec
    include_expired: bool
    end_date_time: str
    """``''`` (now) or ``'YYYYMMDD HH:MM:SS UTC'``."""
    bar_size_setting: str
    """E.g. ``'1 day'``, ``'5 mins'``."""
    duration_str: str
    """E.g. ``'5 D'``."""
    use_rth: bool
    what_to_show: str
    format_date: int
    """1 = ``'YYYYMMDD[ HH:MM:SS tz]'`` strings, 2 = epoch seconds."""
    keep_up_to_date: bool
    chart_options: str = ""
    combo_legs: tuple[MktDataComboLeg, ...] = ()


@dataclass(frozen=True, slots=True)
class CancelHistoricalData:
    """25 ``[25, 1, reqId]``."""

    req_id: int


@dataclass(frozen=True, slots=True)
class UnknownRequest:
    """Any id the simulator does not handle (not an error: log it and carry on)."""

    msg_id: int
    fields: tuple[str, ...] = field(default=())


Request = (
    StartApi
    | ReqIds
    | ReqCurrentTime
    | ReqMarketDataType
    | ReqPositions
    | CancelPositions
    | ReqOpenOrders
    | ReqAllOpenOrders
    | ReqAutoOpenOrders
    | ReqCompletedOrders
    | ReqAccountUpdates
    | ReqAccountUpdatesMulti
    | CancelAccountUpdatesMulti
    | ReqAccountSummary
    | CancelAccountSummary
    | ReqExecutions
    | ReqContractDetails
    | ReqMktData
    | CancelMktData
    | PlaceOrder
    | CancelOrder
    | ReqGlobalCancel
    | ReqHistoricalData
    | CancelHistoricalData
    | UnknownRequest
)
"""Everything :func:`decode_request` returns."""


def decode_request(fields: Sequence[str]) -> Request:
    """Decode one client message (``fields[0]`` is the message id) at sv 176.

    Raises :class:`DecodeError` if a known message has a field that does not parse, too
    few fields, or fields left over.
    """
    if not fields:
        raise DecodeError(0, "empty message")
    try:
        msg_id = int(fields[0])
    except ValueError:
        raise DecodeError(0, f"message id {fields[0]!r} is not an integer") from None
    decoder = _DECODERS.get(msg_id)
    if decoder is None:
        return UnknownRequest(msg_id, tuple(fields[1:]))
    cursor = _Cursor(msg_id, fields)
    request = decoder(cursor)
    cursor.finish()
    return request


# --- field cursor ----------------------------------------------------------------------------

_INFINITE: Final = frozenset({"Infinite", "inf", "Infinity"})
_UNSET_DOUBLE: Final = Decimal(ids.UNSET_DOUBLE)


class _Cursor:
    """Walks the fields of one message, converting and naming each for error messages."""

    def __init__(self, msg_id: int, fields: Sequence[str]) -> None:
        self.msg_id = msg_id
        self.fields = fields
        self.pos = 1

    def _take(self, name: str) -> str:
        if self.pos >= len(self.fields):
            raise DecodeError(
                self.msg_id,
                f"too few fields: {name!r} (#{self.pos}) missing, message has {len(self.fields)}",
            )
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def _bad(self, name: str, value: str, what: str) -> DecodeError:
        return DecodeError(
            self.msg_id, f"field {name!r} (#{self.pos - 1}): {value!r} is not {what}"
        )

    def finish(self) -> None:
        left = len(self.fields) - self.pos
        if left:
            raise DecodeError(
                self.msg_id,
                f"{left} field(s) left over after #{self.pos - 1}: "
                f"{list(self.fields[self.pos : self.pos + 5])!r}",
            )

    def skip(self, name: str) -> None:
        self._take(name)

    def text(self, name: str) -> str:
        return self._take(name)

    def integer(self, name: str) -> int:
        value = self._take(name)
        try:
            return int(value)
        except ValueError:
            raise self._bad(name, value, "an integer") from None

    def int_or(self, name: str, default: int) -> int:
        value = self._take(name)
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise self._bad(name, value, "an integer") from None

    def opt_int(self, name: str) -> int | None:
        value = self._take(name)
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise self._bad(name, value, "an integer") from None

    def count(self, name: str) -> int:
        n = self.integer(name)
        if n < 0 or n > len(self.fields):
            raise DecodeError(self.msg_id, f"field {name!r} (#{self.pos - 1}): bad count {n}")
        return n

    def decimal(self, name: str) -> Decimal:
        value = self._take(name)
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise self._bad(name, value, "a number") from None
        if not number.is_finite():
            raise self._bad(name, value, "a finite number")
        return number

    def opt_decimal(self, name: str, *, allow_infinite: bool = False) -> Decimal | None:
        value = self._take(name)
        if value == "":
            return None
        if allow_infinite and value in _INFINITE:
            return Decimal("Infinity")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise self._bad(name, value, "a number") from None
        if not number.is_finite():
            raise self._bad(name, value, "a finite number")
        return number

    def flag(self, name: str) -> bool:
        value = self._take(name)
        if value in ("", "0"):
            return False
        if value == "1":
            return True
        raise self._bad(name, value, "a boolean ('0'/'1')")

    def contract(self) -> ContractSpec:
        return ContractSpec(
            con_id=self.int_or("conId", 0),
            symbol=self.text("symbol"),
            sec_type=self.text("secType"),
            last_trade_date=self.text("lastTradeDateOrContractMonth"),
            strike=self.opt_decimal("strike") or Decimal("0.0"),
            right=self.text("right"),
            multiplier=self.text("multiplier"),
            exchange=self.text("exchange"),
            primary_exchange=self.text("primaryExchange"),
            currency=self.text("currency"),
            local_symbol=self.text("localSymbol"),
            trading_class=self.text("tradingClass"),
        )

    def mkt_data_legs(self) -> tuple[MktDataComboLeg, ...]:
        return tuple(
            MktDataComboLeg(
                con_id=self.integer("comboLeg.conId"),
                ratio=self.integer("comboLeg.ratio"),
                action=self.text("comboLeg.action"),
                exchange=self.text("comboLeg.exchange"),
            )
            for _ in range(self.count("comboLegs count"))
        )

    def delta_neutral_contract(self) -> DeltaNeutralContractSpec | None:
        if not self.flag("deltaNeutralContract present"):
            return None
        return DeltaNeutralContractSpec(
            con_id=self.integer("deltaNeutralContract.conId"),
            delta=self.opt_decimal("deltaNeutralContract.delta") or Decimal(0),
            price=self.opt_decimal("deltaNeutralContract.price") or Decimal(0),
        )

    def tag_values(self, name: str) -> TagValues:
        return tuple(
            (self.text(f"{name}.tag"), self.text(f"{name}.value"))
            for _ in range(self.count(f"{name} count"))
        )


# --- per-message decoders --------------------------------------------------------------------


def _start_api(c: _Cursor) -> StartApi:
    c.skip("version")
    client_id = c.integer("clientId")
    # optionalCapabilities is the last field and may be absent in old clients.
    capabilities = c.text("optionalCapabilities") if c.pos < len(c.fields) else ""
    return StartApi(client_id, capabilities)


def _req_ids(c: _Cursor) -> ReqIds:
    c.skip("version")
    return ReqIds(c.integer("numIds"))


def _versioned(factory: Callable[[], Request]) -> Callable[[_Cursor], Request]:
    def decode(c: _Cursor) -> Request:
        c.skip("version")
        return factory()

    return decode


def _req_market_data_type(c: _Cursor) -> ReqMarketDataType:
    c.skip("version")
    return ReqMarketDataType(c.integer("marketDataType"))


def _req_auto_open_orders(c: _Cursor) -> ReqAutoOpenOrders:
    c.skip("version")
    return ReqAutoOpenOrders(c.flag("bAutoBind"))


def _req_completed_orders(c: _Cursor) -> ReqCompletedOrders:
    return ReqCompletedOrders(c.flag("apiOnly"))


def _req_account_updates(c: _Cursor) -> ReqAccountUpdates:
    c.skip("version")
    return ReqAccountUpdates(c.flag("subscribe"), c.text("acctCode"))


def _req_account_updates_multi(c: _Cursor) -> ReqAccountUpdatesMulti:
    c.skip("version")
    return ReqAccountUpdatesMulti(
        req_id=c.integer("reqId"),
        account=c.text("account"),
        model_code=c.text("modelCode"),
        ledger_and_nlv=c.flag("ledgerAndNLV"),
    )


def _req_id_only(factory: Callable[[int], Request]) -> Callable[[_Cursor], Request]:
    def decode(c: _Cursor) -> Request:
        c.skip("version")
        return factory(c.integer("reqId"))

    return decode


def _req_account_summary(c: _Cursor) -> ReqAccountSummary:
    c.skip("version")
    req_id = c.integer("reqId")
    group = c.text("groupName")
    tags = tuple(t.strip() for t in c.text("tags").split(",") if t.strip())
    return ReqAccountSummary(req_id, group, tags)


def _req_executions(c: _Cursor) -> ReqExecutions:
    c.skip("version")
    req_id = c.integer("reqId")
    return ReqExecutions(
        req_id,
        ExecutionFilter(
            client_id=c.int_or("filter.clientId", 0),
            account=c.text("filter.acctCode"),
            time=c.text("filter.time"),
            symbol=c.text("filter.symbol"),
            sec_type=c.text("filter.secType"),
            exchange=c.text("filter.exchange"),
            side=c.text("filter.side"),
        ),
    )


def _req_contract_details(c: _Cursor) -> ReqContractDetails:
    c.skip("version")
    return ReqContractDetails(
        req_id=c.integer("reqId"),
        contract=c.contract(),
        include_expired=c.flag("includeExpired"),
        sec_id_type=c.text("secIdType"),
        sec_id=c.text("secId"),
        issuer_id=c.text("issuerId"),
    )


def _req_mkt_data(c: _Cursor) -> ReqMktData:
    c.skip("version")
    req_id = c.integer("reqId")
    contract = c.contract()
    legs = c.mkt_data_legs() if contract.sec_type == "BAG" else ()
    return ReqMktData(
        req_id=req_id,
        contract=contract,
        combo_legs=legs,
        delta_neutral_contract=c.delta_neutral_contract(),
        generic_tick_list=c.text("genericTickList"),
        snapshot=c.flag("snapshot"),
        regulatory_snapshot=c.flag("regulatorySnapshot"),
        mkt_data_options=c.text("mktDataOptions"),
    )


def _cancel_order(c: _Cursor) -> CancelOrder:
    c.skip("version")
    return CancelOrder(c.integer("orderId"), c.text("manualOrderCancelTime"))


def _req_historical_data(c: _Cursor) -> ReqHistoricalData:
    req_id = c.integer("reqId")
    contract = c.contract()
    include_expired = c.flag("includeExpired")
    end = c.text("endDateTime")
    bar_size = c.text("barSizeSetting")
    duration = c.text("durationStr")
    use_rth = c.flag("useRTH")
    what = c.text("whatToShow")
    format_date = c.int_or("formatDate", 1)
    legs = c.mkt_data_legs() if contract.sec_type == "BAG" else ()
    return ReqHistoricalData(
        req_id=req_id,
        contract=contract,
        include_expired=include_expired,
        end_date_time=end,
        bar_size_setting=bar_size,
        duration_str=duration,
        use_rth=use_rth,
        what_to_show=what,
        format_date=format_date,
        keep_up_to_date=c.flag("keepUpToDate"),
        chart_options=c.text("chartOptions"),
        combo_legs=legs,
    )


def _place_order(c: _Cursor) -> PlaceOrder:  # noqa: PLR0915 - one field per line, in wire order
    order_id = c.integer("orderId")
    contract = c.contract()
    v: dict[str, object] = {}
    v["sec_id_type"] = c.text("secIdType")
    v["sec_id"] = c.text("secId")
    v["action"] = c.text("action")
    v["total_quantity"] = c.decimal("totalQuantity")
    order_type = v["order_type"] = c.text("orderType")
    v["lmt_price"] = c.opt_decimal("lmtPrice")
    v["aux_price"] = c.opt_decimal("auxPrice")
    v["tif"] = c.text("tif")
    v["oca_group"] = c.text("ocaGroup")
    v["account"] = c.text("account")
    v["open_close"] = c.text("openClose")
    v["origin"] = c.int_or("origin", 0)
    v["order_ref"] = c.text("orderRef")
    v["transmit"] = c.flag("transmit")
    v["parent_id"] = c.int_or("parentId", 0)
    v["block_order"] = c.flag("blockOrder")
    v["sweep_to_fill"] = c.flag("sweepToFill")
    v["display_size"] = c.opt_int("displaySize")
    v["trigger_method"] = c.int_or("triggerMethod", 0)
    v["outside_rth"] = c.flag("outsideRth")
    v["hidden"] = c.flag("hidden")
    if contract.sec_type == "BAG":
        v["combo_legs"] = tuple(
            ComboLegSpec(
                con_id=c.integer("comboLeg.conId"),
                ratio=c.integer("comboLeg.ratio"),
                action=c.text("comboLeg.action"),
                exchange=c.text("comboLeg.exchange"),
                open_close=c.int_or("comboLeg.openClose", 0),
                short_sale_slot=c.int_or("comboLeg.shortSaleSlot", 0),
                designated_location=c.text("comboLeg.designatedLocation"),
                exempt_code=c.int_or("comboLeg.exemptCode", -1),
            )
            for _ in range(c.count("comboLegs count"))
        )
        v["order_combo_leg_prices"] = tuple(
            c.opt_decimal("orderComboLeg.price") for _ in range(c.count("orderComboLegs count"))
        )
        v["smart_combo_routing_params"] = c.tag_values("smartComboRoutingParams")
    v["shares_allocation"] = c.text("sharesAllocation")
    v["discretionary_amt"] = c.opt_decimal("discretionaryAmt")
    v["good_after_time"] = c.text("goodAfterTime")
    v["good_till_date"] = c.text("goodTillDate")
    v["fa_group"] = c.text("faGroup")
    v["fa_method"] = c.text("faMethod")
    v["fa_percentage"] = c.text("faPercentage")
    v["fa_profile"] = c.text("faProfile")  # only below sv 177
    v["model_code"] = c.text("modelCode")
    v["short_sale_slot"] = c.int_or("shortSaleSlot", 0)
    v["designated_location"] = c.text("designatedLocation")
    v["exempt_code"] = c.int_or("exemptCode", -1)
    v["oca_type"] = c.int_or("ocaType", 0)
    v["rule80a"] = c.text("rule80A")
    v["settling_firm"] = c.text("settlingFirm")
    v["all_or_none"] = c.flag("allOrNone")
    v["min_qty"] = c.opt_int("minQty")
    v["percent_offset"] = c.opt_decimal("percentOffset")
    v["e_trade_only"] = c.flag("eTradeOnly")
    v["firm_quote_only"] = c.flag("firmQuoteOnly")
    v["nbbo_price_cap"] = c.opt_decimal("nbboPriceCap")
    v["auction_strategy"] = c.opt_int("auctionStrategy")
    v["starting_price"] = c.opt_decimal("startingPrice")
    v["stock_ref_price"] = c.opt_decimal("stockRefPrice")
    v["delta"] = c.opt_decimal("delta")
    v["stock_range_lower"] = c.opt_decimal("stockRangeLower")
    v["stock_range_upper"] = c.opt_decimal("stockRangeUpper")
    v["override_percentage_constraints"] = c.flag("overridePercentageConstraints")
    v["volatility"] = c.opt_decimal("volatility")
    v["volatility_type"] = c.opt_int("volatilityType")
    dn_type = v["delta_neutral_order_type"] = c.text("deltaNeutralOrderType")
    v["delta_neutral_aux_price"] = c.opt_decimal("deltaNeutralAuxPrice")
    if dn_type:
        v["delta_neutral_con_id"] = c.opt_int("deltaNeutralConId")
        v["delta_neutral_settling_firm"] = c.text("deltaNeutralSettlingFirm")
        v["delta_neutral_clearing_account"] = c.text("deltaNeutralClearingAccount")
        v["delta_neutral_clearing_intent"] = c.text("deltaNeutralClearingIntent")
        v["delta_neutral_open_close"] = c.text("deltaNeutralOpenClose")
        v["delta_neutral_short_sale"] = c.flag("deltaNeutralShortSale")
        v["delta_neutral_short_sale_slot"] = c.opt_int("deltaNeutralShortSaleSlot")
        v["delta_neutral_designated_location"] = c.text("deltaNeutralDesignatedLocation")
    v["continuous_update"] = c.flag("continuousUpdate")
    v["reference_price_type"] = c.opt_int("referencePriceType")
    v["trail_stop_price"] = c.opt_decimal("trailStopPrice")
    v["trailing_percent"] = c.opt_decimal("trailingPercent")
    v["scale_init_level_size"] = c.opt_int("scaleInitLevelSize")
    v["scale_subs_level_size"] = c.opt_int("scaleSubsLevelSize")
    increment = v["scale_price_increment"] = c.opt_decimal("scalePriceIncrement")
    if increment is not None and 0 < increment < _UNSET_DOUBLE:
        v["scale_price_adjust_value"] = c.opt_decimal("scalePriceAdjustValue")
        v["scale_price_adjust_interval"] = c.opt_int("scalePriceAdjustInterval")
        v["scale_profit_offset"] = c.opt_decimal("scaleProfitOffset")
        v["scale_auto_reset"] = c.flag("scaleAutoReset")
        v["scale_init_position"] = c.opt_int("scaleInitPosition")
        v["scale_init_fill_qty"] = c.opt_int("scaleInitFillQty")
        v["scale_random_percent"] = c.flag("scaleRandomPercent")
    v["scale_table"] = c.text("scaleTable")
    v["active_start_time"] = c.text("activeStartTime")
    v["active_stop_time"] = c.text("activeStopTime")
    hedge_type = v["hedge_type"] = c.text("hedgeType")
    if hedge_type:
        v["hedge_param"] = c.text("hedgeParam")
    v["opt_out_smart_routing"] = c.flag("optOutSmartRouting")
    v["clearing_account"] = c.text("clearingAccount")
    v["clearing_intent"] = c.text("clearingIntent")
    v["not_held"] = c.flag("notHeld")
    v["delta_neutral_contract"] = c.delta_neutral_contract()
    algo = v["algo_strategy"] = c.text("algoStrategy")
    if algo:
        v["algo_params"] = c.tag_values("algoParams")
    v["algo_id"] = c.text("algoId")
    v["what_if"] = c.flag("whatIf")
    v["order_misc_options"] = c.text("orderMiscOptions")
    v["solicited"] = c.flag("solicited")
    v["randomize_size"] = c.flag("randomizeSize")
    v["randomize_price"] = c.flag("randomizePrice")
    if order_type in ("PEG BENCH", "PEGBENCH"):
        v["reference_contract_id"] = c.opt_int("referenceContractId")
        v["is_pegged_change_amount_decrease"] = c.flag("isPeggedChangeAmountDecrease")
        v["pegged_change_amount"] = c.opt_decimal("peggedChangeAmount")
        v["reference_change_amount"] = c.opt_decimal("referenceChangeAmount")
        v["reference_exchange_id"] = c.text("referenceExchangeId")
    n_conditions = c.count("conditions count")
    if n_conditions:
        v["conditions"] = tuple(_condition(c) for _ in range(n_conditions))
        v["conditions_ignore_rth"] = c.flag("conditionsIgnoreRth")
        v["conditions_cancel_order"] = c.flag("conditionsCancelOrder")
    v["adjusted_order_type"] = c.text("adjustedOrderType")
    v["trigger_price"] = c.opt_decimal("triggerPrice")
    v["lmt_price_offset"] = c.opt_decimal("lmtPriceOffset")
    v["adjusted_stop_price"] = c.opt_decimal("adjustedStopPrice")
    v["adjusted_stop_limit_price"] = c.opt_decimal("adjustedStopLimitPrice")
    v["adjusted_trailing_amount"] = c.opt_decimal("adjustedTrailingAmount")
    v["adjustable_trailing_unit"] = c.int_or("adjustableTrailingUnit", 0)
    v["ext_operator"] = c.text("extOperator")
    v["soft_dollar_tier_name"] = c.text("softDollarTier.name")
    v["soft_dollar_tier_value"] = c.text("softDollarTier.val")
    v["cash_qty"] = c.opt_decimal("cashQty")
    v["mifid2_decision_maker"] = c.text("mifid2DecisionMaker")
    v["mifid2_decision_algo"] = c.text("mifid2DecisionAlgo")
    v["mifid2_execution_trader"] = c.text("mifid2ExecutionTrader")
    v["mifid2_execution_algo"] = c.text("mifid2ExecutionAlgo")
    v["dont_use_auto_price_for_hedge"] = c.flag("dontUseAutoPriceForHedge")
    v["is_oms_container"] = c.flag("isOmsContainer")
    v["discretionary_up_to_limit_price"] = c.flag("discretionaryUpToLimitPrice")
    v["use_price_mgmt_algo"] = c.flag("usePriceMgmtAlgo")
    v["duration"] = c.opt_int("duration")
    v["post_to_ats"] = c.opt_int("postToAts")
    v["auto_cancel_parent"] = c.flag("autoCancelParent")
    v["advanced_error_override"] = c.text("advancedErrorOverride")
    v["manual_order_time"] = c.text("manualOrderTime")
    if contract.exchange == "IBKRATS":
        v["min_trade_qty"] = c.opt_int("minTradeQty")
    if order_type in ("PEG BEST", "PEGBEST"):
        v["min_compete_size"] = c.opt_int("minCompeteSize")
        offset = c.opt_decimal("competeAgainstBestOffset", allow_infinite=True)
        v["compete_against_best_offset"] = offset
        if offset is not None and offset.is_infinite():
            v["mid_offset_at_whole"] = c.opt_decimal("midOffsetAtWhole")
            v["mid_offset_at_half"] = c.opt_decimal("midOffsetAtHalf")
    elif order_type in ("PEG MID", "PEGMID"):
        v["mid_offset_at_whole"] = c.opt_decimal("midOffsetAtWhole")
        v["mid_offset_at_half"] = c.opt_decimal("midOffsetAtHalf")
    return PlaceOrder(order_id, contract, OrderFields(**v))  # type: ignore[arg-type]


def _condition(c: _Cursor) -> OrderConditionSpec:
    cond_type = c.integer("condition.condType")
    n = CONDITION_FIELD_COUNTS.get(cond_type)
    if n is None:
        raise DecodeError(c.msg_id, f"unknown order condition type {cond_type}")
    return OrderConditionSpec(cond_type, tuple(c.text("condition field") for _ in range(n - 1)))


_DECODERS: Final[dict[int, Callable[[_Cursor], Request]]] = {
    ids.IN_START_API: _start_api,
    ids.IN_REQ_IDS: _req_ids,
    ids.IN_REQ_CURRENT_TIME: _versioned(ReqCurrentTime),
    ids.IN_REQ_MARKET_DATA_TYPE: _req_market_data_type,
    ids.IN_REQ_POSITIONS: _versioned(ReqPositions),
    ids.IN_CANCEL_POSITIONS: _versioned(CancelPositions),
    ids.IN_REQ_OPEN_ORDERS: _versioned(ReqOpenOrders),
    ids.IN_REQ_ALL_OPEN_ORDERS: _versioned(ReqAllOpenOrders),
    ids.IN_REQ_AUTO_OPEN_ORDERS: _req_auto_open_orders,
    ids.IN_REQ_COMPLETED_ORDERS: _req_completed_orders,
    ids.IN_REQ_ACCOUNT_UPDATES: _req_account_updates,
    ids.IN_REQ_ACCOUNT_UPDATES_MULTI: _req_account_updates_multi,
    ids.IN_CANCEL_ACCOUNT_UPDATES_MULTI: _req_id_only(CancelAccountUpdatesMulti),
    ids.IN_REQ_ACCOUNT_SUMMARY: _req_account_summary,
    ids.IN_CANCEL_ACCOUNT_SUMMARY: _req_id_only(CancelAccountSummary),
    ids.IN_REQ_EXECUTIONS: _req_executions,
    ids.IN_REQ_CONTRACT_DETAILS: _req_contract_details,
    ids.IN_REQ_MKT_DATA: _req_mkt_data,
    ids.IN_CANCEL_MKT_DATA: _req_id_only(CancelMktData),
    ids.IN_PLACE_ORDER: _place_order,
    ids.IN_CANCEL_ORDER: _cancel_order,
    ids.IN_REQ_GLOBAL_CANCEL: _versioned(ReqGlobalCancel),
    ids.IN_REQ_HISTORICAL_DATA: _req_historical_data,
    ids.IN_CANCEL_HISTORICAL_DATA: _req_id_only(CancelHistoricalData),
}
