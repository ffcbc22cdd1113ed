"""Instruments, the simulated market (random walk, set_price, freeze, CSV replay, bars)
and the trading-hours clock."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ibflow_gateway_sim.domain import (
    DEFAULT_INSTRUMENTS,
    Instrument,
    Market,
    MarketClock,
    MarketSettings,
    Universe,
)

T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)  # Monday 10:00 New York (EST)


def walk(market: Market, symbol: str, steps: int) -> list[Decimal]:
    prices = []
    for i in range(steps):
        market.advance(T0 + timedelta(seconds=i))
        quote = market.quote(symbol)
        assert quote is not None
        prices.append(quote.last)
    return prices


# ---------------------------------------------------------------- instruments


def test_default_instruments_have_real_con_ids() -> None:
    universe = Universe()
    assert len(universe) == 12
    aapl = universe.by_symbol("aapl")
    assert aapl is not None
    assert (aapl.con_id, aapl.primary_exchange, aapl.exchange) == (265598, "NASDAQ", "SMART")
    assert aapl.trading_class == aapl.local_symbol == "AAPL"
    spy = universe.by_con_id(756733)
    assert spy is not None
    assert spy.symbol == "SPY"
    assert spy.primary_exchange == "ARCA"
    assert all(inst.min_tick == Decimal("0.01") for inst in DEFAULT_INSTRUMENTS)


def test_universe_unknown_returns_none() -> None:
    universe = Universe()
    assert universe.by_symbol("NOPE") is None
    assert universe.by_con_id(1) is None
    assert universe.resolve("MSFT", 265598) is None  # conId of AAPL, symbol MSFT
    assert universe.resolve("", 272093) is not None
    assert "msft" in universe


def test_instrument_rounding() -> None:
    inst = Instrument("X", 1, "NYSE", Decimal(10), min_tick=Decimal("0.05"))
    assert inst.round_price(Decimal("10.07")) == Decimal("10.05")
    assert inst.round_price(Decimal("10.08")) == Decimal("10.10")
    assert inst.is_on_tick(Decimal("10.15"))
    assert not inst.is_on_tick(Decimal("10.12"))


# ---------------------------------------------------------------- random walk


def test_deterministic_same_seed_same_prices() -> None:
    a = Market(Universe(), MarketSettings(seed=42))
    b = Market(Universe(), MarketSettings(seed=42))
    c = Market(Universe(), MarketSettings(seed=43))
    pa, pb, pc = walk(a, "AAPL", 300), walk(b, "AAPL", 300), walk(c, "AAPL", 300)
    assert pa == pb
    assert pa != pc
    assert len(set(pa)) > 5  # it does move


def test_symbols_walk_independently() -> None:
    only_aapl = Universe([i for i in DEFAULT_INSTRUMENTS if i.symbol == "AAPL"])
    full = Market(Universe(), MarketSettings(seed=1))
    alone = Market(only_aapl, MarketSettings(seed=1))
    assert walk(full, "AAPL", 200) == walk(alone, "AAPL", 200)


def test_prices_on_tick_and_positive() -> None:
    penny = Instrument("PENNY", 99, "NYSE", Decimal("0.03"))
    market = Market(Universe([penny]), MarketSettings(volatility=50.0, seed=3))
    for i in range(500):
        for _, quote in market.advance(T0 + timedelta(seconds=i)):
            for price in (quote.bid, quote.ask, quote.last):
                assert price >= Decimal("0.01")
                assert penny.is_on_tick(price)
            assert quote.ask - quote.bid == Decimal("0.01")


def test_advance_only_due_symbols_and_reports_changes() -> None:
    market = Market(Universe(), MarketSettings(tick_interval=5.0, seed=0))
    assert len(market.advance(T0)) == 12  # first call ticks everything
    assert market.advance(T0 + timedelta(seconds=4)) == []
    changed = market.advance(T0 + timedelta(seconds=10))
    assert len(changed) == 24  # two steps (t+5, t+10) per symbol
    assert [q.ts for _, q in changed] == sorted(q.ts for _, q in changed)


def test_long_gap_is_capped() -> None:
    market = Market(Universe(), MarketSettings(seed=0, max_catchup_steps=50))
    market.advance(T0)
    changed = market.advance(T0 + timedelta(days=1))
    assert len(changed) == 12 * 50
    quote = market.quote("AAPL")
    assert quote is not None
    assert quote.ts == T0 + timedelta(days=1)


def test_freeze_stops_moves_and_set_price_jumps() -> None:
    market = Market(Universe(), MarketSettings(seed=5, spread_ticks=2))
    market.advance(T0)
    market.freeze(True)
    before = market.quote("MSFT")
    assert market.advance(T0 + timedelta(seconds=30)) == []
    assert market.quote("MSFT") == before
    quote = market.set_price("msft", Decimal("123.456"), T0 + timedelta(seconds=31))
    assert (quote.last, quote.bid, quote.ask) == (
        Decimal("123.46"),
        Decimal("123.45"),
        Decimal("123.47"),
    )
    assert quote.high >= quote.last
    market.freeze(False)
    assert market.frozen is False
    moved = market.advance(T0 + timedelta(seconds=32))
    assert any(sym == "MSFT" for sym, _ in moved)
    with pytest.raises(KeyError):
        market.set_price("NOPE", Decimal(1), T0)


def test_naive_datetime_refused() -> None:
    market = Market(Universe())
    with pytest.raises(ValueError, match="timezone-aware"):
        market.advance(datetime(2024, 1, 1))


def test_session_rollover_sets_previous_close() -> None:
    market = Market(Universe(), MarketSettings(seed=9), start=T0)
    market.advance(T0)
    last_day1 = market.set_price("AAPL", Decimal(200), T0 + timedelta(hours=1)).last
    next_day = market.set_price("AAPL", Decimal(201), T0 + timedelta(days=1))
    assert next_day.close == last_day1
    assert next_day.open == Decimal(201)
    assert next_day.volume == Decimal(100)


# ---------------------------------------------------------------- replay


def test_replay_ticks_in_order(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "timestamp,symbol,price,size\n"
        "2024-03-04T15:00:02Z,AAPL,101.00,200\n"
        "2024-03-04T15:00:01Z,AAPL,100.50,\n"
        "2024-03-04T15:00:03,MSFT,400.00,50\n",
        encoding="utf-8",
    )
    market = Market(Universe(), MarketSettings(seed=0))
    assert market.load_csv(path) == 3
    got = market.advance(T0 + timedelta(seconds=2))
    aapl = [q.last for sym, q in got if sym == "AAPL"]
    assert aapl == [Decimal("100.50"), Decimal("101.00")]  # replayed, not random
    assert all(sym != "MSFT" for sym, _ in got if _.ts > T0)
    got = market.advance(T0 + timedelta(seconds=3))
    assert [(s, q.last, q.last_size) for s, q in got if s == "MSFT"] == [
        ("MSFT", Decimal("400.00"), Decimal(50))
    ]


def test_replay_bars_become_four_trades() -> None:
    market = Market(Universe(), MarketSettings(seed=0))
    count = market.load_csv_lines(
        ["timestamp,symbol,open,high,low,close,volume", "1709564400,SPY,500,505,499,504,4000"]
    )
    assert count == 4
    got = market.advance(T0)
    assert [q.last for s, q in got if s == "SPY"] == [
        Decimal(500),
        Decimal(499),
        Decimal(505),
        Decimal(504),
    ]
    with pytest.raises(ValueError, match="unknown symbol"):
        market.load_csv_lines(["2024-03-04T15:00:00,ZZZZ,1"])


# ---------------------------------------------------------------- bars


def test_bars_deterministic_and_consistent() -> None:
    market = Market(Universe(), MarketSettings(seed=11))
    end = datetime(2024, 3, 4, 16, 0, tzinfo=UTC)
    bars = market.bars("AAPL", end, 3600, 60)
    assert len(bars) == 60
    assert bars == Market(Universe(), MarketSettings(seed=11)).bars("AAPL", end, 3600, 60)
    assert bars != Market(Universe(), MarketSettings(seed=12)).bars("AAPL", end, 3600, 60)
    assert bars[0].time == end - timedelta(hours=1)
    assert bars[-1].time == end - timedelta(minutes=1)
    quote = market.quote("AAPL")
    assert quote is not None
    assert bars[-1].close == quote.last
    for prev, bar in itertools.pairwise(bars):
        assert bar.time - prev.time == timedelta(minutes=1)
        assert bar.open == prev.close
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0
        assert bar.count > 0
    assert market.bars("NOPE", end, 3600, 60) == []


# ---------------------------------------------------------------- clock


def test_rth_clock() -> None:
    clock = MarketClock("rth", holidays=[date(2024, 7, 4)])
    monday_open = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 EST
    assert clock.is_open(monday_open)
    assert not clock.is_open(monday_open - timedelta(seconds=1))
    assert not clock.is_open(datetime(2024, 3, 4, 21, 0, tzinfo=UTC))  # 16:00 EST
    assert not clock.is_open(datetime(2024, 3, 9, 15, 0, tzinfo=UTC))  # Saturday
    assert clock.is_open(datetime(2024, 7, 3, 14, 0, tzinfo=UTC))  # 10:00 EDT
    assert not clock.is_open(datetime(2024, 7, 4, 14, 0, tzinfo=UTC))  # holiday
    friday_evening = datetime(2024, 3, 8, 22, 0, tzinfo=UTC)
    assert clock.next_open(friday_evening) == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)  # EDT
    assert clock.session_close(monday_open) == datetime(2024, 3, 4, 21, 0, tzinfo=UTC)
    assert clock.session_close(friday_evening) == datetime(2024, 3, 11, 20, 0, tzinfo=UTC)
    always = MarketClock()
    assert always.is_open(friday_evening)
    assert always.session_close(friday_evening) is None
    assert always.next_open(friday_evening) == friday_evening
