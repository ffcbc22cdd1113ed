"""Every route needs a key (found by enumerating the app, so a new route without auth
fails here), scopes are enforced, and no key material reaches the logs."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
import websockets
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Route, WebSocketRoute

from ibflow_api.app import app_of
from ibflow_api.auth import OPEN_PATHS
from ibflow_api.keys import Scope, revoke_key
from ibflow_api.ws import CLOSE_UNAUTHENTICATED

from .conftest import PORTFOLIO, Stack

BOGUS_KEY = "ibf_0123456789ab_" + "A" * 43
_PARAM = re.compile(r"\{(\w+)\}")
_VALUES = {"portfolio_id": PORTFOLIO, "order_id": "no-such-order"}


def _declares_scope(route: APIRoute) -> bool:
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if "require.<locals>.check" in getattr(dependency.call, "__qualname__", ""):
            return True
        pending.extend(dependency.dependencies)
    return False


def _concrete(path: str) -> str:
    return _PARAM.sub(lambda m: _VALUES.get(m.group(1), "x"), path)


async def test_every_route_but_the_probes_answers_401_without_a_valid_key(stack: Stack) -> None:
    app = app_of(stack.api)
    assert app is not None
    checked: list[str] = []
    websocket_paths: list[str] = []
    async with stack.client(None) as anonymous:
        for route in iter_route_contexts(app.routes):  # routers included, flattened
            original = route.original_route
            assert route.path is not None
            if isinstance(original, WebSocketRoute):
                websocket_paths.append(route.path)
                continue
            assert isinstance(original, APIRoute | Route), f"unexpected route {original!r}"
            if isinstance(original, APIRoute):
                assert _declares_scope(original), f"{route.path} declares no scope"
            path = _concrete(route.path)
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue
                if route.path in OPEN_PATHS:
                    response = await anonymous.request(method, path)
                    assert response.status_code in {200, 503}, (method, path)
                    continue
                for headers in ({}, {"X-API-Key": BOGUS_KEY}, {"Authorization": "Bearer nope"}):
                    response = await anonymous.request(method, path, headers=headers, json={})
                    assert response.status_code == 401, (method, path, headers, response.text)
                    assert response.json()["error"]["code"] == "unauthenticated"
                checked.append(f"{method} {route.path}")
    assert "POST /api/v1/ib/orders/place" in checked
    assert "GET /openapi.json" in checked
    assert len(checked) > 25
    assert websocket_paths == ["/ws"]
    for path in websocket_paths:
        async with websockets.connect(stack.ws_url.replace("/ws", path)) as ws:
            await ws.send(json.dumps({"action": "subscribe", "types": ["ib_order"]}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_UNAUTHENTICATED


async def test_websocket_accepts_a_key_sent_as_its_first_message(stack: Stack) -> None:
    async with websockets.connect(stack.ws_url) as ws:
        await ws.send(json.dumps({"action": "auth", "api_key": stack.keys[Scope.READ]}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        await ws.send(json.dumps({"action": "subscribe", "types": ["nonsense"]}))
        error = json.loads(await ws.recv())
        while error["type"] != "error":  # the current state comes first
            error = json.loads(await ws.recv())
        assert error["type"] == "error"
        assert error["data"]["error"].startswith("types: unknown ['nonsense']")


async def test_scopes_read_cannot_trade_trade_cannot_administer(stack: Stack) -> None:
    ticket = {"symbol": "AAPL", "action": "BUY", "quantity": 1, "order_type": "MKT"}
    new_portfolio = {
        "id": "second",
        "name": "second",
        "broker_port": 4002,
        "client_id": 52,
        "enabled": False,
    }  # disabled: the bridge must not try to connect it
    async with stack.client(Scope.READ) as reader:
        assert (await reader.get("/api/v1/ib/orders")).status_code == 200
        refused = await reader.post("/api/v1/ib/orders/place", json=ticket)
        assert refused.status_code == 403
        assert "needs the trade scope" in refused.json()["error"]["message"]
        assert (await reader.post("/api/v1/ib/orders/preview", json=ticket)).status_code == 200
    async with stack.client(Scope.TRADE) as trader:
        assert (await trader.post("/api/v1/portfolios", json=new_portfolio)).status_code == 403
        live = await trader.patch(f"/api/v1/portfolios/{PORTFOLIO}", json={"allow_live": True})
        assert live.status_code == 403
        assert live.json()["error"]["message"].startswith("allow_live:")
    async with stack.client(Scope.ADMIN) as admin:
        created = await admin.post("/api/v1/portfolios", json=new_portfolio)
        assert created.status_code == 201, created.text
        assert created.json()["client_id"] == 52
        taken = await admin.post(
            "/api/v1/portfolios", json={**new_portfolio, "id": "third", "client_id": 52}
        )
        assert taken.status_code == 409
        assert taken.json()["error"]["message"].startswith("client_id: 52 is already used")
    actors = await stack.db.fetch(
        "SELECT actor, command FROM audit_log WHERE command = 'CreatePortfolio'"
    )
    assert [r["actor"] for r in actors] == [f"key:{stack.keys[Scope.ADMIN][4:16]}:test-admin"]


async def test_a_revoked_key_is_refused(stack: Stack) -> None:
    async with stack.client(Scope.READ) as reader:
        assert (await reader.get("/api/v1/portfolios")).status_code == 200
        assert await revoke_key(stack.db, stack.keys[Scope.READ][4:16])
        assert (await reader.get("/api/v1/portfolios")).status_code == 401


async def test_no_key_material_in_logs_or_audit_trail(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with stack.client(Scope.TRADE) as trader:
        await trader.post(
            "/api/v1/ib/orders/place",
            json={"symbol": "AAPL", "action": "BUY", "quantity": 1, "order_type": "LMT",
                  "limit_price": "99", "client_order_id": "log-1"},
        )  # fmt: skip
        await trader.post(f"/api/v1/portfolios/{PORTFOLIO}/halt", json={"reason": "test"})
        await trader.post("/api/v1/ib/account/refresh")
        await trader.get("/api/v1/ib/orders", headers={"X-API-Key": BOGUS_KEY})
    async with httpx.AsyncClient(base_url=stack.base_url) as bearer:
        await bearer.get(
            "/api/v1/ib/orders", headers={"Authorization": f"Bearer {stack.keys[Scope.ADMIN]}"}
        )
    secrets = [key.split("_", 2)[2] for key in stack.keys.values()] + ["A" * 43]
    logged = caplog.text
    audit = json.dumps(
        [dict(r) for r in await stack.db.fetch("SELECT * FROM audit_log")], default=str
    )
    assert "log-1" in audit  # the audit trail is there...
    for secret in secrets:
        assert secret not in logged
        assert secret not in audit  # ...without any key in it
