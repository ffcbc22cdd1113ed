"""Composition root of scheduler: trading-session events on the exchange calendar.

Startup: ensure the events stream and the ``IBFLOW_SCHEDULER`` KV bucket, build the
NYSE calendar, and run one :class:`~ibflow_scheduler.scheduler.SessionScheduler` worker.
Every replica answers ``ibflow.cmd.v1.session.schedule``; the one holding the leader
lease emits the session events and answers ``ibflow.cmd.v1.session.trigger``. ``/readyz``
includes ``kv``: the bucket is reachable. No database.

``ibflow-scheduler`` runs the service; ``ibflow-scheduler plan --date YYYY-MM-DD
[--json]`` prints a day's plan without NATS (see :mod:`ibflow_scheduler.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ibflow.bus import ensure_stream
from ibflow.bus.subjects import EVENTS_STREAM
from ibflow.runtime import Runtime, Service, run
from ibflow_scheduler.cli import build_parser, run_plan
from ibflow_scheduler.clock import Clock, SystemClock
from ibflow_scheduler.domain.calendar import NyseCalendar, new_york_date
from ibflow_scheduler.scheduler import SchedulerTimings, SessionScheduler
from ibflow_scheduler.settings import SchedulerSettings
from ibflow_scheduler.store import ensure_bucket

__all__ = ["SERVICE", "main", "service", "timings"]


def timings(settings: SchedulerSettings) -> SchedulerTimings:
    """The :class:`SchedulerTimings` these settings describe."""
    return SchedulerTimings(
        lease_ttl=settings.lease_ttl_seconds,
        lease_renew=settings.lease_renew_seconds,
        late_tolerance=settings.late_tolerance,
    )


def service(
    clock: Clock | None = None, calendar: NyseCalendar | None = None
) -> Service[SchedulerSettings]:
    """The scheduler service, on ``clock`` (default: the system clock)."""

    async def wire(rt: Runtime[SchedulerSettings]) -> None:
        js = rt.nats.jetstream()
        await ensure_stream(js, EVENTS_STREAM)
        kv = await ensure_bucket(js, history_days=rt.settings.history_days)
        used_clock = clock or SystemClock()
        used_calendar = calendar or NyseCalendar()
        used_calendar.session(new_york_date(used_clock.now()))  # build it now, not on the hour
        scheduler = SessionScheduler(
            rt.nats,
            kv,
            js=js,
            config=rt.settings.schedule_config(),
            calendar=used_calendar,
            clock=used_clock,
            replica_id=rt.settings.replica_id,
            timings=timings(rt.settings),
        )
        rt.add_worker(scheduler, name="scheduler")

        async def bucket_reachable() -> bool:
            await kv.status()
            return True

        rt.add_check("kv", bucket_reachable)

    return Service(SchedulerSettings, startup=[wire], uses_nats=True, uses_database=False)


SERVICE: Service[SchedulerSettings] = service()
"""The scheduler service: settings, connections and startup steps."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``ibflow-scheduler``: run the service, or ``plan`` a day (dry run)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "plan":
        raise SystemExit(run_plan(args.date, as_json=args.json))
    run(SERVICE)
