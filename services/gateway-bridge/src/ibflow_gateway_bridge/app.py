"""Composition root of gateway-bridge: the only process that talks to Interactive Brokers.

At start it ensures the events stream, reads the enabled portfolios (the ``portfolios``
table is order-manager's) and runs one supervised IB connection per portfolio as a
worker; ``/readyz`` is ready only while NATS, PostgreSQL and every enabled portfolio's
connection accept orders. Each connection gets a :class:`BrokerEventPublisher` (broker
events to JetStream, exactly once) and a :class:`Reconciler` (a broker snapshot after
every (re)connect). Commands are wired here by the next slices of issue 4.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ibflow.bus import ensure_stream
from ibflow.bus.subjects import EVENTS_STREAM
from ibflow.runtime import Runtime, Service, run
from ibflow_gateway_bridge.events import BrokerEventPublisher
from ibflow_gateway_bridge.reconciliation import Reconciler
from ibflow_gateway_bridge.repository import load_enabled_portfolios
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import PortfolioConnection

log = logging.getLogger("ibflow.gateway_bridge")


async def start_connections(rt: Runtime[GatewayBridgeSettings]) -> None:
    """Per enabled portfolio: a :class:`PortfolioConnection` worker and readiness check,
    its event publisher (a worker) and its reconciler."""
    js = rt.nats.jetstream()
    await ensure_stream(js, EVENTS_STREAM)
    portfolios = await load_enabled_portfolios(rt.pool)
    if not portfolios:
        log.warning("no enabled portfolio in the portfolios table: nothing to connect")
    for config in portfolios:
        connection = PortfolioConnection(
            config,
            js,
            timings=rt.settings.timings(),
            gateway_type=rt.settings.gateway_type,
        )
        events = BrokerEventPublisher(config.id, js, connection)
        reconciler = Reconciler(connection, events)
        rt.add_worker(PortfolioWorker(connection, events), name=f"ib-{config.id}")
        rt.on_shutdown(reconciler.close)
        rt.add_check(f"ib:{config.id}", _accepts_orders(connection))


class PortfolioWorker:
    """A portfolio's connection and its event publisher, stopped in that order.

    The connection stops first (its last events, the final ``disconnected`` state
    included, are queued), then the publisher drains its queue: nothing the broker said
    is left unpublished at shutdown.
    """

    def __init__(self, connection: PortfolioConnection, events: BrokerEventPublisher) -> None:
        self.connection = connection
        self.events = events

    async def run(self) -> None:
        """Run both until stopped; either one failing fails the worker."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.events.run())
            group.create_task(self.connection.run())

    async def stop(self) -> None:
        """Stop the connection, then let the publisher drain and stop."""
        await self.connection.stop()
        self.events.stop()


def _accepts_orders(connection: PortfolioConnection) -> Callable[[], bool]:
    return lambda: connection.accepts_orders


SERVICE: Service[GatewayBridgeSettings] = Service(
    GatewayBridgeSettings, startup=[start_connections], uses_nats=True, uses_database=True
)
"""The gateway-bridge service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-gateway-bridge``: run until SIGTERM/SIGINT."""
    run(SERVICE)
