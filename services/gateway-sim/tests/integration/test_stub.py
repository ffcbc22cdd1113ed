"""The gateway-sim stub: listens, accepts and closes connections, exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from ibflow_gateway_sim.app import parse_args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connect(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_accepts_a_connection_and_exits_0_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ibflow_gateway_sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            "7",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with connect(port, proc) as client:
            assert client.recv(1024) == b""  # the stub closes the connection
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    log = stderr.decode()
    assert proc.returncode == 0, log
    assert "gateway-sim protocol not implemented yet" in log


def test_busy_port_exits_1() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ibflow_gateway_sim", "--port", str(port)],
            capture_output=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr.decode()


def test_cli_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.control_port) == ("127.0.0.1", 4002, 4010)
    assert args.seed is None
    assert args.config is None
