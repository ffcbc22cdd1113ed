"""Morning entry sizing (allocation or quantity, rounding, cash) and the deterministic
entry client order ids and position ids."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from pydantic import TypeAdapter

from ibflow.contracts.base import ClientOrderId, PositionId
from ibflow.contracts.enums import OrderPurpose, OrderSide, OrderType
from ibflow.contracts.recommendations import Recommendation
from ibflow_order_manager.domain import (
    Sized,
    Skipped,
    SkipReason,
    entry_client_order_id,
    entry_position_id,
    round_quantity,
    size_entry,
)

D = Decimal
DAY = date(2025, 3, 10)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def size(
    rec: Recommendation,
    *,
    equity: str = "100000",
    cash: str = "50000",
    reference: str | None = "100",
    fractional: bool = False,
) -> Sized | Skipped:
    return size_entry(
        rec,
        equity=D(equity),
        available_cash=D(cash),
        reference_price=None if reference is None else D(reference),
        fractional_allowed=fractional,
    )


# -- sizing ---------------------------------------------------------------------------------------


def test_allocation_of_equity_rounds_down_to_whole_shares() -> None:
    # 10 % of 100000 = 10000 at 300 = 33.33 shares -> 33
    result = size(Recommendation(symbol="MSFT", allocation=D("0.1")), reference="300")
    assert result == Sized(quantity=D(33), estimated_price=D(300), estimated_cost=D("9999.00"))


def test_market_entry_cost_includes_the_buffer() -> None:
    result = size(Recommendation(symbol="AAPL", quantity=D(10)), reference="200")
    assert isinstance(result, Sized)
    assert result.estimated_cost == D("2020.00")


def test_limit_entry_is_valued_at_its_limit_without_buffer() -> None:
    rec = Recommendation(
        symbol="AAPL", allocation=D("0.05"), entry_type=OrderType.LMT, limit_price=D("99.50")
    )
    result = size(rec, reference=None)
    # 5000 / 99.50 = 50.25 -> 50
    assert result == Sized(quantity=D(50), estimated_price=D("99.50"), estimated_cost=D("4975.00"))


def test_fractional_allocation_rounds_down_to_four_decimals() -> None:
    rec = Recommendation(symbol="BRK B", allocation=D("0.001"))
    # 100 / 470.13 = 0.21270...: 0 whole shares, 0.2127 fractional
    whole = size(rec, reference="470.13")
    assert isinstance(whole, Skipped)
    assert whole.reason is SkipReason.TOO_SMALL
    fractional = size(rec, reference="470.13", fractional=True)
    assert isinstance(fractional, Sized)
    assert fractional.quantity == D("0.2127")
    assert fractional.estimated_cost == D("0.2127") * D("470.13") * D("1.01")


def test_allocation_below_one_share_is_too_small() -> None:
    result = size(Recommendation(symbol="NVR", allocation=D("0.01")), reference="7500")
    assert result == Skipped(
        SkipReason.TOO_SMALL,
        "allocation 0.01 of equity 100000.00 = 1000.00 at 7500.00 rounds down to 0 shares "
        "(whole shares) for NVR",
    )
    assert isinstance(result, Skipped)
    assert result.message.startswith("too_small: allocation 0.01")


def test_explicit_fractional_quantity_rounds_down_in_a_whole_share_portfolio() -> None:
    assert size(Recommendation(symbol="AAPL", quantity=D("2.9"))) == Sized(
        D(2), D(100), D("202.00")
    )
    result = size(Recommendation(symbol="AAPL", quantity=D("0.5")))
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.TOO_SMALL
    assert "quantity 0.5 rounds down to 0 shares (whole shares)" in result.detail


def test_insufficient_cash_skips_and_names_the_numbers() -> None:
    result = size(Recommendation(symbol="AAPL", quantity=D(50)), cash="3000", reference="99.25")
    assert result == Skipped(
        SkipReason.INSUFFICIENT_CASH, "50 AAPL needs 5012.125, available 3000.00"
    )
    assert isinstance(result, Skipped)
    assert result.message == "insufficient_cash: 50 AAPL needs 5012.125, available 3000.00"


def test_cost_exactly_equal_to_available_cash_is_sized() -> None:
    result = size(Recommendation(symbol="AAPL", quantity=D(10)), cash="1010", reference="100")
    assert isinstance(result, Sized)


@pytest.mark.parametrize("reference", [None, "0", "-1", "NaN"])
def test_market_entry_without_a_reference_price_is_skipped(reference: str | None) -> None:
    result = size(Recommendation(symbol="AAPL", quantity=D(10)), reference=reference)
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.NO_PRICE
    assert "no reference price for AAPL (MKT entry)" in result.detail


@pytest.mark.parametrize("equity", ["0", "-100"])
def test_allocation_without_equity_is_skipped(equity: str) -> None:
    result = size(Recommendation(symbol="AAPL", allocation=D("0.5")), equity=equity)
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.NO_EQUITY


def test_sell_entry_needs_no_cash_and_costs_its_value() -> None:
    rec = Recommendation(symbol="AAPL", side=OrderSide.SELL, quantity=D(10))
    assert size(rec, cash="0") == Sized(D(10), D(100), D(1000))


def test_full_allocation_with_buffer_can_exceed_cash() -> None:
    # 100 % of equity at the reference price, plus the 1 % buffer, is more than the cash.
    result = size(Recommendation(symbol="AAPL", allocation=D(1)), equity="10000", cash="10000")
    assert isinstance(result, Skipped)
    assert result.reason is SkipReason.INSUFFICIENT_CASH


@pytest.mark.parametrize(
    ("quantity", "fractional", "expected"),
    [
        (D("33.999"), False, D(33)),
        (D("33.99999"), True, D("33.9999")),
        (D("0.00009"), True, D("0.0000")),
        (D(7), False, D(7)),
    ],
)
def test_round_quantity_rounds_down(quantity: Decimal, fractional: bool, expected: Decimal) -> None:
    assert round_quantity(quantity, fractional) == expected


# -- deterministic ids ---------------------------------------------------------------------------


def test_entry_client_order_id_is_readable_and_deterministic() -> None:
    first = entry_client_order_id("demo", DAY, "AAPL", OrderPurpose.ENTRY)
    assert first == "entry-demo-20250310-AAPL"
    assert entry_client_order_id("demo", DAY, "AAPL") == first
    assert entry_position_id("demo", DAY, "AAPL") == "pos-demo-20250310-AAPL"


def test_exit_purpose_gives_a_distinct_id() -> None:
    assert entry_client_order_id("demo", DAY, "AAPL", OrderPurpose.EXIT) == (
        "exit-demo-20250310-AAPL"
    )


@pytest.mark.parametrize(
    ("symbol", "token"),
    [
        ("BRK B", "BRK_20B"),
        ("BRK.B", "BRK.B"),
        ("BRK_B", "BRK_5FB"),
        ("BF-B", "BF_2DB"),
        ("RDS/A", "RDS_2FA"),
        ("7203", "7203"),
        ("NESN:SW", "NESN_3ASW"),
        ("É", "_C3_89"),
    ],
)
def test_symbols_are_escaped_reversibly(symbol: str, token: str) -> None:
    client_order_id = entry_client_order_id("demo", DAY, symbol)
    assert client_order_id == f"entry-demo-20250310-{token}"
    assert ID_PATTERN.match(client_order_id)


def test_realistic_symbols_never_collide() -> None:
    symbols = ["BRK B", "BRK.B", "BRK_B", "BRKB", "BRK-B", "BRK  B", "brk b", "BF B", "BF.B"]
    ids = {entry_client_order_id("demo", DAY, symbol) for symbol in symbols}
    assert len(ids) == len(symbols)


def test_portfolio_symbol_boundaries_cannot_collide() -> None:
    # A portfolio id may contain "-": the symbol's escaping keeps the split unambiguous.
    first = entry_client_order_id("a-20250310", date(2025, 3, 11), "X")
    second = entry_client_order_id("a", DAY, "20250311-X")
    assert first != second


def test_dates_and_portfolios_give_distinct_ids() -> None:
    ids = {
        entry_client_order_id(portfolio, day, "AAPL")
        for portfolio in ("demo", "demo2", "live")
        for day in (DAY, date(2025, 3, 11))
    }
    assert len(ids) == 6


def test_long_ids_are_shortened_with_a_stable_hash() -> None:
    portfolio = "p" * 60
    long_id = entry_client_order_id(portfolio, DAY, "AAPL")
    assert len(long_id) == 64
    assert ID_PATTERN.match(long_id)
    assert long_id == entry_client_order_id(portfolio, DAY, "AAPL")
    assert long_id.startswith("entry-" + "p" * 41 + ":")
    other = entry_client_order_id(portfolio, DAY, "MSFT")
    assert other != long_id
    assert entry_position_id(portfolio, DAY, "AAPL") != long_id


def test_longest_symbol_and_portfolio_still_give_a_valid_id() -> None:
    symbol = "Z Y" * 10 + "XX"  # 32 characters, half of them escaped
    client_order_id = entry_client_order_id("P" * 64, DAY, symbol)
    assert ID_PATTERN.match(client_order_id)


def test_ids_validate_as_contract_ids() -> None:
    for symbol in ("BRK B", "AAPL", "x" * 32):
        TypeAdapter(ClientOrderId).validate_python(entry_client_order_id("demo", DAY, symbol))
        TypeAdapter(PositionId).validate_python(entry_position_id("demo", DAY, symbol))


@pytest.mark.parametrize(
    ("portfolio", "symbol", "message"),
    [
        ("", "AAPL", "is not a portfolio slug"),
        ("_demo", "AAPL", "is not a portfolio slug"),
        ("de mo", "AAPL", "is not a portfolio slug"),
        ("demo", "", "symbol must not be empty"),
    ],
)
def test_bad_id_inputs_are_refused(portfolio: str, symbol: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry_client_order_id(portfolio, DAY, symbol)
