"""The place route's own work: nothing in the threadpool, the portfolio's existence
remembered without ever answering for a portfolio that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest

from ibflow_api.keys import Scope

from .conftest import PORTFOLIO, Stack

TICKET = {
    "symbol": "AAPL",
    "action": "BUY",
    "quantity": "10",
    "order_type": "LMT",
    "limit_price": "90.00",
}


async def test_placing_an_order_and_reading_the_dashboard_run_nothing_in_the_threadpool(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ran.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    async with stack.client(Scope.TRADE) as http:
        placed = await http.post(
            f"/api/v1/ib/orders/place?portfolio={PORTFOLIO}",
            json={**TICKET, "client_order_id": "threadless-1"},
        )
        defaulted = await http.post(
            "/api/v1/ib/orders/place", json={**TICKET, "client_order_id": "threadless-2"}
        )
        listed = await http.get("/api/v1/ib/orders")
    assert (placed.status_code, defaulted.status_code, listed.status_code) == (200, 200, 200)
    assert ran == []


async def test_an_unknown_portfolio_is_404_until_created_then_the_order_manager_decides(
    stack: Stack,
) -> None:
    async with stack.client(Scope.TRADE) as trader:
        unknown = await trader.post("/api/v1/ib/orders/place?portfolio=later", json=TICKET)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "portfolio 'later' does not exist"
        async with stack.client(Scope.ADMIN) as admin:
            created = await admin.post(
                "/api/v1/portfolios",
                json={
                    "id": "later",
                    "name": "later",
                    "broker_port": 4002,
                    "client_id": 53,
                    "enabled": False,  # the bridge must not try to connect it
                },
            )
            assert created.status_code == 201, created.text
        # not remembered as missing: found at once, and the order-manager refuses it
        disabled = await trader.post("/api/v1/ib/orders/place?portfolio=later", json=TICKET)
    assert disabled.status_code == 404
    assert disabled.json()["error"]["message"] == "portfolio_id: portfolio 'later' is disabled"


async def test_a_remembered_portfolio_disabled_later_places_nothing(stack: Stack) -> None:
    async with stack.client(Scope.TRADE) as http:
        first = await http.post(
            f"/api/v1/ib/orders/place?portfolio={PORTFOLIO}",
            json={**TICKET, "client_order_id": "remembered-1"},
        )
        assert first.status_code == 200, first.text
        off = await http.patch(f"/api/v1/portfolios/{PORTFOLIO}", json={"enabled": False})
        assert off.status_code == 200, off.text
        second = await http.post(
            f"/api/v1/ib/orders/place?portfolio={PORTFOLIO}",
            json={**TICKET, "client_order_id": "remembered-2"},
        )
    assert second.status_code == 404
    assert second.json()["error"]["message"] == f"portfolio_id: portfolio {PORTFOLIO!r} is disabled"
    orders = await stack.db.fetch("SELECT client_order_id FROM orders ORDER BY client_order_id")
    assert [r["client_order_id"] for r in orders] == ["remembered-1"]
