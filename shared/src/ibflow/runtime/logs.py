"""Structured logging for ibflow processes.

One handler on the root logger, writing to stderr either JSON (one object per line,
for machines) or text (for humans). Every record carries the service name and the
``correlation_id``/``causation_id`` bound by the message being handled::

    with bind_correlation(envelope.correlation_id, envelope.message_id):
        log.info("order accepted")  # both ids end up in the JSON line

The ids live in :mod:`contextvars`, so each asyncio task sees only its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

_correlation_id: ContextVar[str | None] = ContextVar("ibflow_correlation_id", default=None)
_causation_id: ContextVar[str | None] = ContextVar("ibflow_causation_id", default=None)

_JSON_FIELDS: Final = ("levelname", "name", "service", "message", "correlation_id", "causation_id")
_RENAMED: Final = {"levelname": "level", "name": "logger"}
_NOT_EXTRA: Final = (*RESERVED_ATTRS, "taskName", "color_message", *_JSON_FIELDS)
"""Record attributes never copied as extra JSON fields (``color_message`` is uvicorn's)."""
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)-8s %(name)s%(ids)s: %(message)s"


@contextmanager
def bind_correlation(correlation_id: str | None, causation_id: str | None = None) -> Iterator[None]:
    """Attach ``correlation_id`` and ``causation_id`` to every log record inside the block.

    Nested blocks override and then restore the outer ids.
    """
    corr_token = _correlation_id.set(correlation_id)
    cause_token = _causation_id.set(causation_id)
    try:
        yield
    finally:
        _causation_id.reset(cause_token)
        _correlation_id.reset(corr_token)


def current_correlation() -> tuple[str | None, str | None]:
    """The ``(correlation_id, causation_id)`` bound in the current context, if any."""
    return _correlation_id.get(), _causation_id.get()


class ContextFilter(logging.Filter):
    """Adds ``service``, ``correlation_id`` and ``causation_id`` to each record."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record`` (never drops it)."""
        correlation_id, causation_id = current_correlation()
        record.service = self.service_name
        record.correlation_id = correlation_id
        record.causation_id = causation_id
        ids = " ".join(
            f"{key}={value}"
            for key, value in (("corr", correlation_id), ("cause", causation_id))
            if value
        )
        record.ids = f" [{ids}]" if ids else ""
        return True


class _JsonFormatter(JsonFormatter):
    """JSON lines: timestamp, level, logger, service, message, correlation ids, then extras."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = None  # first key; filled in by the base class
        super().add_fields(log_data, record, message_dict)
        log_data.pop("ids", None)


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter for ``fmt``: JSON lines or human-readable text."""
    if fmt == "json":
        return _JsonFormatter(
            list(_JSON_FIELDS),
            rename_fields=dict(_RENAMED),
            reserved_attrs=list(_NOT_EXTRA),
            timestamp="timestamp",
        )
    return logging.Formatter(_TEXT_FORMAT)


class _IbflowHandler(logging.StreamHandler[TextIO]):
    """Marker class, so :func:`configure_logging` can replace its own handler."""


def configure_logging(
    service_name: str,
    level: int | str = logging.INFO,
    fmt: LogFormat = "json",
    stream: TextIO | None = None,
    *,
    capture_warnings: bool = True,
) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) in ``fmt``.

    Replaces a handler installed by an earlier call; other handlers are left alone.
    Python warnings are routed to logging too unless ``capture_warnings`` is false.
    Returns the installed handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _IbflowHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _IbflowHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter(service_name))
    handler.setFormatter(make_formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    if capture_warnings:
        logging.captureWarnings(True)
    return handler
