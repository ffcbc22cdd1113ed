"""The place route's own work: nothing in the threadpool."""

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
