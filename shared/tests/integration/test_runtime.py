"""A real service process (order-manager) on real NATS and PostgreSQL.

Starts ``python -m ibflow_order_manager`` and checks the probes, the JSON logs, the
graceful exit on SIGTERM, and the exit status 2 naming the variable on bad settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from ibflow.db import apply_migrations
from ibflow.testing.embedded import free_port
from ibflow.testing.http import http_get

pytestmark = pytest.mark.integration

MODULE = "ibflow_order_manager"
GRACE_SECONDS = 5.0
START_TIMEOUT = 30.0


def service_env(**variables: str) -> dict[str, str]:
    """The test's environment without any IBFLOW_ variable, plus ``variables``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IBFLOW_")}
    env.update(variables)
    return env


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[bytes]]:
    with (tmp_path / "service.log").open("w+b") as file:
        yield file


def read_log(file: IO[bytes]) -> str:
    file.flush()
    file.seek(0)
    return file.read().decode(errors="replace")


async def spawn(env: dict[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        MODULE,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


async def poll(
    proc: asyncio.subprocess.Process, port: int, path: str, want: int, log: IO[bytes]
) -> str:
    """GET ``path`` until it answers ``want``; fail early if the process exits."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"service exited with {proc.returncode}:\n{read_log(log)}")
        try:
            status, body = await http_get(port, path)
        except OSError as exc:
            last = repr(exc)
        else:
            if status == want:
                return body
            last = f"{status} {body}"
        await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    pytest.fail(f"{path} never answered {want} (last: {last}):\n{read_log(log)}")


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        status = await asyncio.wait_for(proc.wait(), GRACE_SECONDS + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return status, time.monotonic() - started


async def test_service_probes_and_graceful_stop(
    nats_url: str, database_url: str, log_file: IO[bytes]
) -> None:
    await apply_migrations(database_url, "ibflow.db", MODULE)
    port = free_port()
    env = service_env(
        IBFLOW_NATS_URL=nats_url,
        IBFLOW_DATABASE_URL=database_url,
        IBFLOW_HTTP_PORT=str(port),
        IBFLOW_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    proc = await spawn(env, log_file)
    try:
        body = await poll(proc, port, "/readyz", 200, log_file)
        assert json.loads(body)["checks"] == {"lifecycle": "ok", "nats": "ok", "database": "ok"}
        status, body = await http_get(port, "/healthz")
        assert status == 200
        assert json.loads(body)["service"] == "order-manager"
        status, metrics = await http_get(port, "/metrics")
        assert status == 200
        assert "# TYPE process_cpu_seconds_total counter" in metrics
        assert "ibflow_service_ready 1.0" in metrics
    finally:
        code, elapsed = await stop(proc)
    output = read_log(log_file)
    assert code == 0, output
    assert elapsed < GRACE_SECONDS, output
    lines = [json.loads(line) for line in output.splitlines()]
    assert {line["service"] for line in lines} == {"order-manager"}
    assert {"timestamp", "level", "logger", "message", "correlation_id"} <= set(lines[0])
    messages = [line["message"] for line in lines]
    assert "SIGTERM received; shutting down" in messages
    assert database_url not in output


async def test_not_ready_while_the_database_is_unreachable(
    nats_url: str, log_file: IO[bytes]
) -> None:
    port = free_port()
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/ibflow"
    env = service_env(
        IBFLOW_NATS_URL=nats_url,
        IBFLOW_DATABASE_URL=nowhere,
        IBFLOW_HTTP_PORT=str(port),
        IBFLOW_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    proc = await spawn(env, log_file)
    try:
        await poll(proc, port, "/healthz", 200, log_file)
        status, body = await http_get(port, "/readyz")
        assert status == 503
        report = json.loads(body)
        assert report["checks"]["database"] == "not connected"
        assert "database" in report["failed"]
    finally:
        code, _ = await stop(proc)
    assert code == 0, read_log(log_file)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IBFLOW_HTTP_PORT", "not-a-port"),
        ("IBFLOW_NATS_URL", "http://127.0.0.1:4222"),
        ("IBFLOW_DATABASE_URL", "mysql://admin:hunter2-secret@db:3306/x"),
    ],
)
async def test_invalid_settings_exit_2_naming_the_variable(variable: str, value: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        MODULE,
        env=service_env(**{variable: value}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    message = stderr.decode()
    assert proc.returncode == 2, message
    assert variable in message
    assert "order-manager: invalid settings" in message
    assert "hunter2" not in message + stdout.decode()
    assert "Traceback" not in message
