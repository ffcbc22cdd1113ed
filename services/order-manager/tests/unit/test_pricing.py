"""Money math: ticks, notionals, reservations and their release, cash deltas: exact."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pytest

from ibflow.contracts.enums import OrderSide, OrderType
from ibflow_order_manager.domain import (
    DEFAULT_BUFFER_FRACTION,
    cash_delta,
    commission_cash_delta,
    format_amount,
    is_on_tick,
    order_notional,
    release_for_fill,
    remaining_reservation,
    reservation,
    reservation_price,
    round_to_tick,
    tick_size,
)

D = Decimal
BUY, SELL = OrderSide.BUY, OrderSide.SELL


# -- ticks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "instrument_tick", "expected"),
    [
        (D("1.00"), None, D("0.01")),
        (D("250.37"), None, D("0.01")),
        (D("0.9999"), None, D("0.0001")),
        (D("0.50"), None, D("0.0001")),
        (D("250"), D("0.05"), D("0.05")),
        (D("0.50"), D("0.005"), D("0.005")),
    ],
)
def test_tick_size_reg_nms_or_instrument(
    price: Decimal, instrument_tick: Decimal | None, expected: Decimal
) -> None:
    assert tick_size(price, instrument_tick) == expected


@pytest.mark.parametrize(("price", "tick"), [(D(0), None), (D(-1), None), (D(5), D(0))])
def test_tick_size_refuses_non_positive_inputs(price: Decimal, tick: Decimal | None) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        tick_size(price, tick)


@pytest.mark.parametrize(
    ("price", "tick", "on_tick"),
    [
        (D("101.25"), D("0.01"), True),
        (D("101.250"), D("0.01"), True),
        (D("101.255"), D("0.01"), False),
        (D("0.1234"), D("0.0001"), True),
        (D("0.12345"), D("0.0001"), False),
        (D("10.15"), D("0.05"), True),
        (D("10.12"), D("0.05"), False),
        (D("NaN"), D("0.01"), False),
    ],
)
def test_is_on_tick_is_exact(price: Decimal, tick: Decimal, on_tick: bool) -> None:
    assert is_on_tick(price, tick) is on_tick


@pytest.mark.parametrize(
    ("price", "tick", "rounding", "expected"),
    [
        (D("101.257"), D("0.01"), ROUND_FLOOR, D("101.25")),
        (D("101.251"), D("0.01"), ROUND_CEILING, D("101.26")),
        (D("10.12"), D("0.05"), ROUND_FLOOR, D("10.10")),
        (D("10.13"), D("0.05"), None, D("10.15")),
    ],
)
def test_round_to_tick(
    price: Decimal, tick: Decimal, rounding: str | None, expected: Decimal
) -> None:
    result = (
        round_to_tick(price, tick) if rounding is None else round_to_tick(price, tick, rounding)
    )
    assert result == expected
    assert is_on_tick(result, tick)


# -- notional and reservations -------------------------------------------------------------


def test_order_notional_is_exact() -> None:
    assert order_notional(D("3.3333"), D("0.1")) == D("0.33333")
    assert order_notional(D(2), D("4.5"), multiplier=D(100)) == D(900)


@pytest.mark.parametrize(
    ("order_type", "prices", "expected"),
    [
        (OrderType.LMT, {"limit_price": D("101.50")}, D("10150.00")),
        (OrderType.STP_LMT, {"limit_price": D("102"), "stop_price": D("101")}, D(10200)),
        (OrderType.STP, {"stop_price": D(100)}, D("10100.00")),
        (OrderType.MKT, {"reference_price": D(100)}, D("10100.00")),
        (OrderType.TRAIL, {"reference_price": D(50)}, D("5050.00")),
    ],
)
def test_buy_reserves_the_most_it_may_pay(
    order_type: OrderType, prices: dict[str, Decimal], expected: Decimal
) -> None:
    assert reservation(BUY, order_type, D(100), **prices) == expected


def test_default_buffer_is_one_percent() -> None:
    assert D("0.01") == DEFAULT_BUFFER_FRACTION


def test_buffer_fraction_is_applied_to_market_orders() -> None:
    reserved = reservation(
        BUY, OrderType.MKT, D(10), reference_price=D(100), buffer_fraction=D("0.05")
    )
    assert reserved == D("1050.00")


@pytest.mark.parametrize("order_type", list(OrderType))
def test_sell_reserves_nothing(order_type: OrderType) -> None:
    assert reservation(SELL, order_type, D(100)) == 0


@pytest.mark.parametrize(
    ("order_type", "missing"),
    [
        (OrderType.LMT, "limit_price"),
        (OrderType.STP_LMT, "limit_price"),
        (OrderType.STP, "stop_price"),
        (OrderType.MKT, "reference_price"),
        (OrderType.TRAIL, "reference_price"),
    ],
)
def test_buy_without_the_price_its_type_needs_is_refused(
    order_type: OrderType, missing: str
) -> None:
    with pytest.raises(ValueError, match=f"{missing} is required"):
        reservation(BUY, order_type, D(100))


def test_reservation_price_per_share() -> None:
    assert reservation_price(OrderType.MKT, reference_price=D("0.5")) == D("0.505")
    assert reservation_price(OrderType.LMT, limit_price=D("9.99")) == D("9.99")


def test_reservation_refuses_non_positive_quantity() -> None:
    with pytest.raises(ValueError, match="quantity must be a positive number"):
        reservation(BUY, OrderType.LMT, D(0), limit_price=D(1))


# -- releasing reservations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reserved", "quantity", "filled", "expected"),
    [
        (D("10150.00"), D(100), D(0), D("10150.00")),
        (D("10150.00"), D(100), D(40), D("6090.00")),
        (D("10150.00"), D(100), D(100), D(0)),
        (D("303.03"), D(3), D(1), D("202.02")),
        (D("0.505"), D("0.5"), D("0.1234"), D("0.380366")),
    ],
)
def test_remaining_reservation_is_proportional(
    reserved: Decimal, quantity: Decimal, filled: Decimal, expected: Decimal
) -> None:
    assert remaining_reservation(reserved, quantity, filled) == expected


def test_remaining_reservation_refuses_filled_above_quantity() -> None:
    with pytest.raises(ValueError, match="above quantity"):
        remaining_reservation(D(100), D(10), D(11))


def test_releases_add_up_to_the_reservation() -> None:
    quantity = D(7)
    reserved = reservation(BUY, OrderType.MKT, quantity, reference_price=D("33.37"))
    fills = [D(1), D(2), D(3), D(1)]
    filled = D(0)
    released = D(0)
    for shares in fills:
        released += release_for_fill(reserved, quantity, filled, shares)
        filled += shares
    assert released == reserved
    assert remaining_reservation(reserved, quantity, filled) == 0


def test_partial_fill_then_cancel_releases_only_the_unfilled_remainder() -> None:
    # 100 @ LMT 101.50, 40 fill, the rest is cancelled: 60/100 of the reservation is
    # released on the cancel, the 40 filled shares released theirs as they filled.
    reserved = reservation(BUY, OrderType.LMT, D(100), limit_price=D("101.50"))
    on_fill = release_for_fill(reserved, D(100), D(0), D(40))
    on_cancel = remaining_reservation(reserved, D(100), D(40))
    assert on_fill == D("4060.00")
    assert on_cancel == D("6090.00")
    assert on_fill + on_cancel == reserved


def test_release_for_fill_refuses_non_positive_shares() -> None:
    with pytest.raises(ValueError, match="shares must be a positive number"):
        release_for_fill(D(100), D(10), D(0), D(0))


# -- cash deltas ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "shares", "price", "commission", "multiplier", "expected"),
    [
        (BUY, D(100), D("101.25"), D("1.00"), D(1), D("-10126.00")),
        (SELL, D(100), D("101.25"), D("1.00"), D(1), D("10124.00")),
        (BUY, D("0.3333"), D("150.01"), D(0), D(1), D("-49.998333")),
        (SELL, D(2), D("3.10"), D("0.35"), D(100), D("619.65")),
        (BUY, D(10), D(10), D("-0.20"), D(1), D("-99.80")),
    ],
)
def test_cash_delta_is_exact(
    side: OrderSide,
    shares: Decimal,
    price: Decimal,
    commission: Decimal,
    multiplier: Decimal,
    expected: Decimal,
) -> None:
    assert cash_delta(side, shares, price, commission, multiplier) == expected


def test_execution_then_late_commission_sum_to_the_same_cash() -> None:
    at_once = cash_delta(BUY, D(100), D("50.005"), D("1.005"))
    split = cash_delta(BUY, D(100), D("50.005")) + commission_cash_delta(D("1.005"))
    assert at_once == split == D("-5001.505")


@pytest.mark.parametrize("commission", [D("NaN"), D("Infinity")])
def test_non_finite_commission_is_refused(commission: Decimal) -> None:
    with pytest.raises(ValueError, match="commission must be a finite number"):
        cash_delta(BUY, D(1), D(1), commission)
    with pytest.raises(ValueError, match="commission must be a finite number"):
        commission_cash_delta(commission)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D(10150), "10150.00"),
        (D("9000.5"), "9000.50"),
        (D("0.125"), "0.125"),
        (D("-510"), "-510.00"),
        (D("1E+3"), "1000.00"),
        (D("10150.0049"), "10150.0049"),
        (D("5012.1250"), "5012.125"),
        (D("NaN"), "NaN"),
    ],
)
def test_format_amount_is_exact_with_at_least_two_decimals(value: Decimal, text: str) -> None:
    assert format_amount(value) == text
