"""A position opened at the broker outside ibflow is reported as drift and adopted."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import ib_async

from ibflow.bus import request, subjects
from ibflow.contracts import CommandAccepted, PositionDriftDetected, RequestReconciliation

from .conftest import Stack, wait_for


async def test_a_position_made_outside_ibflow_is_detected_as_drift_and_adopted(
    stack: Stack,
) -> None:
    drift_events: list[PositionDriftDetected] = []

    async def on_drift(msg: object) -> None:
        drift_events.append(PositionDriftDetected.model_validate_json(msg.data))  # type: ignore[attr-defined]

    sub = await stack.nc.subscribe(subjects.position_drift("pa"), cb=on_drift)
    ib = ib_async.IB()
    await ib.connectAsync("127.0.0.1", stack.sim.port, clientId=77, timeout=10)
    try:
        contract = ib_async.Stock("MSFT", "SMART", "USD")
        order = ib_async.MarketOrder("BUY", 40, account="DU1234567")
        trade = ib.placeOrder(contract, order)
        await wait_for(lambda: trade.orderStatus.status == "Filled")
    finally:
        ib.disconnect()
        await asyncio.sleep(0)

    ask = RequestReconciliation(portfolio_id="pa", requested_by="user:test")
    await request(stack.nc, subjects.REQUEST_RECONCILIATION, ask, CommandAccepted, timeout=15)

    async def adopted() -> bool:
        row = await stack.db.fetchrow(
            "SELECT * FROM reconciliation_reports WHERE portfolio_id = 'pa' AND symbol = 'MSFT'"
        )
        return row is not None and row["adopted_position_id"] is not None

    await wait_for(adopted, within=20)
    report = await stack.db.fetchrow(
        "SELECT * FROM reconciliation_reports WHERE portfolio_id = 'pa' AND symbol = 'MSFT'"
    )
    assert report["kind"] == "unknown_to_us"
    assert (report["ours"], report["broker"]) == (Decimal(0), Decimal(40))
    position = await stack.position(report["adopted_position_id"])
    assert position["external"] is True
    assert position["status"] == "OPEN"
    assert position["quantity"] == Decimal(40)
    assert position["portfolio_id"] == "pa"
    await wait_for(lambda: any(e.symbol == "MSFT" for e in drift_events))
    event = next(e for e in drift_events if e.symbol == "MSFT")
    assert event.adopted_position_id == report["adopted_position_id"]
    assert event.drift == Decimal(40)
    await sub.unsubscribe()
    # the other portfolio's account holds nothing: no drift reported for it
    assert (
        await stack.db.fetchval(
            "SELECT count(*) FROM reconciliation_reports WHERE portfolio_id = 'pb'"
        )
        == 0
    )
