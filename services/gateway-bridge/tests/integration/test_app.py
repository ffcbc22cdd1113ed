"""The gateway-bridge composition root, in-process: PostgreSQL portfolios → IB connections.

Real PostgreSQL (the portfolios table from order-manager's migrations), real nats-server,
gateway-sim over TCP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from decimal import Decimal

import asyncpg
from nats.aio.client import Client as NatsClient

from ibflow.bus import publish
from ibflow.bus.subjects import portfolio_changed
from ibflow.contracts import PortfolioChanged
from ibflow.contracts.enums import ConnectionState
from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow.testing.http import http_get
from ibflow_gateway_bridge.app import SERVICE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import ConnectionEvents, wait_until

INSERT = """
INSERT INTO portfolios (id, name, broker_port, client_id, account, cash, enabled)
VALUES ($1, $1, $2, $3, 'DU1234567', 100000, $4)
"""


async def test_enabled_portfolio_is_connected_and_gates_readiness(
    database_url: str,
    nats_url: str,
    gateway_sim: GatewaySimulator,
    connection_events: ConnectionEvents,
) -> None:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(INSERT, "alpha", gateway_sim.port, 11, True)
        await conn.execute(INSERT, "dormant", gateway_sim.port, 12, False)
    finally:
        await conn.close()
    settings = GatewayBridgeSettings.load(
        nats_url=nats_url,
        database_url=database_url,
        http_port=0,
        gateway_type="simulator",
        heartbeat_interval=0.3,
        heartbeat_timeout=0.3,
        reconnect_base=0.1,
    )
    rt = Runtime(SERVICE, settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    try:
        await connection_events.wait_for(
            lambda events: any(e.state is ConnectionState.READY for e in events)
        )
        await wait_until(lambda: rt.ready, within=10.0)
        status, body = await http_get(rt.http_port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"]["ib:alpha"] == "ok"
        assert "ib:dormant" not in json.loads(body)["checks"]
        assert {e.portfolio_id for e in connection_events.events} == {"alpha"}

        gateway_sim.faults.silence(True)
        status, body = await _wait_for_status(rt.http_port, 503)
        assert "ib:alpha" in json.loads(body)["failed"]
        gateway_sim.faults.silence(False)
        await _wait_for_status(rt.http_port, 200)
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 15) == EXIT_OK
    assert connection_events.events[-1].state is ConnectionState.DISCONNECTED


async def test_portfolio_changes_start_stop_and_restart_connections(
    database_url: str,
    nats_url: str,
    nc: NatsClient,
    gateway_sim: GatewaySimulator,
    connection_events: ConnectionEvents,
) -> None:
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager")
    conn = await asyncpg.connect(database_url)
    settings = GatewayBridgeSettings.load(
        nats_url=nats_url,
        database_url=database_url,
        http_port=0,
        gateway_type="simulator",
        reconnect_base=0.1,
    )
    rt = Runtime(SERVICE, settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(rt.serve(stop))
    revision = 0

    async def changed(portfolio_id: str) -> None:
        nonlocal revision
        revision += 1
        event = PortfolioChanged(
            portfolio_id=portfolio_id,
            revision=revision,
            session_date=dt.date(2026, 11, 20),
            currency="USD",
            cash_balance=Decimal(100000),
        )
        await publish(nc.jetstream(), portfolio_changed(portfolio_id), event)

    def states(portfolio_id: str) -> list[ConnectionState]:
        return [e.state for e in connection_events.events if e.portfolio_id == portfolio_id]

    try:
        await wait_until(lambda: rt.ready, within=10.0)
        assert connection_events.events == []

        await conn.execute(INSERT, "late", gateway_sim.port, 21, True)
        await changed("late")
        await wait_until(lambda: ConnectionState.READY in states("late"))
        _, body = await _wait_for_status(rt.http_port, 200)
        assert json.loads(body)["checks"]["ib:late"] == "ok"

        await conn.execute("UPDATE portfolios SET client_id = 22 WHERE id = 'late'")
        await changed("late")
        await wait_until(lambda: states("late").count(ConnectionState.READY) == 2)
        readies = [e for e in connection_events.events if e.state is ConnectionState.READY]
        assert [e.client_id for e in readies] == [21, 22]
        assert ConnectionState.DISCONNECTED in states("late")

        await conn.execute("UPDATE portfolios SET enabled = false WHERE id = 'late'")
        await changed("late")
        await wait_until(lambda: states("late")[-1] is ConnectionState.DISCONNECTED)
        # its readiness check goes once the stopped runner is retired, just after that
        deadline = time.monotonic() + 5.0
        while "ib:late" in json.loads((await http_get(rt.http_port, "/readyz"))[1])["checks"]:
            assert time.monotonic() < deadline, "the disabled portfolio's check stayed"
            await asyncio.sleep(0.02)
        seen = len(states("late"))
        await changed("late")
        await asyncio.sleep(0.3)
        assert len(states("late")) == seen
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 15) == EXIT_OK
        await conn.close()


async def _wait_for_status(port: int, wanted: int, within: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + within
    while True:
        status, body = await http_get(port, "/readyz")
        if status == wanted:
            return status, body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {status}: {body}")
        await asyncio.sleep(0.05)
