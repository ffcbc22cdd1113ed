"""The exit leaves before the monitor's own commit (book.py, exit ordering): the
order-manager has it while the monitor's transaction is still open, and a record that
fails to commit after the send is repaired with the same client order id, one order."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from ibflow.bus import subjects

from .conftest import Stack, monitor_watch, wait_for

HOLD_KEY = 4242


@pytest.fixture
def monitor_overrides() -> dict[str, Any]:
    # close-out exits are limits priced from the quote: a second decision differs in terms
    return {"close_out_style": "marketable_limit"}


# BEFORE UPDATE: the monitor's UPDATE of OPEN -> CLOSING waits while the test holds the
# advisory lock (the row lock and the transaction stay open meanwhile).
HOLD_CLOSING = f"""
CREATE FUNCTION pm_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({HOLD_KEY});
    RETURN NEW;
END;
$$;
CREATE TRIGGER pm_test_hold BEFORE UPDATE ON positions FOR EACH ROW
    WHEN (OLD.status = 'OPEN' AND NEW.status <> 'OPEN') EXECUTE FUNCTION pm_test_hold();
"""

# A deferred constraint trigger: the COMMIT of a transaction that took a position listed
# in pm_test_fail out of OPEN fails (the UPDATE itself succeeds): every such transaction
# (mode 'all'), or only those that do not write a new exit order (mode 'updates': the
# order-manager's OrderBookUpdated recording the exit, not the monitor's own decision).
# Failures are counted in a sequence (not rolled back with the transaction).
FAIL_CLOSING_COMMIT = """
CREATE TABLE pm_test_fail (id text PRIMARY KEY, mode text NOT NULL DEFAULT 'all');
CREATE SEQUENCE pm_test_failures;
CREATE FUNCTION pm_test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pm_test_fail f WHERE f.id = NEW.id AND (f.mode = 'all'
               OR NEW.exit_order IS NOT DISTINCT FROM OLD.exit_order)) THEN
        PERFORM nextval('pm_test_failures');
        RAISE EXCEPTION 'test: the commit of % fails', NEW.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER pm_test_fail_commit AFTER UPDATE ON positions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status = 'OPEN' AND NEW.status <> 'OPEN') EXECUTE FUNCTION pm_test_fail_commit();
"""


async def _submits(stack: Stack) -> list[dict[str, Any]]:
    """Every SubmitOrder sent to the order-manager from now on (a plain subscriber sees
    each request as the queue group's member does)."""
    seen: list[dict[str, Any]] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(json.loads(msg.data))

    await stack.nc.subscribe(subjects.SUBMIT_ORDER, cb=on_msg)
    await stack.nc.flush()
    return seen


async def _failures(stack: Stack) -> int:
    value: int = await stack.db.fetchval(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pm_test_failures"
    )
    return value


async def _exit_accepted(stack: Stack, position_id: str) -> bool:
    return bool((await stack.position(position_id))["exit_accepted"])


def _sold(stack: Stack) -> Decimal:
    return sum((Decimal(e["shares"]) for e in stack.sim_orders() if e["side"] == "SLD"), Decimal(0))


def _parked(kind: str) -> float:
    return REGISTRY.get_sample_value("ibflow_position_parked_facts_total", {"kind": kind}) or 0.0


async def _one_exit_order(stack: Stack, position_id: str, quantity: Decimal) -> None:
    orders = await stack.db.fetch(
        "SELECT client_order_id FROM orders WHERE position_id = $1 AND purpose = 'exit'",
        position_id,
    )
    assert [o["client_order_id"] for o in orders] == [f"exit:{position_id}"]
    sells = [e for e in stack.sim_orders() if e["side"] == "SLD"]
    assert len({e["order_id"] for e in sells}) == 1, sells
    assert sum(Decimal(e["shares"]) for e in sells) == quantity
    row = await stack.position(position_id)
    assert row["exit_client_order_ids"] == [f"exit:{position_id}"]
    assert row["quantity"] == 0
    parked = await stack.db.fetchval(
        "SELECT count(*) FROM position_parked_facts WHERE client_order_id = $1",
        f"exit:{position_id}",
    )
    assert parked == 0, "every fact of the exit was applied"


async def test_the_exit_reaches_the_order_manager_while_the_monitors_commit_is_held(
    stack: Stack,
) -> None:
    await stack.open_position("o1", quantity=Decimal(40))
    await stack.db.execute(HOLD_CLOSING)
    submits = await _submits(stack)
    parked_before = _parked("execution") + _parked("status")
    hold = await asyncpg.connect(stack.database_url)
    try:
        await hold.execute("SELECT pg_advisory_lock($1)", HOLD_KEY)
        stack.sim.faults.set_price("AAPL", Decimal("94.50"))

        async def monitor_waits_in_its_update() -> bool:
            waiting = await stack.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                " AND query LIKE 'UPDATE positions SET%'"
            )
            return bool(waiting)

        await wait_for(monitor_waits_in_its_update)
        # the order left and was placed and filled while the monitor's transaction is open
        await wait_for(lambda: [s["client_order_id"] for s in submits] == ["exit:o1"])
        await wait_for(
            lambda: (
                sum(Decimal(e["shares"]) for e in stack.sim_orders() if e["side"] == "SLD") == 40
            )
        )
        order = await stack.db.fetchrow(
            "SELECT status FROM orders WHERE client_order_id = 'exit:o1'"
        )
        assert order is not None
        row = await stack.position("o1")
        assert (row["status"], row["exit_client_order_ids"]) == ("OPEN", [])
        assert await monitor_waits_in_its_update(), "the record is still not committed"
    finally:
        await hold.execute("SELECT pg_advisory_unlock($1)", HOLD_KEY)
        await hold.close()

    await wait_for(lambda: stack.status_is("o1", "CLOSED"))
    await _one_exit_order(stack, "o1", Decimal(40))
    assert [s["client_order_id"] for s in submits] == ["exit:o1"]
    assert _parked("execution") + _parked("status") == parked_before, (
        "the exit's facts waited for the record instead of being parked"
    )


async def test_exit_sent_before_the_closing_commit_is_placed_once_when_the_commit_fails(
    stack: Stack,
) -> None:
    await stack.open_position("f1", quantity=Decimal(60))
    await stack.db.execute(FAIL_CLOSING_COMMIT)
    await stack.db.execute("INSERT INTO pm_test_fail VALUES ('f1')")
    submits = await _submits(stack)
    watch = monitor_watch(stack.monitors[0])

    async def exit_done_after(sent: int) -> bool:
        return len(submits) >= sent and "f1" not in watch._inflight and await _failures(stack) >= 1

    stack.sim.faults.set_price("AAPL", Decimal("94.50"))
    await wait_for(lambda: exit_done_after(1))
    # sent, placed and filled at the broker; our record of it did not commit
    await wait_for(
        lambda: sum(Decimal(e["shares"]) for e in stack.sim_orders() if e["side"] == "SLD") == 60
    )
    row = await stack.position("f1")
    assert (row["status"], row["exit_client_order_ids"]) == ("OPEN", [])

    stack.sim.faults.set_price("AAPL", Decimal("94.40"))  # the next tick decides again
    await wait_for(lambda: exit_done_after(2))
    assert await stack.status_is("f1", "OPEN")

    await stack.db.execute("DELETE FROM pm_test_fail")
    stack.sim.faults.set_price("AAPL", Decimal("94.30"))
    await wait_for(lambda: stack.status_is("f1", "CLOSED"))

    assert len(submits) >= 2
    assert {s["client_order_id"] for s in submits} == {"exit:f1"}, "the same id every time"
    await _one_exit_order(stack, "f1", Decimal(60))
    row = await stack.position("f1")
    assert row["exit_reason"] == "stop"


async def test_a_close_out_decided_again_on_other_terms_keeps_the_exit_that_exists(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The first close-out limit is placed but not recorded; the next close-out prices
    another limit for the same id: the order-manager answers ``conflict``, which proves
    the exit exists (not a refusal), and the position closes on the first order."""
    caplog.set_level(logging.WARNING, logger="ibflow.position_monitor.book")
    await stack.open_position("c1", quantity=Decimal(50))
    await stack.db.execute(FAIL_CLOSING_COMMIT)
    await stack.db.execute("INSERT INTO pm_test_fail VALUES ('c1', 'all')")
    submits = await _submits(stack)
    watch = monitor_watch(stack.monitors[0])
    refusals = REGISTRY.get_sample_value(
        "ibflow_position_exit_refusals_total", {"portfolio": "pa", "code": "conflict"}
    )

    def quoted(price: str) -> bool:
        quote = watch.quote("AAPL")
        return quote is not None and quote.last == Decimal(price)

    stack.sim.faults.set_price("AAPL", Decimal("100.00"))
    await wait_for(lambda: quoted("100.00"))
    await stack.session("close_out", 1)
    await wait_for(lambda: _sold(stack) == 50)
    await wait_for(lambda: _failures(stack))
    first = submits[0]
    assert (first["client_order_id"], first["order_type"]) == ("exit:c1", "LMT")
    assert await stack.status_is("c1", "OPEN")

    stack.sim.faults.set_price("AAPL", Decimal("99.50"))
    await wait_for(lambda: quoted("99.50"))
    # the monitor's own record may commit now; the order-manager's update still fails
    await stack.db.execute("UPDATE pm_test_fail SET mode = 'updates'")
    await stack.session("close_out", 2)
    await wait_for(lambda: stack.status_is("c1", "CLOSED"))
    await stack.db.execute("DELETE FROM pm_test_fail")

    assert {s["client_order_id"] for s in submits} == {"exit:c1"}
    assert len({(s["order_type"], s["limit_price"]) for s in submits}) >= 2, (
        "the same id was sent on other terms"
    )
    await _one_exit_order(stack, "c1", Decimal(50))
    # the answer is recorded after the commit that closed the position (the parked
    # fills drained in it), by the close-out's own task: wait for it, do not race it
    await wait_for(lambda: _exit_accepted(stack, "c1"))
    row = await stack.position("c1")
    assert row["exit_refusal"] is None
    assert row["exit_accepted"]
    assert "already has it on other terms" in caplog.text
    after = REGISTRY.get_sample_value(
        "ibflow_position_exit_refusals_total", {"portfolio": "pa", "code": "conflict"}
    )
    assert after == refusals, "a conflict on our own exit id is not a refusal"
