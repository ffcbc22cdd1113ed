"""Pre-trade risk rules: each one refusing with its numbers, the order they are checked
in, and exits/reductions passing the exposure rules."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from ibflow.contracts.enums import OrderPurpose, OrderSide
from ibflow_order_manager.domain import (
    ProposedOrder,
    RiskContext,
    RiskLimits,
    RiskRule,
    check_risk,
    crossed_daily_loss,
    is_reduction,
    risk_refusals,
)

D = Decimal
BUY, SELL = OrderSide.BUY, OrderSide.SELL
ENTRY, EXIT, MANUAL = OrderPurpose.ENTRY, OrderPurpose.EXIT, OrderPurpose.MANUAL

CONTEXT = RiskContext(
    cash=D("12000.00"),
    reserved_cash=D("3000.00"),
    limits=RiskLimits(
        max_order_value=D(10000),
        max_position_value=D(15000),
        max_open_orders=5,
        max_daily_loss=D(500),
    ),
    realized_pnl_today=D("-100.00"),
    open_orders=2,
    position_value=D(0),
    position_quantity=D(0),
)

BREAKS_EVERYTHING = replace(
    CONTEXT,
    trading_halted=True,
    cash=D(100),
    reserved_cash=D(0),
    limits=RiskLimits(
        max_order_value=D(1000),
        max_position_value=D(1000),
        max_open_orders=1,
        max_daily_loss=D(50),
    ),
    realized_pnl_today=D(-50),
    open_orders=1,
    position_value=D(900),
    position_quantity=D(10),
    day_trade_position_exists=True,
)


def order(
    side: OrderSide = BUY,
    quantity: str = "50",
    price: str = "100",
    purpose: OrderPurpose = ENTRY,
    cash_required: Decimal | None = None,
) -> ProposedOrder:
    return ProposedOrder(
        symbol="AAPL",
        side=side,
        quantity=D(quantity),
        estimated_price=D(price),
        purpose=purpose,
        cash_required=cash_required,
    )


def test_order_within_every_limit_passes() -> None:
    assert check_risk(CONTEXT, order()) is None
    assert risk_refusals(CONTEXT, order()) == ()


# -- cash -----------------------------------------------------------------------------------


def test_cash_refusal_names_the_numbers() -> None:
    refusal = check_risk(CONTEXT, order(quantity="100", price="101.50"))
    assert refusal is not None
    assert refusal.rule is RiskRule.CASH
    assert refusal.message == (
        "cash: order needs 10150.00 USD, available 9000.00 USD (cash 12000.00 - reserved 3000.00)"
    )
    assert str(refusal) == refusal.message


def test_cash_check_uses_the_reservation_with_its_buffer() -> None:
    # 90 x 100 = 9000 fits exactly, but a market buy reserves 1 % more.
    assert check_risk(CONTEXT, order(quantity="90")) is None
    refusal = check_risk(CONTEXT, order(quantity="90", cash_required=D("9090.00")))
    assert refusal is not None
    assert refusal.rule is RiskRule.CASH
    assert "needs 9090.00 USD" in refusal.message


def test_cash_shows_amounts_exactly_never_rounded_to_look_equal() -> None:
    refusal = check_risk(CONTEXT, order(quantity="90", cash_required=D("9000.004")))
    assert refusal is not None
    assert "needs 9000.004 USD, available 9000.00 USD" in refusal.message


def test_cash_uses_the_portfolio_currency() -> None:
    context = replace(CONTEXT, currency="EUR")
    refusal = check_risk(context, order(quantity="99"))
    assert refusal is not None
    assert "needs 9900.00 EUR, available 9000.00 EUR" in refusal.message


def test_a_sell_needs_no_cash() -> None:
    context = replace(CONTEXT, cash=D(0), reserved_cash=D(0), position_quantity=D(0))
    assert check_risk(context, order(side=SELL, purpose=MANUAL)) is None


# -- halted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [ENTRY, MANUAL])
def test_halted_refuses_new_exposure(purpose: OrderPurpose) -> None:
    refusal = check_risk(replace(CONTEXT, trading_halted=True), order(purpose=purpose))
    assert refusal is not None
    assert refusal.rule is RiskRule.HALTED
    assert refusal.message.startswith("halted: trading is halted for this portfolio")
    assert f"BUY 50 AAPL, {purpose}" in refusal.message


def test_halted_still_allows_exits() -> None:
    context = replace(CONTEXT, trading_halted=True, position_quantity=D(50))
    assert check_risk(context, order(side=SELL, purpose=EXIT)) is None


def test_halted_still_allows_a_manual_reduction() -> None:
    context = replace(CONTEXT, trading_halted=True, position_quantity=D(50))
    assert check_risk(context, order(side=SELL, quantity="20", purpose=MANUAL)) is None


def test_manual_sell_beyond_the_position_is_not_a_reduction() -> None:
    context = replace(CONTEXT, trading_halted=True, position_quantity=D(50))
    refusal = check_risk(context, order(side=SELL, quantity="60", purpose=MANUAL))
    assert refusal is not None
    assert refusal.rule is RiskRule.HALTED


# -- fractional -----------------------------------------------------------------------------


def test_fractional_quantity_refused_in_a_whole_share_portfolio() -> None:
    refusal = check_risk(CONTEXT, order(quantity="10.5"))
    assert refusal is not None
    assert refusal.rule is RiskRule.FRACTIONAL
    assert refusal.message == (
        "fractional: quantity 10.5 is not a whole number of shares and the portfolio "
        "does not allow fractional shares"
    )


def test_fractional_quantity_allowed_when_the_portfolio_allows_it() -> None:
    assert check_risk(replace(CONTEXT, fractional_allowed=True), order(quantity="10.5")) is None


def test_whole_quantity_written_with_decimals_is_not_fractional() -> None:
    assert check_risk(CONTEXT, order(quantity="10.000")) is None


def test_fractional_rule_applies_to_exits_too() -> None:
    context = replace(CONTEXT, position_quantity=D(50))
    refusal = check_risk(context, order(side=SELL, quantity="0.5", purpose=EXIT))
    assert refusal is not None
    assert refusal.rule is RiskRule.FRACTIONAL


# -- value limits -----------------------------------------------------------------------------


def test_max_order_value_refusal_names_the_numbers() -> None:
    context = replace(CONTEXT, cash=D(1_000_000))
    refusal = check_risk(context, order(quantity="120", price="100"))
    assert refusal is not None
    assert refusal.rule is RiskRule.MAX_ORDER_VALUE
    assert refusal.message == (
        "max_order_value: order value 12000.00 USD (120 x 100.00) is above the limit 10000.00 USD"
    )


def test_order_exactly_at_max_order_value_passes() -> None:
    context = replace(CONTEXT, cash=D(1_000_000))
    assert check_risk(context, order(quantity="100", price="100")) is None


def test_max_position_value_counts_held_and_working() -> None:
    context = replace(CONTEXT, position_value=D(8000))
    refusal = check_risk(context, order(quantity="80"))
    assert refusal is not None
    assert refusal.rule is RiskRule.MAX_POSITION_VALUE
    assert refusal.message == (
        "max_position_value: AAPL would reach 16000.00 USD (held and working 8000.00 + "
        "order 8000.00), above the limit 15000.00 USD"
    )


def test_position_exactly_at_the_limit_passes() -> None:
    context = replace(CONTEXT, position_value=D(7000))
    assert check_risk(context, order(quantity="80")) is None


def test_no_limits_means_no_value_refusals() -> None:
    context = replace(CONTEXT, cash=D(10**9), limits=RiskLimits(), position_value=D(10**8))
    assert check_risk(context, order(quantity="100000")) is None


# -- open orders, daily loss, duplicates -------------------------------------------------------


def test_max_open_orders_refuses_at_the_limit() -> None:
    refusal = check_risk(replace(CONTEXT, open_orders=5), order())
    assert refusal is not None
    assert refusal.rule is RiskRule.MAX_OPEN_ORDERS
    assert refusal.message == "max_open_orders: 5 orders already open, the limit is 5"


def test_max_open_orders_allows_one_below_the_limit() -> None:
    assert check_risk(replace(CONTEXT, open_orders=4), order()) is None


@pytest.mark.parametrize("pnl", [D(-500), D("-500.01"), D(-2000)])
def test_daily_loss_at_or_over_the_limit_refuses_entries(pnl: Decimal) -> None:
    refusal = check_risk(replace(CONTEXT, realized_pnl_today=pnl), order())
    assert refusal is not None
    assert refusal.rule is RiskRule.DAILY_LOSS
    assert refusal.message.startswith(
        f"daily_loss: realized P&L today {pnl:.2f} USD is at or beyond the loss limit of 500.00 USD"
    )


def test_daily_loss_below_the_limit_passes() -> None:
    assert check_risk(replace(CONTEXT, realized_pnl_today=D("-499.99")), order()) is None


def test_daily_loss_does_not_block_exits() -> None:
    context = replace(CONTEXT, realized_pnl_today=D(-900), position_quantity=D(50))
    assert check_risk(context, order(side=SELL, purpose=EXIT)) is None


def test_second_day_trade_position_in_a_symbol_is_refused() -> None:
    refusal = check_risk(replace(CONTEXT, day_trade_position_exists=True), order())
    assert refusal is not None
    assert refusal.rule is RiskRule.DUPLICATE_POSITION
    assert refusal.message == (
        "duplicate_position: AAPL already has an open or pending day-trade position; one per symbol"
    )


def test_duplicate_rule_applies_to_entries_only() -> None:
    context = replace(CONTEXT, day_trade_position_exists=True)
    assert check_risk(context, order(purpose=MANUAL)) is None


# -- order of the rules, reductions ---------------------------------------------------------------


def test_rules_are_checked_in_the_documented_order() -> None:
    refusals = risk_refusals(BREAKS_EVERYTHING, order(quantity="10.5"))
    assert [refusal.rule for refusal in refusals] == [
        RiskRule.HALTED,
        RiskRule.FRACTIONAL,
        RiskRule.CASH,
        RiskRule.MAX_ORDER_VALUE,
        RiskRule.MAX_POSITION_VALUE,
        RiskRule.MAX_OPEN_ORDERS,
        RiskRule.DAILY_LOSS,
        RiskRule.DUPLICATE_POSITION,
    ]
    first = check_risk(BREAKS_EVERYTHING, order(quantity="10.5"))
    assert first is not None
    assert first.rule is RiskRule.HALTED


def test_every_message_starts_with_its_rule() -> None:
    for refusal in risk_refusals(BREAKS_EVERYTHING, order(quantity="10.5")):
        assert refusal.message.startswith(f"{refusal.rule.value}: ")


@pytest.mark.parametrize(
    ("side", "quantity", "purpose", "held"),
    [
        (SELL, "50", EXIT, D(10)),  # an exit passes whatever our position record says
        (SELL, "10", MANUAL, D(10)),  # sells at most what is held
        (BUY, "5", MANUAL, D(-10)),  # buys back part of a short
        (BUY, "10", EXIT, D(-10)),
    ],
)
def test_exits_and_reductions_pass_every_exposure_rule(
    side: OrderSide, quantity: str, purpose: OrderPurpose, held: Decimal
) -> None:
    context = replace(BREAKS_EVERYTHING, position_quantity=held)
    assert check_risk(context, order(side=side, quantity=quantity, purpose=purpose)) is None


@pytest.mark.parametrize(
    ("side", "quantity", "purpose", "held", "reduces"),
    [
        (SELL, "10", EXIT, D(0), True),
        (SELL, "10", MANUAL, D(10), True),
        (SELL, "11", MANUAL, D(10), False),
        (SELL, "10", MANUAL, D(0), False),
        (BUY, "10", MANUAL, D(10), False),
        (BUY, "10", MANUAL, D(-10), True),
        (BUY, "10", ENTRY, D(-20), True),
        (SELL, "10", ENTRY, D(-20), False),
    ],
)
def test_is_reduction(
    side: OrderSide, quantity: str, purpose: OrderPurpose, held: Decimal, reduces: bool
) -> None:
    context = replace(CONTEXT, position_quantity=held)
    assert is_reduction(context, order(side=side, quantity=quantity, purpose=purpose)) is reduces


# -- daily loss trigger ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pnl", "limit", "crossed"),
    [
        (D(-500), D(500), True),
        (D("-500.01"), D(500), True),
        (D("-499.99"), D(500), False),
        (D(0), D(500), False),
        (D(800), D(500), False),
        (D(-(10**6)), None, False),
    ],
)
def test_crossed_daily_loss(pnl: Decimal, limit: Decimal | None, crossed: bool) -> None:
    assert crossed_daily_loss(pnl, limit) is crossed


@pytest.mark.parametrize("limit", [D(0), D(-500)])
def test_crossed_daily_loss_needs_a_positive_limit(limit: Decimal) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        crossed_daily_loss(D(-1), limit)


# -- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        {"max_order_value": D(0)},
        {"max_position_value": D(-1)},
        {"max_daily_loss": D("NaN")},
        {"max_open_orders": 0},
    ],
)
def test_limits_must_be_positive_when_set(limits: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be positive when set"):
        RiskLimits(**limits)  # type: ignore[arg-type]


def test_proposed_order_needs_positive_quantity_and_price() -> None:
    with pytest.raises(ValueError, match="quantity must be a positive number"):
        order(quantity="0")
    with pytest.raises(ValueError, match="estimated_price must be a positive number"):
        order(price="-1")


def test_context_refuses_negative_reservations() -> None:
    with pytest.raises(ValueError, match="reserved_cash"):
        replace(CONTEXT, reserved_cash=D(-1))
