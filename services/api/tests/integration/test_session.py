"""The session schedule and operator triggers, through the real scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ibflow.runtime import EXIT_OK, Runtime
from ibflow_api.keys import Scope
from ibflow_scheduler.app import SERVICE as SCHEDULER
from ibflow_scheduler.settings import SchedulerSettings

from .conftest import Stack, wait_for


@pytest.fixture
async def scheduler(stack: Stack, nats_url: str) -> AsyncIterator[None]:
    rt = Runtime(SCHEDULER, SchedulerSettings.load(nats_url=nats_url, http_port=0))
    stop = asyncio.Event()
    task = asyncio.create_task(rt.serve(stop))
    try:
        await wait_for(lambda: rt.ready, within=20)
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == EXIT_OK


@pytest.mark.usefixtures("scheduler")
async def test_schedule_is_read_and_triggers_need_admin(stack: Stack) -> None:
    async with stack.client() as reader:
        schedule = await reader.get(
            "/api/v1/session/schedule", params={"session_date": "2026-11-23"}
        )
        forbidden = await reader.post(
            "/api/v1/session/events/stale_order_sweep/trigger", json={"reason": "test"}
        )
    assert schedule.status_code == 200, schedule.text
    body = schedule.json()
    assert body["session"]["session_date"] == "2026-11-23"
    assert {o["name"] for o in body["session"]["occurrences"]} >= {"morning_entry", "close_out"}
    assert forbidden.status_code == 403
    async with stack.client(Scope.ADMIN) as admin:
        unknown = await admin.post(
            "/api/v1/session/events/no_such_event/trigger", json={"reason": "test"}
        )
    assert unknown.status_code == 422, unknown.text
    audit = await stack.db.fetch(
        "SELECT result FROM audit_log WHERE command = 'TriggerSessionEvent'"
    )
    assert [r["result"] for r in audit] == ["refused"]
