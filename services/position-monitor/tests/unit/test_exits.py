"""Stop / target evaluation on quotes, the data guards, deterministic exit ids and the
session close-out."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from ibflow.contracts.enums import ExitReason, OrderSide, OrderType, PositionSide
from ibflow.contracts.market_data import MarketDataTick
from ibflow_position_monitor.domain import (
    CloseOutStyle,
    ExitDecision,
    NoExit,
    NoExitReason,
    PositionState,
    PriceSource,
    Quote,
    close_out_decision,
    evaluate,
    exit_client_order_id,
    exit_position_ids,
    is_valid_id,
    marketable_limit,
)

D = Decimal
LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
LAST, BID_ASK = PriceSource.LAST, PriceSource.BID_ASK
NOW = dt.datetime(2025, 3, 10, 15, 0, tzinfo=dt.UTC)
MAX_AGE = dt.timedelta(seconds=5)
PID = "pos-alpha-20250310-AAPL"


def position(
    side: PositionSide = LONG, *, filled: str = "100", levels: bool = True
) -> PositionState:
    """100 planned, ``filled`` bought at 10.00; LONG stop 9.50 / target 11.00, SHORT mirrored."""
    stop, target = (D("9.50"), D("11.00")) if side is LONG else (D("11.00"), D("9.50"))
    state = PositionState.new(
        position_id=PID,
        portfolio_id="alpha",
        symbol="AAPL",
        side=side,
        planned_quantity=D(100),
        entry_client_order_id="entry-alpha-20250310-AAPL",
        stop_loss=stop if levels else None,
        take_profit=target if levels else None,
    )
    if D(filled) > 0:
        state = state.on_execution(
            "e1",
            client_order_id=state.entry_client_order_id,
            side=state.entry_side,
            shares=D(filled),
            price=D("10.00"),
        ).state
    return state


def quote(
    bid: str | None = None,
    ask: str | None = None,
    last: str | None = None,
    *,
    age: float = 0.5,
    delayed: bool = False,
    symbol: str = "AAPL",
) -> Quote:
    return Quote(
        symbol=symbol,
        at=NOW - dt.timedelta(seconds=age),
        bid=None if bid is None else D(bid),
        ask=None if ask is None else D(ask),
        last=None if last is None else D(last),
        delayed=delayed,
    )


def run(state: PositionState, q: Quote, source: PriceSource = LAST) -> ExitDecision | NoExit:
    return evaluate(state, q, price_source=source, now=NOW, max_age=MAX_AGE)


# -- hits ------------------------------------------------------------------------------


def test_stop_hit_on_bid_for_long_with_bid_ask_source() -> None:
    q = quote(bid="9.49", ask="9.52", last="9.60")
    decision = run(position(), q, BID_ASK)
    assert decision == ExitDecision(
        position_id=PID,
        portfolio_id="alpha",
        symbol="AAPL",
        client_order_id=f"exit:{PID}",
        reason=ExitReason.STOP,
        side=OrderSide.SELL,
        quantity=D(100),
        trigger_price=D("9.49"),
        level=D("9.50"),
    )
    # The last trade (9.60) has not reached the stop: with the last as source, no exit.
    no_exit = run(position(), q, LAST)
    assert isinstance(no_exit, NoExit)
    assert no_exit.reason is NoExitReason.NOT_HIT


@pytest.mark.parametrize(
    ("side", "source", "prices", "expected"),
    [
        # LONG, stop 9.50 / target 11.00: inclusive at the level.
        (LONG, LAST, (None, None, "9.50"), ExitReason.STOP),
        (LONG, LAST, (None, None, "11.00"), ExitReason.TARGET),
        (LONG, LAST, (None, None, "10.99"), None),
        (LONG, BID_ASK, ("11.00", "11.02", None), ExitReason.TARGET),
        (LONG, BID_ASK, ("10.99", "11.05", "11.20"), None),  # a long sells at the bid
        (LONG, BID_ASK, ("9.60", None, None), None),  # one-sided quote, the side it needs
        # SHORT, stop 11.00 / target 9.50: mirrored, watching the ask.
        (SHORT, BID_ASK, ("10.98", "11.00", None), ExitReason.STOP),
        (SHORT, BID_ASK, ("9.40", "9.51", None), None),  # bid through the target: not the ask
        (SHORT, BID_ASK, ("9.45", "9.50", None), ExitReason.TARGET),
        (SHORT, LAST, (None, None, "11.01"), ExitReason.STOP),
        (SHORT, LAST, (None, None, "9.49"), ExitReason.TARGET),
        (SHORT, LAST, (None, None, "10.00"), None),
    ],
)
def test_stop_and_target_per_side_and_price_source(
    side: PositionSide,
    source: PriceSource,
    prices: tuple[str | None, str | None, str | None],
    expected: ExitReason | None,
) -> None:
    decision = run(position(side), quote(*prices), source)
    if expected is None:
        assert isinstance(decision, NoExit)
        assert decision.reason is NoExitReason.NOT_HIT
    else:
        assert isinstance(decision, ExitDecision)
        assert decision.reason is expected
        assert decision.side is (OrderSide.SELL if side is LONG else OrderSide.BUY)
        assert decision.order_type is OrderType.MKT


# -- bad data never acts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "q", "reason"),
    [
        (LAST, quote(last="9.00", delayed=True), NoExitReason.DELAYED),
        (BID_ASK, quote(bid="9.00", ask="9.01", age=5.001), NoExitReason.STALE),
        (LAST, quote(last="9.00", age=60), NoExitReason.STALE),
        (BID_ASK, quote(bid="9.40", ask="9.30"), NoExitReason.CROSSED),
        (LAST, quote(bid="9.40", ask="9.30", last="9.00"), NoExitReason.CROSSED),
        (LAST, quote(bid="9.00", ask="9.01"), NoExitReason.MISSING_PRICE),
        (BID_ASK, quote(ask="9.01", last="9.00"), NoExitReason.MISSING_PRICE),
        (LAST, quote(last="NaN"), NoExitReason.INVALID_PRICE),
        (LAST, quote(last="-1"), NoExitReason.INVALID_PRICE),
        (LAST, quote(last="0"), NoExitReason.INVALID_PRICE),
        (LAST, quote(last="Infinity"), NoExitReason.INVALID_PRICE),
        (BID_ASK, quote(bid="NaN", ask="9.01"), NoExitReason.INVALID_PRICE),
        (BID_ASK, quote(bid="-1", ask="9.01"), NoExitReason.INVALID_PRICE),
    ],
)
def test_crossed_or_stale_quote_never_triggers_an_exit(
    source: PriceSource, q: Quote, reason: NoExitReason
) -> None:
    decision = run(position(), q, source)
    assert isinstance(decision, NoExit)
    assert decision.reason is reason
    assert reason.is_bad_data  # the caller counts these
    assert decision.detail


def test_a_quote_exactly_max_age_old_or_from_a_clock_ahead_of_ours_is_used() -> None:
    assert isinstance(run(position(), quote(last="9.00", age=5)), ExitDecision)
    assert isinstance(run(position(), quote(last="9.00", age=-2)), ExitDecision)


def test_unusable_other_side_does_not_block_the_watched_side() -> None:
    # IB's -1 "no ask" cannot cross anything; the bid is what a long sells at.
    assert isinstance(run(position(), quote(bid="9.40", ask="-1"), BID_ASK), ExitDecision)


def test_a_locked_quote_is_not_crossed() -> None:
    assert isinstance(run(position(), quote(bid="9.40", ask="9.40"), BID_ASK), ExitDecision)


@pytest.mark.parametrize(
    ("state", "q", "reason"),
    [
        (position(filled="0"), quote(last="9.00"), NoExitReason.NOT_OPEN),
        (position(levels=False), quote(last="1.00"), NoExitReason.NO_LEVELS),
        (position(), quote(last="9.00", symbol="MSFT"), NoExitReason.WRONG_SYMBOL),
    ],
)
def test_positions_that_are_not_watched_on_this_quote(
    state: PositionState, q: Quote, reason: NoExitReason
) -> None:
    decision = run(state, q)
    assert isinstance(decision, NoExit)
    assert decision.reason is reason
    assert not reason.is_bad_data


def test_duplicate_ticks_and_replicas_produce_one_exit() -> None:
    state = position()
    first = run(state, quote(last="9.00"))
    assert isinstance(first, ExitDecision)
    # A second replica evaluating the same state decides the very same exit (same id).
    assert run(state, quote(last="9.00")) == first
    state = state.submit_exit(first.client_order_id, first.reason).state
    second = run(state, quote(last="8.98"))
    assert isinstance(second, NoExit)
    assert second.reason is NoExitReason.NOT_OPEN


def test_a_retry_after_a_cancelled_exit_gets_the_next_deterministic_id() -> None:
    state = position().submit_exit(f"exit:{PID}", ExitReason.STOP).state
    state = state.exit_ended(f"exit:{PID}").state
    decision = run(state, quote(last="9.00"))
    assert isinstance(decision, ExitDecision)
    assert decision.client_order_id == f"exit:{PID}:2"


def test_exit_while_the_entry_still_works_asks_to_cancel_its_remainder() -> None:
    decision = run(position(filled="40"), quote(last="9.00"))
    assert isinstance(decision, ExitDecision)
    assert decision.quantity == 40
    assert decision.cancel_entry_remainder


def test_quote_from_a_tick_keeps_prices_delay_and_ibs_time() -> None:
    tick = MarketDataTick(symbol="AAPL", bid=D("9.49"), ask=D("9.51"), delayed=True, ts_event=NOW)
    q = Quote.from_tick(tick)
    assert (q.bid, q.ask, q.last, q.delayed, q.at) == (D("9.49"), D("9.51"), None, True, NOW)
    merged = quote(bid="9.40", ask="9.45", last="9.42", age=3).updated(
        Quote.from_tick(MarketDataTick(symbol="AAPL", last=D("9.41"), ts_event=NOW))
    )
    assert (merged.bid, merged.ask, merged.last, merged.at) == (
        D("9.40"),
        D("9.45"),
        D("9.41"),
        NOW,
    )


# -- ids -------------------------------------------------------------------------------


def test_exit_ids_are_deterministic_and_sanitised_to_the_client_order_id_pattern() -> None:
    assert exit_client_order_id(PID) == f"exit:{PID}"
    assert exit_client_order_id(PID, 3) == f"exit:{PID}:3"
    long_a, long_b = "p" * 63 + "a", "p" * 63 + "b"
    for position_id in (long_a, long_b, "pos with space", "pos/ü"):
        for attempt in (1, 2):
            coid = exit_client_order_id(position_id, attempt)
            assert is_valid_id(coid), coid
            assert len(coid) <= 64
            assert coid == exit_client_order_id(position_id, attempt)
    assert exit_client_order_id(long_a) != exit_client_order_id(long_b)
    assert exit_client_order_id(long_a) != exit_client_order_id(long_a, 2)
    # Cleaning alone would merge these two; the digest keeps them apart.
    assert exit_client_order_id("a b") != exit_client_order_id("a_b")
    with pytest.raises(ValueError, match="attempt"):
        exit_client_order_id(PID, 0)


def test_an_exit_id_names_the_positions_it_can_belong_to() -> None:
    assert exit_position_ids(f"exit:{PID}") == (PID,)
    assert exit_position_ids(f"exit:{PID}:2") == (f"{PID}:2", PID)
    assert exit_position_ids("exit:a:1") == ("a:1",), "attempt 1 has no suffix"
    assert exit_position_ids(f"entry:{PID}") == ()
    assert exit_position_ids("exit:") == ()
    # a hashed id cannot be inverted: its facts are parked as before
    assert "p" * 70 not in exit_position_ids(exit_client_order_id("p" * 70))


# -- close-out -------------------------------------------------------------------------


def test_close_out_exits_every_open_position_at_market() -> None:
    for side in (LONG, SHORT):
        decision = close_out_decision(position(side))
        assert isinstance(decision, ExitDecision)
        assert (decision.reason, decision.order_type, decision.limit_price) == (
            ExitReason.CLOSE_OUT,
            OrderType.MKT,
            None,
        )
        assert decision.quantity == 100


def test_repeated_close_out_sends_nothing_more() -> None:
    state = position()
    decision = close_out_decision(state)
    assert isinstance(decision, ExitDecision)
    state = state.submit_exit(decision.client_order_id, decision.reason).state
    again = close_out_decision(state, style=CloseOutStyle.MARKETABLE_LIMIT)
    assert isinstance(again, NoExit)
    assert again.reason is NoExitReason.NOT_OPEN


def test_close_out_leaves_pending_positions_to_the_caller() -> None:
    decision = close_out_decision(position(filled="0"))
    assert isinstance(decision, NoExit)
    assert decision.reason is NoExitReason.NOT_OPEN


@pytest.mark.parametrize(
    ("side", "bid", "ask", "ticks", "instrument_tick", "limit"),
    [
        (LONG, "10.00", "10.02", 5, None, "9.95"),  # sell at the bid minus 5 cents
        (SHORT, "9.98", "10.00", 5, None, "10.05"),  # buy at the ask plus 5 cents
        (LONG, "0.5000", "0.5010", 5, None, "0.4995"),  # sub-dollar: 0.0001 ticks
        (SHORT, "0.9990", "0.9999", 2, None, "1.01"),  # 1.0001 is sub-penny above $1
        (LONG, "1.00", "1.01", 2, None, "0.98"),
        (LONG, "0.0002", "0.0003", 5, None, "0.0001"),  # never at or below zero
        (LONG, "10.02", "10.05", 2, "0.05", "9.90"),  # the instrument's own tick
        (SHORT, "10.00", "10.01", 0, None, "10.01"),  # no offset: at the touch
    ],
)
def test_close_out_marketable_limit_from_the_quote_and_the_tick_rule(
    side: PositionSide,
    bid: str,
    ask: str,
    ticks: int,
    instrument_tick: str | None,
    limit: str,
) -> None:
    decision = close_out_decision(
        position(side),
        quote(bid=bid, ask=ask),
        style=CloseOutStyle.MARKETABLE_LIMIT,
        offset_ticks=ticks,
        now=NOW,
        max_age=MAX_AGE,
        instrument_tick=None if instrument_tick is None else D(instrument_tick),
    )
    assert isinstance(decision, ExitDecision)
    assert (decision.order_type, decision.limit_price, decision.fallback) == (
        OrderType.LMT,
        D(limit),
        None,
    )


@pytest.mark.parametrize(
    ("q", "fallback"),
    [
        (None, NoExitReason.MISSING_PRICE),
        (quote(bid="10.10", ask="10.00"), NoExitReason.CROSSED),
        (quote(bid="10.00", ask="10.01", delayed=True), NoExitReason.DELAYED),
        (quote(bid="10.00", ask="10.01", age=30), NoExitReason.STALE),
        (quote(ask="10.01", last="10.00"), NoExitReason.MISSING_PRICE),
        (quote(bid="NaN", ask="10.01"), NoExitReason.INVALID_PRICE),
        (quote(bid="10.00", ask="10.01", symbol="MSFT"), NoExitReason.WRONG_SYMBOL),
    ],
)
def test_close_out_falls_back_to_market_without_a_usable_quote(
    q: Quote | None, fallback: NoExitReason
) -> None:
    decision = close_out_decision(
        position(), q, style=CloseOutStyle.MARKETABLE_LIMIT, now=NOW, max_age=MAX_AGE
    )
    assert isinstance(decision, ExitDecision)
    assert (decision.order_type, decision.limit_price, decision.fallback) == (
        OrderType.MKT,
        None,
        fallback,
    )


def test_marketable_limit_refuses_a_negative_offset() -> None:
    with pytest.raises(ValueError, match="offset_ticks"):
        marketable_limit(OrderSide.SELL, D(10), offset_ticks=-1)
