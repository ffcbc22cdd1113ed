"""The operational HTTP endpoint of every service: ``/metrics``, ``/healthz``, ``/readyz``.

A small Starlette app served by uvicorn inside the service's own event loop.
``/metrics`` exposes the default prometheus registry; ``/healthz`` answers 200 while
the process is alive; ``/readyz`` answers 200 only when every readiness check passes,
else 503 with a JSON body naming the failing checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

OK = "ok"
"""The status of a passing readiness check; anything else says why it fails."""


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Outcome of the readiness checks: ``checks`` maps each name to ``"ok"`` or a reason."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(status == OK for status in self.checks.values())

    @property
    def failed(self) -> list[str]:
        """Names of the failing checks."""
        return [name for name, status in self.checks.items() if status != OK]


ReadinessProbe = Callable[[], Awaitable[ReadinessReport]]


def build_app(service_name: str, readiness: ReadinessProbe) -> Starlette:
    """The Starlette app with ``/metrics``, ``/healthz`` and ``/readyz``."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive", "service": service_name})

    async def readyz(_: Request) -> Response:
        report = await readiness()
        body = {
            "status": "ready" if report.ready else "not ready",
            "service": service_name,
            "failed": report.failed,
            "checks": report.checks,
        }
        return JSONResponse(body, status_code=200 if report.ready else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service runtime."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves an ASGI app on ``host:port`` in the running event loop (port 0: any free one).

    ``websockets``: accept WebSocket connections (off for the bare operational endpoint).
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, websockets: bool = False) -> None:
        self.host = host
        self.requested_port = port
        self._app = app
        self._websockets = websockets
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._port is None:
            raise RuntimeError("HTTP server not started")
        return self._port

    async def start(self) -> None:
        """Bind the socket and start serving; raises :class:`OSError` if the port is taken."""
        family = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((self.host, self.requested_port), family=family)
        # Accepted sockets inherit this on Linux. asyncio sets TCP_NODELAY itself only on
        # sockets whose proto is IPPROTO_TCP, and create_server's is 0: without it Nagle
        # holds a response's second write for the client's delayed ACK (~40 ms a request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="websockets-sansio" if self._websockets else "none",
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what went wrong
                raise RuntimeError("HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("http endpoint listening on http://%s:%d", self.host, self._port)

    async def stop(self, grace_seconds: float = 2.0) -> None:
        """Stop serving; connections still open after ``grace_seconds`` are dropped."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(grace_seconds):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception:
            log.exception("http server failed while stopping")
