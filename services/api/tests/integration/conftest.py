"""The api against the real stack: gateway-sim over TCP, gateway-bridge and
order-manager in-process, real nats-server and PostgreSQL, and the api's own runtime
serving HTTP and WebSocket on a free port (the same server users get)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow_api.app import SERVICE as API
from ibflow_api.bridge_state import BRIDGE_STATE_BUCKET
from ibflow_api.keys import Scope, create_key
from ibflow_api.settings import ApiSettings
from ibflow_gateway_bridge.app import SERVICE as BRIDGE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator
from ibflow_order_manager.app import SERVICE as ORDER_MANAGER
from ibflow_order_manager.settings import OrderManagerSettings

ACCOUNT = "DU1234567"
PORTFOLIO = "apit"


async def wait_for(condition: Callable[[], Any], within: float = 10.0) -> Any:
    """Await ``condition()`` (sync or async) until truthy and return it."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    """The running system and one key per scope."""

    sim: GatewaySimulator
    db: asyncpg.Connection[Any]
    nc: NatsClient
    api: Runtime[ApiSettings]
    base_url: str
    keys: dict[Scope, str]

    def client(self, scope: Scope | None = Scope.READ) -> httpx.AsyncClient:
        """An HTTP client sending the key of ``scope`` (none for ``None``)."""
        headers = {} if scope is None else {"X-API-Key": self.keys[scope]}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint."""
        return self.base_url.replace("http://", "ws://") + "/ws"


async def bridge_ready(nc: NatsClient, portfolio: str = PORTFOLIO) -> bool:
    """The bridge reports the portfolio's connection ready."""
    try:
        kv = await nc.jetstream().key_value(BRIDGE_STATE_BUCKET)
        entry = await kv.get(f"connection.{portfolio}")
    except (BucketNotFoundError, KeyNotFoundError):
        return False
    return entry.value is not None and b'"state":"ready"' in entry.value


async def _keys(db: asyncpg.Connection[Any]) -> dict[Scope, str]:
    return {scope: (await create_key(db, f"test-{scope}", scope)).secret for scope in Scope}


@pytest.fixture
async def stack(database_url: str, nats_url: str, nc: NatsClient) -> AsyncIterator[Stack]:
    """gateway-sim + gateway-bridge + order-manager + api, with a ready paper portfolio."""
    config = SimConfig.model_validate({"market": {"auto_advance": False}})
    sim = GatewaySimulator(config.with_seed(5))
    await sim.start("127.0.0.1", 0)
    sim.faults.freeze(True)
    sim.faults.set_price("AAPL", Decimal(100))
    await apply_migrations(database_url, "ibflow.db", "ibflow_order_manager", "ibflow_api")
    db = await asyncpg.connect(database_url)
    await db.execute(
        """
        INSERT INTO portfolios (id, name, broker_port, client_id, account, cash)
        VALUES ($1, 'api test', $2, 51, $3, 1000000)
        """,
        PORTFOLIO,
        sim.port,
        ACCOUNT,
    )
    await db.execute(
        "INSERT INTO instruments (symbol, con_id, currency, primary_exchange)"
        " VALUES ('AAPL', 265598, 'USD', 'NASDAQ'), ('MSFT', 272093, 'USD', 'NASDAQ')"
    )
    keys = await _keys(db)
    common = {"nats_url": nats_url, "database_url": database_url, "http_port": 0}
    bridge = Runtime(BRIDGE, GatewayBridgeSettings.load(gateway_type="simulator", **common))
    manager = Runtime(ORDER_MANAGER, OrderManagerSettings.load(**common))
    api = Runtime(
        API, ApiSettings.load(ws_queue_size=64, key_cache_seconds=0, command_timeout=8, **common)
    )
    stop = asyncio.Event()
    runtimes = (bridge, manager, api)
    tasks = [asyncio.create_task(rt.serve(stop)) for rt in runtimes]
    try:
        await wait_for(lambda: all(rt.ready for rt in runtimes), within=20)
        await wait_for(lambda: bridge_ready(nc), within=20)
        yield Stack(sim, db, nc, api, f"http://127.0.0.1:{api.http_port}", keys)
    finally:
        stop.set()
        assert [await asyncio.wait_for(t, 20) for t in tasks] == [EXIT_OK] * 3
        await db.close()
        await sim.stop()
