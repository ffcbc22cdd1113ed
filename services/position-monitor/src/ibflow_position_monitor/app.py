"""Composition root of position-monitor: owns day-trade positions.

Startup: refuse an exit mode that is not implemented, ensure the streams and the
durable consumers, start the outbox relay (every ``PositionChanged``,
``PositionDriftDetected`` and ``ReconciliationReported`` is published from there),
consume the order-manager's ``OrderBookUpdated`` and the bridge's order status,
execution, commission, position and snapshot events plus the scheduler's session events
(one durable consumer each, shared by replicas; row locks and deterministic exit ids
make every effect happen once), watch the market data of every symbol held
(:class:`~.watch.MarketWatch`) and serve ``FlattenPositions``, ``SetPositionLevels`` and
``RequestReconciliation`` in a queue group.
"""

from __future__ import annotations

import contextlib
import logging

from nats.aio.subscription import Subscription

from ibflow.bus import (
    ConsumerRunner,
    ConsumerSpec,
    Delivery,
    Subscriber,
    ensure_consumer,
    ensure_stream,
    serve,
    subjects,
)
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_STREAM
from ibflow.contracts import (
    BrokerPositionReported,
    BrokerSnapshotCompleted,
    CommissionReported,
    ExecutionReported,
    FlattenPositions,
    OrderBookUpdated,
    OrderStatusChanged,
    RequestReconciliation,
    SessionEventEmitted,
    SetPositionLevels,
)
from ibflow.db.outbox import OutboxRelay
from ibflow.runtime import Runtime, Service, Worker, run
from ibflow_position_monitor import repository as repo
from ibflow_position_monitor.book import PositionBook
from ibflow_position_monitor.commands import Commands
from ibflow_position_monitor.orders import OrderClient
from ibflow_position_monitor.reconciliation import Reconciler
from ibflow_position_monitor.settings import PositionMonitorSettings
from ibflow_position_monitor.watch import MarketWatch

log = logging.getLogger("ibflow.position_monitor")

QUEUE_GROUP = "position-monitor"


def consumer_specs() -> dict[str, ConsumerSpec]:
    """The durable consumers of the position-monitor, by purpose."""

    def spec(durable: str, subject: str) -> ConsumerSpec:
        return ConsumerSpec(
            stream=EVENTS_STREAM.name,
            durable=durable,
            filter_subjects=(subject,),
            ack_wait_seconds=30.0,
            max_deliver=20,
        )

    return {
        "orders": spec("position-monitor-orders", subjects.wildcard(subjects.ORDER_UPDATED)),
        "status": spec("position-monitor-status", subjects.wildcard(subjects.ORDER_STATUS)),
        "executions": spec("position-monitor-executions", subjects.wildcard(subjects.EXECUTION)),
        "commissions": spec("position-monitor-commissions", subjects.wildcard(subjects.COMMISSION)),
        "positions": spec(
            "position-monitor-broker-positions", subjects.wildcard(subjects.BROKER_POSITION)
        ),
        "snapshots": spec(
            "position-monitor-snapshots", subjects.wildcard(subjects.BROKER_SNAPSHOT)
        ),
        "session": spec("position-monitor-session", subjects.ALL_SESSION_EVENTS),
    }


async def wire(rt: Runtime[PositionMonitorSettings]) -> None:
    """Streams, consumers, outbox relay, market watch, command handlers."""
    settings = rt.settings
    js = rt.nats.jetstream()
    await ensure_stream(js, EVENTS_STREAM)
    await ensure_stream(js, DEAD_LETTER_STREAM)
    specs = consumer_specs()
    for spec in specs.values():
        await ensure_consumer(js, spec, update=True)
    relay = OutboxRelay(rt.pool, js)
    rt.add_worker(relay, name="outbox")

    watch_ref: list[MarketWatch] = []

    def on_change(stored: repo.Stored) -> None:
        if watch_ref:
            watch_ref[0].update(stored)

    orders = OrderClient(rt.nats, timeout=settings.order_timeout)
    book = PositionBook(rt.pool, orders, relay.notify, on_change=on_change)
    watch = MarketWatch(rt.nats, js, rt.pool, book, settings)
    watch_ref.append(watch)
    reconciler = Reconciler(
        rt.pool, relay.notify, on_change=on_change, settle=settings.reconcile_settle
    )
    commands = Commands(
        rt.nats, rt.pool, book=book, watch=watch, reconciler=reconciler, settings=settings
    )
    durable = {name: spec.durable for name, spec in specs.items()}

    async def on_order(msg: OrderBookUpdated, d: Delivery) -> None:
        await book.on_order_updated(msg, durable["orders"], d.msg_id)

    async def on_status(msg: OrderStatusChanged, d: Delivery) -> None:
        await book.on_status(msg, durable["status"], d.msg_id)

    async def on_execution(msg: ExecutionReported, d: Delivery) -> None:
        await book.on_execution(msg, durable["executions"], d.msg_id)

    async def on_commission(msg: CommissionReported, d: Delivery) -> None:
        await book.on_commission(msg, durable["commissions"], d.msg_id)

    async def on_position(msg: BrokerPositionReported, _: Delivery) -> None:
        await reconciler.on_broker_position(msg)

    async def on_snapshot(msg: BrokerSnapshotCompleted, d: Delivery) -> None:
        await reconciler.on_snapshot(
            msg, durable["snapshots"], d.msg_id, first=d.num_delivered == 1
        )

    async def on_session(event: SessionEventEmitted, _: Delivery) -> None:
        await commands.on_session(event)

    runners: list[Worker] = [
        ConsumerRunner(js, Subscriber(specs["orders"], OrderBookUpdated, on_order)),
        ConsumerRunner(js, Subscriber(specs["status"], OrderStatusChanged, on_status)),
        ConsumerRunner(js, Subscriber(specs["executions"], ExecutionReported, on_execution)),
        ConsumerRunner(js, Subscriber(specs["commissions"], CommissionReported, on_commission)),
        ConsumerRunner(js, Subscriber(specs["positions"], BrokerPositionReported, on_position)),
        ConsumerRunner(js, Subscriber(specs["snapshots"], BrokerSnapshotCompleted, on_snapshot)),
        ConsumerRunner(js, Subscriber(specs["session"], SessionEventEmitted, on_session)),
    ]
    for runner, spec in zip(runners, specs.values(), strict=True):
        rt.add_worker(runner, name=spec.durable)
    await watch.reload()
    await watch.sync()
    rt.add_worker(watch, name="market-watch")

    served: list[Subscription] = []
    for _ in range(settings.command_concurrency):
        served.append(
            await serve(
                rt.nats,
                subjects.FLATTEN_POSITIONS,
                FlattenPositions,
                commands.on_flatten,
                queue=QUEUE_GROUP,
            )
        )
        served.append(
            await serve(
                rt.nats,
                subjects.SET_POSITION_LEVELS,
                SetPositionLevels,
                commands.on_set_levels,
                queue=QUEUE_GROUP,
            )
        )
    served.append(
        await serve(
            rt.nats,
            subjects.REQUEST_RECONCILIATION,
            RequestReconciliation,
            commands.on_reconcile,
            queue=QUEUE_GROUP,
        )
    )

    async def unsubscribe() -> None:
        for sub in served:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    rt.on_shutdown(unsubscribe)


SERVICE: Service[PositionMonitorSettings] = Service(
    PositionMonitorSettings, startup=[wire], uses_nats=True, uses_database=True
)
"""The position-monitor service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-position-monitor``: run until SIGTERM/SIGINT."""
    run(SERVICE)
