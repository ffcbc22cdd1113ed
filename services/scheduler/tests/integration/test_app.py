"""The scheduler composition root in-process (``Runtime``): it provisions the stream and
the KV bucket, takes the lease, emits on its clock, reports readiness with the bucket
check and metrics, and releases the lease when stopped."""

from __future__ import annotations

import asyncio
import json

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.runtime import EXIT_OK, Runtime
from ibflow.testing.http import http_get
from ibflow_scheduler.app import service
from ibflow_scheduler.clock import FakeClock
from ibflow_scheduler.settings import SchedulerSettings
from ibflow_scheduler.store import BUCKET, LEADER_KEY

from .conftest import CALENDAR, copies, ny, stored_session_events, wait_until


async def test_the_service_takes_the_lease_emits_what_is_due_and_reports_ready(
    nats_url: str, nc: NatsClient
) -> None:
    clock = FakeClock(ny(9, 15))
    settings = SchedulerSettings.load(
        nats_url=nats_url,
        http_port=0,
        lease_ttl_seconds=1,
        lease_renew_seconds=0.2,
        replica_id="scheduler-test",
    )
    rt = Runtime(service(clock=clock, calendar=CALENDAR), settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    js = nc.jetstream()
    try:
        await wait_until(lambda: rt.ready, within=10.0)

        async def emitted() -> set[str]:
            try:
                return set(copies(await stored_session_events(js)))
            except nats.js.errors.NotFoundError:
                return set()

        for _ in range(500):
            if await emitted() == {"premarket:2026-11-23:0", "morning_entry:2026-11-23:0"}:
                break
            await asyncio.sleep(0.01)
        assert await emitted() == {"premarket:2026-11-23:0", "morning_entry:2026-11-23:0"}

        status, body = await http_get(rt.http_port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"]["kv"] == "ok"
        assert "database" not in json.loads(body)["checks"]
        _, metrics = await http_get(rt.http_port, "/metrics")
        assert "ibflow_scheduler_leader 1.0" in metrics
        assert 'ibflow_scheduler_events_emitted_total{name="morning_entry"}' in metrics
        next_open = f"{ny(9, 30).timestamp():.7e}"  # prometheus' float format: 1.7954442e+09
        assert f'next_event_timestamp_seconds{{name="market_open"}} {next_open}' in metrics
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 15) == EXIT_OK
    kv = await js.key_value(BUCKET)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(LEADER_KEY)  # released on the way out
