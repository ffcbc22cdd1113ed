"""The operators' commands on a real nats-server: ``session.trigger`` (manual events with
the next sequence number, audited, refused outside the session unless forced) and
``session.schedule`` (every occurrence of today's and the next session, with its state)."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ibflow.bus import request
from ibflow.bus.errors import RemoteError
from ibflow.bus.subjects import REQUEST_SESSION_SCHEDULE, TRIGGER_SESSION_EVENT
from ibflow.contracts import (
    INVALID_REQUEST,
    REFUSED,
    CommandAccepted,
    OccurrenceState,
    RequestSessionSchedule,
    SessionScheduleReported,
    TriggerSessionEvent,
)

from .conftest import Fleet, copies, instants, ny, stored_session_events

OPERATOR = "user:alice"


async def trigger(nc: NatsClient, name: str, **fields: object) -> CommandAccepted:
    cmd = TriggerSessionEvent(name=name, requested_by=OPERATOR, reason="test", **fields)  # type: ignore[arg-type]
    return await request(nc, TRIGGER_SESSION_EVENT, cmd, CommandAccepted, timeout=5.0)


async def test_manual_triggers_take_the_next_sequence_number_of_the_day(
    fleet: Fleet, nc: NatsClient, events_js: JetStreamContext
) -> None:
    await fleet.start("alpha")
    await fleet.start("beta")
    await fleet.wait_for_leader()
    await fleet.run_through([m for m in instants() if m <= ny(10, 0)])

    first = await trigger(nc, "morning_entry")
    second = await trigger(nc, "morning_entry")
    check = await trigger(nc, "position_check")

    assert (first.detail, second.detail) == (
        "morning_entry:2026-11-23:1",
        "morning_entry:2026-11-23:2",
    )
    assert check.detail == "position_check:2026-11-23:39"  # after the 39 scheduled slots
    events = {e.occurrence_id: e for e in await stored_session_events(events_js)}
    manual = events["morning_entry:2026-11-23:1"]
    assert manual.manual
    assert not manual.late
    assert manual.emitted_at == ny(10, 0)
    assert manual.causation_id == first.command_id
    assert not events["morning_entry:2026-11-23:0"].manual


async def test_a_repeated_trigger_command_is_answered_as_a_duplicate_and_emitted_once(
    fleet: Fleet, nc: NatsClient, events_js: JetStreamContext
) -> None:
    fleet.clock.set(ny(11, 0))
    await fleet.start("alpha")
    await fleet.settle()
    cmd = TriggerSessionEvent(name="reconcile", requested_by=OPERATOR, event_id=uuid.uuid4())

    first = await request(nc, TRIGGER_SESSION_EVENT, cmd, CommandAccepted)
    again = await request(nc, TRIGGER_SESSION_EVENT, cmd, CommandAccepted)

    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.detail == again.detail == "reconcile:2026-11-23:79"
    assert copies(await stored_session_events(events_js))["reconcile:2026-11-23:79"] == 1


@pytest.mark.parametrize("name", ["close_out", "morning_entry"])
async def test_money_moving_triggers_outside_the_session_are_refused_unless_forced(
    fleet: Fleet, nc: NatsClient, events_js: JetStreamContext, name: str
) -> None:
    fleet.clock.set(ny(8, 0))
    await fleet.start("alpha")
    await fleet.settle()

    with pytest.raises(RemoteError) as refused:
        await trigger(nc, name)
    assert refused.value.code == REFUSED
    assert "outside the session" in refused.value.message
    assert "force" in refused.value.message

    forced = await trigger(nc, name, force=True)
    assert forced.detail == f"{name}:2026-11-23:1"
    events = await stored_session_events(events_js)
    assert [e.occurrence_id for e in events] == [f"{name}:2026-11-23:1"]


async def test_on_a_weekend_a_close_out_is_refused_but_a_reconciliation_is_not(
    fleet: Fleet, nc: NatsClient
) -> None:
    fleet.clock.set(ny(11, 0).replace(day=28))  # Saturday: the last session is Friday's
    await fleet.start("alpha")
    await fleet.settle()

    with pytest.raises(RemoteError) as refused:
        await trigger(nc, "close_out")
    assert refused.value.code == REFUSED
    reconcile = await trigger(nc, "reconcile")
    assert reconcile.detail == "reconcile:2026-11-27:43"  # after the half day's 43 slots


async def test_a_trigger_for_a_closed_day_is_refused_even_when_forced(
    fleet: Fleet, nc: NatsClient
) -> None:
    fleet.clock.set(ny(11, 0))
    await fleet.start("alpha")
    await fleet.settle()
    with pytest.raises(RemoteError) as refused:
        await trigger(nc, "reconcile", session_date=date(2026, 11, 26), force=True)
    assert refused.value.code == REFUSED
    assert "exchange is closed" in refused.value.message


async def test_a_trigger_for_an_unknown_event_gets_an_error_reply(
    fleet: Fleet, nc: NatsClient
) -> None:
    await fleet.start("alpha")
    await fleet.settle()
    with pytest.raises(RemoteError) as error:
        await trigger(nc, "lunch_break")
    assert error.value.code == INVALID_REQUEST
    assert "unknown session event 'lunch_break'" in error.value.message


async def test_the_schedule_shows_todays_and_the_next_sessions_occurrences_with_their_state(
    fleet: Fleet, nc: NatsClient
) -> None:
    fleet.clock.set(ny(9, 32))  # started two minutes after the open
    await fleet.start("alpha")
    await fleet.settle()
    await fleet.run_through([ny(9, 40)])
    await fleet.start("beta")  # any replica answers

    report = await request(
        nc, REQUEST_SESSION_SCHEDULE, RequestSessionSchedule(), SessionScheduleReported
    )

    assert report.as_of == ny(9, 40)
    assert report.leader == "alpha"
    assert report.session is not None
    assert report.session.session_date == date(2026, 11, 23)
    states = {o.occurrence_id: o for o in report.session.occurrences}
    assert len(states) == 150
    assert states["premarket:2026-11-23:0"].state is OccurrenceState.SKIPPED
    assert "beyond its grace" in (states["morning_entry:2026-11-23:0"].reason or "")
    assert states["market_open:2026-11-23:0"].state is OccurrenceState.EMITTED
    assert states["market_open:2026-11-23:0"].late
    assert states["market_open:2026-11-23:0"].emitted_at == ny(9, 32)
    assert states["position_check:2026-11-23:1"].state is OccurrenceState.EMITTED
    assert not states["position_check:2026-11-23:1"].late
    assert states["position_check:2026-11-23:2"].state is OccurrenceState.PENDING
    assert states["reconcile:2026-11-23:1"].state is OccurrenceState.SKIPPED
    assert states["reconcile:2026-11-23:1"].reason == "superseded by reconcile:2026-11-23:2"
    assert states["close_out:2026-11-23:0"].deadline == ny(16, 0)
    following = report.next_session
    assert following.session_date == date(2026, 11, 24)
    assert {o.state for o in following.occurrences} == {OccurrenceState.PENDING}


async def test_the_schedule_of_a_holiday_has_no_session_and_names_the_next_half_day(
    fleet: Fleet, nc: NatsClient
) -> None:
    fleet.clock.set(ny(9, 40))
    await fleet.start("alpha")
    await fleet.settle()
    await trigger(nc, "reconcile")

    report = await request(
        nc,
        REQUEST_SESSION_SCHEDULE,
        RequestSessionSchedule(session_date=date(2026, 11, 26)),
        SessionScheduleReported,
    )
    assert report.session is None
    assert report.next_session.session_date == date(2026, 11, 27)
    assert report.next_session.early_close
    today = await request(
        nc, REQUEST_SESSION_SCHEDULE, RequestSessionSchedule(), SessionScheduleReported
    )
    assert today.session is not None
    manual = [o for o in today.session.occurrences if o.manual]
    assert [(o.occurrence_id, o.state) for o in manual] == [
        ("reconcile:2026-11-23:79", OccurrenceState.EMITTED)
    ]
