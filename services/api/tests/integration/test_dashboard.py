"""The dashboard contract end to end: an order placed over REST is filled at the
simulator and shows up in orders, positions, account and on the WebSocket."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import websockets

from ibflow.db import apply_migrations
from ibflow_api.keys import Scope

from .conftest import ACCOUNT, PORTFOLIO, Stack, wait_for

ORDER_KEYS = {
    "order_id", "client_id", "account_id", "contract_id", "symbol", "action", "order_type",
    "total_quantity", "filled_quantity", "remaining_quantity", "limit_price", "stop_price",
    "status", "avg_fill_price", "commission", "timestamp",
}  # fmt: skip
POSITION_KEYS = {
    "account_id", "contract_id", "symbol", "position", "avg_cost", "market_price",
    "market_value", "unrealized_pnl", "realized_pnl", "timestamp",
}  # fmt: skip
ACCOUNT_KEYS = {
    "account_id", "net_liquidation", "total_cash_value", "buying_power", "maintenance_margin",
    "initial_margin", "excess_liquidity", "currency", "timestamp",
}  # fmt: skip
CONNECTION_KEYS = {
    "connected", "gateway_type", "host", "port", "client_id", "account_id", "connection_time",
    "last_heartbeat", "error_message", "state", "server_version",
}  # fmt: skip


async def _collect(ws: Any, into: list[dict[str, Any]]) -> None:
    async for raw in ws:  # ends when the connection closes normally
        into.append(json.loads(raw))


async def test_order_placed_over_rest_is_visible_in_orders_positions_account_and_websocket(
    stack: Stack,
) -> None:
    received: list[dict[str, Any]] = []
    headers = {"X-API-Key": stack.keys[Scope.READ]}
    async with websockets.connect(
        f"{stack.ws_url}?portfolio={PORTFOLIO}", additional_headers=headers
    ) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        reader = asyncio.create_task(_collect(ws, received))
        async with stack.client(Scope.TRADE) as http:
            placed = await http.post(
                "/api/v1/ib/orders/place",
                params={"portfolio": PORTFOLIO},
                json={
                    "symbol": "AAPL",
                    "action": "BUY",
                    "quantity": 10,
                    "order_type": "LMT",
                    "limit_price": 101,
                    "time_in_force": "DAY",
                    "client_order_id": "rest-1",
                },
            )
            assert placed.status_code == 200, placed.text
            assert placed.json() == {
                "order_id": "rest-1",
                "message": "order placed",
                "duplicate": False,
            }

            async def filled() -> dict[str, Any] | None:
                body = (await http.get("/api/v1/ib/orders", params={"portfolio": PORTFOLIO})).json()
                found = [o for o in body["orders"] if o["order_id"] == "rest-1"]
                return found[0] if found and found[0]["status"] == "FILLED" else None

            order = await wait_for(filled, within=15)
            assert set(order) >= ORDER_KEYS
            assert order["symbol"] == "AAPL"
            assert order["action"] == "BUY"
            assert order["total_quantity"] == 10
            assert order["filled_quantity"] == 10
            assert order["remaining_quantity"] == 0
            assert order["client_id"] == 51
            assert order["account_id"] == ACCOUNT
            assert order["contract_id"] == 265598
            assert 100 <= order["avg_fill_price"] <= 101

            async def holding() -> dict[str, Any] | None:
                response = await http.get("/api/v1/ib/positions", params={"portfolio": PORTFOLIO})
                if response.status_code != 200:
                    return None
                rows = [p for p in response.json()["positions"] if p["symbol"] == "AAPL"]
                return rows[0] if rows and rows[0]["position"] == 10 else None

            position = await wait_for(holding, within=15)
            assert set(position) >= POSITION_KEYS
            assert position["account_id"] == ACCOUNT
            assert position["avg_cost"] > 0

            account = await http.get("/api/v1/ib/account", params={"portfolio": PORTFOLIO})
            assert account.status_code == 200, account.text
            assert set(account.json()) >= ACCOUNT_KEYS
            assert account.json()["account_id"] == ACCOUNT
            assert isinstance(account.json()["net_liquidation"], float | int)

            status = await http.get("/api/v1/ib/connection/status", params={"portfolio": PORTFOLIO})
            assert set(status.json()) >= CONNECTION_KEYS
            assert status.json()["connected"] is True
            assert status.json()["state"] == "ready"

        def saw(kind: str, id_field: str) -> bool:
            return any(m["type"] == kind and m["data"][id_field] == "rest-1" for m in received)

        await wait_for(
            lambda: saw("ib_order", "order_id") and saw("fill", "client_order_id"), within=10
        )
        await ws.close()
        await reader
    orders = [m for m in received if m["type"] == "ib_order"]
    assert orders[-1]["data"]["status"] == "FILLED"
    assert ORDER_KEYS - {"client_id", "account_id", "contract_id"} <= set(orders[-1]["data"])
    assert all(
        m["portfolio_id"] == PORTFOLIO for m in received if m["type"] in {"ib_order", "fill"}
    )


async def test_placing_the_same_client_order_id_twice_places_one_order(stack: Stack) -> None:
    body = {
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "5",
        "order_type": "LMT",
        "limit_price": "90",
    }
    async with stack.client(Scope.TRADE) as http:
        first = await http.post(
            "/api/v1/ib/orders/place", json=body, headers={"Idempotency-Key": "ticket-7"}
        )
        again = await http.post(
            "/api/v1/ib/orders/place", json=body, headers={"Idempotency-Key": "ticket-7"}
        )
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["order_id"] == again.json()["order_id"]
    assert again.json()["duplicate"] is True
    assert await stack.db.fetchval("SELECT count(*) FROM orders") == 1


async def test_positions_are_valued_at_the_latest_mark_of_the_symbol(stack: Stack) -> None:
    await apply_migrations(stack.db, "ibflow_position_monitor")
    today = dt.datetime.now(ZoneInfo("America/New_York")).date()
    await stack.db.execute(
        """
        INSERT INTO positions (id, portfolio_id, symbol, session_date, side, status,
            planned_quantity, quantity, entry_quantity, entry_notional, avg_entry_price,
            entry_client_order_id, realized_pnl, opened_at)
        VALUES ('pos-1', $1, 'AAPL', $2, 'LONG', 'OPEN', 10, 10, 10, 1000, 100, 'in-1', 0, now())
        """,
        PORTFOLIO,
        today,
    )
    await stack.db.execute(
        "INSERT INTO position_marks (position_id, mark_price, source, quantity, unrealized_pnl,"
        " marked_at) VALUES ('pos-1', 102.5, 'last', 10, 25, now())"
    )
    async with stack.client(Scope.TRADE) as http:
        placed = await http.post(
            "/api/v1/ib/orders/place",
            json={"symbol": "AAPL", "action": "BUY", "quantity": 10, "order_type": "LMT",
                  "limit_price": 101, "client_order_id": "mark-1"},
        )  # fmt: skip
        assert placed.status_code == 200, placed.text

        async def valued() -> dict[str, Any] | None:
            response = await http.get("/api/v1/ib/positions")
            rows = response.json().get("positions", []) if response.status_code == 200 else []
            return rows[0] if rows and rows[0]["position"] == 10 else None

        position = await wait_for(valued, within=15)
    assert position["market_price"] == 102.5
    assert position["market_value"] == 1025
    assert position["unrealized_pnl"] == pytest.approx((102.5 - position["avg_cost"]) * 10)
    assert position["realized_pnl"] == 0


async def test_a_resting_order_is_modified_then_cancelled_over_rest(stack: Stack) -> None:
    async with stack.client(Scope.TRADE) as http:
        placed = await http.post(
            "/api/v1/ib/orders/place",
            json={"symbol": "AAPL", "action": "BUY", "quantity": 10, "order_type": "LMT",
                  "limit_price": "90", "client_order_id": "rest-2"},
        )  # fmt: skip
        assert placed.status_code == 200, placed.text

        async def order() -> dict[str, Any]:
            body = (await http.get("/api/v1/ib/orders")).json()
            return next(o for o in body["orders"] if o["order_id"] == "rest-2")

        async def shows(**expected: Any) -> bool:
            found = await order()
            return all(found[k] == v for k, v in expected.items())

        await wait_for(lambda: shows(status="SUBMITTED"), within=10)
        modified = await http.put(
            "/api/v1/ib/orders/rest-2/modify", json={"limit_price": "91", "quantity": 12}
        )
        assert modified.status_code == 200, modified.text
        assert modified.json() == {"message": "modify requested"}
        await wait_for(lambda: shows(limit_price=91, total_quantity=12), within=10)
        nothing = await http.put("/api/v1/ib/orders/rest-2/modify", json={})
        assert nothing.status_code == 422
        cancelled = await http.post("/api/v1/ib/orders/rest-2/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await wait_for(lambda: shows(status="CANCELLED", filled_quantity=0), within=10)
        again = await http.post("/api/v1/ib/orders/rest-2/cancel")
    assert again.status_code == 409
    assert "CANCELLED" in again.json()["error"]["message"]
    audit = await stack.db.fetch(
        "SELECT command, actor FROM audit_log WHERE client_order_id = 'rest-2' ORDER BY id"
    )
    assert [r["command"] for r in audit][:3] == ["SubmitOrder", "ModifyOrder", "CancelOrder"]
    assert all(r["actor"] == f"key:{stack.keys[Scope.TRADE][4:16]}:test-trade" for r in audit)


async def test_preview_shows_ib_what_if_margin_and_places_nothing(stack: Stack) -> None:
    body = {
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "100",
        "order_type": "LMT",
        "limit_price": "150",
    }
    async with stack.client(Scope.READ) as http:
        answer = await http.post("/api/v1/ib/orders/preview", json=body)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    impact = preview["margin_impact"]
    assert impact is not None, preview["warnings"]
    change = Decimal(impact["init_margin_change"])
    assert change > 0
    assert Decimal(impact["init_margin_after"]) == Decimal(impact["init_margin_before"]) + change
    assert Decimal(impact["commission"]) > 0
    assert not any("what-if" in warning for warning in preview["warnings"])
    assert await stack.db.fetchval("SELECT count(*) FROM orders") == 0
    assert stack.sim.engine.open_orders() == []
