"""``ibflow-scheduler plan``: a day's occurrences without NATS, as text or JSON."""

from __future__ import annotations

import json
import os

import pytest

from ibflow_scheduler.app import main


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IBFLOW_"):
            monkeypatch.delenv(name)


def run_main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    code = exit_info.value.code
    return code if isinstance(code, int) else 1


def test_plan_json_lists_name_new_york_time_and_utc_instant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(["plan", "--date", "2026-11-27", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[:2] == [
        {"name": "premarket", "et": "2026-11-27T09:00:00-05:00", "utc": "2026-11-27T14:00:00Z"},
        {
            "name": "morning_entry",
            "et": "2026-11-27T09:15:00-05:00",
            "utc": "2026-11-27T14:15:00Z",
        },
    ]
    close_out = [row for row in rows if row["name"] == "close_out"]
    assert close_out == [
        {"name": "close_out", "et": "2026-11-27T12:55:00-05:00", "utc": "2026-11-27T17:55:00Z"}
    ]
    assert all(set(row) == {"name", "et", "utc"} for row in rows)
    assert len(rows) == 84


def test_plan_json_in_summer_time_carries_the_edt_offset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(["plan", "--date", "2026-03-09", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert first == {
        "name": "premarket",
        "et": "2026-03-09T09:00:00-04:00",
        "utc": "2026-03-09T13:00:00Z",
    }


def test_plan_json_of_a_closed_day_is_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["plan", "--date", "2026-11-26", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_plan_text_prints_one_line_per_occurrence(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["plan", "--date", "2026-12-24"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2026-12-24: NYSE session 09:30-13:00 EST (half day), 84 events"
    assert "close_out:2026-12-24:0           12:55 EST  2026-12-24T17:55:00Z" in out


def test_plan_text_of_a_weekend_says_the_exchange_is_closed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(["plan", "--date", "2026-11-28"]) == 0
    assert capsys.readouterr().out.strip() == "2026-11-28: no NYSE session (the exchange is closed)"


def test_plan_follows_the_configured_schedule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IBFLOW_SCHEDULE__MORNING_ENTRY__OFFSET_MINUTES", "-20")
    assert run_main(["plan", "--date", "2026-11-23", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {
        "name": "morning_entry",
        "et": "2026-11-23T09:10:00-05:00",
        "utc": "2026-11-23T14:10:00Z",
    }


def test_plan_refuses_a_bad_date_and_an_invalid_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["plan", "--date", "2026-13-01"]) == 2
    assert "not a date" in capsys.readouterr().err
    monkeypatch.setenv("IBFLOW_SCHEDULE__POSITION_CHECK__PERIOD_MINUTES", "0")
    assert run_main(["plan", "--date", "2026-11-23"]) == 2
    assert "IBFLOW_SCHEDULE__POSITION_CHECK__PERIOD_MINUTES" in capsys.readouterr().err


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["replan"]) == 2
    assert "invalid choice" in capsys.readouterr().err
