"""Configuration: defaults, YAML loading, errors that name the field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ibflow_gateway_sim.config import ConfigError, SimConfig, load_config
from ibflow_gateway_sim.server import GatewaySimulator


def test_defaults_are_a_usable_gateway() -> None:
    config = SimConfig()
    assert len(config.instruments) == 12
    assert [a.id for a in config.accounts] == ["DU1234567"]
    assert config.limits.max_msgs_per_second == 50
    assert config.matching.commission_per_share == Decimal("0.005")
    assert config.matching.commission_minimum == Decimal("1.00")
    assert config.market.clock == "always_open"
    assert config.with_seed(9).market.seed == 9


def test_yaml_scenario(tmp_path: Path) -> None:
    (tmp_path / "ticks.csv").write_text(
        "timestamp,symbol,price\n2030-01-02T15:00:00,XYZ,12.55\n", encoding="utf-8"
    )
    path = tmp_path / "sim.yaml"
    path.write_text(
        """
instruments:
  - {symbol: xyz, con_id: 900001, primary_exchange: NYSE, min_tick: "0.05",
     start_price: "12.50", long_name: XYZ CORP}
accounts:
  - {id: DU7654321, starting_cash: "250000"}
  - {id: DU7654322, account_type: cash}
market: {seed: 11, tick_interval: 0.5, clock: rth, replay_csv: ticks.csv}
matching: {slippage_ticks: 1, fill_lot_size: 100, commission_delay: 0.25}
limits: {max_msgs_per_second: 40, disconnect_after: null}
""",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.instruments[0].to_instrument().symbol == "XYZ"
    assert config.market.replay_csv == tmp_path / "ticks.csv"
    assert config.limits.disconnect_after is None
    sim = GatewaySimulator(config)
    assert sim.accounts.ids == ["DU7654321", "DU7654322"]
    assert sim.universe.by_symbol("XYZ") is not None
    assert sim.fault_state.commission_delay == 0.25


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("accounts: [{id: U123}]", "accounts.0.id"),
        ("market: {tick_interval: 0}", "market.tick_interval"),
        ("market: {clock: sometimes}", "market.clock"),
        ("matching: {fill_lot_size: 0}", "matching.fill_lot_size"),
        ("limits: {max_msgs_per_second: 0}", "limits.max_msgs_per_second"),
        ("instruments: [{symbol: A, con_id: 1, primary_exchange: X}]", "instruments.0.start_price"),
        ("bogus: 1", "bogus"),
        (
            "instruments: [{symbol: A, con_id: 1, primary_exchange: X, start_price: 1},"
            " {symbol: a, con_id: 2, primary_exchange: X, start_price: 1}]",
            "instruments.1.symbol",
        ),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert field in str(exc.value)


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("market: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
