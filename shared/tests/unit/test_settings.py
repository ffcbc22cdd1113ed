"""CommonSettings: defaults, and invalid values naming their environment variable."""

from __future__ import annotations

import os

import pytest

from ibflow.settings import DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, CommonSettings, SettingsError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IBFLOW_ variable from the surrounding environment leaks into a test."""
    for name in list(os.environ):
        if name.startswith("IBFLOW_"):
            monkeypatch.delenv(name)


def test_defaults_load() -> None:
    settings = CommonSettings.load()
    assert settings.service_name == "ibflow"
    assert settings.nats_url == DEFAULT_NATS_URL
    assert settings.nats_creds is None
    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 9100)
    assert settings.shutdown_grace_seconds == 10.0


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBFLOW_NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("IBFLOW_LOG_LEVEL", "debug")
    monkeypatch.setenv("IBFLOW_HTTP_PORT", "0")
    settings = CommonSettings.load()
    assert settings.nats_url == "nats://a:4222,nats://b:4222"
    assert settings.log_level == "DEBUG"
    assert settings.http_port == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IBFLOW_HTTP_PORT", "not-a-port"),
        ("IBFLOW_HTTP_PORT", "70000"),
        ("IBFLOW_NATS_URL", "http://127.0.0.1:4222"),
        ("IBFLOW_NATS_URL", "not a url"),
        ("IBFLOW_LOG_LEVEL", "LOUD"),
        ("IBFLOW_LOG_FORMAT", "xml"),
        ("IBFLOW_SHUTDOWN_GRACE_SECONDS", "0"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        CommonSettings.load()


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBFLOW_HTTP_PORT", "x")
    monkeypatch.setenv("IBFLOW_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError) as info:
        CommonSettings.load()
    assert "IBFLOW_HTTP_PORT" in str(info.value)
    assert "IBFLOW_LOG_LEVEL" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:hunter2-secret@db.example:3306/ibflow",
        "postgresql://admin:hunter2-secret@db.example:notaport/ibflow",
        "hunter2-secret",
    ],
)
def test_bad_database_url_is_never_echoed(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("IBFLOW_DATABASE_URL", url)
    with pytest.raises(SettingsError) as info:
        CommonSettings.load()
    message = str(info.value)
    assert "IBFLOW_DATABASE_URL" in message
    assert "hunter2" not in message
    assert "<secret>" in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_database_url_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBFLOW_DATABASE_URL", "postgresql://u:hunter2-secret@db/ibflow")
    settings = CommonSettings.load()
    assert "hunter2" not in repr(settings)
    assert "hunter2" in settings.database_url.get_secret_value()
