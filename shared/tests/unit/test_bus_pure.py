"""The pure parts of ibflow.bus: error tree, headers, label reduction, config normalisation."""

from __future__ import annotations

import json
import uuid

import pytest
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ValidationError

import ibflow.bus
from ibflow.bus import (
    BusError,
    ConfigDriftError,
    ConsumerSpec,
    FieldChange,
    HandlerDecision,
    NoStreamError,
    ProvisioningError,
    PublishError,
    Reject,
    RemoteError,
    RequestError,
    RequestTimeout,
    Retry,
    StreamSpec,
)
from ibflow.bus.consumer import subject_matches
from ibflow.bus.errors import describe_validation_error
from ibflow.bus.metrics import subject_root
from ibflow.bus.provision import (
    consumer_fields,
    live_consumer_fields,
    live_stream_fields,
    stream_fields,
)
from ibflow.bus.publisher import message_headers, message_id
from ibflow.bus.rpc import error_reply
from ibflow.contracts.base import Event
from ibflow.contracts.replies import ErrorReply


class Plain(Event):
    n: int = 0


class Keyed(Event):
    key: str | None

    def dedupe_key(self) -> str | None:
        return self.key


def test_error_tree() -> None:
    assert issubclass(ConfigDriftError, ProvisioningError)
    assert issubclass(ProvisioningError, BusError)
    assert issubclass(NoStreamError, PublishError)
    assert issubclass(PublishError, BusError)
    assert issubclass(RequestTimeout, RequestError)
    assert issubclass(RemoteError, RequestError)
    assert issubclass(RequestError, BusError)
    for decision in (Retry, Reject):
        assert issubclass(decision, HandlerDecision)
        assert not issubclass(decision, BusError)
    assert RequestTimeout("slow").code == "timeout"
    assert str(RemoteError("refused", "no")) == "refused: no"
    with pytest.raises(ValueError, match="delay"):
        Retry(-1)
    assert str(Retry(0.5, "busy")) == "retry in 0.5s: busy"


def test_drift_error_lists_every_field() -> None:
    error = ConfigDriftError(
        "consumer",
        "S/c",
        [FieldChange("ack_wait", 30.0, 10.0), FieldChange("deliver_policy", "all", "new")],
        immutable=["deliver_policy"],
    )
    assert "ack_wait: 30.0 -> 10.0" in str(error)
    assert "deliver_policy: 'all' -> 'new'" in str(error)
    assert "immutable: deliver_policy" in str(error)


def test_public_api_is_exported() -> None:
    for name in ibflow.bus.__all__:
        assert hasattr(ibflow.bus, name), name


def test_subject_root_keeps_four_tokens() -> None:
    assert subject_root("ibflow.evt.v1.order_filled.U1234567") == "ibflow.evt.v1.order_filled"
    assert subject_root("ibflow.evt.v1.order_filled.U1.extra") == "ibflow.evt.v1.order_filled"
    assert subject_root("short.subject") == "short.subject"


def test_msg_id_prefers_dedupe_key_then_event_id() -> None:
    plain = Plain()
    assert message_id(plain) == str(plain.event_id)
    assert message_id(Keyed(key="exec:0001")) == "exec:0001"
    no_key = Keyed(key=None)
    assert message_id(no_key) == str(no_key.event_id)


def test_headers() -> None:
    correlation = uuid.uuid4()
    msg = Plain(correlation_id=correlation)
    headers = message_headers(msg, headers={"X-Extra": "1", "Nats-Msg-Id": "ignored"})
    assert headers == {
        "X-Extra": "1",
        "Nats-Msg-Id": str(msg.event_id),
        "Ibflow-Type": "Plain",
        "Ibflow-Correlation-Id": str(correlation),
    }
    assert message_headers(Plain(), msg_id="mine")["Nats-Msg-Id"] == "mine"
    assert "Ibflow-Correlation-Id" not in message_headers(Plain())


def test_stream_fields_normalise_like_the_server() -> None:
    spec = StreamSpec(name="S", subjects=("b.>", "a.>"), max_age_seconds=0.1 + 0.2)
    live = StreamConfig(
        name="S",
        subjects=["a.>", "b.>"],
        description=None,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=300_000_000 / 1e9,
        max_bytes=-1,
        max_msgs=-1,
        duplicate_window=120.0,
        num_replicas=1,
    )
    assert live_stream_fields(live) == stream_fields(spec)


def test_consumer_fields_expect_backoff_to_set_ack_wait() -> None:
    spec = ConsumerSpec(
        stream="S", durable="c", filter_subjects=("x.>",), backoff_seconds=(1.0, 5.0)
    )
    live = ConsumerConfig(
        durable_name="c",
        ack_wait=1.0,
        backoff=[1.0, 5.0],
        filter_subject="x.>",
        max_deliver=20,
        max_ack_pending=1000,
    )
    assert live_consumer_fields(live) == consumer_fields(spec)


def test_validation_errors_are_described_in_one_line() -> None:
    class Model(BaseModel):
        a: int
        b: str

    with pytest.raises(ValidationError) as caught:
        Model.model_validate_json(b'{"a": "x"}')
    text = describe_validation_error(caught.value)
    assert text.startswith("Model: ")
    assert "a: Input should be a valid integer" in text
    assert "b: Field required" in text
    assert "\n" not in text


def test_error_reply_shape() -> None:
    wire = error_reply("refused", "market closed")
    assert json.loads(wire) == {"error": {"code": "refused", "message": "market closed"}}
    assert ErrorReply.model_validate_json(wire).error.code == "refused"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.x.c", True),
        ("a.*", "a.x.c", False),
        ("a.>", "a.x.c", True),
        ("a.>", "a", False),
        ("a.b", "a.b.c", False),
        ("a.b.*", "a.c.d", False),
    ],
)
def test_subject_matches_follows_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches
