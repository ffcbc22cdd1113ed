"""Composition root of order-manager: owns orders and money.

Startup: ensure the streams and the durable consumers, start the outbox relay (every
event the book enqueues is published from there), serve the commands
(``ibflow.cmd.v1.order.submit|cancel``, ``trading.halt|resume``) in a queue group so
any number of replicas share them, consume the bridge's order status, execution and
commission events (one durable consumer over the three, a fetched batch booked per
transaction) and its snapshots (shared by replicas; the database's locks and primary
keys make every booking happen once), and resolve
``PENDING``/``UNKNOWN`` orders with the broker at start, after each broker snapshot and
periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

from nats.aio.subscription import Subscription
from pydantic import BaseModel

from ibflow.bus import (
    BatchConsumerRunner,
    BatchSubscriber,
    ConsumerRunner,
    ConsumerSpec,
    Delivery,
    Subscriber,
    ensure_consumer,
    ensure_stream,
    serve,
    subjects,
)
from ibflow.bus.errors import RequestError
from ibflow.bus.rpc import request
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_STREAM
from ibflow.contracts import (
    BrokerOrderSearched,
    BrokerSnapshotCompleted,
    CancelOrder,
    CommissionReported,
    ExecutionReported,
    FindBrokerOrder,
    HaltTrading,
    ModifyOrder,
    OrderStatusChanged,
    ResumeTrading,
    SessionEventEmitted,
    SubmitOrder,
    SubmitRecommendations,
)
from ibflow.db.outbox import OutboxRelay
from ibflow.runtime import Runtime, Service, Worker, run
from ibflow.runtime.cancellation import raise_if_cancelled, wait_event
from ibflow_order_manager.book import OrderBook
from ibflow_order_manager.broker import BrokerClient
from ibflow_order_manager.entry import MorningEntry
from ibflow_order_manager.metrics import CONSUMER_PENDING, UNKNOWN_ORDERS
from ibflow_order_manager.quotes import Quotes
from ibflow_order_manager.settings import OrderManagerSettings
from ibflow_order_manager.strategy import load_strategies

log = logging.getLogger("ibflow.order_manager")

QUEUE_GROUP = "order-manager"
MORNING_ENTRY = "morning_entry"
STALE_ORDER_SWEEP = "stale_order_sweep"
RECONCILE = "reconcile"


BROKER_FACTS: tuple[str, ...] = tuple(
    subjects.wildcard(subject)
    for subject in (subjects.ORDER_STATUS, subjects.EXECUTION, subjects.COMMISSION)
)
"""The bridge's order facts, consumed by one durable so that an order's status, its
executions and their commissions are booked in stream order, a fetched batch per
transaction."""


BROKER_FACT_TYPES = (OrderStatusChanged, ExecutionReported, CommissionReported)
FACT_MODELS: dict[str, type[BaseModel]] = dict(zip(BROKER_FACTS, BROKER_FACT_TYPES, strict=True))


def consumer_specs() -> dict[str, ConsumerSpec]:
    """The durable consumers of the order-manager, by purpose."""

    def spec(durable: str, *subject: str) -> ConsumerSpec:
        return ConsumerSpec(
            stream=EVENTS_STREAM.name,
            durable=durable,
            filter_subjects=subject,
            ack_wait_seconds=30.0,
            max_deliver=20,
        )

    return {
        "facts": spec("order-manager-facts", *BROKER_FACTS),
        "snapshots": spec("order-manager-snapshots", subjects.wildcard(subjects.BROKER_SNAPSHOT)),
        "session": spec("order-manager-session", subjects.ALL_SESSION_EVENTS),
    }


class Recovery:
    """Resolves ``PENDING``/``UNKNOWN`` orders by asking the bridge, now and every
    ``interval`` seconds (and whenever :meth:`wake` is called)."""

    def __init__(self, book: OrderBook, rt: Runtime[OrderManagerSettings]) -> None:
        self._book = book
        self._rt = rt
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def wake(self) -> None:
        """Run a pass soon (a broker snapshot completed)."""
        self._wake.set()

    async def find(self, portfolio_id: str, client_order_id: str) -> bool | None:
        """Whether IB has the order; ``None`` when that cannot be established now."""
        cmd = FindBrokerOrder(portfolio_id=portfolio_id, client_order_id=client_order_id)
        try:
            answer = await request(
                self._rt.nats,
                subjects.lookup_broker_order(portfolio_id),
                cmd,
                BrokerOrderSearched,
                timeout=self._rt.settings.broker_timeout,
            )
        except RequestError as exc:
            log.info("cannot look up %s yet: %s", client_order_id, exc.message)
            return None
        return answer.found

    async def run(self) -> None:
        """Recover until stopped."""
        while not self._stop.is_set():
            raise_if_cancelled()
            try:
                resolved = await self._book.recover(self.find)
                if resolved:
                    log.warning("recovery resolved %d pending/unknown orders", resolved)
            except Exception:
                log.exception("recovery pass failed")
            await self._sample()
            await wait_event(self._wake, self._rt.settings.recovery_interval)
            self._wake.clear()

    async def _sample(self) -> None:
        """Refresh the portfolios', UNKNOWN-orders and consumer-lag gauges."""
        try:
            await self._book.refresh_metrics()
        except Exception as exc:  # metrics must never stop recovery
            log.debug("portfolio metrics refresh failed: %r", exc)
        try:
            unknown = await self._rt.pool.fetchval(
                "SELECT count(*) FROM orders WHERE status = 'UNKNOWN'"
            )
            UNKNOWN_ORDERS.set(unknown)
            js = self._rt.nats.jetstream()
            for spec in consumer_specs().values():
                info = await js.consumer_info(spec.stream, spec.durable)
                CONSUMER_PENDING.labels(spec.durable).set(info.num_pending or 0)
        except Exception as exc:  # metrics must never stop recovery
            log.debug("metrics sample failed: %r", exc)

    async def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._wake.set()


async def wire(rt: Runtime[OrderManagerSettings]) -> None:
    """Streams, consumers, outbox relay, command handlers, recovery."""
    js = rt.nats.jetstream()
    await ensure_stream(js, EVENTS_STREAM)
    await ensure_stream(js, DEAD_LETTER_STREAM)
    specs = consumer_specs()
    for spec in specs.values():
        await ensure_consumer(js, spec, update=True)
    relay = OutboxRelay(rt.pool, js)
    rt.add_worker(relay, name="outbox")
    broker = BrokerClient(rt.nats, timeout=rt.settings.broker_timeout)
    quotes = Quotes(rt.nats)
    rt.on_shutdown(quotes.close)
    book = OrderBook(
        rt.pool,
        broker,
        relay.notify,
        prices=quotes,
        resend_window=timedelta(seconds=rt.settings.resend_window),
        unconfirmed_after=timedelta(seconds=rt.settings.unconfirmed_after),
    )
    rt.on_shutdown(book.statistics.close)
    entry = MorningEntry(
        rt.pool, quotes, book.submit, relay.notify, load_strategies(rt.settings.strategies)
    )
    recovery = Recovery(book, rt)

    async def on_facts(items: Sequence[tuple[BaseModel, Delivery]]) -> None:
        await book.on_facts([fact for fact, _ in items if isinstance(fact, BROKER_FACT_TYPES)])

    async def on_snapshot(_msg: BrokerSnapshotCompleted, _: Delivery) -> None:
        recovery.wake()

    async def on_session(event: SessionEventEmitted, _: Delivery) -> None:
        if event.name == MORNING_ENTRY:
            await entry.run(event)
        elif event.name == STALE_ORDER_SWEEP:
            cancelled = await book.sweep_stale(event)
            log.info("stale sweep %s: %d cancel(s) requested", event.occurrence_id, len(cancelled))
        elif event.name == RECONCILE:
            recovery.wake()

    runners: list[Worker] = [
        BatchConsumerRunner(
            js,
            BatchSubscriber(specs["facts"], FACT_MODELS, on_facts),
            batch=rt.settings.fact_batch,
        ),
        ConsumerRunner(js, Subscriber(specs["snapshots"], BrokerSnapshotCompleted, on_snapshot)),
        ConsumerRunner(js, Subscriber(specs["session"], SessionEventEmitted, on_session)),
    ]
    for runner, spec in zip(runners, specs.values(), strict=True):
        rt.add_worker(runner, name=spec.durable)
    rt.add_worker(recovery, name="recovery")

    served: list[Subscription] = []
    for _ in range(rt.settings.command_concurrency):
        served.append(
            await serve(rt.nats, subjects.SUBMIT_ORDER, SubmitOrder, book.submit, queue=QUEUE_GROUP)
        )
        served.append(
            await serve(rt.nats, subjects.CANCEL_ORDER, CancelOrder, book.cancel, queue=QUEUE_GROUP)
        )
        served.append(
            await serve(rt.nats, subjects.MODIFY_ORDER, ModifyOrder, book.modify, queue=QUEUE_GROUP)
        )
    served.append(
        await serve(rt.nats, subjects.HALT_TRADING, HaltTrading, book.halt, queue=QUEUE_GROUP)
    )
    served.append(
        await serve(
            rt.nats,
            subjects.SUBMIT_RECOMMENDATIONS,
            SubmitRecommendations,
            book.record_recommendations,
            queue=QUEUE_GROUP,
        )
    )
    served.append(
        await serve(rt.nats, subjects.RESUME_TRADING, ResumeTrading, book.resume, queue=QUEUE_GROUP)
    )

    async def unsubscribe() -> None:
        for sub in served:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    rt.on_shutdown(unsubscribe)


SERVICE: Service[OrderManagerSettings] = Service(
    OrderManagerSettings, startup=[wire], uses_nats=True, uses_database=True
)
"""The order-manager service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-order-manager``: run until SIGTERM/SIGINT."""
    run(SERVICE)
