"""Operator commands, marks, and bad input: clear refusals naming the field, ticks that
are unusable counted and never acted on, a fill the position must refuse dead-lettered
with the reason."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from ibflow.bus import publish, request, subjects
from ibflow.bus.errors import RemoteError
from ibflow.contracts import (
    CommandAccepted,
    ExecutionReported,
    FlattenPositions,
    MessageDeadLettered,
    OrderSide,
    PositionMarksUpdated,
    SetPositionLevels,
)

from .conftest import Stack, wait_for


def _counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_flatten_exits_the_named_symbol_with_reason_manual_and_leaves_the_rest(
    stack: Stack,
) -> None:
    await stack.open_position("f-aapl", symbol="AAPL")
    await stack.open_position("f-msft", symbol="MSFT", quantity=Decimal(20))
    cmd = FlattenPositions(
        portfolio_id="pa", symbols=("MSFT",), reason="risk desk", requested_by="user:test"
    )
    accepted = await request(stack.nc, subjects.FLATTEN_POSITIONS, cmd, CommandAccepted, timeout=15)
    assert accepted.position_ids == ("f-msft",)
    assert accepted.client_order_ids == ("exit:f-msft",)
    await wait_for(lambda: stack.status_is("f-msft", "CLOSED"))
    assert (await stack.position("f-msft"))["exit_reason"] == "manual"
    assert await stack.status_is("f-aapl", "OPEN")


@pytest.mark.parametrize(
    ("position_id", "stop", "target", "code", "words"),
    [
        ("nope", Decimal(90), Decimal(120), "not_found", "position_id"),
        ("l1", Decimal(120), Decimal(110), "invalid_request", "stop_loss/take_profit"),
    ],
)
async def test_set_levels_refuses_with_the_field_named(
    stack: Stack, position_id: str, stop: Decimal, target: Decimal, code: str, words: str
) -> None:
    await stack.open_position("l1")
    cmd = SetPositionLevels(
        portfolio_id="pa",
        position_id=position_id,
        stop_loss=stop,
        take_profit=target,
        requested_by="user:test",
    )
    with pytest.raises(RemoteError) as refused:
        await request(stack.nc, subjects.SET_POSITION_LEVELS, cmd, CommandAccepted, timeout=10)
    assert refused.value.code == code
    assert words in refused.value.message
    row = await stack.position("l1")
    assert (row["stop_loss"], row["take_profit"]) == (Decimal(95), Decimal(110))


async def test_unusable_ticks_are_counted_and_never_trigger_an_exit(stack: Stack) -> None:
    await stack.open_position("t1")
    negative_before = _counter("ibflow_position_ticks_total", {"outcome": "unusable_price"})
    undecodable_before = _counter("ibflow_position_ticks_total", {"outcome": "undecodable"})
    now = dt.datetime.now(dt.UTC).isoformat()
    bad_ticks = [
        b'{"symbol": "AAPL", "last": "-1", "bid": "0", "ts_event": "%s"}' % now.encode(),
        b'{"symbol": "AAPL", "last": "NaN", "ts_event": "%s"}' % now.encode(),
        b"not json",
    ]
    for payload in bad_ticks:
        await stack.nc.publish(subjects.market_data("AAPL"), payload)
    await stack.nc.flush()
    await wait_for(
        lambda: (
            _counter("ibflow_position_ticks_total", {"outcome": "undecodable"})
            >= undecodable_before + 2
        )
    )
    assert _counter("ibflow_position_ticks_total", {"outcome": "unusable_price"}) >= (
        negative_before + 2
    )
    # a good tick after them (ticks of a symbol are handled in order) inside the levels
    used = _counter("ibflow_position_ticks_total", {"outcome": "used"})
    stack.sim.faults.set_price("AAPL", Decimal(99))
    await wait_for(lambda: _counter("ibflow_position_ticks_total", {"outcome": "used"}) > used)
    assert await stack.status_is("t1", "OPEN")
    assert await stack.db.fetchval("SELECT count(*) FROM orders WHERE purpose = 'exit'") == 0


async def test_a_fill_beyond_the_planned_quantity_is_dead_lettered_with_the_reason(
    stack: Stack,
) -> None:
    await stack.open_position("o1", quantity=Decimal(10))
    letters: list[MessageDeadLettered] = []

    async def on_letter(msg: Msg) -> None:
        letters.append(MessageDeadLettered.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(
        subjects.dead_letter("position-monitor-executions"), cb=on_letter
    )
    bogus = ExecutionReported(
        portfolio_id="pa",
        account_id="DU1234567",
        exec_id="bogus-1",
        order_id=999,
        perm_id=999,
        client_order_id="entry:o1",
        symbol="AAPL",
        con_id=265598,
        side=OrderSide.BUY,
        shares=Decimal(500),
        price=Decimal(100),
        cum_qty=Decimal(500),
        avg_price=Decimal(100),
        exchange="NASDAQ",
        executed_at=dt.datetime.now(dt.UTC),
    )
    await publish(stack.nc.jetstream(), subjects.execution("pa"), bogus)
    await wait_for(lambda: letters)
    assert "overfill" in letters[0].reason
    row = await stack.position("o1")
    assert row["quantity"] == Decimal(10)
    await sub.unsubscribe()


async def test_marks_publish_the_unrealized_pnl_of_open_positions(stack: Stack) -> None:
    await stack.open_position("m1", quantity=Decimal(40))
    seen: list[PositionMarksUpdated] = []

    async def on_marks(msg: Msg) -> None:
        seen.append(PositionMarksUpdated.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(subjects.position_marks("pa"), cb=on_marks)
    stack.sim.faults.set_price("AAPL", Decimal("102.50"))
    row = await stack.position("m1")
    expected = (Decimal("102.50") - row["avg_entry_price"]) * 40

    def marked() -> bool:
        return any(
            m.position_id == "m1" and m.mark_price == Decimal("102.50")
            for event in seen
            for m in event.marks
        )

    await wait_for(marked)
    event = next(e for e in seen if any(m.mark_price == Decimal("102.50") for m in e.marks))
    assert event.unrealized_pnl == expected
    stored = await stack.db.fetchrow("SELECT * FROM position_marks WHERE position_id = 'm1'")
    assert stored is not None
    assert stored["unrealized_pnl"] == expected
    gauge = REGISTRY.get_sample_value("ibflow_portfolio_unrealized_pnl", {"portfolio": "pa"})
    assert gauge == float(expected)
    await sub.unsubscribe()
