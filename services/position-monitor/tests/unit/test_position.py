"""The position lifecycle: entries and exits in and out of order, average prices,
realized P&L with both sides' commissions, late commissions, idempotency and the
refusals."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from ibflow.contracts.enums import ExitReason, OrderSide, PositionSide
from ibflow.contracts.enums import PositionStatus as S
from ibflow_position_monitor.domain import (
    BookedExecution,
    ConflictingExecution,
    FillRole,
    IllegalTransition,
    InvalidLevels,
    Overfill,
    PositionDomainError,
    PositionState,
    SideMismatch,
    Transition,
    UnknownExecution,
)

D = Decimal
LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
BUY, SELL = OrderSide.BUY, OrderSide.SELL
PID = "pos-alpha-20250310-AAPL"
ENTRY = "entry-alpha-20250310-AAPL"
EXIT1 = f"exit:{PID}"
EXIT2 = f"exit:{PID}:2"


def new(
    side: PositionSide = LONG,
    planned: str = "100",
    stop: str | None = "9.50",
    target: str | None = "11.00",
    multiplier: str = "1",
) -> PositionState:
    if side is SHORT and stop is not None and target is not None:
        stop, target = target, stop
    return PositionState.new(
        position_id=PID,
        portfolio_id="alpha",
        symbol="AAPL",
        side=side,
        planned_quantity=D(planned),
        entry_client_order_id=ENTRY,
        stop_loss=None if stop is None else D(stop),
        take_profit=None if target is None else D(target),
        multiplier=D(multiplier),
    )


def fill_t(
    state: PositionState,
    exec_id: str,
    shares: str,
    price: str,
    *,
    coid: str = ENTRY,
    side: OrderSide | None = None,
    commission: str | None = None,
) -> Transition:
    if side is None:
        side = state.entry_side if coid == state.entry_client_order_id else state.exit_side
    return state.on_execution(
        exec_id,
        client_order_id=coid,
        side=side,
        shares=D(shares),
        price=D(price),
        commission=None if commission is None else D(commission),
    )


def fill(state: PositionState, exec_id: str, shares: str, price: str, **kw: Any) -> PositionState:
    return fill_t(state, exec_id, shares, price, **kw).state


def opened(side: PositionSide = LONG, price: str = "10.00", **kw: Any) -> PositionState:
    """A position whose entry of 100 filled in full at ``price``."""
    return fill(new(side, **kw), "e1", "100", price)


def closing(side: PositionSide = LONG) -> PositionState:
    return opened(side).submit_exit(EXIT1, ExitReason.STOP).state


# -- entry ------------------------------------------------------------------------------


def test_entry_submitted_is_pending_with_nothing_held() -> None:
    state = new()
    assert state.status is S.PENDING
    assert (state.quantity, state.avg_entry_price, state.realized_pnl) == (0, None, 0)
    assert state.entry_working
    assert state.exit_client_order_id is None
    assert state.next_exit_client_order_id == EXIT1


def test_first_entry_fill_opens_the_position() -> None:
    step = fill_t(new(), "e1", "40", "10.00")
    assert step.entered is S.OPEN
    assert step.state.quantity == 40
    assert step.state.entry_working  # the other 60 may still fill


def test_partial_entry_fills_grow_the_position_at_the_weighted_price() -> None:
    state = new()
    for exec_id, shares, price in [
        ("e1", "30", "10.00"),
        ("e2", "50", "10.10"),
        ("e3", "20", "10.25"),
    ]:
        state = fill(state, exec_id, shares, price)
    assert state.status is S.OPEN
    assert state.quantity == 100
    assert state.entry_notional == D("1010.00")  # 300 + 505 + 205, exact
    assert state.avg_entry_price == D("10.10")
    assert not state.entry_working  # filled in full


def test_weighted_average_that_does_not_terminate_keeps_the_exact_notional() -> None:
    state = fill(fill(new(planned="3"), "e1", "1", "10.00"), "e2", "2", "10.01")
    assert state.entry_notional == D("30.02")
    assert state.avg_entry_price == D("30.02") / D(3)


def test_entry_cancelled_with_nothing_filled_is_cancelled() -> None:
    step = new().entry_ended()
    assert step.entered is S.CANCELLED
    assert not step.state.is_active


def test_entry_cancelled_after_a_partial_fill_is_open_with_what_filled() -> None:
    state = fill(new(), "e1", "40", "10.00")
    step = state.entry_ended(broker_filled=D(40))
    assert step.state.status is S.OPEN
    assert step.entered is None
    assert step.state.quantity == 40
    assert not step.state.entry_working


def test_entry_ended_with_fills_in_flight_waits_for_them() -> None:
    state = new().entry_ended(broker_filled=D(40)).state
    assert state.status is S.PENDING  # not CANCELLED: IB says 40 filled
    assert state.awaiting_entry_fills == 40
    state = fill(state, "e1", "40", "10.00")
    assert (state.status, state.awaiting_entry_fills) == (S.OPEN, 0)


def test_late_entry_fill_after_the_cancel_is_booked_and_opens_the_position() -> None:
    cancelled = new().entry_ended().state
    step = fill_t(cancelled, "e1", "10", "10.00")
    assert step.entered is S.OPEN
    assert step.state.quantity == 10


def test_repeated_entry_end_changes_nothing() -> None:
    state = new().entry_ended(broker_filled=D(5)).state
    assert not state.entry_ended(broker_filled=D(5)).changed
    assert not state.entry_ended(broker_filled=D(0)).changed  # IB's count is never lowered


# -- exit -------------------------------------------------------------------------------


def test_exit_submitted_marks_closing_with_its_id_and_reason() -> None:
    step = opened().submit_exit(EXIT1, ExitReason.STOP)
    assert step.entered is S.CLOSING
    assert (step.state.exit_client_order_id, step.state.exit_reason) == (EXIT1, ExitReason.STOP)
    assert step.state.exit_working


def test_exit_fills_reduce_the_quantity() -> None:
    state = fill(closing(), "x1", "30", "10.50", coid=EXIT1)
    assert (state.status, state.quantity, state.exit_quantity) == (S.CLOSING, 70, 30)
    assert state.avg_exit_price == D("10.50")


def test_exit_filled_in_full_closes_with_realized_pnl() -> None:
    state = fill(closing(), "x1", "60", "10.50", coid=EXIT1)
    step = fill_t(state, "x2", "40", "10.25", coid=EXIT1)
    assert step.entered is S.CLOSED
    closed = step.state
    assert closed.quantity == 0
    assert not closed.exit_working
    assert closed.avg_exit_price == D("10.40")
    # (630 + 410) - 1000
    assert closed.realized_gross == D("40.00")
    assert closed.realized_pnl == D("40.00")  # commissions still unknown
    assert closed.commissions_pending == 3
    assert not closed.pnl_final


@pytest.mark.parametrize(
    ("entries", "exits", "expected"),
    [
        # Round trip, commissions on both sides: 1040 - 1000 - (1.00 + 0.35 + 0.50 + 0.47).
        (
            [("e1", "60", "10.00", "1.00"), ("e2", "40", "10.00", "0.35")],
            [("x1", "60", "10.50", "0.50"), ("x2", "40", "10.25", "0.47")],
            D("37.68"),
        ),
        # A loss, with sub-penny prices and a rebate (negative commission).
        (
            [("e1", "100", "0.5123", "0.35")],
            [("x1", "100", "0.4987", "-0.05")],
            D("-1.66"),  # 49.87 - 51.23 - 0.30
        ),
        # Odd lots whose average does not terminate: the close is still exact.
        (
            [("e1", "1", "10.00", "1"), ("e2", "2", "10.01", "1")],
            [("x1", "3", "10.02", "1")],
            D("30.06") - D("30.02") - 3,
        ),
    ],
)
def test_realized_pnl_nets_both_sides_commissions_to_the_cent(
    entries: list[tuple[str, str, str, str]],
    exits: list[tuple[str, str, str, str]],
    expected: Decimal,
) -> None:
    planned = sum(D(shares) for _, shares, _, _ in entries)
    state = new(planned=str(planned))
    for exec_id, shares, price, commission in entries:
        state = fill(state, exec_id, shares, price, commission=commission)
    state = state.submit_exit(EXIT1, ExitReason.TARGET).state
    for exec_id, shares, price, commission in exits:
        state = fill(state, exec_id, shares, price, coid=EXIT1, commission=commission)
    assert state.status is S.CLOSED
    assert state.realized_pnl == expected
    assert state.realized_pnl.quantize(D("0.01")) == expected.quantize(D("0.01"))
    assert state.pnl_final


@pytest.mark.parametrize(
    ("entry", "exit_price", "gross"),
    [("20.00", "19.50", D("50.00")), ("20.00", "20.40", D("-40.00"))],
)
def test_short_position_pnl_is_mirrored(entry: str, exit_price: str, gross: Decimal) -> None:
    state = new(SHORT)
    step = fill_t(state, "e1", "100", entry, side=SELL, commission="1.00")
    state = step.state.submit_exit(EXIT1, ExitReason.TARGET).state
    assert state.exit_side is BUY
    state = fill(state, "x1", "100", exit_price, coid=EXIT1, side=BUY, commission="1.00")
    assert state.status is S.CLOSED
    assert state.realized_gross == gross
    assert state.realized_pnl == gross - 2
    assert state.signed_quantity == 0


def test_multiplier_scales_the_pnl_not_the_average_price() -> None:
    state = new(planned="2", multiplier="100", stop=None, target=None)
    state = fill(state, "e1", "2", "5.10", commission="1.30")
    assert state.avg_entry_price == D("5.10")
    state = state.submit_exit(EXIT1, ExitReason.CLOSE_OUT).state
    state = fill(state, "x1", "2", "5.35", coid=EXIT1, commission="1.30")
    assert state.realized_pnl == D("0.25") * 2 * 100 - D("2.60")


def test_partial_exit_realizes_the_exited_share_of_the_cost() -> None:
    state = fill(fill(new(planned="3"), "e1", "1", "10.00"), "e2", "2", "10.01")
    state = state.submit_exit(EXIT1, ExitReason.STOP).state
    state = fill(state, "x1", "1", "10.00", coid=EXIT1)
    assert state.exited_cost == D("30.02") / 3
    assert state.exited_cost + state.held_cost == D("30.02")
    assert state.realized_gross == D("10.00") - D("30.02") / 3


# -- commissions ------------------------------------------------------------------------


def test_late_commission_after_close_updates_realized_pnl() -> None:
    state = fill(closing(), "x1", "100", "10.40", coid=EXIT1, commission="0.60")
    state = state.on_commission("e1", D("0.65")).state  # the entry's, before the close
    assert state.status is S.CLOSED
    assert state.realized_pnl == D("40.00") - D("1.25")
    assert state.pnl_final
    # A correction arrives after the close: the P&L follows, the status does not move.
    step = state.on_commission("x1", D("0.75"))
    assert step.changed
    assert step.entered is None
    assert step.state.realized_pnl == D("40.00") - D("1.40")
    assert step.state.commission == D("1.40")


def test_commission_unknown_is_none_never_zero() -> None:
    state = opened()
    assert state.booked("e1") == BookedExecution("e1", ENTRY, FillRole.ENTRY, D(100), D("10.00"))
    assert state.commission == 0
    assert state.commissions_pending == 1


def test_commission_before_its_fill_is_refused_then_booked_with_the_fill() -> None:
    state = new()
    with pytest.raises(UnknownExecution, match="has not booked"):
        state.on_commission("e1", D("0.35"))
    state = fill(state, "e1", "100", "10.00", commission="0.35")  # the parked commission
    assert (state.commission, state.commissions_pending) == (D("0.35"), 0)
    assert state.realized_pnl == D("-0.35")


def test_repeated_commission_is_idempotent_and_a_new_amount_replaces_it() -> None:
    state = opened().on_commission("e1", D("1.00")).state
    assert not state.on_commission("e1", D("1.0")).changed
    replaced = state.on_commission("e1", D("0.35")).state
    assert replaced.commission == D("0.35")


def test_commission_given_with_a_duplicate_fill_is_joined() -> None:
    state = opened()
    step = fill_t(state, "e1", "100", "10.00", commission="0.35")
    assert step.changed
    assert step.state.booked("e1") == BookedExecution(
        "e1", ENTRY, FillRole.ENTRY, D(100), D("10.00"), D("0.35")
    )


@pytest.mark.parametrize("commission", ["NaN", "Infinity", "1.7976931348623157E+308"])
def test_sentinel_or_non_finite_commission_is_refused(commission: str) -> None:
    with pytest.raises(ValueError, match="commission"):
        opened().on_commission("e1", D(commission))


# -- idempotency and out-of-order facts -------------------------------------------------


def test_duplicate_execution_changes_nothing() -> None:
    state = fill(new(), "e1", "40", "10.00")
    again = fill_t(state, "e1", "40", "10.0")  # the same figures, another spelling
    assert not again.changed
    assert again.state is state
    assert state.exec_ids == {"e1"}
    assert state.quantity == 40


@pytest.mark.parametrize(
    ("shares", "price", "coid"),
    [("41", "10.00", ENTRY), ("40", "10.01", ENTRY), ("40", "10.00", EXIT1)],
)
def test_duplicate_execution_with_other_figures_is_refused(
    shares: str, price: str, coid: str
) -> None:
    state = fill(new(), "e1", "40", "10.00")
    state = state.submit_exit(EXIT1, ExitReason.STOP).state
    with pytest.raises(ConflictingExecution, match="e1 is already booked"):
        fill_t(state, "e1", shares, price, coid=coid)


def test_exit_fill_before_the_exit_is_acknowledged_records_the_exit() -> None:
    step = fill_t(opened(), "x1", "30", "10.50", coid=EXIT1)
    assert step.entered is S.CLOSING
    state = step.state
    assert (state.exit_client_order_id, state.exit_reason, state.exit_working) == (
        EXIT1,
        None,
        True,
    )
    # The intent arrives afterwards: it fills in the reason, nothing else.
    step = state.submit_exit(EXIT1, ExitReason.STOP)
    assert step.state.exit_reason is ExitReason.STOP
    assert step.entered is None
    assert step.state.exit_attempts == 1


def test_exit_filled_in_full_before_the_intent_closes_and_the_intent_only_names_it() -> None:
    closed = fill(opened(), "x1", "100", "10.50", coid=EXIT1)
    assert closed.status is S.CLOSED
    step = closed.submit_exit(EXIT1, ExitReason.TARGET)
    assert (step.state.status, step.state.exit_reason) == (S.CLOSED, ExitReason.TARGET)
    assert not step.state.submit_exit(EXIT1, ExitReason.STOP).changed


def test_exit_cancelled_while_closing_reopens_for_a_retry() -> None:
    step = closing().exit_ended(EXIT1)
    assert step.entered is S.OPEN
    assert step.state.next_exit_client_order_id == EXIT2
    retry = step.state.submit_exit(EXIT2, ExitReason.STOP).state
    assert (retry.status, retry.exit_client_order_ids) == (S.CLOSING, (EXIT1, EXIT2))


def test_exit_cancelled_after_a_partial_fill_reopens_with_the_rest() -> None:
    state = fill(closing(), "x1", "30", "10.50", coid=EXIT1)
    state = state.exit_ended(EXIT1, broker_filled=D(30)).state
    assert (state.status, state.quantity) == (S.OPEN, 70)


def test_exit_ended_with_fills_in_flight_stays_closing_until_they_are_booked() -> None:
    state = closing().exit_ended(EXIT1, broker_filled=D(60)).state
    assert state.status is S.CLOSING  # a retry now could sell the 60 twice
    assert state.awaiting_exit_fills == 60
    with pytest.raises(IllegalTransition, match="CLOSING"):
        state.submit_exit(EXIT2, ExitReason.STOP)
    state = fill(state, "x1", "60", "10.50", coid=EXIT1)
    assert (state.status, state.quantity, state.awaiting_exit_fills) == (S.OPEN, 40, 0)


def test_end_of_an_earlier_exit_attempt_changes_nothing() -> None:
    state = closing().exit_ended(EXIT1).state.submit_exit(EXIT2, ExitReason.STOP).state
    assert not state.exit_ended(EXIT1, broker_filled=D(0)).changed
    assert not state.exit_ended(EXIT2).state.exit_ended(EXIT2).changed


def test_late_fill_of_an_earlier_exit_attempt_is_booked_without_changing_the_current_exit() -> None:
    state = closing().exit_ended(EXIT1).state.submit_exit(EXIT2, ExitReason.STOP).state
    state = fill(state, "x1", "10", "10.50", coid=EXIT1)
    assert (state.status, state.quantity, state.exit_client_order_id) == (S.CLOSING, 90, EXIT2)


def test_end_of_an_exit_never_recorded_counts_as_an_attempt() -> None:
    state = opened().exit_ended(EXIT1).state
    assert (state.status, state.next_exit_client_order_id) == (S.OPEN, EXIT2)
    # ...and its intent arriving late cannot make it work again.
    assert not state.submit_exit(EXIT1, ExitReason.STOP).state.exit_working


def test_an_exit_first_known_from_its_end_keeps_the_reason_the_order_carries() -> None:
    # sent, but its record did not commit: the order-manager's terminal update names it
    state = opened().exit_ended(EXIT1, broker_filled=D(100), reason=ExitReason.STOP).state
    state = fill(state, "x1", "100", "9.50", coid=EXIT1)
    assert (state.status, state.exit_reason) == (S.CLOSED, ExitReason.STOP)


def test_an_exit_first_known_from_its_fills_gets_its_reason_when_it_ends() -> None:
    closed = fill(opened(), "x1", "100", "9.50", coid=EXIT1)
    assert closed.exit_reason is None
    step = closed.exit_ended(EXIT1, broker_filled=D(100), reason=ExitReason.STOP)
    assert (step.state.status, step.state.exit_reason) == (S.CLOSED, ExitReason.STOP)
    assert not step.state.exit_ended(EXIT1, broker_filled=D(100), reason=ExitReason.TARGET).changed


def test_late_entry_fill_after_close_reopens_the_position() -> None:
    state = fill(new(), "e1", "60", "10.00").submit_exit(EXIT1, ExitReason.STOP).state
    state = fill(state, "x1", "60", "9.50", coid=EXIT1)
    assert state.status is S.CLOSED
    step = fill_t(state, "e2", "40", "10.00")
    assert step.entered is S.OPEN  # the shares are real: exit them
    assert step.state.next_exit_client_order_id == EXIT2


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "shares", "coid", "role"),
    [
        (new(), "101", ENTRY, "entry"),
        (fill(new(), "e0", "90", "10.00"), "11", ENTRY, "entry"),
        (fill(new(), "e0", "40", "10.00"), "41", EXIT1, "exit"),
        (closing(), "100.0001", EXIT1, "exit"),
    ],
)
def test_overfill_is_refused_and_nothing_is_booked(
    state: PositionState, shares: str, coid: str, role: str
) -> None:
    with pytest.raises(Overfill, match=f"overfill: {role}") as caught:
        fill_t(state, "over", shares, "10.00", coid=coid)
    assert caught.value.role == role
    assert "over" not in state.exec_ids


@pytest.mark.parametrize(
    ("side", "coid", "fill_side"),
    [(LONG, ENTRY, SELL), (LONG, EXIT1, BUY), (SHORT, ENTRY, BUY), (SHORT, EXIT1, SELL)],
)
def test_fill_on_the_wrong_side_is_refused(
    side: PositionSide, coid: str, fill_side: OrderSide
) -> None:
    state = fill(new(side), "e0", "10", "10.00") if coid != ENTRY else new(side)
    with pytest.raises(SideMismatch, match="side mismatch"):
        fill_t(state, "bad", "1", "10.00", coid=coid, side=fill_side)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (new(), S.PENDING),
        (new().entry_ended().state, S.CANCELLED),
        (closing(), S.CLOSING),
        (fill(closing(), "x1", "100", "10", coid=EXIT1), S.CLOSED),
    ],
)
def test_a_new_exit_is_refused_unless_open(state: PositionState, status: S) -> None:
    assert state.status is status
    with pytest.raises(IllegalTransition, match=f"position is {status.value}"):
        state.submit_exit("exit:other", ExitReason.MANUAL)


def test_resubmitting_the_working_exit_changes_nothing() -> None:
    assert not closing().submit_exit(EXIT1, ExitReason.CLOSE_OUT).changed


@pytest.mark.parametrize(
    ("side", "stop", "target"),
    [(LONG, "11", "10"), (LONG, "10", "10"), (SHORT, "9", "10"), (LONG, "0", None)],
)
def test_levels_that_cannot_protect_the_position_are_refused(
    side: PositionSide, stop: str, target: str | None
) -> None:
    with pytest.raises(InvalidLevels):
        opened(side, stop=None, target=None).set_levels(
            D(stop), None if target is None else D(target)
        )


def test_levels_are_replaced_while_active_and_refused_once_finished() -> None:
    state = opened().set_levels(D("9.80"), None).state
    assert (state.stop_loss, state.take_profit) == (D("9.80"), None)
    with pytest.raises(IllegalTransition, match="CANCELLED"):
        new().entry_ended().state.set_levels(D(9), D(11))


def test_every_refusal_is_a_position_domain_error() -> None:
    for error in (
        IllegalTransition,
        Overfill,
        SideMismatch,
        ConflictingExecution,
        UnknownExecution,
        InvalidLevels,
    ):
        assert issubclass(error, PositionDomainError)


# -- construction ---------------------------------------------------------------------


def test_adopted_position_is_open_external_with_a_stand_in_entry() -> None:
    state = PositionState.adopted(
        position_id="ext-alpha-20250310-MSFT",
        portfolio_id="alpha",
        symbol="MSFT",
        side=SHORT,
        quantity=D(25),
        price=D("410.10"),
    )
    assert (state.status, state.external, state.signed_quantity) == (S.OPEN, True, -25)
    assert state.entry_client_order_id == "adopt:ext-alpha-20250310-MSFT"
    assert state.commissions_pending == 0  # avgCost already holds IB's commission
    assert state.avg_entry_price == D("410.10")
    closing_ = state.submit_exit(state.next_exit_client_order_id, ExitReason.CLOSE_OUT).state
    closed = fill(closing_, "x1", "25", "400.10", coid="exit:ext-alpha-20250310-MSFT", side=BUY)
    assert closed.realized_pnl == D("250.00")


def test_a_stored_state_rebuilds_equal_through_the_constructor() -> None:
    state = fill(closing(), "x1", "30", "10.50", coid=EXIT1, commission="0.5")
    fields = {name: getattr(state, name) for name in state.__dataclass_fields__}
    assert PositionState(**fields) == state


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exit_working": True}, "none is recorded"),
        ({"exit_reason": ExitReason.STOP}, "reason without an exit"),
        ({"position_id": "bad id"}, "not an id"),
        ({"portfolio_id": "_alpha"}, "portfolio slug"),
        ({"planned_quantity": D(0)}, "planned_quantity"),
        ({"exit_client_order_ids": (ENTRY,)}, "is the entry's"),
        (
            {"executions": (BookedExecution("e1", ENTRY, FillRole.ENTRY, D(101), D(10)),)},
            "exceed the planned",
        ),
        (
            {"executions": (BookedExecution("e1", "other", FillRole.ENTRY, D(1), D(10)),)},
            "says otherwise",
        ),
    ],
)
def test_constructor_refuses_inconsistent_facts(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(new(), **changes)
