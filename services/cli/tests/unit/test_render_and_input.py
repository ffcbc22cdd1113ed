"""What the CLI prints and how it refuses bad input, without a bus."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from rich.console import Console

from ibflow.contracts import (
    OccurrenceState,
    ScheduledOccurrence,
    SessionSchedule,
    SessionScheduleReported,
    SubmitOrder,
)
from ibflow_cli import render
from ibflow_cli.app import _decimal, _portfolio_scope
from ibflow_cli.bus import EXIT_USAGE, CliError, build

T0 = dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.UTC)


def text_of(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def occurrence(name: str, at: dt.datetime, state: OccurrenceState) -> ScheduledOccurrence:
    return ScheduledOccurrence(
        name=name,
        occurrence_id=f"{name}:{at.date()}:0",
        scheduled_for=at,
        deadline=at + dt.timedelta(minutes=5),
        state=state,
    )


def session(day: dt.date, *occurrences: ScheduledOccurrence) -> SessionSchedule:
    start = dt.datetime.combine(day, dt.time(14, 30), dt.UTC)
    return SessionSchedule(
        session_date=day,
        session_open=start,
        session_close=start + dt.timedelta(hours=6, minutes=30),
        early_close=False,
        occurrences=occurrences,
    )


def test_next_session_events_lists_each_pending_event_once_in_time_order() -> None:
    today = session(
        T0.date(),
        occurrence("morning_entry", T0 - dt.timedelta(minutes=15), OccurrenceState.EMITTED),
        occurrence("reconcile", T0 + dt.timedelta(minutes=5), OccurrenceState.PENDING),
        occurrence("reconcile", T0 + dt.timedelta(minutes=10), OccurrenceState.PENDING),
        occurrence("close_out", T0 + dt.timedelta(hours=6), OccurrenceState.PENDING),
    )
    tomorrow = session(
        T0.date() + dt.timedelta(days=1),
        occurrence(
            "morning_entry", T0 + dt.timedelta(hours=23, minutes=45), OccurrenceState.PENDING
        ),
    )
    reply = SessionScheduleReported(as_of=T0, session=today, next_session=tomorrow)
    lines = [
        line for line in text_of(render.next_session_events(reply)).splitlines() if "│" in line
    ]
    names = [line.split("│")[1].strip() for line in lines]
    assert names == ["reconcile", "close_out", "morning_entry"]
    assert "0h05m" in lines[0]
    assert "23h45m" in lines[2]


def test_event_line_shows_type_subject_and_the_telling_fields_only() -> None:
    line = render.event_line(
        "ibflow.evt.v1.order.updated.demo",
        "OrderBookUpdated",
        {
            "ts_event": "2026-11-21T21:07:43.123456Z",
            "portfolio_id": "demo",
            "client_order_id": "op-1",
            "status": "FILLED",
            "event_id": "not shown",
            "limit_price": None,
        },
    ).plain
    assert line.startswith("21:07:43.123")
    assert "OrderBookUpdated" in line
    assert "client_order_id=op-1" in line
    assert "status=FILLED" in line
    assert "event_id" not in line
    assert "limit_price" not in line
    whole_second = render.event_line("s", "ExecutionReported", {"ts_event": "2026-11-21T21:15:29Z"})
    assert whole_second.plain.startswith("21:15:29.000")


def test_bad_input_names_the_field_and_the_rule() -> None:
    with pytest.raises(CliError) as caught:
        build(
            SubmitOrder,
            portfolio_id="demo",
            client_order_id="x",
            symbol="AAPL",
            side="BUY",
            order_type="LMT",
            quantity=Decimal(1),
            purpose="manual",
            requested_by="operator:t",
        )
    assert caught.value.code == EXIT_USAGE
    assert "LMT order needs limit_price" in caught.value.message
    with pytest.raises(CliError, match=r"--limit: not a decimal number \('abc'\)"):
        _decimal("--limit", "abc")
    with pytest.raises(CliError, match="not a finite number"):
        _decimal("quantity", "NaN")
    assert _decimal("quantity", "10.5") == Decimal("10.5")


@pytest.mark.parametrize(("portfolio", "everyone"), [(None, False), ("demo", True)])
def test_one_portfolio_or_all_but_not_both_nor_neither(
    portfolio: str | None, everyone: bool
) -> None:
    with pytest.raises(CliError, match="give a portfolio id or --all"):
        _portfolio_scope(portfolio, everyone)
    assert _portfolio_scope("demo", False) == "demo"
    assert _portfolio_scope(None, True) is None
