"""Every NATS subject and stream of ibflow, versioned, as ``Final`` constants and builders.

Layout::

    ibflow.evt.v1.<kind>.<portfolio>   events (JetStream stream IBFLOW_EVENTS)
    ibflow.cmd.v1.<verb>               commands, request/reply on core NATS
    ibflow.md.v1.<symbol>              market data, core NATS, never persisted
    ibflow.dlq.v1.<consumer>           dead letters (JetStream stream IBFLOW_DLQ)
"""

from __future__ import annotations

from typing import Final

from ibflow.bus.specs import StreamSpec

ROOT: Final = "ibflow"
VERSION: Final = "v1"

EVENTS_PREFIX: Final = f"{ROOT}.evt.{VERSION}"
COMMANDS_PREFIX: Final = f"{ROOT}.cmd.{VERSION}"
MARKET_DATA_PREFIX: Final = f"{ROOT}.md.{VERSION}"
DEAD_LETTER_PREFIX: Final = f"{ROOT}.dlq.{VERSION}"

EVENTS_STREAM: Final = StreamSpec(
    name="IBFLOW_EVENTS",
    subjects=(f"{EVENTS_PREFIX}.>",),
    description="Every ibflow event, durable; replayed by consumers after restarts.",
)
DEAD_LETTER_STREAM: Final = StreamSpec(
    name="IBFLOW_DLQ",
    subjects=(f"{DEAD_LETTER_PREFIX}.>",),
    description="Messages a consumer gave up on, with the reason and the original payload.",
    max_age_seconds=30 * 24 * 3600.0,
)


def token(value: str) -> str:
    """Check that ``value`` is usable as one subject token (no dots, wildcards or spaces)."""
    if not value or any(ch in value for ch in ".*> \t\r\n"):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def dead_letter(consumer: str) -> str:
    """Subject of the dead letters of durable consumer ``consumer``."""
    return f"{DEAD_LETTER_PREFIX}.{token(consumer)}"
