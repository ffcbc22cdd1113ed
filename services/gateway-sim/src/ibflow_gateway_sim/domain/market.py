"""Simulated market data: a deterministic per-symbol random walk, CSV replay,
historical bars and a trading-hours clock.

Everything is pure: time is always passed in as a timezone-aware UTC ``now``.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from ibflow_gateway_sim.domain.instruments import Instrument, Universe

__all__ = [
    "NEW_YORK",
    "TRADING_YEAR_SECONDS",
    "Bar",
    "Market",
    "MarketClock",
    "MarketSettings",
    "Quote",
    "require_utc",
]

#: Exchange time zone of US equities.
NEW_YORK = ZoneInfo("America/New_York")
#: Seconds in a trading year (252 days x 6.5 h), the unit of the annualised volatility.
TRADING_YEAR_SECONDS = 252 * 6.5 * 3600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def require_utc(now: datetime) -> datetime:
    """Return ``now`` converted to UTC; naive datetimes are refused."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime required, got naive {now!r}")
    return now.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book plus session statistics for one symbol.

    Sizes are in shares. ``close`` is the PREVIOUS session's close (IB tick 9);
    ``open``/``high``/``low``/``volume`` are for the current session. ``ts`` is the
    time of the last change (UTC).
    """

    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last_size: Decimal
    volume: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    ts: datetime


@dataclass(frozen=True, slots=True)
class Bar:
    """One historical bar (``time`` is the bar START, UTC) as reqHistoricalData reports it."""

    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    wap: Decimal
    count: int


class MarketSettings(BaseModel):
    """How the random walk behaves.

    ``volatility`` is ANNUALISED (e.g. 0.30 = 30 %/year); the per-tick standard deviation
    of log returns is ``volatility * sqrt(tick_interval / (252 * 6.5 * 3600))``, i.e. a
    trading year of 252 days x 6.5 h. ``spread_ticks`` is ask - bid in min ticks.
    ``lot_size`` is the unit for bid/ask/last sizes, drawn uniformly from
    ``1..max_lots`` lots per tick. ``max_catchup_steps``: when ``advance`` is called
    after a long gap, at most this many exact steps are simulated per symbol; beyond
    that the remainder is collapsed into one step of equivalent variance.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    volatility: float = Field(default=0.30, ge=0.0)
    spread_ticks: int = Field(default=1, ge=1)
    tick_interval: float = Field(default=1.0, gt=0.0)
    lot_size: int = Field(default=100, ge=1)
    max_lots: int = Field(default=10, ge=1)
    seed: int = 0
    max_catchup_steps: int = Field(default=1_000, ge=1)


@dataclass(slots=True)
class _Replay:
    ts: datetime
    symbol: str
    price: Decimal
    size: Decimal | None


class _SymbolState:
    __slots__ = ("inst", "next_tick", "quote", "replay", "rng", "session_day", "true_price")

    def __init__(self, inst: Instrument, rng: random.Random, quote: Quote, day: date) -> None:
        self.inst = inst
        self.rng = rng
        self.true_price = float(inst.start_price)
        self.quote = quote
        self.next_tick: datetime | None = None
        self.replay = False
        self.session_day = day


def _parse_ts(text: str) -> datetime:
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


class Market:
    """Deterministic simulated market for every instrument of a :class:`Universe`.

    Each symbol walks independently with ``random.Random(f"{seed}:{symbol}")``: a
    log-normal step every ``tick_interval`` seconds (the first ``advance`` ticks every
    symbol at once and fixes the schedule). The same seed and the same sequence of
    calls give the same prices. Prices are rounded to min tick and never go below one
    tick. Session statistics (open/high/low/volume, previous close) roll over when the
    New York calendar date of a tick changes.
    """

    def __init__(
        self,
        universe: Universe,
        settings: MarketSettings | None = None,
        seed: int | None = None,
        *,
        start: datetime | None = None,
    ) -> None:
        self.universe = universe
        self.settings = settings if settings is not None else MarketSettings()
        self.seed = self.settings.seed if seed is None else seed
        self._frozen = False
        self._interval = timedelta(seconds=self.settings.tick_interval)
        self._sigma = self.settings.volatility * math.sqrt(
            self.settings.tick_interval / TRADING_YEAR_SECONDS
        )
        self._replay: list[_Replay] = []
        self._replay_pos = 0
        t0 = require_utc(start) if start is not None else _EPOCH
        self._states: dict[str, _SymbolState] = {}
        for inst in universe:
            rng = random.Random(f"{self.seed}:{inst.symbol}")  # noqa: S311 - simulation, not crypto
            daily = self.settings.volatility / math.sqrt(252)
            prev_close = inst.round_price(
                Decimal(repr(float(inst.start_price) * math.exp(daily * rng.gauss(0.0, 1.0))))
            )
            last = inst.start_price
            bid, ask = self._touch(inst, last)
            lot = Decimal(self.settings.lot_size)
            quote = Quote(
                bid=bid,
                ask=ask,
                last=last,
                bid_size=lot * rng.randint(1, self.settings.max_lots),
                ask_size=lot * rng.randint(1, self.settings.max_lots),
                last_size=lot,
                volume=Decimal(0),
                open=last,
                high=last,
                low=last,
                close=max(prev_close, inst.min_tick),
                ts=t0,
            )
            self._states[inst.symbol.upper()] = _SymbolState(
                inst, rng, quote, t0.astimezone(NEW_YORK).date()
            )

    # -- helpers ---------------------------------------------------------------------

    def _touch(self, inst: Instrument, ref: Decimal) -> tuple[Decimal, Decimal]:
        tick = inst.min_tick
        bid = max(ref - (self.settings.spread_ticks // 2) * tick, tick)
        return bid, bid + self.settings.spread_ticks * tick

    def _state(self, symbol: str) -> _SymbolState | None:
        return self._states.get(symbol.strip().upper())

    def _roll_session(self, st: _SymbolState, ts: datetime, price: Decimal) -> Quote:
        q = st.quote
        day = ts.astimezone(NEW_YORK).date()
        if day != st.session_day:
            st.session_day = day
            return replace(q, open=price, high=price, low=price, close=q.last, volume=Decimal(0))
        return q

    def _trade(
        self,
        st: _SymbolState,
        ts: datetime,
        *,
        last: Decimal,
        bid: Decimal,
        ask: Decimal,
        bid_size: Decimal,
        ask_size: Decimal,
        last_size: Decimal,
    ) -> Quote:
        q = self._roll_session(st, ts, last)
        st.quote = replace(
            q,
            bid=bid,
            ask=ask,
            last=last,
            bid_size=bid_size,
            ask_size=ask_size,
            last_size=last_size,
            volume=q.volume + last_size,
            high=max(q.high, last),
            low=min(q.low, last),
            ts=ts,
        )
        return st.quote

    def _step(self, st: _SymbolState, ts: datetime, variance_steps: int = 1) -> Quote:
        rng, inst = st.rng, st.inst
        z = rng.gauss(0.0, 1.0)
        st.true_price *= math.exp(self._sigma * math.sqrt(variance_steps) * z)
        tick_f = float(inst.min_tick)
        st.true_price = max(st.true_price, tick_f)
        ref = max(inst.round_price(Decimal(repr(st.true_price))), inst.min_tick)
        bid, ask = self._touch(inst, ref)
        lot = Decimal(self.settings.lot_size)
        n = self.settings.max_lots
        bid_size = lot * rng.randint(1, n)
        ask_size = lot * rng.randint(1, n)
        last_size = lot * rng.randint(1, n)
        return self._trade(
            st,
            ts,
            last=ask if z > 0 else bid,
            bid=bid,
            ask=ask,
            bid_size=bid_size,
            ask_size=ask_size,
            last_size=last_size,
        )

    # -- public API ------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """True while ``freeze(True)`` is in effect (no random moves)."""
        return self._frozen

    def advance(self, now: datetime) -> list[tuple[str, Quote]]:
        """Move every symbol whose next tick time is <= ``now`` and apply due replay rows.

        Returns every quote change, ordered by time then universe order (a symbol
        appears once per step). While frozen the schedule moves on without price
        changes. A gap of more than ``max_catchup_steps`` ticks is partly collapsed
        into one step of equivalent variance.
        """
        now = require_utc(now)
        out: list[tuple[datetime, int, str, Quote]] = []
        max_steps = self.settings.max_catchup_steps
        for idx, (key, st) in enumerate(self._states.items()):
            if st.next_tick is None:
                st.next_tick = now
            if st.next_tick > now:
                continue
            due = int((now - st.next_tick) / self._interval) + 1
            first = st.next_tick
            st.next_tick = first + due * self._interval
            if self._frozen or st.replay:
                continue
            skipped = max(due - max_steps, 0)
            if skipped:
                first += skipped * self._interval
                # collapse the skipped steps into the first exact one
            for i in range(due - skipped):
                ts = first + i * self._interval
                q = self._step(st, ts, variance_steps=1 + (skipped if i == 0 else 0))
                out.append((ts, idx, key, q))
        order = {key: idx for idx, key in enumerate(self._states)}
        while self._replay_pos < len(self._replay) and self._replay[self._replay_pos].ts <= now:
            row = self._replay[self._replay_pos]
            self._replay_pos += 1
            st = self._states[row.symbol]
            q = self._apply_replay(st, row)
            out.append((row.ts, order[row.symbol], row.symbol, q))
        out.sort(key=lambda item: (item[0], item[1]))
        return [(self._states[key].inst.symbol, q) for _, _, key, q in out]

    def _apply_replay(self, st: _SymbolState, row: _Replay) -> Quote:
        inst = st.inst
        price = max(inst.round_price(row.price), inst.min_tick)
        st.true_price = float(price)
        bid, ask = self._touch(inst, price)
        size = row.size if row.size is not None else Decimal(self.settings.lot_size)
        lot = Decimal(self.settings.lot_size)
        return self._trade(
            st, row.ts, last=price, bid=bid, ask=ask, bid_size=lot, ask_size=lot, last_size=size
        )

    def quote(self, symbol: str) -> Quote | None:
        """Current quote of ``symbol`` (case-insensitive), ``None`` if unknown."""
        st = self._state(symbol)
        return st.quote if st is not None else None

    def quotes(self) -> list[tuple[str, Quote]]:
        """Current quotes of every symbol, in universe order."""
        return [(st.inst.symbol, st.quote) for st in self._states.values()]

    def set_price(
        self,
        symbol: str,
        price: Decimal,
        now: datetime,
        *,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
        bid_size: Decimal | None = None,
        ask_size: Decimal | None = None,
        last_size: Decimal | None = None,
    ) -> Quote:
        """Jump ``symbol`` to ``price`` (rounded to min tick): last = price,
        bid = price - (spread_ticks // 2) ticks, ask = bid + spread_ticks ticks unless
        given. Sizes default to one lot. Counts as a trade of ``last_size`` (volume,
        high/low). The random walk continues from the new level. Works while frozen.

        Raises ``KeyError`` for an unknown symbol.
        """
        now = require_utc(now)
        st = self._state(symbol)
        if st is None:
            raise KeyError(symbol)
        inst = st.inst
        last = max(inst.round_price(Decimal(price)), inst.min_tick)
        d_bid, d_ask = self._touch(inst, last)
        lot = Decimal(self.settings.lot_size)
        st.true_price = float(last)
        return self._trade(
            st,
            now,
            last=last,
            bid=inst.round_price(bid) if bid is not None else d_bid,
            ask=inst.round_price(ask) if ask is not None else d_ask,
            bid_size=bid_size if bid_size is not None else lot,
            ask_size=ask_size if ask_size is not None else lot,
            last_size=last_size if last_size is not None else lot,
        )

    def freeze(self, frozen: bool) -> None:
        """Stop (``True``) or resume (``False``) random moves; replay rows still apply."""
        self._frozen = frozen

    def load_csv(self, path: str | Path) -> int:
        """Load replay rows from a CSV file (see :meth:`load_csv_lines`); returns the row count."""
        with Path(path).open(newline="", encoding="utf-8") as fh:
            return self.load_csv_lines(fh)

    def load_csv_lines(self, lines: Iterable[str]) -> int:
        """Load replay rows. Two layouts, told apart by the header (or column count):

        * ticks: ``timestamp,symbol,price[,size]``
        * bars: ``timestamp,symbol,open,high,low,close,volume`` (each bar is replayed as
          four trades O, L, H, C for an up bar or O, H, L, C for a down bar, all at the
          bar timestamp, the volume split evenly).

        Timestamps are ISO 8601 (naive = UTC) or epoch seconds. Replayed symbols stop
        random-walking; rows are applied in time order (stable for equal times) as
        ``advance`` passes them. Returns the number of price points added. Raises
        ``ValueError`` for an unknown symbol or a malformed row.
        """
        rows: list[_Replay] = []
        for lineno, raw in enumerate(csv.reader(lines), start=1):
            cells = [c.strip() for c in raw]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and not cells[0][:1].isdigit():
                continue  # header
            try:
                rows.extend(self._parse_row(cells))
            except (ValueError, ArithmeticError) as exc:
                raise ValueError(f"replay row {lineno}: {exc}") from exc
        for row in rows:
            self._states[row.symbol].replay = True
        pending = self._replay[self._replay_pos :] + rows
        pending.sort(key=lambda r: r.ts)
        self._replay = self._replay[: self._replay_pos] + pending
        return len(rows)

    def _parse_row(self, cells: list[str]) -> list[_Replay]:
        ts = _parse_ts(cells[0])
        key = cells[1].upper()
        if key not in self._states:
            raise ValueError(f"unknown symbol {cells[1]!r}")
        if len(cells) in (3, 4):
            size = Decimal(cells[3]) if len(cells) == 4 and cells[3] else None
            return [_Replay(ts, key, Decimal(cells[2]), size)]
        if len(cells) == 7:
            o, h, lo, c, vol = (Decimal(x) for x in cells[2:7])
            path = (o, lo, h, c) if c >= o else (o, h, lo, c)
            part = vol / 4 if vol > 0 else None
            return [_Replay(ts, key, p, part) for p in path]
        raise ValueError(f"expected 3, 4 or 7 columns, got {len(cells)}")

    def bars(
        self, symbol: str, end: datetime, duration_seconds: int, bar_seconds: int
    ) -> list[Bar]:
        """Historical bars covering ``[end - duration_seconds, end)`` on an epoch-aligned
        grid of ``bar_seconds`` (at most 100 000 bars, the most recent ones).

        Generated backwards from the current last price with
        ``random.Random(f"{seed}:{symbol}:bars:{bar_seconds}:{last_bar_start}")``: the same
        seed, symbol, bar size, end and current price give the same bars. Unknown symbol
        or empty range → empty list.
        """
        st = self._state(symbol)
        if st is None or duration_seconds <= 0 or bar_seconds <= 0:
            return []
        inst = st.inst
        end_s = math.ceil(require_utc(end).timestamp())
        last_start = ((end_s - 1) // bar_seconds) * bar_seconds
        first_start = -((-(end_s - duration_seconds)) // bar_seconds) * bar_seconds
        count = min((last_start - first_start) // bar_seconds + 1, 100_000)
        if count <= 0:
            return []
        seed = f"{self.seed}:{inst.symbol}:bars:{bar_seconds}:{last_start}"
        rng = random.Random(seed)  # noqa: S311 - simulation, not crypto
        sigma = self.settings.volatility * math.sqrt(bar_seconds / TRADING_YEAR_SECONDS)
        ticks_per_bar = max(1, round(bar_seconds / self.settings.tick_interval))
        tick = inst.min_tick
        level = float(st.quote.last)
        out: list[Bar] = []
        for i in range(count):
            start = last_start - i * bar_seconds
            close = max(inst.round_price(Decimal(repr(level))), tick)
            level = max(level * math.exp(-sigma * rng.gauss(0.0, 1.0)), float(tick))
            open_ = max(inst.round_price(Decimal(repr(level))), tick)
            up = float(max(open_, close)) * (1 + abs(rng.gauss(0.0, 1.0)) * sigma / 2)
            down = float(min(open_, close)) * (1 - abs(rng.gauss(0.0, 1.0)) * sigma / 2)
            high = max(inst.round_price(Decimal(repr(up))), open_, close)
            low = max(min(inst.round_price(Decimal(repr(down))), open_, close), tick)
            lots = rng.randint(1, self.settings.max_lots) * ticks_per_bar
            volume = Decimal(self.settings.lot_size * lots)
            wap = ((high + low + close) / 3).quantize(Decimal("0.0001"))
            out.append(
                Bar(
                    time=datetime.fromtimestamp(start, tz=UTC),
                    open=open_,
                    high=high,
                    low=low,
                    close=close,
                    volume=volume,
                    wap=wap,
                    count=max(1, lots),
                )
            )
        out.reverse()
        return out


ClockMode = Literal["always_open", "rth"]
_RTH_OPEN = time(9, 30)
_RTH_CLOSE = time(16, 0)


class MarketClock:
    """Trading hours: ``always_open`` or US regular trading hours (weekdays 09:30-16:00
    America/New_York, minus ``holidays``; no early closes)."""

    def __init__(self, mode: ClockMode = "always_open", holidays: Iterable[date] = ()) -> None:
        if mode not in ("always_open", "rth"):
            raise ValueError(f"unknown clock mode {mode!r}")
        self.mode: ClockMode = mode
        self.holidays = frozenset(holidays)

    def is_trading_day(self, day: date) -> bool:
        """Weekday and not a holiday (always True in ``always_open`` mode)."""
        return self.mode == "always_open" or (day.weekday() < 5 and day not in self.holidays)

    def _at(self, day: date, t: time) -> datetime:
        return datetime.combine(day, t, tzinfo=NEW_YORK).astimezone(UTC)

    def is_open(self, now: datetime) -> bool:
        """True if the regular session is open at ``now``."""
        if self.mode == "always_open":
            return True
        local = require_utc(now).astimezone(NEW_YORK)
        return self.is_trading_day(local.date()) and _RTH_OPEN <= local.time() < _RTH_CLOSE

    def next_open(self, now: datetime) -> datetime:
        """The first session open at or after ``now`` (``now`` itself when open)."""
        now = require_utc(now)
        if self.is_open(now):
            return now
        day = now.astimezone(NEW_YORK).date()
        for offset in range(400):
            d = day + timedelta(days=offset)
            if self.is_trading_day(d) and self._at(d, _RTH_OPEN) >= now:
                return self._at(d, _RTH_OPEN)
        raise ValueError("no trading day within 400 days")

    def session_close(self, now: datetime) -> datetime | None:
        """The close of the session in progress at ``now`` or, if closed, of the next one.

        ``None`` in ``always_open`` mode (DAY orders never expire).
        """
        if self.mode == "always_open":
            return None
        now = require_utc(now)
        day = now.astimezone(NEW_YORK).date()
        for offset in range(400):
            d = day + timedelta(days=offset)
            if self.is_trading_day(d) and self._at(d, _RTH_CLOSE) > now:
                return self._at(d, _RTH_CLOSE)
        raise ValueError("no trading day within 400 days")
