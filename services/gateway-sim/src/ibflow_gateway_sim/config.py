"""Simulator configuration: a pydantic model, loadable from YAML (``--config sim.yaml``).

Every section has defaults, so ``SimConfig()`` alone is a usable gateway: the dozen
names of :data:`~ibflow_gateway_sim.domain.DEFAULT_INSTRUMENTS`, one paper account
``DU1234567`` with 1,000,000 USD, an always-open market ticking every 0.25 s, IB's
fixed commission (0.005/share, min 1.00) and the real 50 msg/s pacing limit.

Example ``sim.yaml`` (every key optional)::

    instruments:
      - {symbol: AAPL, con_id: 265598, primary_exchange: NASDAQ, start_price: "190.00"}
      - {symbol: XYZ, con_id: 900001, primary_exchange: NYSE, min_tick: "0.05",
         start_price: "12.50"}
    accounts:
      - {id: DU1234567, starting_cash: "250000"}
    market: {seed: 7, volatility: 0.3, spread_ticks: 1, tick_interval: 0.25,
             clock: always_open, replay_csv: null, auto_advance: true}
    matching: {slippage_ticks: 0, fill_lot_size: 100, executions_per_check: 1,
               fill_delay: 0.0, commission_delay: 0.0}
    limits: {max_msgs_per_second: 50, disconnect_after: 5.0}
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ibflow_gateway_sim.domain import DEFAULT_ACCOUNT_ID, DEFAULT_INSTRUMENTS, Instrument

__all__ = [
    "AccountConfig",
    "ConfigError",
    "InstrumentConfig",
    "LimitsConfig",
    "MarketConfig",
    "MatchingConfig",
    "SimConfig",
    "load_config",
]

PositiveDecimal = Annotated[Decimal, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstrumentConfig(_Section):
    """One tradable US stock/ETF (secType STK, exchange SMART, currency USD by default)."""

    symbol: str = Field(min_length=1, max_length=12, pattern=r"^[A-Za-z0-9.\- ]+$")
    con_id: int = Field(gt=0)
    primary_exchange: str = Field(min_length=1)
    start_price: PositiveDecimal
    min_tick: PositiveDecimal = Decimal("0.01")
    currency: str = "USD"
    long_name: str = ""
    industry: str = ""
    category: str = ""

    def to_instrument(self) -> Instrument:
        """The domain instrument this entry describes."""
        return Instrument(
            symbol=self.symbol.upper(),
            con_id=self.con_id,
            primary_exchange=self.primary_exchange,
            start_price=self.start_price,
            currency=self.currency,
            min_tick=self.min_tick,
            long_name=self.long_name,
            industry=self.industry,
            category=self.category,
        )

    @classmethod
    def from_instrument(cls, inst: Instrument) -> InstrumentConfig:
        """The config entry for a domain instrument."""
        return cls(
            symbol=inst.symbol,
            con_id=inst.con_id,
            primary_exchange=inst.primary_exchange,
            start_price=inst.start_price,
            min_tick=inst.min_tick,
            currency=inst.currency,
            long_name=inst.long_name,
            industry=inst.industry,
            category=inst.category,
        )


class AccountConfig(_Section):
    """One paper account: the id must look like IB's (``DU`` + digits)."""

    id: str = Field(default=DEFAULT_ACCOUNT_ID, pattern=r"^DU\d{1,10}$")
    starting_cash: PositiveDecimal = Decimal(1_000_000)
    currency: str = "USD"
    account_type: Literal["margin", "cash"] = "margin"


class MarketConfig(_Section):
    """The simulated market.

    ``volatility`` is annualised (0.30 = 30 %/year); ``spread_ticks`` is ask - bid in
    min ticks; ``tick_interval`` is seconds between random-walk steps (and between tick
    pushes to subscribed clients); ``clock`` is ``always_open`` (DAY orders never expire)
    or ``rth`` (US regular trading hours); ``replay_csv`` replays recorded prices instead
    of the random walk for the symbols it contains. ``auto_advance: false`` stops the
    clock: the market then moves only through
    :meth:`~ibflow_gateway_sim.server.GatewaySimulator.advance_market` (virtual time,
    ``tick_interval`` per step), which makes whole runs reproducible from the seed.
    """

    seed: int = 0
    volatility: float = Field(default=0.30, ge=0.0, le=10.0)
    spread_ticks: int = Field(default=1, ge=1, le=1000)
    tick_interval: float = Field(default=0.25, ge=0.0001, le=60.0)
    lot_size: int = Field(default=100, ge=1)
    max_lots: int = Field(default=10, ge=1)
    clock: Literal["always_open", "rth"] = "always_open"
    replay_csv: Path | None = None
    auto_advance: bool = True


class MatchingConfig(_Section):
    """How orders fill.

    ``slippage_ticks``: marketable orders fill this many ticks worse than the touch.
    ``fill_lot_size``: if set, an order fills in executions of at most this many shares;
    ``executions_per_check`` caps the executions per matching run (one per market tick),
    so ``fill_lot_size: 100`` with the default ``executions_per_check: 1`` fills a
    500-share order in five ticks (partial fills); ``None`` fills at once.
    ``fill_delay`` / ``commission_delay``: seconds the simulator holds execution
    messages / commission reports before sending them (also settable as faults).
    """

    slippage_ticks: int = Field(default=0, ge=0, le=1000)
    fill_lot_size: int | None = Field(default=None, ge=1)
    executions_per_check: int | None = Field(default=1, ge=1)
    fill_delay: float = Field(default=0.0, ge=0.0, le=3600.0)
    commission_delay: float = Field(default=0.0, ge=0.0, le=3600.0)
    commission_per_share: Decimal = Field(default=Decimal("0.005"), ge=0)
    commission_minimum: Decimal = Field(default=Decimal("1.00"), ge=0)
    commission_max_pct: Decimal = Field(default=Decimal("0.01"), gt=0)


class LimitsConfig(_Section):
    """Per-connection pacing: more than ``max_msgs_per_second`` messages in a sliding
    one-second window gets error 100; ``disconnect_after`` seconds of sustained excess
    closes the connection (``None`` never disconnects)."""

    max_msgs_per_second: int = Field(default=50, ge=1)
    disconnect_after: float | None = Field(default=5.0, gt=0)


def _default_instruments() -> list[InstrumentConfig]:
    return [InstrumentConfig.from_instrument(inst) for inst in DEFAULT_INSTRUMENTS]


class SimConfig(_Section):
    """The whole simulator configuration (see the module docstring for a YAML example)."""

    instruments: list[InstrumentConfig] = Field(default_factory=_default_instruments, min_length=1)
    accounts: list[AccountConfig] = Field(default_factory=lambda: [AccountConfig()], min_length=1)
    market: MarketConfig = Field(default_factory=MarketConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _check_unique("instruments", [i.symbol.upper() for i in self.instruments], "symbol")
        _check_unique("instruments", [i.con_id for i in self.instruments], "con_id")
        _check_unique("accounts", [a.id for a in self.accounts], "id")
        return self

    def with_seed(self, seed: int | None) -> SimConfig:
        """A copy with ``market.seed`` replaced (``None`` keeps it)."""
        if seed is None:
            return self
        return self.model_copy(update={"market": self.market.model_copy(update={"seed": seed})})


def _check_unique(section: str, values: list[object], field: str) -> None:
    seen: set[object] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}.{index}.{field}: duplicate value {value!r}")
        seen.add(value)


class ConfigError(Exception):
    """The configuration file cannot be read or is invalid; the message names the field."""


def load_config(path: str | Path) -> SimConfig:
    """Read and validate a YAML config file.

    Raises :class:`ConfigError` with one line per problem, each naming the field
    (e.g. ``market.tick_interval: Input should be greater than or equal to 0.001``).
    """
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        config = SimConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{describe(exc)}") from exc
    replay = config.market.replay_csv
    if replay is not None and not replay.is_absolute():
        config = config.model_copy(
            update={
                "market": config.market.model_copy(update={"replay_csv": source.parent / replay})
            }
        )
    return config


def describe(exc: ValidationError) -> str:
    """One ``  field.path: message`` line per validation error."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
