"""The whole path in-process: gateway-sim over TCP, the gateway-bridge, the
order-manager and the position-monitor, on real nats-server and PostgreSQL.

Two portfolios share one simulator with two accounts: ``pa`` (DU1234567, client 41)
and ``pb`` (DU7654321, client 42). The market is frozen and its clock stopped: prices
move only when a test calls ``sim.faults.set_price``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from ibflow.bus import publish, request, subjects
from ibflow.contracts import (
    CommandAccepted,
    OrderPurpose,
    OrderSide,
    OrderType,
    SessionEventEmitted,
    SubmitOrder,
)
from ibflow.db import apply_migrations
from ibflow.runtime import EXIT_OK, Runtime
from ibflow_gateway_bridge.app import SERVICE as BRIDGE
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import STATE_BUCKET, state_key
from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator
from ibflow_order_manager.app import SERVICE as ORDER_MANAGER
from ibflow_order_manager.settings import OrderManagerSettings
from ibflow_position_monitor.app import SERVICE as POSITION_MONITOR
from ibflow_position_monitor.settings import PositionMonitorSettings

ACCOUNTS = {"pa": ("DU1234567", 41), "pb": ("DU7654321", 42)}
START_CASH = Decimal(1_000_000)


async def wait_for(condition: Callable[[], Any], within: float = 15.0) -> None:
    """Await ``condition()`` (sync or async) until truthy; AssertionError after ``within``."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


def session_event(name: str, sequence: int = 1) -> SessionEventEmitted:
    """A session event of today, as the scheduler would emit it."""
    now = dt.datetime.now(dt.UTC)
    return SessionEventEmitted(
        name=name,
        occurrence_id=f"{name}:{now.date().isoformat()}:{sequence}",
        session_date=now.date(),
        scheduled_for=now,
        emitted_at=now,
        session_open=now - dt.timedelta(hours=5),
        session_close=now + dt.timedelta(minutes=10),
    )


@dataclass
class Stack:
    """Handles on the running system."""

    sim: GatewaySimulator
    db: asyncpg.Connection[Any]
    nc: NatsClient
    database_url: str
    nats_url: str
    monitors: list[Runtime[PositionMonitorSettings]] = field(default_factory=list)
    start_monitor: Callable[[], Awaitable[Runtime[PositionMonitorSettings]]] | None = None

    async def open_position(
        self,
        position_id: str,
        *,
        portfolio: str = "pa",
        symbol: str = "AAPL",
        quantity: Decimal = Decimal(100),
        side: OrderSide = OrderSide.BUY,
        stop_loss: Decimal | None = Decimal(95),
        take_profit: Decimal | None = Decimal(110),
        limit_price: Decimal = Decimal("100.5"),
    ) -> None:
        """Submit an entry through the order-manager and wait for the position to open."""
        cmd = SubmitOrder(
            portfolio_id=portfolio,
            client_order_id=f"entry:{position_id}",
            symbol=symbol,
            side=side,
            order_type=OrderType.LMT,
            quantity=quantity,
            limit_price=limit_price,
            purpose=OrderPurpose.ENTRY,
            position_id=position_id,
            stop_loss=stop_loss,
            take_profit=take_profit,
            requested_by="user:test",
        )
        await request(self.nc, subjects.SUBMIT_ORDER, cmd, CommandAccepted, timeout=15)
        await wait_for(lambda: self.status_is(position_id, "OPEN"))
        await wait_for(lambda: self.watched(symbol))

    async def position(self, position_id: str) -> asyncpg.Record:
        row = await self.db.fetchrow("SELECT * FROM positions WHERE id = $1", position_id)
        assert row is not None, position_id
        return row

    async def status_is(self, position_id: str, status: str) -> bool:
        row = await self.db.fetchrow("SELECT status FROM positions WHERE id = $1", position_id)
        return row is not None and row["status"] == status

    def watched(self, symbol: str) -> bool:
        """Every monitor listens to ``symbol``'s ticks and holds a lease for it."""
        return all(
            symbol in monitor_watch(m)._subs and symbol in monitor_watch(m)._leased
            for m in self.monitors
        )

    async def session(self, name: str, sequence: int = 1) -> None:
        await publish(
            self.nc.jetstream(), subjects.session_event(name), session_event(name, sequence)
        )

    def sim_orders(self, account: str = "DU1234567") -> list[dict[str, Any]]:
        """Every execution at the simulator of ``account``."""
        return list(self.sim.faults.account_state(account)["executions"])


def monitor_watch(rt: Runtime[PositionMonitorSettings]) -> Any:
    """The MarketWatch worker of a running position-monitor."""
    for name, worker in rt._workers:
        if name == "market-watch":
            return worker
    raise AssertionError("no market watch")


async def _bridge_ready(nc: NatsClient, portfolios: list[str]) -> bool:
    try:
        kv = await nc.jetstream().key_value(STATE_BUCKET)
        for portfolio in portfolios:
            entry = await kv.get(state_key(portfolio))
            if entry.value is None or b'"state":"ready"' not in entry.value:
                return False
    except (BucketNotFoundError, KeyNotFoundError):
        return False
    return True


def monitor_settings(nats_url: str, database_url: str, **overrides: Any) -> PositionMonitorSettings:
    """Test settings: short staleness, fast refreshes, a short settle."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "http_port": 0,
        "stale_after": 1.5,
        "refresh_interval": 0.5,
        "exit_resend_after": 3.0,
        "marks_interval": 0.5,
        "reconcile_settle": 0.5,
    }
    values.update(overrides)
    return PositionMonitorSettings.load(**values)


@pytest.fixture
def monitor_overrides() -> dict[str, Any]:
    """Override in a test module to change the monitors' settings."""
    return {}


@pytest.fixture
def monitor_count() -> int:
    """How many position-monitor replicas the stack starts (override per module)."""
    return 1


@pytest.fixture
async def stack(
    database_url: str,
    nats_url: str,
    nc: NatsClient,
    monitor_overrides: dict[str, Any],
    monitor_count: int,
) -> AsyncIterator[Stack]:
    config = SimConfig.model_validate(
        {
            "accounts": [{"id": account} for account, _ in ACCOUNTS.values()],
            "market": {"auto_advance": False},
        }
    )
    sim = GatewaySimulator(config.with_seed(5))
    await sim.start("127.0.0.1", 0)
    sim.faults.freeze(True)
    for symbol in ("AAPL", "MSFT"):
        sim.faults.set_price(symbol, Decimal(100))
    await apply_migrations(
        database_url, "ibflow.db", "ibflow_order_manager", "ibflow_position_monitor"
    )
    db = await asyncpg.connect(database_url)
    for portfolio, (account, client_id) in ACCOUNTS.items():
        await db.execute(
            "INSERT INTO portfolios (id, name, broker_port, client_id, account, cash,"
            " max_order_value) VALUES ($1, $1, $2, $3, $4, $5, 100000)",
            portfolio,
            sim.port,
            client_id,
            account,
            START_CASH,
        )
    await db.execute(
        "INSERT INTO instruments (symbol, currency, primary_exchange)"
        " VALUES ('AAPL', 'USD', 'NASDAQ'), ('MSFT', 'USD', 'NASDAQ')"
    )
    common = {"nats_url": nats_url, "database_url": database_url, "http_port": 0}
    bridge = Runtime(BRIDGE, GatewayBridgeSettings.load(gateway_type="simulator", **common))
    manager = Runtime(ORDER_MANAGER, OrderManagerSettings.load(recovery_interval=0.5, **common))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(rt.serve(stop)) for rt in (bridge, manager)]
    stack = Stack(sim, db, nc, database_url, nats_url)

    async def start_monitor() -> Runtime[PositionMonitorSettings]:
        monitor = Runtime(
            POSITION_MONITOR, monitor_settings(nats_url, database_url, **monitor_overrides)
        )
        tasks.append(asyncio.create_task(monitor.serve(stop)))
        await wait_for(lambda: monitor.ready)
        stack.monitors.append(monitor)
        return monitor

    stack.start_monitor = start_monitor
    try:
        await wait_for(lambda: bridge.ready and manager.ready)
        await wait_for(lambda: _bridge_ready(nc, list(ACCOUNTS)), within=20)
        for _ in range(monitor_count):
            await start_monitor()
        yield stack
    finally:
        stop.set()
        results = [await asyncio.wait_for(t, 30) for t in tasks]
        await db.close()
        await sim.stop()
        assert all(r == EXIT_OK for r in results), results


async def session_consumer_done(stack: Stack, events: int) -> bool:
    """The monitors' session consumer has handled (acked) ``events`` session events."""
    info = await stack.nc.jetstream().consumer_info("IBFLOW_EVENTS", "position-monitor-session")
    return (
        info.num_ack_pending == 0
        and info.num_pending == 0
        and info.delivered.consumer_seq >= events
    )
