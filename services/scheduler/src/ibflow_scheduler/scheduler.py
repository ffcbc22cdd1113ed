"""The scheduler worker: among any number of replicas, the one holding the leader lease
emits every occurrence of the day's session events exactly once.

How "exactly once" is kept (see ``docs/scheduler.md`` for the reasoning):

1. **One emitter.** Only the holder of the leader lease (:class:`~ibflow_scheduler.store.
   LeaderLease`) emits, and only while its lease is certainly valid.
2. **A fence on the stream.** Each event is published with
   ``Nats-Expected-Last-Subject-Sequence`` set to the last sequence this leader knows on
   that event's subject. If anyone else published there since (a paused ex-leader that
   wakes up), JetStream refuses the write: a stale leader can never add a second copy,
   whatever the timing.
3. **Deduplication by id.** The ``Nats-Msg-Id`` is the occurrence's dedupe key
   (``session:<name>:<date>:<slot>``), so a retried publish inside JetStream's window is
   stored once.
4. **A durable record.** After publishing, the leader writes ``occurrence.<id>`` in KV;
   a new leader reads those records, and repairs the one record a crash may have left
   unwritten from the last message on each subject (the leader emits one event at a
   time, so at most the last one can be unrecorded). It then emits what is due, late if
   need be, per the missed-event policy (:mod:`ibflow_scheduler.domain.policy`).

Manual triggers (``TriggerSessionEvent``) are served by the leader only and go through
the same path; the schedule (``RequestSessionSchedule``) is answered by any replica from
the KV records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from ibflow.bus import publish, serve
from ibflow.bus.errors import BusError, PublishError, Reject, RequestError
from ibflow.bus.subjects import (
    EVENTS_STREAM,
    REQUEST_SESSION_SCHEDULE,
    TRIGGER_SESSION_EVENT,
    session_event,
)
from ibflow.contracts import (
    INVALID_REQUEST,
    NOT_READY,
    CommandAccepted,
    OccurrenceState,
    RequestSessionSchedule,
    ScheduledOccurrence,
    SessionEventEmitted,
    SessionSchedule,
    SessionScheduleReported,
    TriggerSessionEvent,
)
from ibflow.runtime.cancellation import raise_if_cancelled
from ibflow_scheduler import metrics
from ibflow_scheduler.clock import Clock
from ibflow_scheduler.domain.calendar import NEW_YORK, NyseCalendar, Session, new_york_date
from ibflow_scheduler.domain.policy import (
    Decision,
    Record,
    decide,
    next_manual_slot,
    slot_of,
    states,
    trigger_refusal,
)
from ibflow_scheduler.domain.schedule import Occurrence, ScheduleConfig, occurrences, slot_count
from ibflow_scheduler.store import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    WRONG_LAST_SEQUENCE,
    LeaderLease,
    OccurrenceStore,
)

__all__ = ["QUEUE_GROUP", "SchedulerTimings", "SessionScheduler"]

log = logging.getLogger("ibflow.scheduler")

QUEUE_GROUP: Final = "scheduler"
_PLAN_CACHE_SIZE: Final = 8


@dataclass(frozen=True, slots=True)
class SchedulerTimings:
    """The real-time parameters of a :class:`SessionScheduler` (seconds)."""

    lease_ttl: int = 10
    """The lease expires this long after the last renewal of a dead leader."""
    lease_renew: float = 3.0
    """The leader renews this often; the others try to take the lease this often."""
    late_tolerance: timedelta = timedelta(seconds=5)
    """An occurrence emitted more than this after its time is ``late``."""
    retry_delay: float = 1.0
    """Pause after a NATS error before the leader tries again."""


class _NotLeader(Exception):  # noqa: N818 - internal signal, not an error
    """This replica may not emit (any more)."""


@dataclass(frozen=True, slots=True)
class _LastOnSubject:
    seq: int
    event: SessionEventEmitted | None


def _hhmm(instant: datetime) -> str:
    return instant.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S ET")


class SessionScheduler:
    """The scheduler of one replica (a :class:`~ibflow.runtime.Worker`).

    ``clock`` drives the schedule (a :class:`~ibflow_scheduler.clock.FakeClock` in
    tests); the lease runs on real time. Call :meth:`wake` after moving a fake clock to
    have the leader look at the new time at once.
    """

    def __init__(
        self,
        nc: NatsClient,
        kv: KeyValue,
        *,
        config: ScheduleConfig,
        calendar: NyseCalendar,
        clock: Clock,
        replica_id: str,
        timings: SchedulerTimings | None = None,
        js: JetStreamContext | None = None,
        stream: str = EVENTS_STREAM.name,
    ) -> None:
        self.replica_id = replica_id
        self.timings = timings or SchedulerTimings()
        self._nc = nc
        self._js = js or nc.jetstream()
        self._config = config
        self._calendar = calendar
        self._clock = clock
        self._stream = stream
        self._lease = LeaderLease(
            self._js, kv, replica_id, ttl=self.timings.lease_ttl, renew=self.timings.lease_renew
        )
        self._store = OccurrenceStore(kv, replica_id)
        self._records: dict[date, dict[str, Record]] = {}
        self._subject_last: dict[str, tuple[int, str | None]] = {}
        """Per event name: the last stream sequence on its subject and that event's id."""
        self._plans: dict[date, list[Occurrence]] = {}
        self._leading = False
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._trigger_sub: Subscription | None = None
        self._schedule_sub: Subscription | None = None
        self.caught_up_to: datetime | None = None
        """The schedule time of the leader's last complete pass (tests wait on it)."""

    # ------------------------------------------------------------------ worker protocol

    @property
    def is_leader(self) -> bool:
        """True while this replica leads and its lease is certainly valid."""
        return self._leading and self._lease.held

    async def run(self) -> None:
        """Lead, or wait to lead, until :meth:`stop`; then release the lease."""
        # Build the calendar (seconds, blocking) before contending for the lease.
        self._calendar.session(new_york_date(self._clock.now()))
        self._schedule_sub = await serve(
            self._nc,
            REQUEST_SESSION_SCHEDULE,
            RequestSessionSchedule,
            self.schedule,
            queue=QUEUE_GROUP,
        )
        next_lease = 0.0
        graceful = False
        try:
            while not self._stop.is_set():
                raise_if_cancelled()
                if time.monotonic() >= next_lease:
                    next_lease = time.monotonic() + self.timings.lease_renew
                    await self._maintain_lease()
                delay = await self._work()
                self._export_next_times()
                await self._wait(min(next_lease - time.monotonic(), delay))
            graceful = True
        finally:
            await self._step_down("stopping" if graceful else "cancelled", forget=False)
            if graceful:
                await self._lease.release()
            await _unsubscribe(self._schedule_sub)
            self._schedule_sub = None

    def stop(self) -> None:
        """Ask :meth:`run` to release the lease and return."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the clock now (after a :class:`FakeClock` moved)."""
        self._wake.set()

    # ------------------------------------------------------------------ leadership

    async def _maintain_lease(self) -> None:
        try:
            held = await self._lease.hold()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("%s: cannot reach the leader lease: %r", self.replica_id, exc)
            held = self._lease.held
        if held and not self._leading:
            try:
                await self._take_over()
            except (nats.errors.Error, BusError, TimeoutError) as exc:
                log.warning("%s: cannot take over yet: %r", self.replica_id, exc)
        elif not held and self._leading:
            await self._step_down("the lease is no longer held", forget=False)
        metrics.LEADER.set(1 if self.is_leader else 0)

    async def _take_over(self) -> None:
        """Become the emitter: read the records and the stream, then serve triggers."""
        self._records.clear()
        self._subject_last.clear()
        now = self._clock.now()
        current = self._calendar.session_on_or_before(new_york_date(now))
        await self._records_for(current.date)
        for name in self._config.names:
            last = await self._last_on_subject(name)
            self._subject_last[name] = (
                (last.seq, last.event.occurrence_id if last.event else None) if last else (0, None)
            )
            if last is not None and last.event is not None:
                await self._repair(last)
        self._leading = True
        self._trigger_sub = await serve(
            self._nc, TRIGGER_SESSION_EVENT, TriggerSessionEvent, self.trigger, queue=QUEUE_GROUP
        )
        log.info("%s leads the schedule (session %s)", self.replica_id, current.date)
        self.wake()

    async def _repair(self, last: _LastOnSubject) -> None:
        """Record the last event on a subject if its emitter died before recording it."""
        event = last.event
        assert event is not None
        records = await self._records_for(event.session_date)
        if event.occurrence_id in records:
            return
        record = Record(
            state=OccurrenceState.EMITTED,
            at=event.emitted_at,
            scheduled_for=event.scheduled_for,
            late=event.late,
            manual=event.manual,
            reason="recorded from the events stream after a failover",
            stream_sequence=last.seq,
            command_id=event.causation_id if event.manual else None,
        )
        records[event.occurrence_id] = await self._store.record(event.occurrence_id, record)
        log.warning(
            "%s: %s was emitted (stream sequence %d) but not recorded; recorded it now",
            self.replica_id,
            event.occurrence_id,
            last.seq,
        )

    async def _step_down(self, reason: str, *, forget: bool) -> None:
        if self._leading:
            level = logging.INFO if reason == "stopping" else logging.WARNING
            log.log(level, "%s stops leading: %s", self.replica_id, reason)
        self._leading = False
        if forget:
            self._lease.forget()
        metrics.LEADER.set(0)
        sub, self._trigger_sub = self._trigger_sub, None
        await _unsubscribe(sub)
        self._records.clear()
        self._subject_last.clear()

    async def _last_on_subject(self, name: str) -> _LastOnSubject | None:
        try:
            msg = await self._js.get_last_msg(self._stream, session_event(name))
        except nats.js.errors.NotFoundError:
            return None
        try:
            event: SessionEventEmitted | None = SessionEventEmitted.from_json(msg.data or b"")
        except ValidationError:
            log.error("undecodable message %d on %s", msg.seq, session_event(name))
            event = None
        return _LastOnSubject(msg.seq or 0, event)

    # ------------------------------------------------------------------ the schedule

    def _occurrences(self, session: Session) -> list[Occurrence]:
        found = self._plans.get(session.date)
        if found is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            found = self._plans[session.date] = occurrences(self._config, session)
        return found

    async def _records_for(self, session_date: date) -> dict[str, Record]:
        records = self._records.get(session_date)
        if records is None:
            if len(self._records) >= _PLAN_CACHE_SIZE:
                self._records.pop(min(self._records))
            records = self._records[session_date] = await self._store.load(session_date)
        return records

    async def _work(self) -> float:
        """One leader pass over what is due; returns how long to wait at most."""
        if not self._leading:
            return self.timings.lease_renew
        try:
            await self._catch_up()
        except _NotLeader:
            await self._step_down("the lease lapsed while emitting", forget=False)
        except (nats.errors.Error, BusError, TimeoutError) as exc:
            log.warning("%s: emitting failed, retrying: %r", self.replica_id, exc)
            return self.timings.retry_delay
        return self.timings.lease_renew

    async def _catch_up(self) -> None:
        now = self._clock.now()
        session = self._calendar.session(new_york_date(now))
        if session is not None:
            occs = self._occurrences(session)
            async with self._lock:
                recorded = await self._records_for(session.date)
                tolerance = self.timings.late_tolerance
                for decision in decide(now, occs, recorded, tolerance=tolerance):
                    if decision.emit:
                        await self._emit(decision.occurrence, late=decision.late)
                    else:
                        await self._skip(decision)
        self.caught_up_to = now

    def _next_due(self) -> datetime | None:
        """The next moment the leader has something to do."""
        now = self._clock.now()
        today = new_york_date(now)
        session = self._calendar.session(today) or self._calendar.next_session(today)
        recorded = self._records.get(session.date, {})
        for occ in self._occurrences(session):
            if occ.scheduled_for > now and occ.occurrence_id not in recorded:
                return occ.scheduled_for
        following = self._calendar.next_session(session.date)
        upcoming = self._occurrences(following)
        return upcoming[0].scheduled_for if upcoming else None

    def _export_next_times(self) -> None:
        now = self._clock.now()
        today = new_york_date(now)
        session = self._calendar.session(today) or self._calendar.next_session(today)
        pending = dict.fromkeys(self._config.names, 0.0)
        for candidate in (session, self._calendar.next_session(session.date)):
            for occ in self._occurrences(candidate):
                if occ.scheduled_for > now and not pending[occ.name]:
                    pending[occ.name] = occ.scheduled_for.timestamp()
        for name, at in pending.items():
            metrics.NEXT_EVENT.labels(name).set(at)

    async def _wait(self, limit: float) -> None:
        waiters: list[asyncio.Task[Any]] = [
            asyncio.create_task(self._stop.wait()),
            asyncio.create_task(self._wake.wait()),
        ]
        if self._leading and (due := self._next_due()) is not None:
            waiters.append(asyncio.create_task(self._clock.sleep_until(due)))
        try:
            await asyncio.wait(
                waiters, timeout=max(0.0, limit), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()

    # ------------------------------------------------------------------ emitting

    async def _emit(
        self,
        occ: Occurrence,
        *,
        late: bool,
        manual: bool = False,
        cause: TriggerSessionEvent | None = None,
    ) -> Record:
        """Publish ``occ`` once and record it (the caller holds the lock)."""
        if not self.is_leader:
            raise _NotLeader
        oid = occ.occurrence_id
        records = await self._records_for(occ.session.date)
        existing = records.get(oid)
        if existing is not None:
            return existing
        now = self._clock.now()
        event = SessionEventEmitted(
            name=occ.name,
            occurrence_id=oid,
            session_date=occ.session.date,
            scheduled_for=occ.scheduled_for,
            emitted_at=now,
            late=late,
            manual=manual,
            session_open=occ.session.open,
            session_close=occ.session.close,
            ts_event=now,
            **(cause.caused() if cause is not None else {}),
        )
        expected, last_id = self._subject_last.get(occ.name, (0, None))
        if last_id == oid:
            # Published already, by this leader before a failed record write: only the
            # record is missing. (Anything else on the subject meets the fence below.)
            last = await self._last_on_subject(occ.name)
            if last is not None and last.event is not None and last.event.occurrence_id == oid:
                return await self._record_emitted(occ, last.event, last.seq)
        try:
            ack = await publish(
                self._js,
                session_event(occ.name),
                event,
                headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected)},
            )
            seq = ack.seq
        except PublishError as exc:
            cause_exc = exc.__cause__
            if not (
                isinstance(cause_exc, nats.js.errors.APIError)
                and cause_exc.err_code in WRONG_LAST_SEQUENCE
            ):
                raise
            last = await self._last_on_subject(occ.name)
            if last is None or last.event is None or last.event.occurrence_id != oid:
                await self._step_down(
                    f"another publisher wrote on {session_event(occ.name)} since this replica"
                    " took the lead",
                    forget=True,
                )
                raise _NotLeader from exc
            seq, event = last.seq, last.event  # our own earlier attempt was stored
        self._subject_last[occ.name] = (seq, oid)
        stored = await self._record_emitted(occ, event, seq)
        log.info(
            "emitted %s (due %s%s%s)",
            oid,
            _hhmm(occ.scheduled_for),
            f", late by {now - occ.scheduled_for}" if late else "",
            ", manual" if manual else "",
        )
        return stored

    async def _record_emitted(
        self, occ: Occurrence, event: SessionEventEmitted, seq: int
    ) -> Record:
        """Write the ``emitted`` record of ``occ`` (stored at stream sequence ``seq``)."""
        record = Record(
            state=OccurrenceState.EMITTED,
            at=event.emitted_at,
            scheduled_for=occ.scheduled_for,
            late=event.late,
            manual=event.manual,
            stream_sequence=seq,
            command_id=event.causation_id if event.manual else None,
        )
        records = await self._records_for(occ.session.date)
        records[occ.occurrence_id] = stored = await self._store.record(occ.occurrence_id, record)
        metrics.EMITTED.labels(occ.name).inc()
        if event.late:
            metrics.LATE.labels(occ.name).inc()
        return stored

    async def _skip(self, decision: Decision) -> None:
        """Record that a due occurrence will never be emitted, and say why."""
        if not self.is_leader:
            raise _NotLeader
        occ = decision.occurrence
        records = await self._records_for(occ.session.date)
        record = Record(
            state=OccurrenceState.SKIPPED,
            at=self._clock.now(),
            scheduled_for=occ.scheduled_for,
            reason=decision.reason,
        )
        records[occ.occurrence_id] = await self._store.record(occ.occurrence_id, record)
        metrics.SKIPPED.labels(occ.name).inc()
        log.warning(
            "skipped %s (due %s): %s", occ.occurrence_id, _hhmm(occ.scheduled_for), decision.reason
        )

    # ------------------------------------------------------------------ operators

    async def trigger(self, cmd: TriggerSessionEvent) -> CommandAccepted:
        """Emit ``cmd.name`` now (``manual``, the next slot of the day), or refuse."""
        name = cmd.name
        if name not in self._config.names:
            raise RequestError(
                INVALID_REQUEST,
                f"unknown session event {name!r}; known: {', '.join(self._config.names)}",
            )
        if not self.is_leader:
            raise RequestError(NOT_READY, f"{self.replica_id} does not lead the schedule; retry")
        now = self._clock.now()
        day = cmd.session_date or new_york_date(now)
        session = (
            self._calendar.session(day)
            if cmd.session_date is not None
            else self._calendar.session_on_or_before(day)
        )
        if session is None:
            metrics.MANUAL.labels(name, "refused").inc()
            raise Reject(f"no session on {day}: the exchange is closed that day")
        async with self._lock:
            occs = self._occurrences(session)
            recorded = await self._records_for(session.date)
            previous = [oid for oid, r in recorded.items() if r.command_id == cmd.event_id]
            if previous:
                metrics.MANUAL.labels(name, "duplicate").inc()
                return CommandAccepted.of(cmd, duplicate=True, detail=previous[0])
            refusal = trigger_refusal(now, name, session, occs, recorded)
            if refusal is not None and not cmd.force:
                metrics.MANUAL.labels(name, "refused").inc()
                log.warning(
                    "manual trigger of %s by %s refused: %s (reason given: %r)",
                    name,
                    cmd.requested_by,
                    refusal,
                    cmd.reason,
                )
                raise Reject(f"refused: {refusal}; set force to trigger anyway")
            prefix = f"{name}:{session.date.isoformat()}:"
            slot = next_manual_slot(
                slot_count(self._config, name, session),
                (slot_of(oid) for oid in recorded if oid.startswith(prefix)),
            )
            occ = Occurrence(name, slot, session, scheduled_for=now, deadline=now)
            try:
                await self._emit(occ, late=False, manual=True, cause=cmd)
            except _NotLeader:
                raise RequestError(NOT_READY, f"{self.replica_id} lost the lead; retry") from None
        metrics.MANUAL.labels(name, "emitted").inc()
        log.warning(
            "manual trigger by %s: emitted %s (reason given: %r%s)",
            cmd.requested_by,
            occ.occurrence_id,
            cmd.reason,
            f"; forced past: {refusal}" if refusal is not None else "",
        )
        return CommandAccepted.of(cmd, detail=occ.occurrence_id)

    async def schedule(self, cmd: RequestSessionSchedule) -> SessionScheduleReported:
        """The requested day's session (or none) and the next one, with every state."""
        now = self._clock.now()
        day = cmd.session_date or new_york_date(now)
        session = self._calendar.session(day)
        following = self._calendar.next_session(day)
        return SessionScheduleReported(
            as_of=now,
            session=None if session is None else await self._describe(session, now),
            next_session=await self._describe(following, now),
            leader=await self._lease.current_holder(),
        )

    async def _describe(self, session: Session, now: datetime) -> SessionSchedule:
        occs = self._occurrences(session)
        records = await self._store.load(session.date)
        items = [
            ScheduledOccurrence(
                name=state.occurrence.name,
                occurrence_id=state.occurrence.occurrence_id,
                scheduled_for=state.occurrence.scheduled_for,
                deadline=state.occurrence.deadline,
                state=state.state,
                emitted_at=state.record.at if state.record else None,
                late=bool(state.record and state.record.late),
                manual=bool(state.record and state.record.manual),
                reason=state.reason,
            )
            for state in states(now, occs, records, tolerance=self.timings.late_tolerance)
        ]
        scheduled = {occ.occurrence_id for occ in occs}
        items.extend(
            ScheduledOccurrence(
                name=oid.split(":", 1)[0],
                occurrence_id=oid,
                scheduled_for=record.scheduled_for,
                deadline=record.scheduled_for,
                state=record.state,
                emitted_at=record.at,
                late=record.late,
                manual=record.manual,
                reason=record.reason,
            )
            for oid, record in records.items()
            if oid not in scheduled
        )
        items.sort(key=lambda item: (item.scheduled_for, item.occurrence_id))
        return SessionSchedule(
            session_date=session.date,
            session_open=session.open,
            session_close=session.close,
            early_close=session.early_close,
            occurrences=tuple(items),
        )


async def _unsubscribe(sub: Subscription | None) -> None:
    if sub is None:
        return
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
