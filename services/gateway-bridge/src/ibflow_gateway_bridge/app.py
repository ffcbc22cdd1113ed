"""Composition root of gateway-bridge: the only process that talks to Interactive Brokers.

At start it ensures the events stream, reads the enabled portfolios (the ``portfolios``
table is order-manager's) and runs one supervised IB connection per portfolio in a
:class:`PortfolioFleet`, which follows ``PortfolioChanged`` (portfolios added, disabled
or reconfigured are started, stopped or restarted); ``/readyz`` is ready only while
NATS, PostgreSQL and every enabled portfolio's connection accept orders. Each connection
gets a :class:`BrokerEventPublisher` (broker events to JetStream, exactly once) and a
:class:`Reconciler` (a broker snapshot after every (re)connect) and
:class:`BrokerCommands` (place/cancel/modify/refresh over NATS request/reply, every
broker message through the portfolio's :class:`Pacer`) and :class:`MarketDataFeed`
(market data subscriptions, ticks on core NATS, replayed after reconnects and 1101).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ibflow.bus import ensure_stream
from ibflow.bus.subjects import EVENTS_STREAM
from ibflow.runtime import Runtime, Service, run
from ibflow_gateway_bridge.commands import BrokerCommands
from ibflow_gateway_bridge.events import BrokerEventPublisher
from ibflow_gateway_bridge.fleet import PortfolioFleet
from ibflow_gateway_bridge.market_data import MarketDataFeed, MarketDataRouter
from ibflow_gateway_bridge.pacing import Pacer
from ibflow_gateway_bridge.reconciliation import Reconciler
from ibflow_gateway_bridge.repository import PortfolioConfig, load_enabled_portfolios
from ibflow_gateway_bridge.settings import GatewayBridgeSettings
from ibflow_gateway_bridge.supervisor import PortfolioConnection

log = logging.getLogger("ibflow.gateway_bridge")


async def start_connections(rt: Runtime[GatewayBridgeSettings]) -> None:
    """Ensure the events stream, then run a :class:`PortfolioFleet` (one
    :class:`PortfolioWorker` and readiness check ``ib:<id>`` per enabled portfolio,
    following ``PortfolioChanged``) and the market-data router shared by their feeds."""
    js = rt.nats.jetstream()
    await ensure_stream(js, EVENTS_STREAM)
    portfolios = await load_enabled_portfolios(rt.pool)
    if not portfolios:
        log.warning("no enabled portfolio in the portfolios table: nothing to connect yet")
    router = MarketDataRouter(rt.nats, [])

    def build(config: PortfolioConfig) -> PortfolioWorker:
        connection = PortfolioConnection(
            config,
            js,
            timings=rt.settings.timings(),
            gateway_type=rt.settings.gateway_type,
        )
        events = BrokerEventPublisher(config.id, js, connection)
        reconciler = Reconciler(connection, events)
        pacer = Pacer(config.id)
        commands = BrokerCommands(config.id, rt.nats, connection, pacer, reconciler=reconciler)
        feed = MarketDataFeed(
            config.id,
            rt.nats,
            connection,
            pacer,
            linger_seconds=rt.settings.market_data_linger_seconds,
        )
        router.add_feed(feed)
        rt.add_check(f"ib:{config.id}", _accepts_orders(connection))
        return PortfolioWorker(
            connection, events, commands, market_data=feed, reconciler=reconciler
        )

    async def retire(config: PortfolioConfig) -> None:
        router.remove_feed(config.id)
        rt.remove_check(f"ib:{config.id}")

    fleet = PortfolioFleet(
        rt.nats,
        lambda: load_enabled_portfolios(rt.pool),
        build,
        retire,
        reload_interval=rt.settings.portfolio_reload_interval,
    )
    await fleet.start(portfolios)
    rt.add_worker(fleet, name="portfolios")
    await router.start()
    rt.on_shutdown(router.stop)


class PortfolioWorker:
    """A portfolio's command handlers, connection and event publisher, stopped in that order.

    The command handlers (the market data feed's too) are subscribed before the
    connection starts (they refuse with ``not_ready`` until it is ready) and unsubscribed
    first at shutdown. The connection stops next (its last events, the final
    ``disconnected`` state included, are queued), then the publisher drains its queue:
    nothing the broker said is left unpublished at shutdown.
    """

    def __init__(
        self,
        connection: PortfolioConnection,
        events: BrokerEventPublisher,
        commands: BrokerCommands | None = None,
        *,
        market_data: MarketDataFeed | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.connection = connection
        self.events = events
        self.commands = commands
        self.market_data = market_data
        self.reconciler = reconciler
        self._stopped = False

    async def run(self) -> None:
        """Subscribe the commands, run connection and publisher until stopped; either
        one failing fails the worker. Returns at once if stopped before it began."""
        if self._stopped:
            return
        if self.commands is not None:
            await self.commands.start()
        if self.market_data is not None:
            await self.market_data.start()
        if self.stopped:  # stopped while subscribing: undo what those awaits started
            await self.stop()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self.events.run())
            group.create_task(self.connection.run())

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    async def stop(self) -> None:
        """Stop taking commands, stop the connection, then let the publisher drain and stop."""
        self._stopped = True
        if self.market_data is not None:
            await self.market_data.stop()
        if self.commands is not None:
            await self.commands.stop()
        await self.connection.stop()
        if self.reconciler is not None:
            await self.reconciler.close()
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
