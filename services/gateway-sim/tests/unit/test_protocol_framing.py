"""Framing: the API handshake, version negotiation, length-prefixed NUL-separated frames."""

from __future__ import annotations

import asyncio
import importlib
import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ibflow_gateway_sim.protocol import responses
from ibflow_gateway_sim.protocol.framing import (
    MAX_FRAME_SIZE,
    SERVER_VERSION,
    ClientHello,
    FrameError,
    HandshakeError,
    encode_field,
    encode_message,
    handshake_reply,
    negotiate,
    read_handshake,
    read_message,
    split_frame,
)
from ibflow_gateway_sim.protocol.requests import StartApi, decode_request


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def hello_bytes(text: bytes) -> bytes:
    return b"API\0" + struct.pack(">I", len(text)) + text


# --- handshake -----------------------------------------------------------------------------


async def test_handshake_of_ib_async() -> None:
    hello = await read_handshake(reader_with(hello_bytes(b"v157..178")))
    assert hello == ClientHello(157, 178, "")


async def test_handshake_with_connect_options() -> None:
    hello = await read_handshake(reader_with(hello_bytes(b"v157..176 +PACEAPI")))
    assert hello == ClientHello(157, 176, "+PACEAPI")


async def test_handshake_leaves_the_next_message_unread() -> None:
    start_api = encode_message(71, 2, 1, "")
    reader = reader_with(hello_bytes(b"v157..176") + start_api)
    await read_handshake(reader)
    assert await read_message(reader) == ["71", "2", "1", ""]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "API"),
        (b"API\0" + struct.pack(">I", 9) + b"v157", "truncated"),
        (b"AP", "closed during the handshake"),
        (b"API\0\0\0", "truncated"),
        (hello_bytes(b""), "length 0"),
        (b"API\0" + struct.pack(">I", 1 << 30), "length"),
        (hello_bytes(b"hello"), "not 'vMIN..MAX"),
        (hello_bytes(b"v157..x"), "not 'vMIN..MAX"),
        (hello_bytes(b"v178..157"), "empty"),
        (hello_bytes(b"v157..176\0"), "not 'vMIN..MAX"),
        (hello_bytes("v157..176 é".encode()), "not ASCII"),
    ],
    ids=[
        "bad prefix",
        "truncated version",
        "truncated prefix",
        "truncated length",
        "empty version",
        "absurd length",
        "garbage",
        "non-numeric max",
        "inverted range",
        "nul-terminated",
        "non-ascii",
    ],
)
async def test_bad_handshake_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        await read_handshake(reader_with(data))


@pytest.mark.parametrize(("low", "high"), [(157, 178), (157, 176), (176, 176), (100, 217)])
def test_negotiate_speaks_176_inside_the_client_range(low: int, high: int) -> None:
    assert negotiate(ClientHello(low, high)) == SERVER_VERSION == 176


@pytest.mark.parametrize(("low", "high"), [(100, 170), (177, 180)])
def test_negotiate_refuses_a_range_without_176(low: int, high: int) -> None:
    with pytest.raises(HandshakeError) as info:
        negotiate(ClientHello(low, high))
    assert str(info.value) == f"client supports v{low}..{high}, simulator speaks 176"


def test_handshake_reply_has_exactly_two_fields() -> None:
    frame = handshake_reply(176, datetime(2025, 1, 15, 14, 30, tzinfo=UTC))
    assert split_frame(frame) == ["176", "20250115 14:30:00 UTC"]
    assert frame == b"\0\0\0\x1a176\x0020250115 14:30:00 UTC\0"


@pytest.mark.parametrize("library", ["ib_async", "ib_insync"])
async def test_real_client_connects_through_the_handshake(library: str) -> None:
    """The real Client over TCP: handshake, startApi, then managedAccounts + nextValidId."""
    received: list[object] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await read_handshake(reader)
        received.append(hello)
        writer.write(handshake_reply(negotiate(hello), datetime.now(UTC)))
        received.append(decode_request(await read_message(reader)))
        writer.write(responses.managed_accounts(["DU1234567"]) + responses.next_valid_id(5))
        await writer.drain()
        try:
            await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = importlib.import_module(library).IB().client
    try:
        await client.connectAsync("127.0.0.1", port, clientId=3, timeout=5)
        assert client.isReady()
        assert client.serverVersion() == 176
        assert client.getReqId() == 5
    finally:
        client.disconnect()
        server.close()
        await server.wait_closed()
    expected_max = 178 if library == "ib_async" else 176
    assert received == [ClientHello(157, expected_max, ""), StartApi(3, "")]


# --- frames --------------------------------------------------------------------------------


async def test_messages_round_trip_with_empty_fields() -> None:
    frames = encode_message(1, "", "a b", None, "") + encode_message(49, 1)
    reader = reader_with(frames)
    assert await read_message(reader) == ["1", "", "a b", "", ""]
    assert await read_message(reader) == ["49", "1"]
    with pytest.raises(asyncio.IncompleteReadError):
        await read_message(reader)


async def test_eof_inside_a_frame_propagates_as_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_message(reader_with(encode_message(49, 1)[:-2]))


async def test_oversized_frame_is_refused_before_reading_it() -> None:
    reader = reader_with(struct.pack(">I", MAX_FRAME_SIZE + 1), eof=False)
    with pytest.raises(FrameError, match="exceeds"):
        await read_message(reader)
    small = reader_with(encode_message("x" * 50), eof=False)
    with pytest.raises(FrameError, match="exceeds the 10-byte limit"):
        await read_message(small, max_size=10)


async def test_empty_frame_is_refused() -> None:
    with pytest.raises(FrameError, match="empty"):
        await read_message(reader_with(b"\0\0\0\0"))


def test_every_field_is_nul_terminated_and_length_prefixed() -> None:
    frame = encode_message(9, 1, 42)
    assert frame == b"\0\0\0\x079\x001\x0042\0"
    assert split_frame(frame) == ["9", "1", "42"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "1"),
        (False, "0"),
        (0, "0"),
        (-1, "-1"),
        ("DU1", "DU1"),
        (100.0, "100.0"),
        (0.5, "0.5"),
        (float("inf"), ""),
        (float("-inf"), ""),
        (float("nan"), ""),
        (Decimal("5.0"), "5.0"),
        (Decimal("1E+2"), "100"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("-3.25"), "-3.25"),
        (Decimal("Infinity"), ""),
    ],
)
def test_field_encoding(value: object, text: str) -> None:
    assert encode_field(value) == text  # type: ignore[arg-type]


def test_a_nul_inside_a_text_field_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_message(4, "a\0b")


def test_a_message_needs_an_id() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        encode_message()


def test_split_frame_checks_the_length_prefix() -> None:
    with pytest.raises(FrameError, match="length prefix"):
        split_frame(encode_message(49, 1)[:-1])
    with pytest.raises(FrameError, match="no length prefix"):
        split_frame(b"\0\0")


def test_non_ascii_text_survives_the_round_trip() -> None:
    assert split_frame(encode_message(4, "Zürich")) == ["4", "Zürich"]
