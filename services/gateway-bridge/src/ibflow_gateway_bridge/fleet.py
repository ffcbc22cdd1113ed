"""The set of portfolio connections, kept in step with the ``portfolios`` table.

The bridge runs one :class:`~ibflow_gateway_bridge.app.PortfolioWorker` per enabled
portfolio. The table belongs to order-manager, which publishes ``PortfolioChanged``
after changing a portfolio; on any such event (and every ``reload_interval`` seconds,
for changes made by hand in SQL) the fleet re-reads the table and:

* starts a worker for a portfolio that is new or newly enabled;
* stops the worker of a portfolio that was deleted or disabled (cleanly: its commands
  are unsubscribed, the IB connection closed, its last events published);
* restarts the worker of a portfolio whose connection settings changed (host, port,
  client ids, account, paper/live flags), so the new settings take effect at once.

Portfolios whose settings did not change are left alone: a money-only
``PortfolioChanged`` (the usual kind, after a fill) costs one query and nothing else.
Reloads triggered in a burst are coalesced into one, and event-triggered reloads are at
least ``reload_min_gap`` (0.5 s) apart: ``PortfolioChanged`` comes after every fill, so
without the gap a steady flow of fills meant one query per fill; a settings change
still takes effect within that gap. A failed reload (database
unreachable) keeps the running workers and is retried at the next trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ibflow.bus.subjects import PORTFOLIO_CHANGED
from ibflow.runtime.cancellation import wait_event
from ibflow_gateway_bridge.repository import PortfolioConfig

log = logging.getLogger("ibflow.gateway_bridge.fleet")


class PortfolioRunner(Protocol):
    """What the fleet runs per portfolio (a ``PortfolioWorker``)."""

    async def run(self) -> None:
        """Run until stopped; raising fails the whole fleet."""

    async def stop(self) -> None:
        """Stop cleanly; :meth:`run` then returns."""


@dataclass(slots=True)
class _Running:
    config: PortfolioConfig
    runner: PortfolioRunner
    task: asyncio.Task[None]


class PortfolioFleet:
    """Runs one :class:`PortfolioRunner` per enabled portfolio and follows table changes.

    ``load`` reads the enabled portfolios; ``build`` makes the runner of one (and may
    register what the portfolio needs, e.g. a readiness check); ``retire`` is called
    after a runner stopped for good, to undo that. A runner that raises fails the fleet
    (and so the service, whose supervisor restarts it): a crashed connection must not
    leave a portfolio silently unserved.
    """

    def __init__(
        self,
        nc: NatsClient,
        load: Callable[[], Awaitable[list[PortfolioConfig]]],
        build: Callable[[PortfolioConfig], PortfolioRunner],
        retire: Callable[[PortfolioConfig], Awaitable[None]],
        *,
        reload_interval: float = 60.0,
        reload_min_gap: float = 0.5,
    ) -> None:
        self._nc = nc
        self._load = load
        self._build = build
        self._retire = retire
        self._reload_interval = reload_interval
        self._reload_min_gap = reload_min_gap
        self._running: dict[str, _Running] = {}
        self._wanted = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failed: asyncio.Future[BaseException] | None = None
        self._subscription: Subscription | None = None
        self.reloads = 0
        """Completed reloads (for tests and logs)."""

    @property
    def portfolios(self) -> dict[str, PortfolioConfig]:
        """The portfolios served now, by id."""
        return {pid: running.config for pid, running in self._running.items()}

    def request_reload(self) -> None:
        """Re-read the table soon (coalesced with other requests)."""
        self._wanted.set()

    async def start(self, configs: list[PortfolioConfig]) -> None:
        """Start the runners of ``configs`` and listen for ``PortfolioChanged``."""
        self._failed = asyncio.get_running_loop().create_future()
        for config in configs:
            self._start(config)
        self._subscription = await self._nc.subscribe(f"{PORTFOLIO_CHANGED}.*", cb=self._on_event)

    async def run(self) -> None:
        """Reload on demand until stopped; raises the first runner failure."""
        assert self._failed is not None, "start() first"
        failed = self._failed
        while not self._stopping.is_set():
            wanted = asyncio.ensure_future(self._wanted.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            waiters: set[asyncio.Future[Any]] = {wanted, stopping, failed}
            done, _ = await asyncio.wait(
                waiters,
                timeout=self._reload_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in (wanted, stopping):
                waiter.cancel()
            if failed in done:
                raise failed.result()
            if self._stopping.is_set():
                break
            self._wanted.clear()
            await self.reload()
            # requests arriving during the gap are served by one reload after it
            await wait_event(self._stopping, self._reload_min_gap)

    async def reload(self) -> None:
        """Bring the running portfolios in line with the table (see the module docstring)."""
        try:
            wanted = {config.id: config for config in await self._load()}
        except Exception as exc:  # any failure: keep what runs, retry at the next trigger
            log.warning("could not reload portfolios (%s); keeping the %d running", exc, len(self))
            return
        for pid in list(self._running):
            config = wanted.get(pid)
            current = self._running[pid].config
            if config == current:
                continue
            if config is not None and replace(config, name=current.name) == current:
                self._running[pid].config = config  # renamed only: the connection stays
                continue
            why = "disabled or deleted" if config is None else "connection settings changed"
            log.info("portfolio %s %s: stopping its connection", pid, why)
            await self._stop(pid)
        for pid, config in wanted.items():
            if pid not in self._running and not self._stopping.is_set():
                log.info("portfolio %s: starting its connection", pid)
                self._start(config)
        self.reloads += 1

    async def stop(self) -> None:
        """Stop listening, then stop every runner concurrently; idempotent."""
        self._stopping.set()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await asyncio.gather(*(self._stop(pid) for pid in list(self._running)))

    def __len__(self) -> int:
        return len(self._running)

    async def _on_event(self, _: Msg) -> None:
        self._wanted.set()

    def _start(self, config: PortfolioConfig) -> None:
        runner = self._build(config)
        task = asyncio.create_task(runner.run(), name=f"ib-{config.id}")
        task.add_done_callback(lambda done: self._on_runner_done(config.id, done))
        self._running[config.id] = _Running(config, runner, task)

    async def _stop(self, pid: str) -> None:
        running = self._running.pop(pid, None)
        if running is None:
            return
        try:
            await running.runner.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        except Exception:
            log.exception("portfolio %s did not stop cleanly", pid)
        finally:
            await self._retire(running.config)

    def _on_runner_done(self, pid: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failed is None or self._failed.done():
            return
        running = self._running.get(pid)
        if running is None or running.task is not task:
            return  # stopped by the fleet
        exc = task.exception() or RuntimeError(f"portfolio {pid} stopped on its own")
        log.error("portfolio %s connection failed: %r", pid, exc)
        self._failed.set_result(exc)
