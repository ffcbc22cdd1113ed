"""decode_request on hand-written wire vectors: the spec's captures and malformed input."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from ibflow_gateway_sim.protocol import ids
from ibflow_gateway_sim.protocol.requests import (
    CancelOrder,
    ContractSpec,
    DecodeError,
    ExecutionFilter,
    PlaceOrder,
    ReqContractDetails,
    ReqExecutions,
    ReqHistoricalData,
    ReqMktData,
    UnknownRequest,
    decode_request,
)

AAPL = ContractSpec(
    con_id=265598,
    symbol="AAPL",
    sec_type="STK",
    strike=Decimal("0.0"),
    exchange="SMART",
    primary_exchange="NASDAQ",
    currency="USD",
    local_symbol="AAPL",
    trading_class="NMS",
)


def spec_mkt_order() -> list[str]:
    """The 'MKT BUY 10 (account, orderRef)' column of spec §3.1 (115 fields)."""
    fields = [""] * 115
    non_empty = {
        0: "3", 1: "7", 2: "265598", 3: "AAPL", 4: "STK", 6: "0.0", 9: "SMART", 10: "NASDAQ",
        11: "USD", 12: "AAPL", 13: "NMS", 16: "BUY", 17: "10", 18: "MKT", 23: "DU1234567",
        24: "O", 25: "0", 26: "mkt1", 27: "1", 36: "0.0", 44: "0", 46: "-1", 47: "0", 50: "0",
        53: "0", 54: "0", 56: "0", 62: "0", 67: "0", 78: "0", 81: "0", 82: "0", 85: "0",
        87: "0", 88: "0", 89: "0", 90: "0", 97: "0", 106: "0", 107: "0", 108: "0", 109: "0",
        112: "0",
    }  # fmt: skip
    non_empty.update(dict.fromkeys(range(28, 35), "0"))
    for index, value in non_empty.items():
        fields[index] = value
    return fields


def decode_order(fields: list[str]) -> PlaceOrder:
    request = decode_request(fields)
    assert isinstance(request, PlaceOrder)
    return request


def test_spec_market_order_vector() -> None:
    decoded = decode_order(spec_mkt_order())
    assert decoded.order_id == 7
    assert decoded.contract == AAPL
    o = decoded.order
    assert (o.action, o.total_quantity, o.order_type) == ("BUY", Decimal(10), "MKT")
    assert (o.account, o.order_ref, o.open_close, o.exempt_code) == ("DU1234567", "mkt1", "O", -1)
    assert (o.transmit, o.what_if, o.discretionary_amt) == (True, False, Decimal("0.0"))


def test_spec_variants_stp_child_and_what_if() -> None:
    stp = spec_mkt_order()
    stp[1], stp[16], stp[17], stp[18], stp[20], stp[28] = "12", "SELL", "1", "STP", "40.0", "10"
    child = decode_order(stp).order
    assert (child.action, child.aux_price, child.parent_id) == ("SELL", Decimal("40.0"), 10)

    what_if = spec_mkt_order()
    what_if[85] = "1"
    assert decode_order(what_if).order.what_if is True


def test_echoed_quantity_with_decimals_parses_exactly() -> None:
    fields = spec_mkt_order()
    fields[17] = "5.0"
    fields[19] = "100.25"
    order = decode_order(fields).order
    assert order.total_quantity == Decimal("5.0")
    assert str(order.total_quantity) == "5.0"
    assert order.lmt_price == Decimal("100.25")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            "9 8 3 0 AAPL STK _ 0.0 _ _ SMART _ USD _ _ 0 _ _ _",
            ReqContractDetails(
                3, ContractSpec(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD")
            ),
        ),
        (
            "1 11 5 265598 AAPL STK _ 0.0 _ _ SMART NASDAQ USD AAPL NMS 0 _ 1 0 _",
            ReqMktData(5, AAPL, snapshot=True),
        ),
        (
            "20 14 265598 AAPL STK _ 0.0 _ _ SMART NASDAQ USD AAPL NMS 0 _ 1~day 5~D 1 TRADES 1"
            " 0 _",
            ReqHistoricalData(14, AAPL, False, "", "1 day", "5 D", True, "TRADES", 1, False),
        ),
        ("7 3 2 0 _ _ _ _ _ _", ReqExecutions(2, ExecutionFilter())),
        ("4 1 8 _", CancelOrder(8, "")),
    ],
    ids=["reqContractDetails", "reqMktData", "reqHistoricalData", "reqExecutions", "cancelOrder"],
)
def test_spec_captured_requests(fields: str, expected: object) -> None:
    wire = [f.replace("_", "").replace("~", " ") for f in fields.split()]
    assert decode_request(wire) == expected


# --- unknown and malformed input -----------------------------------------------------------


def test_unknown_id_is_not_an_error() -> None:
    assert decode_request(["10", "1", "2"]) == UnknownRequest(10, ("1", "2"))
    assert decode_request(["104"]) == UnknownRequest(104, ())


@pytest.mark.parametrize(
    ("mutate", "msg_id", "reason"),
    [
        (lambda f: f.__setitem__(1, "seven"), 3, "'orderId' (#1): 'seven' is not an integer"),
        (lambda f: f.__setitem__(17, "ten"), 3, "'totalQuantity' (#17): 'ten' is not a number"),
        (lambda f: f.__setitem__(17, ""), 3, "'totalQuantity' (#17): '' is not a number"),
        (lambda f: f.__setitem__(17, "nan"), 3, "'totalQuantity' (#17): 'nan' is not a finite"),
        (lambda f: f.__setitem__(19, "1.2.3"), 3, "'lmtPrice' (#19): '1.2.3' is not a number"),
        (lambda f: f.__setitem__(27, "true"), 3, "'transmit' (#27): 'true' is not a boolean"),
        (lambda f: f.__setitem__(28, "1.0"), 3, "'parentId' (#28): '1.0' is not an integer"),
        (lambda f: f.__setitem__(90, "x"), 3, "'conditions count' (#90)"),
        (lambda f: f.__setitem__(90, "-1"), 3, "bad count -1"),
        (lambda f: f.pop(), 3, "too few fields: 'manualOrderTime' (#114) missing"),
        (lambda f: f.append("extra"), 3, "1 field(s) left over after #114"),
        # a conditional block switched on shifts every later field: caught at a count
        (lambda f: f.__setitem__(65, "LMT"), 3, "'conditions count' (#99): '' is not an integer"),
        (lambda f: f.__setitem__(73, "0.5"), 3, "'algoParams count' (#91): '' is not an integer"),
        (lambda f: f.__setitem__(77, "D"), 3, "'conditions count' (#91): '' is not an integer"),
        (lambda f: f.__setitem__(83, "Adaptive"), 3, "'algoParams count'"),
    ],
    ids=[
        "orderId",
        "quantity",
        "empty quantity",
        "nan quantity",
        "price",
        "boolean",
        "float parentId",
        "conditions count",
        "negative count",
        "truncated",
        "extra field",
        "dn block missing",
        "scale block missing",
        "hedge param missing",
        "algo count missing",
    ],
)
def test_malformed_place_order_names_the_field(mutate: object, msg_id: int, reason: str) -> None:
    fields = spec_mkt_order()
    mutate(fields)  # type: ignore[operator]
    with pytest.raises(DecodeError) as info:
        decode_request(fields)
    assert info.value.msg_id == msg_id
    assert reason in info.value.reason
    assert "PLACE_ORDER" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([], "empty message"),
        (["x1"], "message id 'x1' is not an integer"),
        (["3"], "too few fields: 'orderId'"),
        (["1", "11", "5", "265598", "AAPL"], "too few fields: 'secType'"),
        (["8", "1"], "too few fields: 'numIds'"),
        (["8", "1", "1", "1"], "left over"),
        (["71", "2"], "too few fields: 'clientId'"),
        (["99", "yes"], "'apiOnly' (#1): 'yes' is not a boolean"),
        (["62", "1", "x", "All", "NetLiquidation"], "'reqId' (#2): 'x' is not an integer"),
        (["4", "1"], "'orderId'"),
    ],
)
def test_malformed_requests(fields: list[str], reason: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(reason)):
        decode_request(fields)


def test_start_api_without_capabilities_field() -> None:
    decoded = decode_request(["71", "2", "0"])
    assert decoded == decode_request(["71", "2", "0", ""])


def test_every_handled_id_has_a_name() -> None:
    handled = [value for name, value in vars(ids).items() if name.startswith("IN_")]
    handled = [v for v in handled if isinstance(v, int)]
    assert all(ids.IN_NAMES[v] for v in handled)
    assert ids.IN_NAMES[3] == "PLACE_ORDER"
    assert ids.OUT_NAMES[5] == "OPEN_ORDER"
    for msg_id in handled:
        with pytest.raises(DecodeError):
            decode_request([str(msg_id), "x", "x", "x", "x", "x", "x"])
