"""ibflow.runtime.logs: JSON/text lines with service name and correlation ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from ibflow.runtime.logs import bind_correlation, configure_logging, current_correlation


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where configure_logging writes during the test; the handler is removed afterwards."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("unit-svc", "DEBUG", "json", buffer, capture_warnings=False)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_has_the_standard_fields(stream: io.StringIO) -> None:
    logging.getLogger("ibflow.test").info("hello %s", "world", extra={"order_id": "o-1"})
    (line,) = _lines(stream)
    assert list(line)[:7] == [
        "timestamp",
        "level",
        "logger",
        "service",
        "message",
        "correlation_id",
        "causation_id",
    ]
    assert line["level"] == "INFO"
    assert line["logger"] == "ibflow.test"
    assert line["service"] == "unit-svc"
    assert line["message"] == "hello world"
    assert line["correlation_id"] is None
    assert line["order_id"] == "o-1"
    assert str(line["timestamp"]).endswith("+00:00")


def test_bound_ids_appear_and_nesting_restores(stream: io.StringIO) -> None:
    log = logging.getLogger("ibflow.test")
    with bind_correlation("corr-1", "cause-1"):
        log.info("outer")
        with bind_correlation("corr-2"):
            log.info("inner")
        log.info("outer again")
    log.info("unbound")
    ids = [(line["correlation_id"], line["causation_id"]) for line in _lines(stream)]
    assert ids == [("corr-1", "cause-1"), ("corr-2", None), ("corr-1", "cause-1"), (None, None)]
    assert current_correlation() == (None, None)


async def test_ids_are_per_task(stream: io.StringIO) -> None:
    log = logging.getLogger("ibflow.test")

    async def handle(message_id: str) -> None:
        with bind_correlation(f"corr-{message_id}", message_id):
            await asyncio.sleep(0)
            log.info("handled %s", message_id)

    await asyncio.gather(handle("a"), handle("b"))
    seen = {
        (line["message"], line["correlation_id"])
        for line in _lines(stream)
        if line["logger"] == "ibflow.test"
    }
    assert seen == {("handled a", "corr-a"), ("handled b", "corr-b")}


def test_exceptions_are_in_the_json(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("ibflow.test").exception("failed")
    (line,) = _lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in str(line["exc_info"])


def test_text_format_for_humans() -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("unit-svc", "INFO", "text", buffer, capture_warnings=False)
    try:
        with bind_correlation("corr-9", "cause-9"):
            logging.getLogger("ibflow.test").warning("careful")
        logging.getLogger("ibflow.test").debug("not shown")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    (text,) = buffer.getvalue().splitlines()
    assert "WARNING" in text
    assert "ibflow.test [corr=corr-9 cause=cause-9]: careful" in text


def test_reconfiguring_replaces_the_handler() -> None:
    root = logging.getLogger()
    level = root.level
    first = configure_logging("a", "INFO", "json", io.StringIO(), capture_warnings=False)
    second = configure_logging("b", "INFO", "json", io.StringIO(), capture_warnings=False)
    try:
        assert first not in root.handlers
        assert second in root.handlers
    finally:
        root.removeHandler(second)
        root.setLevel(level)
