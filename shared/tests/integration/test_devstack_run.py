"""ibflow-devstack end to end in a temporary directory, on free ports.

A run with a one-service Procfile (Ctrl-C as a terminal sends it: SIGINT to the
launcher's process group) stops the service, then PostgreSQL, then NATS and exits 0;
a second run reuses the data (migrations already applied).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ibflow.testing.embedded import free_port

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def launch(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    out = (tmp_path / "devstack.out").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ibflow.testing.devstack", *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def output(tmp_path: Path) -> str:
    return (tmp_path / "devstack.out").read_text(errors="replace")


def wait_for(proc: subprocess.Popen[bytes], tmp_path: Path, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"devstack exited with {proc.returncode}:\n{output(tmp_path)}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(TIMEOUT)
            pytest.fail(f"devstack not up in time:\n{output(tmp_path)}")
        time.sleep(0.1)


def ctrl_c(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_devstack_runs_and_stops_in_order_then_reuses_its_data(tmp_path: Path) -> None:
    nats_port, pg_port, http_port = free_port(), free_port(), free_port()
    (tmp_path / "Procfile").write_text(
        f"om: exec env IBFLOW_HTTP_PORT={http_port} ibflow-order-manager\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("IBFLOW_")}
    env.update(IBFLOW_DEV_NATS_PORT=str(nats_port), IBFLOW_DEV_PG_PORT=str(pg_port))

    proc = launch(tmp_path, env)
    wait_for(proc, tmp_path, lambda: ready(http_port))
    state = json.loads((tmp_path / ".ibflow" / "devstack.json").read_text())
    assert set(state) == {"launcher", "nats", "postgres"}
    assert ctrl_c(proc) == 0, output(tmp_path)

    log = output(tmp_path)
    assert re.search(r"migrations of ibflow\.db(, ibflow_\w+)*: [1-9]\d* applied", log)
    assert "stream IBFLOW_EVENTS: created" in log
    assert "om stopped (rc=0)" in log
    assert (
        log.index("om stopped")
        < log.index("stopping PostgreSQL")
        < log.index("stopping nats-server")
    )
    assert all(port_free(port) for port in (nats_port, pg_port, http_port))
    assert not (tmp_path / ".ibflow" / "devstack.json").exists()

    proc = launch(tmp_path, env, "--infra-only")
    wait_for(proc, tmp_path, lambda: "infrastructure up" in output(tmp_path))
    assert ctrl_c(proc) == 0, output(tmp_path)
    log = output(tmp_path)
    assert re.search(r"migrations of ibflow\.db(, ibflow_\w+)*: up to date", log)
    assert "stream IBFLOW_EVENTS: unchanged" in log
