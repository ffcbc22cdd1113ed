"""WebSocket fan-out: filters per client, and a client too slow to keep up is dropped
with close code 1013 while the others get every message."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import websockets
from prometheus_client import REGISTRY

from ibflow.bus import subjects
from ibflow.contracts import ConnectionState, GatewayConnectionChanged, GatewayType
from ibflow_api.keys import Scope
from ibflow_api.ws import CLOSE_TOO_SLOW

from .conftest import PORTFOLIO, Stack, wait_for

FLOOD = 400
PADDING = "x" * 60_000


def _event(i: int, portfolio: str = PORTFOLIO) -> bytes:
    return GatewayConnectionChanged(
        portfolio_id=portfolio,
        state=ConnectionState.READY,
        connected=True,
        gateway_type=GatewayType.SIMULATOR,
        host="127.0.0.1",
        port=4002,
        client_id=i,
        error_message=PADDING,
    ).to_json()


def _dropped() -> float:
    return REGISTRY.get_sample_value("ibflow_api_ws_dropped_total") or 0.0


def _flooded(received: list[dict[str, Any]]) -> int:
    return sum(1 for m in received if m["portfolio_id"] == "flood")


async def _read_until(ws: Any, wanted: int, into: list[dict[str, Any]]) -> None:
    while _flooded(into) < wanted:
        into.append(json.loads(await ws.recv()))


async def _stalled_client(stack: Stack, query: str) -> tuple[Any, Any]:
    """A WebSocket client that completes the handshake, then never reads again (its
    receive buffer is pinned small, so the server's sends soon block)."""
    port = int(stack.base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        (
            f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-API-Key: {stack.keys[Scope.READ]}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_a_slow_client_is_dropped_and_the_others_get_everything(stack: Stack) -> None:
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    dropped_before = _dropped()
    stalled, stalled_writer = await _stalled_client(stack, "types=ib_connection")
    received: list[dict[str, Any]] = []
    async with websockets.connect(
        f"{stack.ws_url}?types=ib_connection", additional_headers=headers, max_size=None
    ) as fast:
        assert json.loads(await fast.recv())["type"] == "welcome"
        reader = asyncio.create_task(_read_until(fast, FLOOD, received))
        for i in range(FLOOD):  # ~24 MB: more than the socket buffers and the queue hold
            await stack.nc.publish(subjects.gateway_connection("flood"), _event(i, "flood"))
            if i % 16 == 15:  # the fast client keeps up (never 64 behind), however loaded
                await stack.nc.flush()
                await wait_for(lambda i=i: _flooded(received) > i - 32, within=30)
        await stack.nc.flush()
        await asyncio.wait_for(reader, 60)
    flood = [m["data"]["client_id"] for m in received if m["portfolio_id"] == "flood"]
    assert flood == list(range(FLOOD))
    assert _dropped() == dropped_before + 1
    tail = await asyncio.wait_for(stalled.read(), 30)  # what was buffered, then EOF
    stalled_writer.close()
    close_frame_payload = CLOSE_TOO_SLOW.to_bytes(2, "big") + b"too slow"
    assert close_frame_payload in tail[-64:]


async def _publish_to_nobody(stack: Stack, count: int) -> int:
    """Publish ``count`` events no other component listens to; the api's NATS
    connection's count of received messages before them."""
    before = int(stack.api.nats.stats["in_msgs"])
    for i in range(count):
        await stack.nc.publish(subjects.gateway_connection("nobody"), _event(i, "nobody"))
    await stack.nc.flush()
    return before


def _received_since(stack: Stack, before: int) -> int:
    return int(stack.api.nats.stats["in_msgs"]) - before


async def test_the_api_receives_events_only_while_a_client_is_connected(stack: Stack) -> None:
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    before = await _publish_to_nobody(stack, 20)
    await asyncio.sleep(0.5)
    assert _received_since(stack, before) < 20
    async with websockets.connect(
        f"{stack.ws_url}?types=ib_connection", additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        before = await _publish_to_nobody(stack, 20)
        await wait_for(lambda: _received_since(stack, before) >= 20)
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))[
            "portfolio_id"
        ] != "nobody":
            pass
        assert message["data"]["client_id"] == 0

    async def unsubscribed() -> bool:
        before = await _publish_to_nobody(stack, 5)
        await asyncio.sleep(0.2)
        return _received_since(stack, before) < 5

    await wait_for(unsubscribed, within=10)
    before = await _publish_to_nobody(stack, 20)
    await asyncio.sleep(0.5)
    assert _received_since(stack, before) < 20


async def test_filters_select_portfolios_and_types(stack: Stack) -> None:
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    async with websockets.connect(
        f"{stack.ws_url}?portfolio=other&types=ib_connection", additional_headers=headers
    ) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["data"]["portfolios"] == ["other"]
        await stack.nc.publish(subjects.gateway_connection(PORTFOLIO), _event(1))
        await stack.nc.publish(subjects.gateway_connection("other"), _event(2, "other"))
        message = json.loads(await ws.recv())
        assert (message["portfolio_id"], message["data"]["client_id"]) == ("other", 2)
        await ws.send(json.dumps({"action": "subscribe", "portfolios": [PORTFOLIO]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await stack.nc.publish(subjects.gateway_connection("other"), _event(3, "other"))
        await stack.nc.publish(subjects.gateway_connection(PORTFOLIO), _event(4))
        message = json.loads(await ws.recv())
        assert (message["portfolio_id"], message["data"]["client_id"]) == (PORTFOLIO, 4)


async def test_quotes_stream_only_for_the_symbols_a_client_asks_for(stack: Stack) -> None:
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    async with websockets.connect(
        f"{stack.ws_url}?types=quote&symbols=AAPL", additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv())["data"]["symbols"] == ["AAPL"]

        async def next_quote() -> dict[str, Any]:
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "quote":
                    return message

        quote: dict[str, Any] | None = None
        for price in ("101", "102", "103", "104", "105"):  # until the lease has taken effect
            stack.sim.faults.set_price("MSFT", price)
            stack.sim.faults.set_price("AAPL", price)
            try:
                quote = await asyncio.wait_for(next_quote(), 2)
                break
            except TimeoutError:
                continue
    assert quote is not None, "no quote for AAPL"
    assert quote["data"]["symbol"] == "AAPL"


async def test_a_new_client_gets_the_current_connection_and_account_first(stack: Stack) -> None:
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    async with websockets.connect(
        f"{stack.ws_url}?portfolio={PORTFOLIO}", additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        first = json.loads(await ws.recv())
        second = json.loads(await ws.recv())
    assert (first["type"], first["portfolio_id"]) == ("ib_connection", PORTFOLIO)
    assert (first["data"]["state"], first["data"]["client_id"]) == ("ready", 51)
    assert second["type"] == "ib_account"
    assert second["data"]["account_id"] == "DU1234567"
