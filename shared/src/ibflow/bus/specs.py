"""Declarative specs of JetStream streams and durable consumers.

Services declare what they need as :class:`StreamSpec` / :class:`ConsumerSpec`
values; :mod:`ibflow.bus.provision` creates them idempotently and reports drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

DEFAULT_DUPLICATE_WINDOW_SECONDS: Final = 120.0
"""JetStream's default ``Nats-Msg-Id`` window; business-key dedupe in the DB covers the rest."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A JetStream stream: name, captured subjects and retention."""

    name: str
    subjects: tuple[str, ...]
    description: str = ""
    storage: Literal["file", "memory"] = "file"
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    max_age_seconds: float = 7 * 24 * 3600.0
    max_bytes: int = -1
    max_msgs: int = -1
    duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS
    num_replicas: int = 1


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer on one stream.

    ``filter_subjects`` narrows what it sees; ``max_deliver`` bounds redeliveries
    (after that the runner dead-letters the message with the reason).
    """

    stream: str
    durable: str
    filter_subjects: tuple[str, ...] = ()
    description: str = ""
    ack_wait_seconds: float = 30.0
    max_deliver: int = 20
    max_ack_pending: int = 1000
    deliver_policy: Literal["all", "new", "last", "last_per_subject"] = "all"
    backoff_seconds: tuple[float, ...] = field(default=())
