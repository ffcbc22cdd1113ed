"""ibflow.testing.devstack without starting anything: Procfile, ports, migrations list."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibflow.settings import CommonSettings
from ibflow.testing import devstack
from ibflow.testing.embedded import PortInUseError, free_port
from ibflow_api.settings import ApiSettings
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_order_manager.settings import OrderManagerSettings
from ibflow_position_monitor.settings import PositionMonitorSettings
from ibflow_scheduler.settings import SchedulerSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVICES: dict[str, type[CommonSettings]] = {
    "gateway-bridge": GatewayBridgeSettings,
    "order-manager": OrderManagerSettings,
    "position-monitor": PositionMonitorSettings,
    "scheduler": SchedulerSettings,
    "api": ApiSettings,
}


def test_procfile_runs_the_simulator_and_every_service() -> None:
    processes = devstack.read_procfile(REPO_ROOT / "Procfile")
    assert list(processes) == ["gateway-sim", *SERVICES]
    assert "--port 4002" in processes["gateway-sim"]
    assert "--control-port 4010" in processes["gateway-sim"]
    for name, command in processes.items():
        assert command.startswith(f"exec ibflow-{name}")


def test_port_table_matches_the_service_defaults() -> None:
    for name, settings_type in SERVICES.items():
        fields = settings_type.model_fields
        assert fields["service_name"].default == name
        assert devstack.PROCESS_PORTS[name][0][0] == fields["http_port"].default
    ports = [port for entries in devstack.PROCESS_PORTS.values() for port, _ in entries]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("settings_type", list(SERVICES.values()))
def test_service_settings_keep_the_port_validation(
    monkeypatch: pytest.MonkeyPatch, settings_type: type[CommonSettings]
) -> None:
    monkeypatch.setenv("IBFLOW_HTTP_PORT", "99999")
    with pytest.raises(ValueError, match="IBFLOW_HTTP_PORT"):
        settings_type.load()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


def test_busy_infrastructure_port_is_named(busy_port: int) -> None:
    with pytest.raises(PortInUseError, match=rf"PostgreSQL \(IBFLOW_DEV_PG_PORT\).*:{busy_port}"):
        devstack.check_ports(free_port(), busy_port, [])


def test_busy_service_port_names_the_process(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    monkeypatch.setattr(devstack, "PROCESS_PORTS", {"order-manager": ((busy_port, "/metrics"),)})
    with pytest.raises(
        PortInUseError, match=rf"order-manager /metrics: port 127.0.0.1:{busy_port}"
    ):
        devstack.check_ports(free_port(), free_port(), ["gateway-sim", "order-manager"])


def test_missing_procfile_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(devstack.DevstackError, match="repository root"):
        devstack.read_procfile(tmp_path / "Procfile")


def test_bad_port_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devstack.PG_PORT_VAR, "abc")
    with pytest.raises(devstack.DevstackError, match="IBFLOW_DEV_PG_PORT"):
        devstack.devstack(Path("/nonexistent"), procfile=Path("/nonexistent/Procfile"))


def test_library_migrations_come_first() -> None:
    packages = devstack.migration_packages()
    assert packages[0] == "ibflow.db"
    assert "ibflow_gateway_sim" not in packages
