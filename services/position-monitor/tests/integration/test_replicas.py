"""Two position-monitor replicas see the same ticks; the position still gets one exit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from .conftest import Stack, wait_for


@pytest.fixture
def monitor_count() -> int:
    return 2


async def test_two_replicas_send_one_exit_for_a_stop_hit(stack: Stack) -> None:
    await stack.open_position("r1", quantity=Decimal(60))
    for price in ("94.90", "94.80", "94.70", "94.60"):
        stack.sim.faults.set_price("AAPL", Decimal(price))

    await wait_for(lambda: stack.status_is("r1", "CLOSED"), within=20)
    sells = [e for e in stack.sim_orders() if e["side"] == "SLD"]
    assert len({e["order_id"] for e in sells}) == 1
    assert sum(Decimal(e["shares"]) for e in sells) == Decimal(60)
    exits = await stack.db.fetch("SELECT client_order_id FROM orders WHERE purpose = 'exit'")
    assert [r["client_order_id"] for r in exits] == ["exit:r1"]
    row = await stack.position("r1")
    assert row["exit_client_order_ids"] == ["exit:r1"]
