"""ibflow.runtime.Runtime in-process: probes, workers, checks and the bounded shutdown.

No NATS or PostgreSQL here (``uses_nats=False, uses_database=False``); the real
connections are covered by tests/integration/test_runtime.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from ibflow.runtime import EXIT_FAILURE, EXIT_OK, Runtime, Service
from ibflow.settings import CommonSettings
from ibflow.testing.http import http_get


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IBFLOW_"):
            monkeypatch.delenv(name)


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Worker:
    """Runs until stopped, then finishes its in-flight item."""

    def __init__(self, *, stop_works: bool = True, crash: bool = False) -> None:
        self.stop_works = stop_works
        self.crash = crash
        self.running = False
        self.stop_called = False
        self.finished_in_flight = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.running = True
        if self.crash:
            raise RuntimeError("worker broke")
        await self._stop.wait()
        await asyncio.sleep(0.05)  # the in-flight message
        self.finished_in_flight = True

    def stop(self) -> None:
        self.stop_called = True
        if self.stop_works:
            self._stop.set()


def bare(*steps: Callable[[Runtime[CommonSettings]], object]) -> Service[CommonSettings]:
    async def run_steps(rt: Runtime[CommonSettings]) -> None:
        for step in steps:
            step(rt)

    return Service(CommonSettings, startup=[run_steps], uses_nats=False, uses_database=False)


def settings(grace: float = 5.0) -> CommonSettings:
    return CommonSettings.load(service_name="unit-svc", http_port=0, shutdown_grace_seconds=grace)


async def test_probes_workers_and_clean_shutdown() -> None:
    worker = Worker()
    healthy = {"flag": True}
    order: list[str] = []

    async def on_shutdown() -> None:
        order.append(f"callback (worker done: {worker.finished_in_flight})")

    def wire(rt: Runtime[CommonSettings]) -> None:
        rt.add_worker(worker, name="w")
        rt.add_check("flag", lambda: healthy["flag"])
        rt.on_shutdown(on_shutdown)

    rt = Runtime(bare(wire), settings())
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    await wait_until(lambda: rt.ready)
    assert worker.running

    assert (await http_get(rt.http_port, "/healthz"))[0] == 200
    status, body = await http_get(rt.http_port, "/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"lifecycle": "ok", "flag": "ok"}

    healthy["flag"] = False
    status, body = await http_get(rt.http_port, "/readyz")
    assert status == 503
    assert json.loads(body)["failed"] == ["flag"]

    status, body = await http_get(rt.http_port, "/metrics")
    assert status == 200
    assert "ibflow_service_ready" in body
    assert "# TYPE" in body

    stop.set()
    assert await asyncio.wait_for(serving, 10) == EXIT_OK
    assert worker.stop_called
    assert worker.finished_in_flight
    assert order == ["callback (worker done: True)"]


async def test_async_and_raising_checks_fail_readiness() -> None:
    async def slow_false() -> bool:
        await asyncio.sleep(0)
        return False

    def broken() -> bool:
        raise ConnectionError("no route")

    def wire(rt: Runtime[CommonSettings]) -> None:
        rt.add_check("async", slow_false)
        rt.add_check("broken", broken)

    rt = Runtime(bare(wire), settings())
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    await wait_until(lambda: rt.ready)
    report = await rt.readiness()
    assert report.failed == ["async", "broken"]
    assert report.checks["broken"] == "error: ConnectionError: no route"
    stop.set()
    assert await serving == EXIT_OK


async def test_crashing_worker_fails_the_service() -> None:
    worker = Worker(crash=True)
    rt = Runtime(bare(lambda rt: rt.add_worker(worker)), settings())
    status = await asyncio.wait_for(rt.serve(asyncio.Event()), 10)
    assert status == EXIT_FAILURE


async def test_failing_startup_step_exits_1() -> None:
    async def explode(_: Runtime[CommonSettings]) -> None:
        raise RuntimeError("cannot wire")

    service = Service(CommonSettings, startup=[explode], uses_nats=False, uses_database=False)
    assert await asyncio.wait_for(Runtime(service, settings()).serve(asyncio.Event()), 10) == 1


async def test_shutdown_is_bounded_by_the_grace_period() -> None:
    stubborn = Worker(stop_works=False)
    rt = Runtime(bare(lambda rt: rt.add_worker(stubborn)), settings(grace=0.5))
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    await wait_until(lambda: rt.ready)
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(serving, 5) == EXIT_FAILURE
    assert time.monotonic() - started < 1.5
    assert stubborn.stop_called


async def test_stop_during_startup_exits_cleanly() -> None:
    entered = asyncio.Event()

    async def hang(_: Runtime[CommonSettings]) -> None:
        entered.set()
        await asyncio.sleep(3600)

    service = Service(CommonSettings, startup=[hang], uses_nats=False, uses_database=False)
    rt = Runtime(service, settings())
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    await asyncio.wait_for(entered.wait(), 10)
    status, body = await http_get(rt.http_port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["lifecycle"] == "starting"
    stop.set()
    assert await asyncio.wait_for(serving, 10) == EXIT_OK


async def test_busy_http_port_fails_startup() -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        busy = CommonSettings.load(http_port=port)
        service = Service(CommonSettings, uses_nats=False, uses_database=False)
        assert await Runtime(service, busy).serve(asyncio.Event()) == EXIT_FAILURE
    finally:
        blocker.close()
        await blocker.wait_closed()


_LOOP_PROBE = """
import asyncio, os, signal
from ibflow.runtime import Service, run
from ibflow.settings import CommonSettings

async def report(rt):
    print("loop:", type(asyncio.get_running_loop()).__module__, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

run(Service(CommonSettings, startup=[report], uses_nats=False, uses_database=False))
"""


@pytest.mark.parametrize(
    ("setting", "module"), [(None, "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_a_service_runs_on_the_event_loop_its_settings_name(
    setting: str | None, module: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IBFLOW_")}
    env |= {"IBFLOW_HTTP_PORT": "0", "IBFLOW_LOG_FORMAT": "text"}
    if setting is not None:
        env["IBFLOW_EVENT_LOOP"] = setting
    done = subprocess.run(
        [sys.executable, "-c", _LOOP_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == EXIT_OK, done.stderr
    assert f"loop: {module}" in done.stdout
