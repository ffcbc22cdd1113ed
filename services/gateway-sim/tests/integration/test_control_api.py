"""The HTTP/JSON control API: validation (4xx) and faults reaching real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.control import ControlServer
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import Connect, Eventually

Body = dict[str, Any] | str | None


@pytest.fixture
async def control(sim: GatewaySimulator) -> AsyncIterator[ControlServer]:
    server = ControlServer(sim)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def http(port: int, method: str, path: str, body: Body = None) -> tuple[int, Any]:
    """One HTTP/1.1 request (``Connection: close``); returns status and decoded JSON."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload) if payload else None


BAD_BODIES: list[tuple[str, Body, int, str | None]] = [
    ("/faults/connectivity", {"state": "sideways"}, 422, "state"),
    ("/faults/connectivity", {}, 422, "state"),
    ("/faults/farm", {"farm": "market"}, 422, "up"),
    ("/faults/farm", {"farm": "cattle", "up": True}, 422, "farm"),
    ("/faults/freeze", {"on": True, "colour": "blue"}, 422, "colour"),
    ("/faults/reject-next", {"code": "two hundred"}, 422, "code"),
    ("/faults/delay", {"fills": -1}, 422, "fills"),
    ("/faults/silence", {"on": "maybe"}, 422, "on"),
    ("/market/AAPL/price", {"price": "abc"}, 422, "price"),
    ("/market/AAPL/price", {"price": "-1"}, 422, "price"),
    ("/market/AAPL/price", {}, 422, "price"),
    ("/faults/reject-next", "{not json", 400, None),
    ("/market/AAPL/price", "[1, 2", 400, None),
]


async def test_bad_bodies_get_4xx_with_the_reason(
    sim: GatewaySimulator, control: ControlServer
) -> None:
    for path, body, status, field in BAD_BODIES:
        code, payload = await http(control.port, "POST", path, body)
        assert code == status, (path, body, payload)
        if field is not None:
            assert field in [p["field"] for p in payload["problems"]], (path, body, payload)
        else:
            assert "not valid JSON" in payload["error"]
    assert sim.fault_state.as_dict() == GatewaySimulator().fault_state.as_dict(), "nothing applied"


async def test_endpoints(sim: GatewaySimulator, control: ControlServer) -> None:
    port = control.port
    status, health = await http(port, "GET", "/health")
    assert status == 200
    assert health["status"] == "ok"
    assert health["port"] == sim.port

    assert await http(port, "POST", "/market/NOPE/price", {"price": "10"}) == (
        404,
        {"error": "unknown 'NOPE'"},
    )
    status, quote = await http(port, "POST", "/market/AAPL/price", {"price": "101.25"})
    assert (status, quote["last"], quote["bid"], quote["ask"]) == (
        200,
        "101.25",
        "101.25",
        "101.26",
    )

    status, account = await http(port, "GET", "/accounts/DU1234567")
    assert status == 200
    assert account["cash"] == "1000000"
    assert (await http(port, "GET", "/accounts/DU999"))[0] == 404

    assert (await http(port, "POST", "/market/advance", {"ticks": 1}))[0] == 409  # auto mode
    assert (await http(port, "POST", "/faults/freeze", None))[0] == 200
    assert sim.market.frozen
    assert (await http(port, "POST", "/faults/freeze", {"on": False}))[0] == 200
    assert not sim.market.frozen

    assert (await http(port, "POST", "/faults/delay", {"fills": 1.5}))[1] == {
        "fills": 1.5,
        "commissions": 0.0,
        "current_time": 0.0,
    }
    assert (await http(port, "POST", "/faults/delay", {"current_time": 2}))[1] == {
        "fills": 1.5,
        "commissions": 0.0,
        "current_time": 2.0,
    }
    assert (await http(port, "POST", "/faults/silence", {"on": True}))[0] == 200
    assert (await http(port, "GET", "/health"))[1]["faults"]["silenced"] is True
    assert (await http(port, "POST", "/faults/silence", {"on": False}))[0] == 200
    assert (await http(port, "POST", "/faults/farm", {"farm": "hmds", "up": False}))[0] == 200
    assert (await http(port, "GET", "/health"))[1]["faults"]["farms_down"] == ["hmds"]
    assert (await http(port, "POST", "/faults/drop"))[1] == {"dropped": 0}
    assert (await http(port, "POST", "/restart"))[1] == {"restarted": True, "port": sim.port}
    assert (await http(port, "GET", "/health"))[1]["faults"]["farms_down"] == []


async def test_faults_through_http_reach_the_client(
    ibmod: ModuleType,
    sim: GatewaySimulator,
    control: ControlServer,
    connect: Connect,
    eventually: Eventually,
) -> None:
    ib = await connect()
    codes: list[int] = []
    ib.errorEvent += lambda *args: codes.append(args[1])
    aapl = ibmod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)

    body = {"code": 201, "text": "no shorting today"}
    assert (await http(control.port, "POST", "/faults/reject-next", body))[0] == 200
    trade = ib.placeOrder(aapl, ibmod.MarketOrder("SELL", 5))
    await eventually(lambda: trade.orderStatus.status == "Cancelled", what="rejected")
    assert 201 in codes

    body = {"state": "lost"}
    assert (await http(control.port, "POST", "/faults/connectivity", body))[0] == 200
    await eventually(lambda: 1100 in codes, what="1100")
    body = {"state": "restored", "data_lost": True}
    assert (await http(control.port, "POST", "/faults/connectivity", body))[0] == 200
    await eventually(lambda: 1101 in codes, what="1101")

    assert (await http(control.port, "POST", "/faults/drop"))[1] == {"dropped": 1}
    await eventually(lambda: not ib.isConnected(), what="dropped")
