"""Failure mode 4: after a market data farm outage the monitor never acts on the stale
quote it last saw, and evaluates stops again as soon as ticks return."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ibflow.bus import request, subjects
from ibflow.contracts import CommandAccepted, SetPositionLevels

from .conftest import Stack, monitor_watch, session_consumer_done, wait_for


@pytest.fixture
def monitor_overrides() -> dict[str, Any]:
    return {"stale_after": 1.0}


def _stale_count() -> float:
    value = REGISTRY.get_sample_value("ibflow_position_unusable_quotes_total", {"reason": "stale"})
    return value or 0.0


async def test_stops_are_not_evaluated_on_stale_prices_and_resume_when_ticks_return(
    stack: Stack,
) -> None:
    await stack.open_position("s1")
    stack.sim.faults.set_price("AAPL", Decimal(100))
    watch = monitor_watch(stack.monitors[0])
    stack.sim.faults.set_farm("market", up=False)
    await wait_for(lambda: "AAPL" in watch._stale)
    stale_before = _stale_count()

    # the last quote seen (100) is now through the new stop: acting on it would exit
    levels = SetPositionLevels(
        portfolio_id="pa",
        position_id="s1",
        stop_loss=Decimal("100.50"),
        take_profit=Decimal(110),
        requested_by="user:test",
    )
    await request(stack.nc, subjects.SET_POSITION_LEVELS, levels, CommandAccepted, timeout=10)
    await stack.session("position_check", 1)
    await wait_for(lambda: session_consumer_done(stack, 1))

    assert _stale_count() > stale_before
    assert await stack.status_is("s1", "OPEN")
    assert [e for e in stack.sim_orders() if e["side"] == "SLD"] == []
    assert await stack.db.fetchval("SELECT count(*) FROM orders WHERE purpose = 'exit'") == 0

    stack.sim.faults.set_farm("market", up=True)
    await wait_for(lambda: stack.status_is("s1", "CLOSED"), within=20)
    row = await stack.position("s1")
    assert row["exit_reason"] == "stop"
