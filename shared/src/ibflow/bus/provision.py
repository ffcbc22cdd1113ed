"""Create streams and durable consumers idempotently, and refuse silent drift.

nats-py quietly reuses a consumer that already exists with other settings, and its
``add_consumer`` quietly overwrites one. Here every call compares the live
configuration with the spec, field by field, on the fields a spec sets only (times
normalised to nanoseconds, lists to sorted tuples, empty description to ``""``):

* :func:`ensure_stream` creates the stream, or updates it in place and reports the
  changed fields; a difference in an immutable field (storage, retention) raises
  :class:`~ibflow.bus.errors.ConfigDriftError`.
* :func:`ensure_consumer` creates a durable pull consumer with explicit acks; if it
  exists with another configuration it raises ``ConfigDriftError`` listing the
  fields, or applies the update when ``update=True`` and every changed field is
  updatable.

After a create or update the configuration the server stored is compared again,
so a value the server normalised differently fails loudly at the first deploy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final, Literal

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from ibflow.bus.errors import ConfigDriftError, FieldChange, ProvisioningError
from ibflow.bus.specs import ConsumerSpec, StreamSpec

logger = logging.getLogger("ibflow.bus")

STREAM_IMMUTABLE: Final = frozenset({"storage", "retention"})
"""Stream fields never changed in place: storage (server refuses) and retention
(changing it on a live stream silently changes what is kept: a deliberate migration)."""

CONSUMER_IMMUTABLE: Final = frozenset({"deliver_policy", "ack_policy", "deliver_subject"})
"""Consumer fields the server refuses to update (recreating resets the consumer's position)."""

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What :func:`ensure_stream` / :func:`ensure_consumer` did.

    ``name`` is the stream name or the consumer's durable name (``stream`` is then
    its stream); ``changes`` lists the fields an update changed.
    """

    kind: Literal["stream", "consumer"]
    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()
    stream: str | None = None


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _seconds(value: float | None) -> float:
    """Seconds normalised through integer nanoseconds, as the server stores them."""
    return round((value or 0.0) * 1_000_000_000) / 1_000_000_000


def _diff(current: Mapping[str, object], desired: Mapping[str, object]) -> list[FieldChange]:
    return [
        FieldChange(field, current[field], want)
        for field, want in desired.items()
        if current[field] != want
    ]


def _api_reason(exc: Exception) -> str:
    if isinstance(exc, nats.js.errors.APIError):
        return f"{exc.description} (code {exc.code}, err_code {exc.err_code})"
    return repr(exc)


# --------------------------------------------------------------------------- streams


def stream_fields(spec: StreamSpec) -> dict[str, object]:
    """The normalised fields of ``spec`` compared with the live stream."""
    return {
        "subjects": tuple(sorted(spec.subjects)),
        "description": spec.description,
        "storage": spec.storage,
        "retention": spec.retention,
        "max_age": _seconds(spec.max_age_seconds),
        "max_bytes": spec.max_bytes,
        "max_msgs": spec.max_msgs,
        "duplicate_window": _seconds(spec.duplicate_window_seconds),
        "num_replicas": spec.num_replicas,
    }


def live_stream_fields(config: StreamConfig) -> dict[str, object]:
    """The same fields read from a live :class:`~nats.js.api.StreamConfig`."""
    return {
        "subjects": tuple(sorted(config.subjects or ())),
        "description": config.description or "",
        "storage": _plain(config.storage),
        "retention": _plain(config.retention),
        "max_age": _seconds(config.max_age),
        "max_bytes": config.max_bytes,
        "max_msgs": config.max_msgs,
        "duplicate_window": _seconds(config.duplicate_window),
        "num_replicas": config.num_replicas,
    }


def _stream_config(spec: StreamSpec, base: StreamConfig | None = None) -> StreamConfig:
    """``base`` (the live config, to keep fields the spec does not set) with ``spec`` applied."""
    return replace(
        base or StreamConfig(),
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description or None,
        storage=StorageType(spec.storage),
        retention=RetentionPolicy(spec.retention),
        max_age=spec.max_age_seconds,
        max_bytes=spec.max_bytes,
        max_msgs=spec.max_msgs,
        duplicate_window=spec.duplicate_window_seconds,
        num_replicas=spec.num_replicas,
    )


def _check_stored(
    kind: str, name: str, stored: dict[str, object], desired: dict[str, object]
) -> None:
    mismatch = _diff(stored, desired)
    if mismatch:
        listed = "; ".join(str(change) for change in mismatch)
        raise ProvisioningError(
            f"{kind} {name!r}: the server stored a configuration different from the spec: {listed}"
        )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> ProvisionResult:
    """Create stream ``spec.name``, or bring it in line with ``spec``.

    Returns ``created``, ``unchanged`` or ``updated`` (with the changed fields). Raises
    :class:`ConfigDriftError` when an immutable field (storage, retention) differs and
    :class:`ProvisioningError` when the server refuses the create or update (e.g. a
    duplicate window longer than ``max_age``, replicas on a single node).
    Fields the spec does not set (discard policy, metadata, ...) are left as they are.
    """
    desired = stream_fields(spec)
    try:
        info = await js.stream_info(spec.name)
    except nats.js.errors.NotFoundError:
        try:
            info = await js.add_stream(_stream_config(spec))
        except nats.errors.Error as exc:
            raise ProvisioningError(
                f"cannot create stream {spec.name!r}: {_api_reason(exc)}"
            ) from exc
        _check_stored("stream", spec.name, live_stream_fields(info.config), desired)
        logger.info("created stream %s (subjects %s)", spec.name, ", ".join(spec.subjects))
        return ProvisionResult("stream", spec.name, "created")
    except nats.errors.Error as exc:
        raise ProvisioningError(f"cannot read stream {spec.name!r}: {_api_reason(exc)}") from exc

    changes = _diff(live_stream_fields(info.config), desired)
    if not changes:
        return ProvisionResult("stream", spec.name, "unchanged")
    immutable = [change.field for change in changes if change.field in STREAM_IMMUTABLE]
    if immutable:
        raise ConfigDriftError(
            "stream",
            spec.name,
            changes,
            immutable=immutable,
            hint="these cannot be changed in place: migrate to a new stream",
        )
    try:
        updated = await js.update_stream(_stream_config(spec, info.config))
    except nats.errors.Error as exc:
        listed = "; ".join(str(change) for change in changes)
        raise ProvisioningError(
            f"cannot update stream {spec.name!r} ({listed}): {_api_reason(exc)}"
        ) from exc
    _check_stored("stream", spec.name, live_stream_fields(updated.config), desired)
    logger.warning("updated stream %s: %s", spec.name, "; ".join(str(change) for change in changes))
    return ProvisionResult("stream", spec.name, "updated", tuple(changes))


# --------------------------------------------------------------------------- consumers


def consumer_fields(spec: ConsumerSpec) -> dict[str, object]:
    """The normalised fields of ``spec`` compared with the live consumer.

    With a backoff the server sets ``ack_wait`` to its first step, so that is expected.
    """
    backoff = tuple(_seconds(step) for step in spec.backoff_seconds)
    return {
        "description": spec.description,
        "deliver_policy": spec.deliver_policy,
        "ack_policy": AckPolicy.EXPLICIT.value,
        "deliver_subject": None,
        "filter_subjects": tuple(sorted(spec.filter_subjects)),
        "ack_wait": backoff[0] if backoff else _seconds(spec.ack_wait_seconds),
        "backoff": backoff,
        "max_deliver": spec.max_deliver,
        "max_ack_pending": spec.max_ack_pending,
    }


def live_consumer_fields(config: ConsumerConfig) -> dict[str, object]:
    """The same fields read from a live :class:`~nats.js.api.ConsumerConfig`."""
    filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
    return {
        "description": config.description or "",
        "deliver_policy": _plain(config.deliver_policy),
        "ack_policy": _plain(config.ack_policy),
        "deliver_subject": config.deliver_subject or None,
        "filter_subjects": tuple(sorted(filters)),
        "ack_wait": _seconds(config.ack_wait),
        "backoff": tuple(_seconds(step) for step in config.backoff or ()),
        "max_deliver": config.max_deliver,
        "max_ack_pending": config.max_ack_pending,
    }


def _consumer_config(spec: ConsumerSpec, base: ConsumerConfig | None = None) -> ConsumerConfig:
    """``base`` (the live config, to keep fields the spec does not set) with ``spec`` applied."""
    return replace(
        base or ConsumerConfig(),
        name=spec.durable,
        durable_name=spec.durable,
        description=spec.description or None,
        deliver_policy=DeliverPolicy(spec.deliver_policy),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_seconds,
        backoff=list(spec.backoff_seconds) or None,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=None,
        filter_subjects=list(spec.filter_subjects) or None,
    )


async def ensure_consumer(
    js: JetStreamContext, spec: ConsumerSpec, *, update: bool = False
) -> ProvisionResult:
    """Create durable pull consumer ``spec.durable`` on ``spec.stream`` (explicit acks).

    If it exists with a different configuration, raise :class:`ConfigDriftError`
    listing every differing field, unless ``update`` is true and all of them are
    updatable (not deliver policy, ack policy, push/pull): then update it and return
    ``updated`` with the changes. Raises :class:`ProvisioningError` when the server
    refuses (e.g. the stream does not exist).
    """
    desired = consumer_fields(spec)
    label = f"{spec.stream}/{spec.durable}"
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except nats.js.errors.NotFoundError:
        try:
            info = await js.add_consumer(spec.stream, _consumer_config(spec))
        except nats.errors.Error as exc:
            raise ProvisioningError(
                f"cannot create consumer {label!r}: {_api_reason(exc)}"
            ) from exc
        _check_stored("consumer", label, live_consumer_fields(info.config), desired)
        logger.info("created consumer %s", label)
        return ProvisionResult("consumer", spec.durable, "created", stream=spec.stream)
    except nats.errors.Error as exc:
        raise ProvisioningError(f"cannot read consumer {label!r}: {_api_reason(exc)}") from exc

    changes = _diff(live_consumer_fields(info.config), desired)
    if not changes:
        return ProvisionResult("consumer", spec.durable, "unchanged", stream=spec.stream)
    immutable = [change.field for change in changes if change.field in CONSUMER_IMMUTABLE]
    if immutable:
        raise ConfigDriftError(
            "consumer",
            label,
            changes,
            immutable=immutable,
            hint="delete and recreate the consumer (it restarts from its deliver policy)",
        )
    if not update:
        raise ConfigDriftError(
            "consumer", label, changes, hint="provision with update=True to apply the spec"
        )
    try:
        # Without an "action", the create request of a durable creates or updates it.
        updated = await js.add_consumer(spec.stream, _consumer_config(spec, info.config))
    except nats.errors.Error as exc:
        listed = "; ".join(str(change) for change in changes)
        raise ProvisioningError(
            f"cannot update consumer {label!r} ({listed}): {_api_reason(exc)}"
        ) from exc
    _check_stored("consumer", label, live_consumer_fields(updated.config), desired)
    logger.warning("updated consumer %s: %s", label, "; ".join(str(c) for c in changes))
    return ProvisionResult("consumer", spec.durable, "updated", tuple(changes), stream=spec.stream)


async def provision(
    js: JetStreamContext,
    streams: Iterable[StreamSpec] = (),
    consumers: Iterable[ConsumerSpec] = (),
    *,
    update_consumers: bool = False,
) -> list[ProvisionResult]:
    """Ensure every stream, then every consumer, in order; stop at the first error."""
    results = [await ensure_stream(js, spec) for spec in streams]
    results.extend([await ensure_consumer(js, spec, update=update_consumers) for spec in consumers])
    return results
