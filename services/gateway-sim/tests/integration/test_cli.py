"""The command line: ``python -m ibflow_gateway_sim`` serves ib_async, exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import ib_async
import pytest

from ibflow.testing.embedded import free_port
from ibflow_gateway_sim.app import parse_args


async def _wait_for_health(port: int, proc: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        assert proc.returncode is None, "the simulator exited early"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.write(b"GET /health HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200")
        return


async def test_cli_serves_ib_async_and_exits_0_on_sigterm() -> None:
    port, control_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ibflow_gateway_sim",
        "--port",
        str(port),
        "--control-port",
        str(control_port),
        "--seed",
        "3",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ib = ib_async.IB()
    try:
        await _wait_for_health(control_port, proc)
        await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=5)
        aapl = ib_async.Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(aapl)
        trade = ib.placeOrder(aapl, ib_async.MarketOrder("BUY", 10))
        for _ in range(500):
            if trade.orderStatus.status == "Filled":
                break
            await asyncio.sleep(0.01)
        assert trade.orderStatus.status == "Filled"
    finally:
        ib.disconnect()
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert f"gateway-sim listening on 127.0.0.1:{port}" in log
    assert f"control API listening on http://127.0.0.1:{control_port}" in log


def test_busy_port_exits_1() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ibflow_gateway_sim",
                "--port",
                str(port),
                "--control-port",
                "0",
            ],
            capture_output=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.decode()


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("market: {tick_interval: -1}\naccounts: [{id: U123}]\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "ibflow_gateway_sim", "--config", str(config), "--port", "0"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "market.tick_interval" in stderr
    assert "accounts.0.id" in stderr


def test_cli_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.control_port) == ("127.0.0.1", 4002, 4010)
    assert args.seed is None
    assert args.config is None


@pytest.mark.parametrize("argv", [["--port", "x"], ["--log-level", "LOUD"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
