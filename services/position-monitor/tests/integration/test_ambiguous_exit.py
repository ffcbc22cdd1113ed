"""An exit whose answer never comes (a timeout: the order may exist) is never replaced
by a second order: the position stays CLOSING, the same order is re-sent with the same
id, and the broker sees one exit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from .conftest import Stack, wait_for


@pytest.fixture
def monitor_overrides() -> dict[str, Any]:
    # the order-manager cannot answer within a millisecond: every exit is ambiguous
    return {"order_timeout": 0.001, "exit_resend_after": 0.5}


async def test_an_exit_without_an_answer_is_resent_with_the_same_id_and_placed_once(
    stack: Stack,
) -> None:
    await stack.open_position("a1", quantity=Decimal(30))
    stack.sim.faults.set_price("AAPL", Decimal("94.90"))
    stack.sim.faults.set_price("AAPL", Decimal("94.80"))

    await wait_for(lambda: stack.status_is("a1", "CLOSED"), within=20)
    row = await stack.position("a1")
    assert row["exit_client_order_ids"] == ["exit:a1"]
    sells = [e for e in stack.sim_orders() if e["side"] == "SLD"]
    assert len({e["order_id"] for e in sells}) == 1
    assert sum(Decimal(e["shares"]) for e in sells) == Decimal(30)
    exits = await stack.db.fetchval("SELECT count(*) FROM orders WHERE purpose = 'exit'")
    assert exits == 1
    refusals = REGISTRY.get_sample_value(
        "ibflow_position_exit_refusals_total", {"portfolio": "pa", "code": "timeout"}
    )
    assert not refusals, "a timeout is not a refusal: the exit must not be ended"
