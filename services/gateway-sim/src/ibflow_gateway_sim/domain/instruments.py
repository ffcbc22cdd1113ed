"""Tradable instruments and the universe the simulator knows about.

An :class:`Instrument` is a US stock/ETF as IB describes it (conId, primary exchange,
minimum tick). The :class:`Universe` resolves symbols (case-insensitive) and conIds;
unknown ones resolve to ``None`` so the server can answer error 200
("No security definition has been found for the request").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["DEFAULT_INSTRUMENTS", "Instrument", "Universe"]


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable contract (secType STK).

    ``trading_class`` and ``local_symbol`` default to ``symbol`` (as IB reports them for
    US stocks). ``start_price`` is where the simulated market starts.
    """

    symbol: str
    con_id: int
    primary_exchange: str
    start_price: Decimal
    exchange: str = "SMART"
    currency: str = "USD"
    min_tick: Decimal = Decimal("0.01")
    long_name: str = ""
    industry: str = ""
    category: str = ""
    sec_type: str = "STK"
    trading_class: str = field(default="")
    local_symbol: str = field(default="")

    def __post_init__(self) -> None:
        if not self.trading_class:
            object.__setattr__(self, "trading_class", self.symbol)
        if not self.local_symbol:
            object.__setattr__(self, "local_symbol", self.symbol)
        if self.min_tick <= 0:
            raise ValueError(f"min_tick must be positive for {self.symbol}")
        if self.start_price <= 0:
            raise ValueError(f"start_price must be positive for {self.symbol}")

    def round_price(self, price: Decimal) -> Decimal:
        """``price`` rounded to the nearest multiple of ``min_tick`` (half up)."""
        ticks = (price / self.min_tick).to_integral_value(rounding="ROUND_HALF_UP")
        return (ticks * self.min_tick).quantize(self.min_tick)

    def is_on_tick(self, price: Decimal) -> bool:
        """True when ``price`` is an exact multiple of ``min_tick``."""
        return (price % self.min_tick) == 0


# symbol, conId, primary exchange, start price, long name, industry, category
_DEFAULTS: tuple[tuple[str, int, str, str, str, str, str], ...] = (
    ("AAPL", 265598, "NASDAQ", "190.00", "APPLE INC", "Technology", "Computers"),
    ("MSFT", 272093, "NASDAQ", "410.00", "MICROSOFT CORP", "Technology", "Software"),
    ("SPY", 756733, "ARCA", "510.00", "SPDR S&P 500 ETF TRUST", "Funds", "Equity Fund"),
    ("QQQ", 320227571, "NASDAQ", "440.00", "INVESCO QQQ TRUST SERIES 1", "Funds", "Equity Fund"),
    ("NVDA", 4815747, "NASDAQ", "880.00", "NVIDIA CORP", "Technology", "Semiconductors"),
    ("AMZN", 3691937, "NASDAQ", "180.00", "AMAZON.COM INC", "Comms", "Internet"),
    ("TSLA", 76792991, "NASDAQ", "175.00", "TESLA INC", "Consumer, Cyclical", "Auto"),
    ("META", 107113386, "NASDAQ", "500.00", "META PLATFORMS INC-CLASS A", "Comms", "Internet"),
    ("GOOGL", 208813719, "NASDAQ", "150.00", "ALPHABET INC-CL A", "Comms", "Internet"),
    ("AMD", 4391, "NASDAQ", "160.00", "ADVANCED MICRO DEVICES", "Technology", "Semiconductors"),
    ("JPM", 1520593, "NYSE", "195.00", "JPMORGAN CHASE & CO", "Financial", "Banks"),
    ("IWM", 9579970, "ARCA", "205.00", "ISHARES RUSSELL 2000 ETF", "Funds", "Equity Fund"),
)

#: A dozen liquid US names with their real IB conIds (start prices are plausible levels).
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = tuple(
    Instrument(
        symbol=sym,
        con_id=con_id,
        primary_exchange=primary,
        start_price=Decimal(price),
        long_name=name,
        industry=industry,
        category=category,
    )
    for sym, con_id, primary, price, name, industry, category in _DEFAULTS
)


class Universe:
    """The set of instruments the simulator serves, looked up by symbol or conId."""

    def __init__(self, instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS) -> None:
        self._by_symbol: dict[str, Instrument] = {}
        self._by_con_id: dict[int, Instrument] = {}
        for inst in instruments:
            key = inst.symbol.upper()
            if key in self._by_symbol:
                raise ValueError(f"duplicate symbol {inst.symbol}")
            if inst.con_id in self._by_con_id:
                raise ValueError(f"duplicate conId {inst.con_id}")
            self._by_symbol[key] = inst
            self._by_con_id[inst.con_id] = inst

    def by_symbol(self, symbol: str) -> Instrument | None:
        """The instrument for ``symbol`` (case-insensitive), or ``None`` if unknown."""
        return self._by_symbol.get(symbol.strip().upper())

    def by_con_id(self, con_id: int) -> Instrument | None:
        """The instrument with IB contract id ``con_id``, or ``None`` if unknown."""
        return self._by_con_id.get(con_id)

    def resolve(self, symbol: str = "", con_id: int = 0) -> Instrument | None:
        """Resolve a contract as IB does: by conId when non-zero, else by symbol.

        When both are given they must agree, else ``None``.
        """
        if con_id:
            inst = self.by_con_id(con_id)
            if inst is not None and symbol and inst.symbol.upper() != symbol.strip().upper():
                return None
            return inst
        if symbol:
            return self.by_symbol(symbol)
        return None

    @property
    def symbols(self) -> list[str]:
        """All symbols, in definition order."""
        return [inst.symbol for inst in self._by_symbol.values()]

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.by_symbol(symbol) is not None
