"""Provisioning streams and consumers against a real nats-server: idempotence and drift."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ibflow.bus import (
    ConfigDriftError,
    ConsumerSpec,
    FieldChange,
    ProvisioningError,
    StreamSpec,
    ensure_consumer,
    ensure_stream,
    provision,
)
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_STREAM

pytestmark = pytest.mark.integration

CONSUMER = ConsumerSpec(
    stream=EVENTS_STREAM.name,
    durable="order-manager",
    filter_subjects=("ibflow.evt.v1.order_filled.>", "ibflow.evt.v1.order_status.>"),
    description="fills and statuses",
    ack_wait_seconds=10.0,
    max_deliver=7,
    max_ack_pending=200,
)


@pytest.fixture
def js(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream()


def fields(changes: Iterable[FieldChange]) -> set[str]:
    return {change.field for change in changes}


async def test_provisioning_is_idempotent(js: JetStreamContext) -> None:
    backoff = replace(CONSUMER, durable="with-backoff", backoff_seconds=(0.5, 2.0, 10.0))
    first = await provision(js, [EVENTS_STREAM, DEAD_LETTER_STREAM], [CONSUMER, backoff])
    assert [(r.kind, r.name, r.action) for r in first] == [
        ("stream", "IBFLOW_EVENTS", "created"),
        ("stream", "IBFLOW_DLQ", "created"),
        ("consumer", "order-manager", "created"),
        ("consumer", "with-backoff", "created"),
    ]
    for _ in range(2):
        again = await provision(js, [EVENTS_STREAM, DEAD_LETTER_STREAM], [CONSUMER, backoff])
        assert [r.action for r in again] == ["unchanged"] * 4
        assert all(r.changes == () for r in again)

    info = await js.consumer_info(EVENTS_STREAM.name, "order-manager")
    assert info.config.ack_policy == "explicit"
    assert info.config.deliver_subject is None  # a pull consumer
    assert info.config.ack_wait == 10.0
    assert info.config.max_deliver == 7
    assert sorted(info.config.filter_subjects or []) == sorted(CONSUMER.filter_subjects)
    stream = await js.stream_info(EVENTS_STREAM.name)
    assert stream.config.max_age == EVENTS_STREAM.max_age_seconds
    assert stream.config.duplicate_window == EVENTS_STREAM.duplicate_window_seconds


async def test_changed_consumer_config_is_reported_as_drift(js: JetStreamContext) -> None:
    await ensure_stream(js, EVENTS_STREAM)
    await ensure_consumer(js, CONSUMER)
    changed = replace(
        CONSUMER,
        ack_wait_seconds=3.0,
        max_deliver=9,
        filter_subjects=("ibflow.evt.v1.order_filled.>",),
    )

    with pytest.raises(ConfigDriftError) as caught:
        await ensure_consumer(js, changed)
    assert fields(caught.value.changes) == {"ack_wait", "max_deliver", "filter_subjects"}
    assert "ack_wait: 10.0 -> 3.0" in str(caught.value)
    assert "max_deliver: 7 -> 9" in str(caught.value)
    live = await js.consumer_info(EVENTS_STREAM.name, CONSUMER.durable)
    assert live.config.ack_wait == 10.0  # nothing was silently changed
    assert live.config.max_deliver == 7

    result = await ensure_consumer(js, changed, update=True)
    assert result.action == "updated"
    assert fields(result.changes) == {"ack_wait", "max_deliver", "filter_subjects"}
    live = await js.consumer_info(EVENTS_STREAM.name, CONSUMER.durable)
    assert live.config.ack_wait == 3.0
    assert live.config.max_deliver == 9
    assert (await ensure_consumer(js, changed)).action == "unchanged"

    # an immutable field is drift even when updating is allowed
    restart = replace(changed, deliver_policy="new", max_ack_pending=50)
    with pytest.raises(ConfigDriftError) as caught:
        await ensure_consumer(js, restart, update=True)
    assert caught.value.immutable == ("deliver_policy",)
    assert fields(caught.value.changes) == {"deliver_policy", "max_ack_pending"}
    live = await js.consumer_info(EVENTS_STREAM.name, CONSUMER.durable)
    assert live.config.max_ack_pending == CONSUMER.max_ack_pending


async def test_stream_change_is_applied_and_reported(js: JetStreamContext) -> None:
    spec = StreamSpec(name="WIDGETS", subjects=("widgets.>",), max_age_seconds=3600.0)
    assert (await ensure_stream(js, spec)).action == "created"

    wider = replace(
        spec, subjects=("widgets.>", "gadgets.>"), max_age_seconds=7200.0, description="all"
    )
    result = await ensure_stream(js, wider)
    assert result.action == "updated"
    assert {(c.field, c.current, c.desired) for c in result.changes} == {
        ("subjects", ("widgets.>",), ("gadgets.>", "widgets.>")),
        ("max_age", 3600.0, 7200.0),
        ("description", "", "all"),
    }
    live = await js.stream_info("WIDGETS")
    assert sorted(live.config.subjects or []) == ["gadgets.>", "widgets.>"]
    assert live.config.max_age == 7200.0
    assert (await ensure_stream(js, wider)).action == "unchanged"

    with pytest.raises(ConfigDriftError) as caught:
        await ensure_stream(js, replace(wider, storage="memory", max_msgs=10))
    assert caught.value.immutable == ("storage",)
    assert (await js.stream_info("WIDGETS")).config.max_msgs == -1  # nothing applied

    with pytest.raises(ProvisioningError, match="duplicates window"):
        await ensure_stream(js, replace(wider, max_age_seconds=60.0))  # window 120 s > max age


async def test_consumer_on_missing_stream_is_a_provisioning_error(js: JetStreamContext) -> None:
    with pytest.raises(ProvisioningError, match="IBFLOW_EVENTS/order-manager"):
        await ensure_consumer(js, CONSUMER)
