"""Raw TCP clients (no IB library): pacing, malformed input, refused handshakes."""

from __future__ import annotations

import asyncio
import logging
import struct
from types import ModuleType

import pytest

from ibflow_gateway_sim.config import LimitsConfig, SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import SEED, Connect


class RawClient:
    """A bare TWS API client: handshake, then length-prefixed NUL-separated fields."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, versions: bytes = b"v157..176") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"API\0" + struct.pack(">I", len(versions)) + versions)
        return cls(reader, writer)

    async def start(self, client_id: int) -> None:
        assert (await self.read())[0] == "176"
        self.send(71, 2, client_id, "")
        await self.read_until(lambda f: f[0] == "4" and f[3] == "2158")  # last startup notice

    def send(self, *fields: object) -> None:
        payload = "".join(f"{f}\0" for f in fields).encode()
        self.writer.write(struct.pack(">I", len(payload)) + payload)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, within: float = 5) -> list[str]:
        async def _read() -> list[str]:
            (size,) = struct.unpack(">I", await self.reader.readexactly(4))
            return (await self.reader.readexactly(size)).decode().split("\0")[:-1]

        return await asyncio.wait_for(_read(), within)

    async def read_until(self, predicate: object, within: float = 5) -> list[str]:
        assert callable(predicate)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            fields = await self.read(max(deadline - loop.time(), 0.01))
            if predicate(fields):
                return fields

    async def closed_by_server(self, within: float = 3) -> bool:
        try:
            while True:
                await self.read(within)
        except asyncio.IncompleteReadError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


class TestPacing:
    @pytest.fixture
    def sim_config(self) -> SimConfig:
        return SimConfig(limits=LimitsConfig(disconnect_after=0.5)).with_seed(SEED)

    async def test_more_than_50_messages_per_second_get_error_100(
        self, sim: GatewaySimulator
    ) -> None:
        raw = await RawClient.open(sim.port)
        await raw.start(11)
        for _ in range(60):
            raw.send(49, 1)
        frames = [await raw.read() for _ in range(61)]
        errors = [f for f in frames if f[0] == "4"]
        assert [(e[2], e[3], e[4]) for e in errors] == [
            ("-1", "100", "Max rate of messages per second has been exceeded:max=50 rec=51 (1)")
        ]
        assert sum(f[0] == "49" for f in frames) == 60, "requests are still answered"
        raw.close()

    async def test_sustained_excess_disconnects_only_that_client(
        self, ibmod: ModuleType, sim: GatewaySimulator, connect: Connect
    ) -> None:
        ib = await connect(client_id=1)
        raw = await RawClient.open(sim.port)
        await raw.start(12)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        closed = False
        while loop.time() < deadline and not closed:
            for _ in range(20):
                raw.send(49, 1)
            await asyncio.sleep(0.02)
            closed = raw.reader.at_eof() or raw.writer.is_closing()
            if not closed:
                closed = await raw.closed_by_server(within=0.01)
        assert closed, "a client flooding for longer than disconnect_after is dropped"
        assert ib.isConnected()
        assert await ib.reqCurrentTimeAsync()
        raw.close()


async def test_malformed_input_is_answered_and_other_clients_keep_working(
    ibmod: ModuleType,
    sim: GatewaySimulator,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ibflow_gateway_sim")
    ib = await connect(client_id=1)
    raw = await RawClient.open(sim.port)
    await raw.start(13)

    raw.send("abc", 1)  # message id is not a number
    error = await raw.read_until(lambda f: f[0] == "4")
    assert (error[2], error[3]) == ("-1", "320")

    raw.send(1, 11, "not-a-number", 0, "AAPL", "STK")  # reqMktData, bad reqId, too short
    error = await raw.read_until(lambda f: f[0] == "4")
    assert error[3] == "320"

    raw.send(3, 77, 0, "AAPL", "STK", "", "0.0", "", "", "SMART", "", "USD", "", "", "", "")
    error = await raw.read_until(lambda f: f[0] == "4")  # placeOrder cut short
    assert (error[2], error[3]) == ("77", "320")

    raw.send(999, 1, "whatever")  # unknown message id: ignored
    raw.send(49, 1)
    assert (await raw.read_until(lambda f: f[0] in ("4", "49")))[0] == "49"
    assert "client 13" in caplog.text
    assert "unsupported message id 999" in caplog.text

    raw.send_raw(struct.pack(">I", 0xFFFFFFF0) + b"junk")  # cannot be framed
    assert await raw.closed_by_server(), "an unframeable stream closes that connection"
    assert "unframeable input" in caplog.text

    assert ib.isConnected()
    assert await ib.reqCurrentTimeAsync()
    contract = ibmod.Stock("AAPL", "SMART", "USD")
    assert await ib.qualifyContractsAsync(contract)
    raw.close()


@pytest.mark.parametrize(
    "hello",
    [
        b"API\0" + struct.pack(">I", 9) + b"v100..150",
        b"API\0" + struct.pack(">I", 9) + b"v177..200",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["too-old", "too-new", "not-tws"],
)
async def test_refused_handshake_closes_with_a_log_line(
    sim: GatewaySimulator, hello: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(hello)
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    assert "refusing the connection" in caplog.text
    if b"v177" in hello:
        assert "client supports v177..200, simulator speaks 176" in caplog.text
