"""Prometheus metrics of the bus layer, in the default registry.

Labels are kept to a small set: subjects are reduced to their first four tokens
(``ibflow.evt.v1.order_filled``, never the portfolio id), consumers by durable name.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

SUBJECT_ROOT_TOKENS: Final = 4

PUBLISHED: Final = Counter(
    "ibflow_bus_published_total",
    "Positive PubAcks from JetStream (duplicates included), by subject root.",
    ["subject_root"],
)
PUBLISH_DUPLICATES: Final = Counter(
    "ibflow_bus_publish_duplicates_total",
    "Publishes JetStream reported as duplicates of an earlier Nats-Msg-Id (not stored again).",
)
CONSUMED: Final = Counter(
    "ibflow_bus_consumed_total",
    "Messages delivered to a consumer runner (redeliveries included).",
    ["consumer"],
)
REDELIVERED: Final = Counter(
    "ibflow_bus_redelivered_total",
    "Deliveries with num_delivered > 1.",
    ["consumer"],
)
DEAD_LETTERED: Final = Counter(
    "ibflow_bus_dead_lettered_total",
    "Messages a consumer gave up on and published to its dead-letter subject.",
    ["consumer"],
)
HANDLER_SECONDS: Final = Histogram(
    "ibflow_bus_handler_seconds",
    "Time spent in a consumer's handler, per message.",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CONNECTED: Final = Gauge(
    "ibflow_bus_connected",
    "1 while the named NATS connection is up, 0 otherwise.",
    ["connection"],
)


def subject_root(subject: str) -> str:
    """The first four tokens of ``subject``: the label value used for it."""
    return ".".join(subject.split(".", SUBJECT_ROOT_TOKENS)[:SUBJECT_ROOT_TOKENS])
