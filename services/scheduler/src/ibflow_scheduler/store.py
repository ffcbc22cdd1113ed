"""The scheduler's shared state, in the JetStream KV bucket ``IBFLOW_SCHEDULER``.

* ``leader``: the leader lease. Whoever ``create``\\s it leads; the leader renews it
  every ``renew`` seconds with a revision-checked write, so a renewal fails once anyone
  else wrote it. Every write carries a per-message TTL (``Nats-TTL``), so the NATS
  *server* deletes the key ``ttl`` seconds after the last renewal of a dead leader,
  whatever the replicas' clocks say; then another replica's ``create`` succeeds.
* ``occurrence.<name>.<date>.<slot>``: what happened to one occurrence (emitted with
  its stream sequence, or skipped and why), written once (``create``) by the leader.
  A new leader reads them, so it knows what was emitted even long after JetStream's
  2-minute ``Nats-Msg-Id`` window.

The bucket keeps one revision per key for ``history_days`` days.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from ibflow.contracts.base import UtcDatetime
from ibflow.contracts.session import OccurrenceState
from ibflow_scheduler.domain.policy import Record

__all__ = [
    "BUCKET",
    "LEADER_KEY",
    "WRONG_LAST_SEQUENCE",
    "LeaderLease",
    "OccurrenceStore",
    "ensure_bucket",
    "record_key",
]

log = logging.getLogger("ibflow.scheduler")

BUCKET: Final = "IBFLOW_SCHEDULER"
LEADER_KEY: Final = "leader"
OCCURRENCE_PREFIX: Final = "occurrence"
EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})
"""JetStream's err_codes for a failed ``Nats-Expected-Last-Subject-Sequence`` check."""
LOAD_TIMEOUT_SECONDS: Final = 5.0


async def ensure_bucket(js: JetStreamContext, *, history_days: int) -> KeyValue:
    """The :data:`BUCKET` KV bucket, created (history 1, per-message TTLs) if missing."""
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=BUCKET,
                history=1,
                ttl=history_days * 86_400.0,
                description="scheduler: leader lease and what happened to each session event",
            )
        )
        log.info("created KV bucket %s (records kept %d days)", BUCKET, history_days)
        return kv


def record_key(occurrence_id: str) -> str:
    """``occurrence.<name>.<date>.<slot>``: the KV key of ``<name>:<date>:<slot>``."""
    return f"{OCCURRENCE_PREFIX}.{occurrence_id.replace(':', '.')}"


def _is_wrong_last_sequence(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in WRONG_LAST_SEQUENCE


class LeaderLease:
    """The leader lease of one replica (``holder``): take it when free, renew it while held.

    :attr:`held` is true only until ``ttl - renew`` seconds after the start of the last
    successful write: the server keeps the key at least ``ttl`` seconds after that
    write, so while :attr:`held` is true no other replica can have taken the lease.
    Time here is ``monotonic`` (real time), never the schedule's clock.
    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        holder: str,
        *,
        ttl: int,
        renew: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 1 or not 0 < renew * 2 <= ttl:
            raise ValueError(f"need ttl >= 1 and 0 < 2 * renew <= ttl, not {ttl} and {renew}")
        self.holder = holder
        self.ttl = ttl
        self.renew = renew
        self._js = js
        self._kv = kv
        self._monotonic = monotonic
        self._revision: int | None = None
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        """True while this replica certainly holds the lease."""
        return self._revision is not None and self._monotonic() < self._valid_until

    @property
    def revision(self) -> int | None:
        """The lease key's revision this replica last wrote (``None``: not holding it)."""
        return self._revision

    def _payload(self) -> bytes:
        return json.dumps({"holder": self.holder, "at": datetime.now(UTC).isoformat()}).encode()

    async def hold(self) -> bool:
        """Take the lease if it is free, or renew it if this replica has it.

        Returns :attr:`held`. Losing the lease (someone else wrote it) is not an error;
        NATS errors (no connection, timeouts) propagate, and :attr:`held` turns false
        by itself when renewals keep failing.
        """
        started = self._monotonic()
        if self._revision is None:
            try:
                revision = await self._kv.create(LEADER_KEY, self._payload(), msg_ttl=self.ttl)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                return False
            log.info("%s took the leader lease (revision %d)", self.holder, revision)
        else:
            try:
                ack = await self._js.publish(
                    f"$KV.{BUCKET}.{LEADER_KEY}",
                    self._payload(),
                    headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(self._revision)},
                    msg_ttl=self.ttl,
                )
            except nats.js.errors.APIError as exc:
                if not _is_wrong_last_sequence(exc):
                    raise
                log.warning(
                    "%s lost the leader lease (it expired or was taken): %s",
                    self.holder,
                    exc.description,
                )
                self._revision = None
                return False
            revision = ack.seq
        self._revision = revision
        self._valid_until = started + self.ttl - self.renew
        return True

    async def release(self) -> None:
        """Give the lease up at once (graceful stop): another replica may take it now."""
        revision, self._revision = self._revision, None
        if revision is None:
            return
        try:
            await self._kv.delete(LEADER_KEY, last=revision)
            log.info("%s released the leader lease", self.holder)
        except nats.errors.Error as exc:
            log.info("%s could not release the lease (it expires by itself): %r", self.holder, exc)

    def forget(self) -> None:
        """Stop considering the lease held (e.g. after another replica was seen writing)."""
        self._revision = None

    async def current_holder(self) -> str | None:
        """Who holds the lease now, as written in it (``None``: nobody)."""
        try:
            entry = await self._kv.get(LEADER_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            holder = json.loads(entry.value or b"{}").get("holder")
        except ValueError:
            return None
        return str(holder) if holder else None


class StoredRecord(BaseModel):
    """The JSON of an ``occurrence.*`` key: a :class:`~ibflow_scheduler.domain.policy.Record`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    occurrence_id: str
    state: OccurrenceState
    at: UtcDatetime
    scheduled_for: UtcDatetime
    late: bool = False
    manual: bool = False
    reason: str | None = None
    stream_sequence: int | None = None
    command_id: uuid.UUID | None = None
    by: str = ""
    """The replica that wrote it."""

    def to_record(self) -> Record:
        """The domain record."""
        return Record(
            state=self.state,
            at=self.at,
            scheduled_for=self.scheduled_for,
            late=self.late,
            manual=self.manual,
            reason=self.reason,
            stream_sequence=self.stream_sequence,
            command_id=self.command_id,
        )


class OccurrenceStore:
    """Occurrence records in the :data:`BUCKET` bucket."""

    def __init__(self, kv: KeyValue, writer: str) -> None:
        self._kv = kv
        self._writer = writer

    async def load(self, session_date: date) -> dict[str, Record]:
        """Every record of the session of ``session_date``, by occurrence id."""
        pattern = f"{OCCURRENCE_PREFIX}.*.{session_date.isoformat()}.*"
        watcher = await self._kv.watch(pattern, ignore_deletes=True)
        records: dict[str, Record] = {}
        try:
            while True:
                entry = await watcher.updates(timeout=LOAD_TIMEOUT_SECONDS)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if entry.value:
                    stored = StoredRecord.model_validate_json(entry.value)
                    records[stored.occurrence_id] = stored.to_record()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return records

    async def get(self, occurrence_id: str) -> Record | None:
        """The record of one occurrence, if any."""
        try:
            entry = await self._kv.get(record_key(occurrence_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return StoredRecord.model_validate_json(entry.value).to_record()

    async def record(self, occurrence_id: str, record: Record) -> Record:
        """Write the record of ``occurrence_id`` unless one exists; return the one that stands."""
        stored = StoredRecord(
            occurrence_id=occurrence_id,
            state=record.state,
            at=record.at,
            scheduled_for=record.scheduled_for,
            late=record.late,
            manual=record.manual,
            reason=record.reason,
            stream_sequence=record.stream_sequence,
            command_id=record.command_id,
            by=self._writer,
        )
        try:
            await self._kv.create(record_key(occurrence_id), stored.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.get(occurrence_id)
            if existing is not None:
                return existing
            raise
        return record
