"""The order lifecycle state machine: every status, the IB status mapping, executions
in and out of order, cancels, ambiguity, modifications and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from ibflow.contracts.enums import OrderStatus as S
from ibflow_order_manager.domain import (
    BrokerOutcome,
    IllegalTransition,
    InvalidModification,
    OrderDomainError,
    OrderState,
    Overfill,
    Transition,
    entered_status,
    timestamp_column,
)

D = Decimal
QTY = D(100)


def state_in(status: S) -> OrderState:
    """An order of 100 shares driven into ``status`` through its public inputs."""
    order = OrderState.new(QTY)
    if status is S.PENDING:
        pass
    elif status is S.UNKNOWN:
        order = order.mark_unknown("submit timed out").state
    elif status is S.REJECTED:
        order = order.not_sent("bridge not ready").state
    else:
        order = order.sent().state
        if status is S.PARTIALLY_FILLED:
            order = order.on_execution(D(40), D(10)).state
        elif status is S.FILLED:
            order = order.on_execution(QTY, D(10)).state
        elif status is S.CANCEL_REQUESTED:
            order = order.request_cancel().state
        elif status is S.CANCELLED:
            order = order.on_execution(D(40), D(10)).state
            order = order.request_cancel().state
            order = order.on_broker_status("Cancelled", D(40), D(0)).state
    assert order.status is status
    return order


def submitted() -> OrderState:
    return state_in(S.SUBMITTED)


TERMINAL = [S.FILLED, S.CANCELLED, S.REJECTED]
WORKING = [S.PENDING, S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_REQUESTED, S.UNKNOWN]


# -- creation and acknowledgement -------------------------------------------------------


def test_new_order_is_pending_with_nothing_filled() -> None:
    order = OrderState.new(QTY)
    assert order.status is S.PENDING
    assert order.filled_quantity == 0
    assert order.remaining == QTY
    assert order.open_quantity == QTY
    assert order.avg_fill_price is None
    assert not order.acknowledged


def test_sent_acknowledges_a_pending_order() -> None:
    step = OrderState.new(QTY).sent()
    assert step.state.status is S.SUBMITTED
    assert step.state.acknowledged
    assert step.changed
    assert step.entered is S.SUBMITTED


def test_sent_twice_changes_nothing() -> None:
    step = submitted().sent()
    assert not step.changed
    assert step.entered is None


@pytest.mark.parametrize(
    ("ib_status", "error"),
    [
        ("PendingSubmit", None),
        ("PreSubmitted", None),
        ("Submitted", None),
        ("Filled", None),
        ("Inactive", None),
    ],
)
def test_working_ib_statuses_acknowledge_a_pending_order(ib_status: str, error: str | None) -> None:
    step = OrderState.new(QTY).on_broker_status(ib_status, D(0), QTY, error)
    assert step.recognised
    assert step.state.acknowledged
    assert step.state.status is S.SUBMITTED
    assert step.entered is S.SUBMITTED
    assert step.state.ib_status == ib_status
    assert step.state.broker_remaining == QTY


# -- executions ---------------------------------------------------------------------------


def test_fill_before_acknowledgement_acknowledges_and_counts() -> None:
    step = OrderState.new(QTY).on_execution(D(40), D("10.25"))
    assert step.state.acknowledged
    assert step.state.filled_quantity == 40
    assert step.state.status is S.PARTIALLY_FILLED
    assert step.entered is S.PARTIALLY_FILLED


def test_complete_fill_before_acknowledgement_is_filled() -> None:
    # IB may skip orderStatus for an instantly filled market order (failure mode 5).
    step = OrderState.new(QTY).on_execution(QTY, D(10))
    assert step.state.status is S.FILLED
    assert step.state.remaining == 0
    assert step.state.open_quantity == 0


def test_partial_fills_accumulate_and_average_exactly() -> None:
    order = submitted()
    order = order.on_execution(D(30), D(10)).state
    assert order.status is S.PARTIALLY_FILLED
    step = order.on_execution(D(70), D("10.50"))
    assert step.entered is S.FILLED
    assert step.state.filled_quantity == QTY
    assert step.state.filled_notional == D("1035.00")
    assert step.state.avg_fill_price == D("10.35")


def test_fractional_fills_keep_exact_decimals() -> None:
    order = OrderState.new(D("1.5")).sent().state
    order = order.on_execution(D("0.3333"), D("101.01")).state
    order = order.on_execution(D("1.1667"), D("101.02")).state
    assert order.status is S.FILLED
    assert order.filled_notional == D("0.3333") * D("101.01") + D("1.1667") * D("101.02")


def test_second_fill_at_same_status_changes_state_but_enters_nothing() -> None:
    order = state_in(S.PARTIALLY_FILLED)
    step = order.on_execution(D(10), D(11))
    assert step.changed
    assert step.entered is None
    assert step.state.filled_quantity == 50


@pytest.mark.parametrize(("filled", "shares"), [(D(90), D(20)), (D(0), D(101)), (QTY, D(1))])
def test_overfill_raises_and_books_nothing(filled: Decimal, shares: Decimal) -> None:
    order = submitted()
    if filled:
        order = order.on_execution(filled, D(10)).state
    with pytest.raises(Overfill) as raised:
        order.on_execution(shares, D(10))
    assert raised.value.quantity == QTY
    assert raised.value.filled == filled
    assert raised.value.shares == shares
    assert f"above the order quantity {QTY}" in str(raised.value)
    assert order.filled_quantity == filled


@pytest.mark.parametrize(("shares", "price"), [(D(0), D(10)), (D(-1), D(10)), (D(1), D(0))])
def test_execution_needs_positive_shares_and_price(shares: Decimal, price: Decimal) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        submitted().on_execution(shares, price)


def test_execution_resolves_an_unknown_order() -> None:
    step = state_in(S.UNKNOWN).on_execution(D(10), D(10))
    assert not step.state.unknown
    assert step.state.status is S.PARTIALLY_FILLED


# -- IB's Filled status waits for the executions --------------------------------------------


def test_ib_filled_status_waits_for_executions() -> None:
    step = submitted().on_broker_status("Filled", QTY, D(0))
    assert step.state.status is S.SUBMITTED
    assert step.state.filled_quantity == 0
    assert step.state.broker_filled == QTY
    assert step.state.awaiting_executions == QTY
    assert step.entered is None
    order = step.state.on_execution(D(60), D(10)).state
    assert order.status is S.PARTIALLY_FILLED
    assert order.awaiting_executions == 40
    final = order.on_execution(D(40), D(10))
    assert final.entered is S.FILLED
    assert final.state.awaiting_executions == 0


def test_ib_filled_status_after_cancel_request_keeps_cancel_requested() -> None:
    # The cancel lost the race: IB filled it; the executions will make it FILLED.
    order = state_in(S.CANCEL_REQUESTED).on_broker_status("Filled", QTY, D(0)).state
    assert order.status is S.CANCEL_REQUESTED
    assert order.on_execution(QTY, D(10)).state.status is S.FILLED


def test_broker_filled_never_decreases() -> None:
    order = submitted().on_broker_status("Submitted", D(60), D(40)).state
    order = order.on_broker_status("Submitted", D(20), D(80)).state  # older report
    assert order.broker_filled == 60
    assert order.broker_remaining == 80


# -- cancels ------------------------------------------------------------------------------


def test_cancel_of_partly_filled_order_cancels_the_remainder_only() -> None:
    order = state_in(S.PARTIALLY_FILLED)
    requested = order.request_cancel()
    assert requested.entered is S.CANCEL_REQUESTED
    step = requested.state.on_broker_status("Cancelled", D(40), D(0))
    assert step.entered is S.CANCELLED
    assert step.state.outcome is BrokerOutcome.CANCELLED
    assert step.state.filled_quantity == 40
    assert step.state.remaining == 60
    assert step.state.open_quantity == 0


def test_late_execution_after_cancel_is_booked_and_status_stays_cancelled() -> None:
    order = state_in(S.CANCELLED)
    step = order.on_execution(D(20), D(11))
    assert step.changed
    assert step.entered is None
    assert step.state.status is S.CANCELLED
    assert step.state.filled_quantity == 60
    assert step.state.filled_notional == D(40) * D(10) + D(20) * D(11)


def test_late_execution_completing_a_cancelled_order_makes_it_filled() -> None:
    step = state_in(S.CANCELLED).on_execution(D(60), D(10))
    assert step.entered is S.FILLED
    assert step.state.status is S.FILLED


def test_cancelled_by_ib_without_our_request_is_cancelled_with_its_reason() -> None:
    step = submitted().on_broker_status("Cancelled", D(0), QTY, "202: Order Canceled - DAY")
    assert step.state.status is S.CANCELLED
    assert step.state.reason == "202: Order Canceled - DAY"


def test_api_cancelled_is_cancelled() -> None:
    step = OrderState.new(QTY).on_broker_status("ApiCancelled", D(0), QTY)
    assert step.state.status is S.CANCELLED
    assert step.entered is S.CANCELLED


def test_pending_cancel_from_ib_marks_cancel_requested() -> None:
    step = state_in(S.PARTIALLY_FILLED).on_broker_status("PendingCancel", D(40), D(60))
    assert step.state.cancel_requested
    assert step.entered is S.CANCEL_REQUESTED


def test_cancel_request_is_idempotent() -> None:
    step = state_in(S.CANCEL_REQUESTED).request_cancel()
    assert not step.changed


@pytest.mark.parametrize("status", TERMINAL)
def test_cancel_request_on_terminal_order_is_illegal(status: S) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot request a cancel: order is {status}"):
        state_in(status).request_cancel()


def test_cancel_request_on_pending_order_survives_the_acknowledgement() -> None:
    requested = OrderState.new(QTY).request_cancel().state
    assert requested.status is S.CANCEL_REQUESTED
    acked = requested.on_broker_status("Submitted", D(0), QTY).state
    assert acked.status is S.CANCEL_REQUESTED
    assert acked.acknowledged


def test_working_status_after_cancel_request_keeps_it_requested() -> None:
    order = state_in(S.CANCEL_REQUESTED).on_broker_status("Submitted", D(0), QTY).state
    assert order.status is S.CANCEL_REQUESTED


def test_cancel_refused_returns_the_order_to_working() -> None:
    order = state_in(S.PARTIALLY_FILLED).request_cancel().state
    step = order.cancel_refused("161: cancel attempted when order is not cancellable")
    assert step.entered is S.PARTIALLY_FILLED
    assert not step.state.cancel_requested
    assert step.state.reason == "161: cancel attempted when order is not cancellable"


@pytest.mark.parametrize("status", [S.SUBMITTED, S.FILLED])
def test_cancel_refused_without_a_pending_request_changes_nothing(status: S) -> None:
    assert not state_in(status).cancel_refused("late").changed


def test_fills_reaching_quantity_win_over_a_cancel_request() -> None:
    order = state_in(S.CANCEL_REQUESTED)
    assert order.on_execution(QTY, D(10)).state.status is S.FILLED


# -- Inactive, rejections -------------------------------------------------------------------


def test_inactive_with_error_rejects() -> None:
    step = submitted().on_broker_status("Inactive", D(0), QTY, "201: Order rejected - margin")
    assert step.state.status is S.REJECTED
    assert step.state.outcome is BrokerOutcome.REJECTED
    assert step.state.reason == "201: Order rejected - margin"
    assert step.entered is S.REJECTED


def test_a_cancelled_report_with_an_error_before_ib_took_the_order_is_a_rejection() -> None:
    # ib_async reports IB's "201 Order rejected" for a placeOrder as Cancelled
    step = submitted().on_broker_status("Cancelled", D(0), D(0), "201: Order rejected - 1100")
    assert step.state.status is S.REJECTED
    assert step.state.outcome is BrokerOutcome.REJECTED
    assert step.state.reason == "201: Order rejected - 1100"


def test_a_cancelled_report_with_an_error_after_ib_took_the_order_stays_cancelled() -> None:
    working = submitted().on_broker_status("Submitted", D(0), QTY).state
    step = working.on_broker_status("Cancelled", D(0), QTY, "201: Order rejected - halted")
    assert step.state.status is S.CANCELLED


def test_a_cancel_of_ours_answered_with_an_error_stays_cancelled() -> None:
    asked = state_in(S.CANCEL_REQUESTED)
    step = asked.on_broker_status("Cancelled", D(0), QTY, "202: Order Canceled - reason:")
    assert step.state.status is S.CANCELLED


def test_inactive_with_error_after_a_partial_fill_is_cancelled() -> None:
    step = state_in(S.PARTIALLY_FILLED).on_broker_status("Inactive", D(40), D(60), "201: halted")
    assert step.state.status is S.CANCELLED
    assert step.state.filled_quantity == 40


def test_inactive_with_error_when_ib_reports_fills_not_yet_booked_is_cancelled() -> None:
    step = submitted().on_broker_status("Inactive", D(30), D(70), "201: rejected")
    assert step.state.status is S.CANCELLED
    assert step.state.awaiting_executions == 30


def test_inactive_without_error_is_kept_as_held() -> None:
    order = state_in(S.PARTIALLY_FILLED)
    step = order.on_broker_status("Inactive", D(40), D(60))
    assert step.state.status is S.PARTIALLY_FILLED
    assert step.state.ib_status == "Inactive"
    assert step.entered is None
    assert step.state.outcome is BrokerOutcome.NONE


def test_execution_on_a_rejected_order_makes_it_cancelled() -> None:
    rejected = submitted().on_broker_status("Inactive", D(0), QTY, "201: rejected").state
    step = rejected.on_execution(D(10), D(10))
    assert step.entered is S.CANCELLED
    assert step.state.filled_quantity == 10


def test_not_sent_rejects_a_pending_order() -> None:
    step = OrderState.new(QTY).not_sent("not_ready: gateway disconnected")
    assert step.entered is S.REJECTED
    assert step.state.reason == "not_ready: gateway disconnected"


def test_not_sent_resolves_an_unknown_order_as_rejected() -> None:
    step = state_in(S.UNKNOWN).not_sent("refused")
    assert step.state.status is S.REJECTED
    assert not step.state.unknown


def test_not_sent_twice_changes_nothing() -> None:
    assert not state_in(S.REJECTED).not_sent("again").changed


@pytest.mark.parametrize("status", [S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED])
def test_not_sent_after_the_broker_has_the_order_is_illegal(status: S) -> None:
    with pytest.raises(IllegalTransition, match="the broker has it"):
        state_in(status).not_sent("late answer")


# -- unknown statuses and terminal states -----------------------------------------------------


@pytest.mark.parametrize("status", WORKING + TERMINAL)
def test_unrecognised_ib_status_keeps_state_and_is_reported(status: S) -> None:
    order = state_in(status)
    step = order.on_broker_status("PartiallyFilled", D(10), D(90))
    assert not step.recognised
    assert not step.changed
    assert step.state is order


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize(
    "ib_status", ["PendingSubmit", "PreSubmitted", "Submitted", "PendingCancel"]
)
def test_terminal_states_never_go_back_to_working(status: S, ib_status: str) -> None:
    step = state_in(status).on_broker_status(ib_status, D(0), QTY)
    assert not step.changed
    assert step.state.status is status


@pytest.mark.parametrize("status", TERMINAL)
def test_inactive_without_error_on_a_terminal_order_is_ignored(status: S) -> None:
    assert not state_in(status).on_broker_status("Inactive", D(0), QTY).changed


def test_final_report_on_a_terminal_order_is_recorded_without_a_status_change() -> None:
    order = state_in(S.CANCELLED)
    step = order.on_broker_status("Filled", D(60), D(0))
    assert step.changed
    assert step.entered is None
    assert step.state.status is S.CANCELLED
    assert step.state.ib_status == "Filled"
    assert step.state.broker_filled == 60
    assert step.state.awaiting_executions == 20


def test_cancelled_report_on_a_filled_order_keeps_it_filled() -> None:
    step = state_in(S.FILLED).on_broker_status("Cancelled", QTY, D(0))
    assert step.state.status is S.FILLED
    assert step.state.outcome is BrokerOutcome.NONE


def test_negative_broker_numbers_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="remaining must be >= 0"):
        submitted().on_broker_status("Submitted", D(0), D(-1))


# -- ambiguous submits ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_REQUESTED])
def test_mark_unknown_from_a_working_state(status: S) -> None:
    step = state_in(status).mark_unknown("place timed out")
    assert step.entered is S.UNKNOWN
    assert step.state.reason == "place timed out"


def test_mark_unknown_is_idempotent_and_keeps_the_first_reason() -> None:
    step = state_in(S.UNKNOWN).mark_unknown("second")
    assert not step.changed
    assert step.state.reason == "submit timed out"


@pytest.mark.parametrize("status", TERMINAL)
def test_mark_unknown_on_a_terminal_order_is_illegal(status: S) -> None:
    with pytest.raises(IllegalTransition, match="cannot mark the order unknown"):
        state_in(status).mark_unknown("?")


@pytest.mark.parametrize("ib_status", ["Submitted", "PreSubmitted", "Filled", "Inactive"])
def test_any_recognised_broker_status_resolves_unknown(ib_status: str) -> None:
    step = state_in(S.UNKNOWN).on_broker_status(ib_status, D(0), QTY)
    assert not step.state.unknown
    assert step.state.status is S.SUBMITTED


def test_unknown_order_stays_unknown_when_a_cancel_is_requested() -> None:
    order = state_in(S.UNKNOWN).request_cancel().state
    assert order.status is S.UNKNOWN
    assert order.cancel_requested
    assert order.resolve_unknown(at_broker=True).state.status is S.CANCEL_REQUESTED


def test_resolve_unknown_at_broker_acknowledges() -> None:
    step = state_in(S.UNKNOWN).resolve_unknown(at_broker=True)
    assert step.entered is S.SUBMITTED
    assert step.state.acknowledged
    assert step.state.reason is None


def test_resolve_pending_order_at_broker_acknowledges() -> None:
    assert OrderState.new(QTY).resolve_unknown(at_broker=True).entered is S.SUBMITTED


def test_resolve_unknown_not_at_broker_with_resend_returns_to_pending() -> None:
    step = state_in(S.UNKNOWN).resolve_unknown(at_broker=False, resend=True)
    assert step.entered is S.PENDING
    assert not step.state.acknowledged
    assert not step.state.unknown


def test_resolve_unknown_never_acknowledged_and_not_found_is_rejected() -> None:
    step = state_in(S.UNKNOWN).resolve_unknown(at_broker=False)
    assert step.entered is S.REJECTED
    assert step.state.reason == "not found at the broker"


def test_resolve_unknown_acknowledged_and_not_found_is_cancelled() -> None:
    order = submitted().mark_unknown("lost while disconnected").state
    step = order.resolve_unknown(at_broker=False, reason="not in open or completed orders")
    assert step.entered is S.CANCELLED
    assert step.state.reason == "not in open or completed orders"


@pytest.mark.parametrize("status", [S.SUBMITTED, S.PARTIALLY_FILLED])
def test_resolve_unknown_resend_refused_once_the_broker_had_it(status: S) -> None:
    order = state_in(status).mark_unknown("lost").state
    with pytest.raises(IllegalTransition, match="a resend could place it twice"):
        order.resolve_unknown(at_broker=False, resend=True)


def test_resolve_unknown_resend_refused_after_a_cancel_request() -> None:
    order = state_in(S.UNKNOWN).request_cancel().state
    with pytest.raises(IllegalTransition, match="a cancel was requested"):
        order.resolve_unknown(at_broker=False, resend=True)


@pytest.mark.parametrize("status", [S.SUBMITTED, S.PARTIALLY_FILLED, *TERMINAL])
def test_resolve_is_only_for_pending_or_unknown_orders(status: S) -> None:
    with pytest.raises(IllegalTransition, match="only PENDING or UNKNOWN orders are resolved"):
        state_in(status).resolve_unknown(at_broker=True)


def test_resolve_at_broker_with_resend_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="resend applies only"):
        state_in(S.UNKNOWN).resolve_unknown(at_broker=True, resend=True)


# -- modifications ----------------------------------------------------------------------------


def test_modify_of_a_partly_filled_order_adjusts_the_remainder() -> None:
    step = state_in(S.PARTIALLY_FILLED).modify_quantity(D(70))
    assert step.changed
    assert step.entered is None
    assert step.state.quantity == 70
    assert step.state.remaining == 30
    assert step.state.on_execution(D(30), D(10)).state.status is S.FILLED


def test_modify_up_lets_more_fill() -> None:
    order = state_in(S.PARTIALLY_FILLED).modify_quantity(D(150)).state
    assert order.on_execution(D(100), D(10)).state.status is S.PARTIALLY_FILLED


@pytest.mark.parametrize("new_quantity", [D(40), D(30)])
def test_modify_to_at_or_below_filled_is_refused(new_quantity: Decimal) -> None:
    with pytest.raises(InvalidModification, match=r"must be above the filled quantity 40$"):
        state_in(S.PARTIALLY_FILLED).modify_quantity(new_quantity)


def test_modify_below_the_fill_ib_reports_is_refused() -> None:
    order = state_in(S.PARTIALLY_FILLED).on_broker_status("Submitted", D(60), D(40)).state
    with pytest.raises(InvalidModification, match=r"60 \(booked 40, IB reports 60\)"):
        order.modify_quantity(D(50))


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (S.PENDING, "IB has not acknowledged it"),
        (S.UNKNOWN, "reconciled with the broker first"),
        (S.CANCEL_REQUESTED, "a cancel was requested"),
        (S.FILLED, "order is FILLED"),
        (S.CANCELLED, "order is CANCELLED"),
        (S.REJECTED, "order is REJECTED"),
    ],
)
def test_modify_is_refused_unless_the_order_is_working(status: S, text: str) -> None:
    with pytest.raises(InvalidModification, match=text):
        state_in(status).modify_quantity(D(200))


def test_modify_to_the_same_quantity_changes_nothing() -> None:
    assert not submitted().modify_quantity(D("100.0")).changed


@pytest.mark.parametrize("new_quantity", [D(0), D(-5), D("NaN")])
def test_modify_to_a_non_positive_quantity_is_refused(new_quantity: Decimal) -> None:
    with pytest.raises(InvalidModification, match="quantity must be positive"):
        submitted().modify_quantity(new_quantity)


def test_a_confirmed_cut_whose_remainder_filled_before_the_answer_is_filled() -> None:
    # 100 -> 70 sent while 40 had filled; the last 30 filled before the answer came back
    order = state_in(S.PARTIALLY_FILLED).on_execution(D(30), D(10)).state

    step = order.modification_confirmed(D(70))

    assert step.state.quantity == 70
    assert step.entered is S.FILLED
    assert step.state.open_quantity == 0


def test_a_confirmed_modification_sets_the_new_total() -> None:
    step = state_in(S.PARTIALLY_FILLED).modification_confirmed(D(150))

    assert step.state.quantity == 150
    assert step.state.status is S.PARTIALLY_FILLED
    assert step.state.remaining == 110


def test_a_confirmed_total_below_the_booked_executions_keeps_them() -> None:
    step = state_in(S.PARTIALLY_FILLED).modification_confirmed(D(30))

    assert step.state.quantity == 40
    assert step.state.status is S.FILLED


def test_a_confirmed_modification_of_a_cancelled_order_stays_cancelled() -> None:
    order = state_in(S.PARTIALLY_FILLED).on_broker_status("Cancelled", D(40), D(0)).state

    step = order.modification_confirmed(D(70))

    assert step.state.status is S.CANCELLED
    assert step.state.quantity == 70


def test_an_execution_ib_counts_beyond_our_quantity_grows_the_order_so_it_can_be_booked() -> None:
    # 100 -> 150 at IB, answer not yet recorded; 100 booked, IB's cumulative is now 120
    order = state_in(S.PARTIALLY_FILLED).on_execution(D(60), D(10)).state
    assert order.status is S.FILLED
    with pytest.raises(Overfill):
        order.on_execution(D(20), D(10))

    grown = order.grown_by_broker(D(120)).state
    booked = grown.on_execution(D(20), D(10)).state

    assert booked.filled_quantity == 120
    assert booked.status is S.FILLED
    assert booked.modification_confirmed(D(150)).state.status is S.PARTIALLY_FILLED


def test_growing_to_a_count_within_the_quantity_changes_nothing() -> None:
    assert not submitted().grown_by_broker(D(100)).changed


# -- transitions, timestamps, invariants -----------------------------------------------------


def test_full_lifecycle_reports_each_status_entered_once() -> None:
    order = OrderState.new(QTY)
    entered: list[S] = []
    steps: list[Callable[[OrderState], Transition]] = [
        lambda o: o.sent(),
        lambda o: o.on_broker_status("PreSubmitted", D(0), QTY),
        lambda o: o.on_broker_status("Submitted", D(0), QTY),
        lambda o: o.on_execution(D(25), D(10)),
        lambda o: o.on_broker_status("Submitted", D(25), D(75)),
        lambda o: o.on_execution(D(25), D(10)),
        lambda o: o.on_broker_status("Filled", QTY, D(0)),
        lambda o: o.on_execution(D(50), D(10)),
    ]
    for step in steps:
        transition = step(order)
        order = transition.state
        if transition.entered is not None:
            entered.append(transition.entered)
    assert entered == [S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED]


def test_entered_status_compares_two_states() -> None:
    before = submitted()
    after = before.on_execution(D(1), D(1)).state
    assert entered_status(before, after) is S.PARTIALLY_FILLED
    assert entered_status(after, after) is None


@pytest.mark.parametrize(
    ("status", "column"),
    [
        (S.PENDING, "pending_at"),
        (S.SUBMITTED, "submitted_at"),
        (S.PARTIALLY_FILLED, "partially_filled_at"),
        (S.FILLED, "filled_at"),
        (S.CANCEL_REQUESTED, "cancel_requested_at"),
        (S.CANCELLED, "cancelled_at"),
        (S.REJECTED, "rejected_at"),
        (S.UNKNOWN, "unknown_at"),
    ],
)
def test_timestamp_column_names(status: S, column: str) -> None:
    assert timestamp_column(status) == column


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantity": D(0)}, "quantity must be a positive number"),
        ({"quantity": D("Infinity")}, "quantity must be a positive number"),
        ({"quantity": QTY, "filled_quantity": D(101)}, "is above quantity"),
        ({"quantity": QTY, "filled_quantity": D(-1)}, "filled_quantity must be >= 0"),
        ({"quantity": QTY, "filled_notional": D(5)}, "filled_notional must be 0"),
        ({"quantity": QTY, "broker_filled": D(-1)}, "broker_filled must be >= 0"),
        ({"quantity": QTY, "broker_remaining": D(-1)}, "broker_remaining must be >= 0"),
    ],
)
def test_state_refuses_inconsistent_facts(fields: dict[str, Decimal], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OrderState(**fields)  # type: ignore[arg-type]


def test_state_rebuilt_from_stored_facts_derives_its_status() -> None:
    order = OrderState(
        quantity=QTY,
        filled_quantity=D(40),
        filled_notional=D(400),
        acknowledged=True,
        outcome=BrokerOutcome.CANCELLED,
    )
    assert order.status is S.CANCELLED
    assert order.avg_fill_price == 10


def test_domain_errors_share_one_base() -> None:
    for error in (IllegalTransition, Overfill, InvalidModification):
        assert issubclass(error, OrderDomainError)
    assert not issubclass(OrderDomainError, ValueError)


def test_order_accepted_by_the_bridge_but_never_seen_by_ib_is_rejected() -> None:
    step = submitted().never_reached_broker()
    assert step.state.status is S.REJECTED
    assert step.entered is S.REJECTED
    assert step.state.open_quantity == 0
    assert step.state.reason is not None
    assert "never reached IB" in step.state.reason


def test_order_ib_reported_on_cannot_be_taken_for_one_ib_never_saw() -> None:
    acknowledged = submitted().on_broker_status("Submitted", D(0), QTY).state
    with pytest.raises(IllegalTransition):
        acknowledged.never_reached_broker()
    filled = submitted().on_execution(D(10), D(10)).state
    with pytest.raises(IllegalTransition):
        filled.never_reached_broker()
