"""A thin typed layer over nats-py: subjects, provisioning, publish, consume, request/reply.

* :func:`connect` / :class:`Bus`: a connection that reconnects forever and logs;
* :func:`provision`, :func:`ensure_stream`, :func:`ensure_consumer`: idempotent
  JetStream setup from :class:`StreamSpec` / :class:`ConsumerSpec`, drift is an error;
* :func:`publish` / :class:`Publisher`: store an envelope, deduplicated by ``Nats-Msg-Id``;
  :func:`publish_batch`: many, their PubAcks pipelined;
* :class:`ConsumerRunner` over a :class:`Subscriber`: typed handlers whose outcome
  (return, :class:`Retry`, :class:`Reject`, error) decides ack, nak or dead letter;
  :class:`BatchConsumerRunner` over a :class:`BatchSubscriber`: a fetch at a time;
* :func:`request` / :func:`serve`: typed request/reply with structured error replies.

Errors are drawn in :mod:`ibflow.bus.errors`.
"""

from ibflow.bus.connection import Bus, connect
from ibflow.bus.consumer import (
    BatchConsumerRunner,
    BatchHandler,
    BatchSubscriber,
    ConsumerRunner,
    Delivery,
    Handler,
    Subscriber,
)
from ibflow.bus.errors import (
    BusError,
    ConfigDriftError,
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
)
from ibflow.bus.provision import ProvisionResult, ensure_consumer, ensure_stream, provision
from ibflow.bus.publisher import Publisher, publish, publish_batch
from ibflow.bus.rpc import request, serve
from ibflow.bus.specs import ConsumerSpec, StreamSpec

__all__ = [
    "BatchConsumerRunner",
    "BatchHandler",
    "BatchSubscriber",
    "Bus",
    "BusError",
    "ConfigDriftError",
    "ConsumerRunner",
    "ConsumerSpec",
    "Delivery",
    "FieldChange",
    "Handler",
    "HandlerDecision",
    "NoStreamError",
    "ProvisionResult",
    "ProvisioningError",
    "PublishError",
    "Publisher",
    "Reject",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "Retry",
    "StreamSpec",
    "Subscriber",
    "connect",
    "ensure_consumer",
    "ensure_stream",
    "provision",
    "publish",
    "publish_batch",
    "request",
    "serve",
]
