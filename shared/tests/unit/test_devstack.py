"""ibflow.testing.devstack without starting anything: Procfile, ports, migrations list."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

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


def test_procfile_runs_the_simulator_and_every_service_on_the_launchers_ports() -> None:
    processes = devstack.read_procfile(REPO_ROOT / "Procfile")
    assert list(processes) == ["gateway-sim", *SERVICES]
    assert "--port $IBFLOW_DEV_SIM_PORT" in processes["gateway-sim"]
    assert "--control-port $IBFLOW_DEV_SIM_CONTROL_PORT" in processes["gateway-sim"]
    for name, command in processes.items():
        assert f"exec ibflow-{name}" in command
        for entry in devstack.PROCESS_PORTS[name]:
            if entry.variable != devstack.API_PORT_VAR:  # the api reads its own
                assert f"${entry.variable}" in command


def test_port_table_matches_the_service_defaults() -> None:
    for name, settings_type in SERVICES.items():
        fields = settings_type.model_fields
        assert fields["service_name"].default == name
        assert devstack.PROCESS_PORTS[name][0].default == fields["http_port"].default
    ports = [entry.default for entries in devstack.PROCESS_PORTS.values() for entry in entries]
    assert len(set(ports)) == len(ports)


def test_port_variables_move_the_ports_and_clashes_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IBFLOW_API_PORT", "18000")
    ports = devstack.process_ports(["gateway-sim", "api"])
    assert ports == {
        "IBFLOW_DEV_SIM_PORT": 4002,
        "IBFLOW_DEV_SIM_CONTROL_PORT": 4010,
        "IBFLOW_API_PORT": 18000,
    }
    monkeypatch.setenv("IBFLOW_DEV_SIM_PORT", "18000")
    with pytest.raises(devstack.DevstackError, match="IBFLOW_API_PORT and IBFLOW_DEV_SIM_PORT"):
        devstack.process_ports(["gateway-sim", "api"])


@pytest.mark.parametrize("settings_type", list(SERVICES.values()))
def test_service_settings_keep_the_port_validation(
    monkeypatch: pytest.MonkeyPatch, settings_type: type[CommonSettings]
) -> None:
    monkeypatch.setenv("IBFLOW_HTTP_PORT", "99999")
    with pytest.raises(ValueError, match=r"IBFLOW_(HTTP|API)_PORT"):
        settings_type.load()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


def test_busy_infrastructure_port_is_named(busy_port: int) -> None:
    with pytest.raises(PortInUseError, match=rf"PostgreSQL \(set IBFLOW_DEV_PG_PORT.*:{busy_port}"):
        devstack.check_ports(free_port(), busy_port, [])


def test_busy_service_port_names_the_process(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    entry = devstack.ProcessPort("IBFLOW_DEV_OM_PORT", busy_port, "/metrics")
    monkeypatch.setattr(devstack, "PROCESS_PORTS", {"order-manager": (entry,)})
    with pytest.raises(
        PortInUseError,
        match=rf"order-manager /metrics \(set IBFLOW_DEV_OM_PORT to use another port\): "
        rf"port 127.0.0.1:{busy_port}",
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


def test_data_dir_defaults_to_dot_ibflow_and_follows_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(devstack.DATA_DIR_VAR, raising=False)
    assert devstack.data_dir(tmp_path) == tmp_path / ".ibflow"
    monkeypatch.setenv(devstack.DATA_DIR_VAR, str(tmp_path / "elsewhere"))
    assert devstack.data_dir(tmp_path) == tmp_path / "elsewhere"


def test_next_entry_session_skips_weekends_holidays_and_a_passed_entry() -> None:
    new_york = ZoneInfo("America/New_York")
    friday_after_entry = dt.datetime(2026, 11, 20, 10, 0, tzinfo=new_york)
    assert devstack.next_entry_session(friday_after_entry) == dt.date(2026, 11, 23)
    monday_before_entry = dt.datetime(2026, 11, 23, 8, 0, tzinfo=new_york)
    assert devstack.next_entry_session(monday_before_entry) == dt.date(2026, 11, 23)
    wednesday_before_thanksgiving = dt.datetime(2026, 11, 25, 12, 0, tzinfo=new_york)
    assert devstack.next_entry_session(wednesday_before_thanksgiving) == dt.date(2026, 11, 27)


def test_banner_shows_a_new_key_once_and_then_only_where_it_is(tmp_path: Path) -> None:
    ports = {"IBFLOW_API_PORT": 8000, "IBFLOW_DEV_BRIDGE_HTTP_PORT": 9101}
    created = devstack.ApiKeyOutcome(tmp_path / "api-key", "0123456789ab", "ibf_secret")
    text = devstack.banner(ports, "nats://127.0.0.1:4222", created, ready=True)
    assert "http://127.0.0.1:8000/docs" in text
    assert "http://127.0.0.1:9101/metrics" in text
    assert "ibf_secret" in text
    kept = devstack.ApiKeyOutcome(tmp_path / "api-key", "0123456789ab", None)
    text = devstack.banner(ports, "nats://127.0.0.1:4222", kept, ready=True)
    assert "ibf_secret" not in text
    assert f"id 0123456789ab, in {tmp_path / 'api-key'}" in text


def test_a_second_launcher_on_the_same_data_refuses_while_the_first_runs(
    tmp_path: Path,
) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "ibflow-devstack"]
    )
    try:
        (tmp_path / devstack.STATE_FILE).write_text(json.dumps({"launcher": first.pid}))
        with pytest.raises(devstack.DevstackError, match=rf"already runs .*pid {first.pid}"):
            devstack._stop_leftovers(tmp_path)
    finally:
        first.kill()
        first.wait()
    devstack._stop_leftovers(tmp_path)  # gone: the state is dropped, no error
    assert not (tmp_path / devstack.STATE_FILE).exists()


def test_procfile_processes_a_killed_launcher_left_are_stopped_by_the_next_run(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / ".ibflow"
    state_dir.mkdir()
    env = dict(os.environ, **{devstack.MARKER_VAR: str(state_dir.resolve())})
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (state_dir / devstack.STATE_FILE).write_text(json.dumps({"launcher": dead.pid}))
        devstack._stop_leftovers(state_dir)
        assert orphan.wait(5) is not None
        assert bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait()
