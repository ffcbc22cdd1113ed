"""Bad input and refusals get a clear 4xx naming the field or rule; an unready gateway
is 503 with its state; a command nobody answers is 504, never a hang."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from ibflow.bus import subjects
from ibflow_api.keys import Scope

from .conftest import PORTFOLIO, Stack, bridge_ready, wait_for

TICKET: dict[str, Any] = {
    "symbol": "AAPL",
    "action": "BUY",
    "quantity": 1,
    "order_type": "LMT",
    "limit_price": "99",
}


async def test_invalid_tickets_get_422_naming_the_field(stack: Stack) -> None:
    async with stack.client(Scope.TRADE) as http:
        negative = await http.post("/api/v1/ib/orders/place", json={**TICKET, "quantity": -5})
        missing = await http.post("/api/v1/ib/orders/place", json={**TICKET, "limit_price": None})
        unknown = await http.post("/api/v1/ib/orders/place", json={**TICKET, "symbol": "ZZZZ"})
        typo = await http.post("/api/v1/ib/orders/place", json={**TICKET, "quantty": 1})
        off_tick = await http.post(
            "/api/v1/ib/orders/place", json={**TICKET, "limit_price": "99.001"}
        )
    assert negative.status_code == 422
    assert negative.json()["detail"][0]["loc"] == ["body", "quantity"]
    assert missing.status_code == 422
    assert "LMT order needs limit_price" in missing.json()["detail"][0]["msg"]
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["detail"][0]["loc"] == ["body", "symbol"]
    assert typo.status_code == 422
    assert typo.json()["detail"][0]["loc"] == ["body", "quantty"]
    assert off_tick.status_code == 422
    assert off_tick.json()["detail"][0]["loc"] == ["body", "limit_price"]


async def test_refusals_keep_their_code_and_message(stack: Stack) -> None:
    async with stack.client(Scope.TRADE) as http:
        halted = await http.post(f"/api/v1/portfolios/{PORTFOLIO}/halt", json={"reason": "lunch"})
        assert halted.status_code == 200, halted.text
        refused = await http.post("/api/v1/ib/orders/place", json=TICKET)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "refused"
        assert "halt" in refused.json()["error"]["message"]
        cancel = await http.post("/api/v1/ib/orders/nothing-here/cancel")
        assert cancel.status_code == 404
        too_big = await http.post(
            "/api/v1/ib/orders/place", content=b"{" + b" " * 70_000 + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert too_big.status_code == 413


async def test_an_unready_gateway_is_503_with_its_state(stack: Stack) -> None:
    stack.sim.faults.connectivity_lost()

    async def lost() -> bool:
        return not await bridge_ready(stack.nc)

    await wait_for(lost, within=10)
    async with stack.client(Scope.TRADE) as http:
        response = await http.post("/api/v1/ib/orders/place", json=TICKET)
        status = await http.get("/api/v1/ib/connection/status")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "not_ready"
    assert "ib_connectivity_lost" in response.json()["error"]["message"]
    assert status.json()["state"] == "ib_connectivity_lost"


async def test_a_command_nobody_answers_is_504_and_one_nobody_serves_is_503(stack: Stack) -> None:
    async with stack.client(Scope.TRADE) as http:
        absent = await http.post(
            f"/api/v1/portfolios/{PORTFOLIO}/flatten", json={"reason": "close all"}
        )
        assert absent.status_code == 503
        assert absent.json()["error"]["code"] == "no_responders"

        async def swallow(_: Msg) -> None:
            return None

        silent = await stack.nc.subscribe(subjects.FLATTEN_POSITIONS, cb=swallow)
        await stack.nc.flush()
        try:
            timed_out = await http.post(
                f"/api/v1/portfolios/{PORTFOLIO}/flatten", json={"reason": "close all"}
            )
        finally:
            await silent.unsubscribe()
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"] == "timeout"
    assert "outcome is unknown" in timed_out.json()["error"]["message"]
    results = await stack.db.fetch(
        "SELECT result, detail FROM audit_log WHERE command = 'FlattenPositions' ORDER BY id"
    )
    assert [r["result"] for r in results] == ["failed", "failed"]


async def test_broker_state_never_reported_is_unknown_not_empty(stack: Stack) -> None:
    await stack.db.execute(
        "INSERT INTO portfolios (id, name, broker_port, client_id, enabled)"
        " VALUES ('dark', 'never connected', 4999, 77, false)"
    )
    async with stack.client() as http:
        account = await http.get("/api/v1/ib/account", params={"portfolio": "dark"})
        positions = await http.get("/api/v1/ib/positions", params={"portfolio": "dark"})
        status = await http.get("/api/v1/ib/connection/status", params={"portfolio": "dark"})
        missing = await http.get("/api/v1/ib/positions", params={"portfolio": "nope"})
    assert account.status_code == 503
    assert account.json()["error"]["code"] == "not_ready"
    assert positions.status_code == 503
    assert "not known" in positions.json()["error"]["message"]
    assert status.status_code == 200
    assert (status.json()["state"], status.json()["connected"]) == ("unknown", False)
    assert (status.json()["port"], status.json()["client_id"]) == (4999, 77)
    assert missing.status_code == 404
