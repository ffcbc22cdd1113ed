"""Pure pieces of the service: the exit order built from a decision, tick cleaning and
the session date."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from ibflow.contracts import MarketDataTick, SubmitOrder
from ibflow.contracts.enums import ExitReason, OrderSide, OrderType, PositionSide
from ibflow_position_monitor.book import _exit_order, session_date_of
from ibflow_position_monitor.domain import (
    CloseOutStyle,
    ExitDecision,
    PositionState,
    PriceSource,
    Quote,
    close_out_decision,
    evaluate,
)
from ibflow_position_monitor.watch import _clean

NOW = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)


def _open_long() -> PositionState:
    state = PositionState.new(
        position_id="p1",
        portfolio_id="demo",
        symbol="AAPL",
        side=PositionSide.LONG,
        planned_quantity=Decimal(100),
        entry_client_order_id="entry:p1",
        stop_loss=Decimal(95),
        take_profit=Decimal(110),
    )
    return state.on_execution(
        "e1",
        client_order_id="entry:p1",
        side=OrderSide.BUY,
        shares=Decimal(100),
        price=Decimal(100),
    ).state


def test_a_stop_exit_is_a_market_sell_of_everything_held_valued_at_the_trigger() -> None:
    quote = Quote(symbol="AAPL", at=NOW, last=Decimal("94.5"))
    decision = evaluate(
        _open_long(), quote, price_source=PriceSource.LAST, now=NOW, max_age=dt.timedelta(seconds=5)
    )
    assert isinstance(decision, ExitDecision)
    body = _exit_order(decision, Decimal(100))
    cmd = SubmitOrder.model_validate(body)
    assert cmd.client_order_id == "exit:p1"
    assert (cmd.side, cmd.order_type, cmd.quantity) == (OrderSide.SELL, OrderType.MKT, 100)
    assert cmd.exit_reason is ExitReason.STOP
    assert cmd.position_id == "p1"
    assert cmd.reference_price == Decimal("94.5")
    assert "event_id" not in body, "a re-send must be the same terms, not the same envelope"


def test_a_close_out_without_a_trigger_is_valued_at_the_reference_given() -> None:
    decision = close_out_decision(_open_long(), None, style=CloseOutStyle.MARKET)
    assert isinstance(decision, ExitDecision)
    cmd = SubmitOrder.model_validate(_exit_order(decision, Decimal("101.5")))
    assert cmd.reference_price == Decimal("101.5")
    assert cmd.exit_reason is ExitReason.CLOSE_OUT


def test_a_marketable_limit_close_out_keeps_its_limit_price() -> None:
    quote = Quote(symbol="AAPL", at=NOW, bid=Decimal("99.98"), ask=Decimal("100.02"))
    decision = close_out_decision(
        _open_long(),
        quote,
        style=CloseOutStyle.MARKETABLE_LIMIT,
        now=NOW,
        max_age=dt.timedelta(seconds=5),
    )
    assert isinstance(decision, ExitDecision)
    cmd = SubmitOrder.model_validate(_exit_order(decision, None))
    assert cmd.order_type is OrderType.LMT
    assert cmd.limit_price == Decimal("99.93")


def test_a_tick_with_a_negative_or_zero_price_keeps_only_its_usable_prices() -> None:
    tick = MarketDataTick(
        symbol="AAPL", bid=Decimal(-1), ask=Decimal("100.02"), last=Decimal(0), ts_event=NOW
    )
    quote, dropped = _clean(tick)
    assert dropped == 2
    assert (quote.bid, quote.ask, quote.last) == (None, Decimal("100.02"), None)
    assert quote.at == NOW


def test_the_session_of_an_evening_utc_time_is_the_new_york_date() -> None:
    late = dt.datetime(2026, 11, 24, 1, 30, tzinfo=dt.UTC)
    assert session_date_of(late) == dt.date(2026, 11, 23)
