"""Run an ibflow service: settings, logging, connections, workers, probes and graceful drain.

A service is declared, not subclassed. Its ``app.py`` is a composition root::

    async def wire(rt: Runtime[OrderManagerSettings]) -> None:
        runner = ConsumerRunner(rt.nats, ...)
        rt.add_worker(runner)
        rt.add_check("consumer", runner.healthy)

    SERVICE = Service(OrderManagerSettings, startup=[wire])

    def main() -> None:
        run(SERVICE)

:func:`run` loads the settings (invalid ones: message on stderr naming the variable,
exit 2), configures logging, serves ``/metrics``, ``/healthz`` and ``/readyz``,
connects to NATS and PostgreSQL, runs the startup steps, then the workers. SIGTERM
or SIGINT starts the shutdown: not ready, workers stopped (they finish what they
hold), shutdown callbacks, NATS drained, pool closed, HTTP stopped — all within
``shutdown_grace_seconds``. Exit status: 0 after a clean shutdown, 1 when startup
failed, a worker crashed or the grace period ran out, 2 for invalid settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, NoReturn, Protocol, TypeAlias, TypeVar

import asyncpg
from prometheus_client import Gauge
from starlette.applications import Starlette
from starlette.types import ASGIApp

from ibflow.bus.connection import connect as connect_nats
from ibflow.db.pool import create_pool
from ibflow.runtime.http import OK, HttpServer, ReadinessReport, build_app
from ibflow.runtime.logs import configure_logging
from ibflow.settings import CommonSettings, SettingsError

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

log = logging.getLogger("ibflow.runtime")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INVALID_SETTINGS: Final = 2

CHECK_TIMEOUT_SECONDS: Final = 2.0
"""How long one readiness check (database ping included) may take before it counts as failed."""
DB_RETRY_SECONDS: Final = 1.0
HTTP_STOP_RESERVE_SECONDS: Final = 1.0
"""Part of the grace period kept for stopping the HTTP endpoint after everything else."""

READY: Final = Gauge("ibflow_service_ready", "1 while /readyz would answer 200 at last check.")

S = TypeVar("S", bound=CommonSettings)

DbPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Check: TypeAlias = Callable[[], "bool | Awaitable[bool]"]
"""A readiness check: true when healthy. May be sync or async; raising counts as failing."""
StartupStep: TypeAlias = Callable[["Runtime[S]"], Awaitable[None]]
"""Runs once the connections are up; wires workers, checks and shutdown callbacks."""
HttpAppFactory: TypeAlias = Callable[["Runtime[S]", Starlette], ASGIApp]
"""Builds the ASGI app a service serves on its HTTP port, given the runtime and the
operational app (``/metrics``, ``/healthz``, ``/readyz``) it must keep serving."""


class Worker(Protocol):
    """A long-running background task of a service, e.g. a consumer runner.

    ``run()`` works until ``stop()`` is called, then returns once the work in hand is
    finished (a consumer stops fetching and acks what it holds). ``run()`` raising,
    or returning before ``stop()``, fails the service.
    """

    async def run(self) -> None:
        """Do the work until stopped."""

    def stop(self) -> Awaitable[None] | None:
        """Ask :meth:`run` to finish (may be sync or async)."""


@dataclass(frozen=True, slots=True)
class Service(Generic[S]):
    """What a service is made of: its settings class, connections and startup steps.

    ``uses_nats``/``uses_database``: whether the runtime connects to NATS / opens an
    asyncpg pool (and checks them for readiness). ``startup`` steps run in order once
    the connections are up; they receive the :class:`Runtime`. ``http_app``, when
    given, builds the app served on the HTTP port instead of the bare operational one
    (it is called before the connections exist, so its routes must answer while
    :attr:`Runtime.ready` is false); WebSockets are then accepted too.
    """

    settings_type: type[S]
    startup: Sequence[StartupStep[S]] = ()
    uses_nats: bool = True
    uses_database: bool = True
    http_app: HttpAppFactory[S] | None = None


class Runtime(Generic[S]):
    """A running service: its settings, connections, workers and readiness.

    Startup steps use :attr:`nats`, :attr:`pool`, :meth:`add_worker`,
    :meth:`add_check` and :meth:`on_shutdown`. Tests can drive it in-process with
    :meth:`serve` and an :class:`asyncio.Event` instead of signals.
    """

    def __init__(self, service: Service[S], settings: S) -> None:
        self.service = service
        self.settings = settings
        self._nats: NatsClient | None = None
        self._pool: DbPool | None = None
        self._workers: list[tuple[str, Worker]] = []
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._checks: dict[str, Check] = {}
        self._shutdown_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._http: HttpServer | None = None
        self._started = False
        self._stopping = False
        self._failure: asyncio.Event | None = None

    # ------------------------------------------------------------------ for startup steps

    @property
    def name(self) -> str:
        """The service name (``settings.service_name``)."""
        return self.settings.service_name

    @property
    def nats(self) -> NatsClient:
        """The NATS connection; only for services with ``uses_nats``."""
        if self._nats is None:
            raise RuntimeError(f"{self.name}: no NATS connection (uses_nats=False or not started)")
        return self._nats

    @property
    def pool(self) -> DbPool:
        """The asyncpg pool; only for services with ``uses_database``."""
        if self._pool is None:
            raise RuntimeError(
                f"{self.name}: no database pool (uses_database=False or not started)"
            )
        return self._pool

    @property
    def http_port(self) -> int:
        """The port the HTTP endpoint is bound to (known once :meth:`serve` has started it)."""
        if self._http is None:
            raise RuntimeError("HTTP endpoint not started")
        return self._http.port

    @property
    def ready(self) -> bool:
        """True between a complete startup and the beginning of the shutdown."""
        return self._started and not self._stopping

    def add_worker(self, worker: Worker, *, name: str | None = None) -> None:
        """Run ``worker`` once startup completes; it is stopped first at shutdown."""
        if self._started:
            raise RuntimeError("add workers from startup steps, before the service is ready")
        self._workers.append((name or type(worker).__name__, worker))

    def add_check(self, name: str, check: Check) -> None:
        """Make ``/readyz`` depend on ``check`` (reported under ``name`` when failing)."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} registered twice")
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        """Stop ``/readyz`` depending on the check ``name`` (no-op if there is none)."""
        self._checks.pop(name, None)

    def on_shutdown(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` at shutdown after the workers stopped, before NATS drains (LIFO)."""
        self._shutdown_callbacks.append(callback)

    # ------------------------------------------------------------------ readiness

    async def readiness(self) -> ReadinessReport:
        """Evaluate every readiness condition; what ``/readyz`` reports."""
        checks: dict[str, str] = {}
        if self._stopping:
            checks["lifecycle"] = "shutting down"
        elif not self._started:
            checks["lifecycle"] = "starting"
        else:
            checks["lifecycle"] = OK
        if self.service.uses_nats:
            nc = self._nats
            checks["nats"] = OK if nc is not None and nc.is_connected else "not connected"
        if self.service.uses_database:
            checks["database"] = await self._check_database()
        for name, check in self._checks.items():
            checks[name] = await _evaluate(check)
        report = ReadinessReport(checks)
        READY.set(1 if report.ready else 0)
        return report

    async def _check_database(self) -> str:
        pool = self._pool
        if pool is None:
            return "not connected"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
        except Exception as exc:
            return f"error: {exc.__class__.__name__}: {exc}"
        return OK

    # ------------------------------------------------------------------ lifecycle

    async def serve(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (or a worker fails), shut down, return the exit status."""
        self._failure = asyncio.Event()
        ops = build_app(self.name, self.readiness)
        factory = self.service.http_app
        app: ASGIApp = ops if factory is None else factory(self, ops)
        http = HttpServer(
            app, self.settings.http_host, self.settings.http_port, websockets=factory is not None
        )
        try:
            await http.start()
        except OSError as exc:
            log.error(
                "cannot serve /metrics, /healthz, /readyz on %s:%d (IBFLOW_HTTP_HOST/"
                "IBFLOW_HTTP_PORT): %s",
                self.settings.http_host,
                self.settings.http_port,
                exc,
            )
            return EXIT_FAILURE
        self._http = http
        status = EXIT_OK
        try:
            status = await self._run_until_stopped(stop)
        finally:
            loop = asyncio.get_running_loop()
            grace = self.settings.shutdown_grace_seconds
            deadline = loop.time() + grace
            if not await self._shutdown(deadline - min(HTTP_STOP_RESERVE_SECONDS, grace / 5)):
                status = EXIT_FAILURE
            await http.stop(max(0.1, deadline - loop.time()))
            READY.set(0)
            log.info("%s stopped (exit status %d)", self.name, status)
        return status

    async def _run_until_stopped(self, stop: asyncio.Event) -> int:
        assert self._failure is not None
        stop_wait = asyncio.create_task(stop.wait(), name="wait-stop")
        startup = asyncio.create_task(self._startup(), name="startup")
        try:
            await asyncio.wait({stop_wait, startup}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                log.info("stop requested during startup")
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
                return EXIT_OK
            if (exc := startup.exception()) is not None:
                log.error("%s failed to start: %s", self.name, exc, exc_info=exc)
                return EXIT_FAILURE
            self._start_workers()
            self._started = True
            READY.set(1)
            log.info("%s ready (http port %d)", self.name, self.http_port)
            failure_wait = asyncio.create_task(self._failure.wait(), name="wait-failure")
            try:
                await asyncio.wait({stop_wait, failure_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                failure_wait.cancel()
            if self._failure.is_set():
                return EXIT_FAILURE
            return EXIT_OK
        finally:
            stop_wait.cancel()

    async def _startup(self) -> None:
        settings = self.settings
        if self.service.uses_nats:
            self._nats = await connect_nats(
                settings.nats_url,
                name=self.name,
                creds=settings.nats_creds,
                drain_timeout=max(1, int(settings.shutdown_grace_seconds)),
            )
        if self.service.uses_database:
            self._pool = await self._open_pool()
        for step in self.service.startup:
            await step(self)

    async def _open_pool(self) -> DbPool:
        url = self.settings.database_url.get_secret_value()
        while True:
            try:
                return await create_pool(url)
            except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
                log.warning("database not reachable yet (%s); retrying", exc)
                await asyncio.sleep(DB_RETRY_SECONDS)

    def _start_workers(self) -> None:
        for name, worker in self._workers:
            task = asyncio.create_task(self._run_worker(name, worker), name=f"worker-{name}")
            self._worker_tasks.append(task)

    async def _run_worker(self, name: str, worker: Worker) -> None:
        assert self._failure is not None
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker %s crashed", name)
            self._failure.set()
        else:
            if not self._stopping:
                log.error("worker %s returned before shutdown", name)
                self._failure.set()

    async def _shutdown(self, deadline: float) -> bool:
        """Stop workers, run callbacks, drain NATS, close the pool; False if forced."""
        self._stopping = True
        READY.set(0)
        log.info("%s shutting down", self.name)
        step = "stopping the workers"
        try:
            async with asyncio.timeout_at(deadline):
                await self._stop_workers()
                for callback in reversed(self._shutdown_callbacks):
                    step = f"shutdown callback {getattr(callback, '__qualname__', callback)}"
                    try:
                        await callback()
                    except Exception:
                        log.exception("shutdown callback %r failed", callback)
                step = "draining NATS"
                await self._close_nats()
                step = "closing the database pool"
                if self._pool is not None:
                    await self._pool.close()
        except TimeoutError:
            pending = sorted(
                task.get_name().removeprefix("worker-")
                for task in self._worker_tasks
                if not task.done()
            )
            log.error(
                "%s: shutdown did not finish within %gs (IBFLOW_SHUTDOWN_GRACE_SECONDS) while"
                " %s%s; forcing",
                self.name,
                self.settings.shutdown_grace_seconds,
                step,
                f" (workers still running: {', '.join(pending)})" if pending else "",
            )
            await self._force_close()
            return False
        return True

    async def _stop_workers(self) -> None:
        if not self._worker_tasks:
            return  # never started

        async def stop_one(name: str, worker: Worker) -> None:
            try:
                result = worker.stop()
                if result is not None:
                    await result
            except Exception:
                log.exception("worker %s failed to stop", name)

        await asyncio.gather(*(stop_one(name, worker) for name, worker in self._workers))
        await asyncio.wait(self._worker_tasks)

    async def _close_nats(self) -> None:
        nc = self._nats
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()

    async def _force_close(self) -> None:
        for task in self._worker_tasks:
            task.cancel()
        if self._nats is not None and not self._nats.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._nats.close()
        if self._pool is not None:
            self._pool.terminate()


async def _evaluate(check: Check) -> str:
    try:
        result = check()
        if inspect.isawaitable(result):
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                result = await result
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"
    return OK if result else "failed"


def load_settings(settings_type: type[S]) -> S:
    """Load ``settings_type`` from the environment; on error print it and exit with status 2."""
    try:
        return settings_type.load()
    except SettingsError as exc:
        name = settings_type.model_fields["service_name"].default
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_SETTINGS) from None


async def _serve_with_signals(runtime: Runtime[S]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s received again; already shutting down", sig.name)
        else:
            log.info("%s received; shutting down", sig.name)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await runtime.serve(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory for ``kind == "uvloop"`` where uvloop is installed, else
    ``None`` (asyncio's default loop)."""
    if kind != "uvloop":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on Windows
    except ImportError:
        log.warning("IBFLOW_EVENT_LOOP=uvloop but uvloop is not installed: using asyncio's loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(service: Service[S] | Callable[[], Service[S]]) -> NoReturn:
    """Run ``service`` (or the one a factory returns) until SIGTERM/SIGINT; exit the process.

    For console scripts: ``def main() -> None: run(SERVICE)``.
    """
    if not isinstance(service, Service):
        service = service()
    settings = load_settings(service.settings_type)
    configure_logging(settings.service_name, settings.python_log_level, settings.log_format)
    runtime = Runtime(service, settings)
    with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
        status = runner.run(_serve_with_signals(runtime))
    logging.shutdown()
    raise SystemExit(status)
