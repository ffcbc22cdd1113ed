"""Scheduler settings: per-event overrides from the environment, refused configurations
naming the setting, and exit status 2 at start."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from ibflow.runtime import EXIT_INVALID_SETTINGS, load_settings
from ibflow.settings import SettingsError
from ibflow_scheduler.domain.calendar import NyseCalendar
from ibflow_scheduler.domain.schedule import plan
from ibflow_scheduler.settings import SchedulerSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("IBFLOW_"):
            monkeypatch.delenv(name)


def test_defaults_are_zimuabulls_schedule_and_a_ten_second_lease() -> None:
    settings = SchedulerSettings.load()
    assert settings.service_name == "scheduler"
    assert settings.http_port == 9104
    assert (settings.lease_ttl_seconds, settings.lease_renew_seconds) == (10, 3.0)
    assert settings.schedule_config().problems() == []
    assert settings.replica_id


def test_one_field_of_one_event_is_overridden_from_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IBFLOW_SCHEDULE__MORNING_ENTRY__OFFSET_MINUTES", "-10")
    monkeypatch.setenv("IBFLOW_SCHEDULE__CLOSE_OUT__GRACE_MINUTES", "2")
    monkeypatch.setenv("IBFLOW_SCHEDULE__PREMARKET__ENABLED", "false")
    config = SchedulerSettings.load().schedule_config()
    assert config.rule("morning_entry").offset == timedelta(minutes=-10)
    assert config.rule("morning_entry").grace == timedelta(minutes=15)
    assert config.rule("close_out").grace == timedelta(minutes=2)
    assert not config.rule("premarket").enabled


def test_the_schedule_can_be_given_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "IBFLOW_SCHEDULE",
        '{"position_check": {"period_minutes": 5}, "market_open": {"grace_minutes": "close"},'
        ' "stale_order_sweep": {"final_offset_minutes": null}}',
    )
    config = SchedulerSettings.load().schedule_config()
    assert config.rule("position_check").period == timedelta(minutes=5)
    assert config.rule("market_open").grace is None
    assert config.rule("stale_order_sweep").final_offset is None
    from datetime import date  # noqa: PLC0415

    sweeps = [
        o.local_time.time()
        for o in plan(config, NyseCalendar(), date(2026, 11, 23))
        if o.name == "stale_order_sweep"
    ]
    assert sweeps[-1] == time(15, 45)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("IBFLOW_SCHEDULE__LUNCH__OFFSET_MINUTES", "0", "unknown session event(s) lunch"),
        ("IBFLOW_SCHEDULE__POSITION_CHECK__PERIOD_MINUTES", "0", "PERIOD_MINUTES"),
        ("IBFLOW_SCHEDULE__RECONCILE__PERIOD_MINUTES", "-5", "RECONCILE__PERIOD_MINUTES"),
        (
            "IBFLOW_SCHEDULE__CLOSE_OUT__OFFSET_MINUTES",
            "10",
            "IBFLOW_SCHEDULE__CLOSE_OUT__OFFSET_MINUTES: puts the close-out at 16:10 ET",
        ),
        (
            "IBFLOW_SCHEDULE__PREMARKET__OFFSET_MINUTES",
            "-400",
            "IBFLOW_SCHEDULE__PREMARKET__OFFSET_MINUTES: puts premarket at 02:50 ET",
        ),
        ("IBFLOW_SCHEDULE__MORNING_ENTRY__AT", "09:20", "MORNING_ENTRY__AT"),
        ("IBFLOW_SCHEDULE__MARKET_OPEN__GRACE_MINUTES", "-1", "GRACE_MINUTES"),
        ("IBFLOW_LEASE_RENEW_SECONDS", "6", "IBFLOW_LEASE_RENEW_SECONDS"),
        ("IBFLOW_LEASE_TTL_SECONDS", "0", "IBFLOW_LEASE_TTL_SECONDS"),
    ],
)
def test_invalid_configuration_fails_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        SchedulerSettings.load()
    assert named in str(error.value)


def test_the_service_exits_with_status_2_on_invalid_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IBFLOW_SCHEDULE__CLOSE_OUT__OFFSET_MINUTES", "10")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(SchedulerSettings)
    assert exit_info.value.code == EXIT_INVALID_SETTINGS
    assert "IBFLOW_SCHEDULE__CLOSE_OUT__OFFSET_MINUTES" in capsys.readouterr().err
