"""``deploy/nats/nats.conf`` on the real nats-server: user auth, JetStream on file storage."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from ibflow.bus.provision import provision
from ibflow.bus.subjects import ALL_STREAMS
from ibflow.testing.embedded import free_port, nats_server_binary

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats.conf"
PASSWORDS = {"NATS_IBFLOW_PASSWORD": "s3rvices", "NATS_OPERATOR_PASSWORD": "0perator"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """nats-server with the compose config; ports and store dir moved for the test."""
    text = CONFIG.read_text()
    assert "store_dir: /data/jetstream" in text
    config = tmp_path / "nats.conf"
    config.write_text(text.replace("/data/jetstream", str(tmp_path / "jetstream")))
    port, monitor = free_port(), free_port()
    process = subprocess.Popen(
        [
            str(nats_server_binary()),
            "--config",
            str(config),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
            "--http_port",
            str(monitor),
        ],
        env=PASSWORDS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"nats-server exited: {process.stderr.read().decode()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "nats-server did not listen"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


async def connect(url: str) -> nats.NATS:
    return await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)


async def test_the_compose_nats_needs_a_user_and_gives_the_services_jetstream(
    server: int, tmp_path: Path
) -> None:
    services = await connect(
        f"nats://ibflow:{PASSWORDS['NATS_IBFLOW_PASSWORD']}@127.0.0.1:{server}"
    )
    try:
        results = await provision(services.jetstream(), ALL_STREAMS)
        assert {r.name for r in results} == {s.name for s in ALL_STREAMS}
        ack = await services.jetstream().publish("ibflow.evt.v1.test.demo", b"{}")
        assert ack.stream == "IBFLOW_EVENTS"
    finally:
        await services.close()
    assert (tmp_path / "jetstream").is_dir()  # file storage under the store dir

    operator = await connect(
        f"nats://operator:{PASSWORDS['NATS_OPERATOR_PASSWORD']}@127.0.0.1:{server}"
    )
    await operator.close()
    for credentials in ({}, {"user": "ibflow", "pass": "wrong"}):
        assert await refusal(server, credentials) == "-ERR 'Authorization Violation'"


async def refusal(port: int, credentials: dict[str, str]) -> str:
    """What the server answers a CONNECT with ``credentials`` (raw protocol: nats-py leaks
    its transport when a connect is refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = json.loads((await reader.readline()).decode().removeprefix("INFO "))
        assert info["auth_required"] is True
        connect = {"verbose": False, "pedantic": False, **credentials}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()
