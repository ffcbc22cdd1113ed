"""`make run` end to end: ``ibflow-devstack`` with the repository's Procfile, from a
clean data directory, every port free and chosen here.

The API answers with the key written to ``.ibflow/api-key`` (0600), the demo portfolio
reaches ``ready`` on the simulator, ``ibflow orders place`` is filled there and
``ibflow status`` shows it; Ctrl-C (SIGINT to the launcher's process group, as a
terminal sends it) stops everything and leaves no process and no port behind. Whatever
happens, the launcher's session and the embedded servers are killed at the end.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_make_run_answers_trades_at_the_simulator_and_stops_clean_on_ctrl_c(
    stack: Any,
) -> None:
    assert not (stack.root / ".ibflow").exists()
    stack.start()

    stack.wait_for("the API ready", lambda: stack.http(f"{stack.api}/readyz")[0] == 200)
    stack.remember_servers()
    assert set(stack.servers) == {"launcher", "nats", "postgres"}
    key_file = stack.root / ".ibflow" / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert stack.http(f"{stack.api}/api/v1/portfolios")[0] == 401
    status, body = stack.http(f"{stack.api}/api/v1/portfolios", key)
    assert status == 200, body
    assert "demo" in body.decode()
    stack.wait_for("the banner", lambda: "ibflow is up" in stack.output())
    assert f"{stack.api}/docs" in stack.output()
    assert key in stack.output()  # shown once, on the run that created it

    stack.wait_for(
        "the demo portfolio ready", lambda: stack.cli("test-connection", "demo").returncode == 0
    )
    placed = stack.cli(
        "orders", "place", "demo", "BUY", "10", "AAPL", "--id", "e2e-1", "--wait", "30"
    )
    assert placed.returncode == 0, placed.stdout + placed.stderr
    assert "accepted order e2e-1" in placed.stdout
    assert "e2e-1  FILLED  BUY 10 AAPL MKT  filled 10 @" in placed.stdout

    shown = stack.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "connection: ready" in shown.stdout
    filled = [line for line in shown.stdout.splitlines() if "e2e-1" in line]
    assert filled, shown.stdout
    assert "FILLED" in filled[0]
    assert "BUY 10 AAPL MKT" in filled[0]
    assert "AAPL" in shown.stdout.split("broker holdings")[1]

    assert stack.proc is not None
    stack.seen = stack.tree()
    assert len(stack.seen) > 8  # launcher, honcho's six processes, NATS, PostgreSQL...
    os.killpg(stack.proc.pid, signal.SIGINT)
    assert stack.proc.wait(60) == 0, stack.output()[-6000:]
    log = stack.output()
    assert (
        log.index("api stopped")
        < log.index("stopping PostgreSQL")
        < log.index("stopping nats-server")
    )
    deadline = time.monotonic() + 10
    while stack.alive(stack.seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.alive(stack.seen) == set()
    ports = [*stack.ports.values(), stack.nats_port, stack.pg_port]
    assert [port for port in ports if not stack.port_free(port)] == []
