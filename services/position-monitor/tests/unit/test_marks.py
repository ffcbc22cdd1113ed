"""Marks and unrealized P&L: last else mid, long and short, per portfolio, and realized +
unrealized always equal to the whole P&L."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from ibflow.contracts.enums import ExitReason, PositionSide
from ibflow_position_monitor.domain import (
    Mark,
    MarkSource,
    PositionState,
    Quote,
    mark_position,
    mark_price,
    portfolio_unrealized,
    unrealized_pnl,
)

D = Decimal
NOW = dt.datetime(2025, 3, 10, 15, 0, tzinfo=dt.UTC)


def opened(
    symbol: str = "AAPL",
    side: PositionSide = PositionSide.LONG,
    quantity: str = "100",
    price: str = "10.00",
    portfolio: str = "alpha",
    multiplier: str = "1",
) -> PositionState:
    state = PositionState.new(
        position_id=f"pos-{portfolio}-{symbol}",
        portfolio_id=portfolio,
        symbol=symbol,
        side=side,
        planned_quantity=D(quantity),
        entry_client_order_id=f"entry-{portfolio}-{symbol}",
        multiplier=D(multiplier),
    )
    return state.on_execution(
        "e1",
        client_order_id=state.entry_client_order_id,
        side=state.entry_side,
        shares=D(quantity),
        price=D(price),
    ).state


def quote(
    bid: str | None = None, ask: str | None = None, last: str | None = None, symbol: str = "AAPL"
) -> Quote:
    return Quote(
        symbol=symbol,
        at=NOW,
        bid=None if bid is None else D(bid),
        ask=None if ask is None else D(ask),
        last=None if last is None else D(last),
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (quote(bid="10.00", ask="10.02", last="10.05"), (D("10.05"), MarkSource.LAST)),
        (quote(bid="10.00", ask="10.03"), (D("10.015"), MarkSource.MID)),
        (quote(bid="10.00", ask="10.02", last="NaN"), (D("10.01"), MarkSource.MID)),
        (quote(bid="10.05", ask="10.00"), None),  # crossed: no mid
        (quote(bid="10.00"), None),
        (quote(last="-1"), None),
    ],
)
def test_mark_is_the_last_price_else_the_mid(
    q: Quote, expected: tuple[Decimal, MarkSource] | None
) -> None:
    assert mark_price(q) == expected


@pytest.mark.parametrize(
    ("side", "mark", "multiplier", "expected"),
    [
        (PositionSide.LONG, "10.37", "1", D("37.00")),
        (PositionSide.LONG, "9.99", "1", D("-1.00")),
        (PositionSide.SHORT, "10.37", "1", D("-37.00")),
        (PositionSide.SHORT, "9.6543", "1", D("34.57")),
        (PositionSide.LONG, "10.01", "100", D("100.00")),
    ],
)
def test_unrealized_pnl_is_exact_and_mirrored_for_shorts(
    side: PositionSide, mark: str, multiplier: str, expected: Decimal
) -> None:
    assert unrealized_pnl(opened(side=side, multiplier=multiplier), D(mark)) == expected


def test_mark_position_records_the_mark() -> None:
    mark = mark_position(opened(), quote(bid="10.00", ask="10.03"))
    assert mark == Mark(
        position_id="pos-alpha-AAPL",
        portfolio_id="alpha",
        symbol="AAPL",
        price=D("10.015"),
        source=MarkSource.MID,
        quantity=D(100),
        unrealized_pnl=D("1.5"),
        marked_at=NOW,
    )
    assert mark_position(opened(), quote(bid="10.00")) is None
    with pytest.raises(ValueError, match="MSFT quote"):
        mark_position(opened(), quote(last="1", symbol="MSFT"))


def test_portfolio_sums_are_exact() -> None:
    marks = [
        mark_position(opened("AAPL"), quote(last="10.10")),
        mark_position(opened("MSFT", PositionSide.SHORT), quote(last="9.99", symbol="MSFT")),
        mark_position(opened("AAPL", portfolio="beta"), quote(last="9.00")),
    ]
    totals = portfolio_unrealized(m for m in marks if m is not None)
    assert {p: (t.unrealized_pnl, t.positions) for p, t in totals.items()} == {
        "alpha": (D("11.00"), 2),
        "beta": (D("-100.00"), 1),
    }
    with pytest.raises(ValueError, match="marked twice"):
        portfolio_unrealized([marks[0], marks[0]])  # type: ignore[list-item]


def test_flat_position_has_no_unrealized_pnl() -> None:
    state = opened().submit_exit("exit:pos-alpha-AAPL", ExitReason.STOP).state
    state = state.on_execution(
        "x1", client_order_id="exit:pos-alpha-AAPL", side=state.exit_side, shares=D(100), price=D(9)
    ).state
    assert unrealized_pnl(state, D(12)) == 0


@pytest.mark.parametrize("seed", range(25))
def test_realized_plus_unrealized_is_the_whole_pnl(seed: int) -> None:
    """Random partial entries and exits (odd lots, sub-penny prices): at any mark,
    realized (gross) + unrealized equals exit value + held value - entry value."""
    rng = random.Random(seed)
    side = rng.choice([PositionSide.LONG, PositionSide.SHORT])
    planned = D(rng.randint(3, 500))
    multiplier = D(rng.choice([1, 1, 100]))
    state = PositionState.new(
        position_id="pos-x",
        portfolio_id="alpha",
        symbol="X",
        side=side,
        planned_quantity=planned,
        entry_client_order_id="entry-x",
        multiplier=multiplier,
    )

    def price() -> Decimal:
        return D(rng.randint(1, 2_000_000)) / D(10_000)

    n = 0
    while state.entry_quantity < planned:
        shares = D(rng.randint(1, int(planned - state.entry_quantity)))
        n += 1
        state = state.on_execution(
            f"e{n}",
            client_order_id="entry-x",
            side=state.entry_side,
            shares=shares,
            price=price(),
        ).state
        if rng.random() < 0.5:
            break
    state = state.submit_exit("exit:pos-x", ExitReason.STOP).state
    sell = D(rng.randint(0, int(state.quantity)))
    if sell:
        state = state.on_execution(
            "x1", client_order_id="exit:pos-x", side=state.exit_side, shares=sell, price=price()
        ).state
    mark = price()
    whole = (state.exit_notional + mark * state.quantity - state.entry_notional) * multiplier
    if side is PositionSide.SHORT:
        whole = -whole
    total = state.realized_gross + unrealized_pnl(state, mark)
    assert abs(total - whole) < D("1e-15")
    if state.quantity == state.entry_quantity:  # nothing sold back yet: exact
        assert total == whole
