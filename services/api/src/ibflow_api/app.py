"""Composition root of api: REST + WebSocket for people and programs.

One HTTP server (the runtime's, on ``IBFLOW_API_PORT``, default 8000) serves the
FastAPI app built by :func:`create_app` with the runtime's ``/metrics``, ``/healthz``
and ``/readyz`` mounted in it; the runtime keeps the lifecycle (signals, readiness,
drain). Until :func:`wire` has connected everything the API answers 503 (``/healthz``
still 200). Startup: apply this package's migration (``api_keys``), start the outbox
relay (portfolio writes announce themselves with ``PortfolioChanged`` through it), the
WebSocket hub, and the API-key commands over NATS (:mod:`ibflow_api.key_commands`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from functools import partial
from typing import Final

from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from starlette.applications import Starlette
from starlette.types import ASGIApp
from starlette.websockets import WebSocketState

from ibflow.db import apply_migrations
from ibflow.db.outbox import OutboxRelay
from ibflow.runtime import Runtime, Service, run
from ibflow_api.auth import AuthMiddleware, KeyVerifier, presented_key
from ibflow_api.bridge_state import BridgeState, BridgeStateUnavailable
from ibflow_api.deps import Services
from ibflow_api.errors import install_handlers
from ibflow_api.key_commands import KeyCommands, unsubscribe
from ibflow_api.keys import ApiKey
from ibflow_api.routes import ib, portfolios
from ibflow_api.settings import ApiSettings
from ibflow_api.ws import CLOSE_NOT_READY, CLOSE_UNAUTHENTICATED, Hub, WsClient, serve_client

log = logging.getLogger("ibflow.api")

_APPS: Final[weakref.WeakKeyDictionary[Runtime[ApiSettings], FastAPI]] = weakref.WeakKeyDictionary()

DESCRIPTION: Final = """\
REST + WebSocket for ibflow. Every route except `/healthz`, `/readyz` and `/metrics`
needs an API key (`X-API-Key: <key>` or `Authorization: Bearer <key>`) whose scope
(`read` < `trade` < `admin`) allows it: 401 without a valid key, 403 with too small a
scope. Errors are `{"error": {"code", "message"}}`, except 422 (`{"detail": [...]}`
naming the field and the reason). See docs/api.md.
"""


def create_app(settings: ApiSettings, ops: Starlette | None = None) -> FastAPI:
    """The API app; ``ops`` (the runtime's operational app) provides the probes."""
    app = FastAPI(
        title="ibflow API",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = None
    install_handlers(app)
    app.include_router(ib.router)
    app.include_router(portfolios.router)
    if ops is not None:
        app.router.routes.extend(ops.routes)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        """The event stream (see :mod:`ibflow_api.ws`)."""
        services: Services | None = ws.app.state.services
        if services is None:
            await ws.close(code=CLOSE_NOT_READY, reason="starting")
            return
        key = await _authenticate(ws, services)
        if key is None:
            return
        await serve_client(ws, services.hub, key.id, partial(_snapshot, services))

    def verifier() -> KeyVerifier | None:
        services: Services | None = app.state.services
        return None if services is None else services.keys

    app.add_middleware(AuthMiddleware, verifier=verifier, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
    )
    return app


async def _authenticate(ws: WebSocket, services: Services) -> ApiKey | None:
    """The key of a WebSocket client: from its headers, else from its first message."""
    presented = presented_key(ws.scope["headers"])
    await ws.accept()
    if presented is None:
        try:
            async with asyncio.timeout(services.settings.ws_auth_timeout):
                first = await ws.receive_json()
            if isinstance(first, dict) and first.get("action") == "auth":
                presented = str(first.get("api_key", ""))
        except (TimeoutError, ValueError, RuntimeError):
            presented = None
        except Exception:  # a client that left
            presented = None
    key = await services.keys.verify(presented) if presented else None
    if key is None and ws.client_state is WebSocketState.CONNECTED:
        await ws.close(code=CLOSE_UNAUTHENTICATED, reason="a valid API key is required")
    return key


async def _snapshot(services: Services, client: WsClient) -> list[tuple[str, str | None, bytes]]:
    """The bridge's current connection and account state of the client's portfolios
    (every enabled one when it has no portfolio filter); what is unknown is left out."""
    if client.portfolios is not None:
        portfolios = sorted(client.portfolios)
    else:
        async with services.pool.acquire() as conn:
            rows = await conn.fetch("SELECT id FROM portfolios WHERE enabled ORDER BY id")
        portfolios = [row["id"] for row in rows]
    found: list[tuple[str, str | None, bytes]] = []
    for portfolio in portfolios:
        try:
            connection = await services.bridge.connection(portfolio)
            accounts = await services.bridge.accounts(portfolio) or []
        except BridgeStateUnavailable:
            continue
        if connection is not None:
            found.append(("ib_connection", portfolio, connection.to_json()))
        found.extend(("ib_account", portfolio, account.to_json()) for account in accounts)
    return found


def app_of(rt: Runtime[ApiSettings]) -> FastAPI | None:
    """The FastAPI app a runtime of :data:`SERVICE` serves (for tests and tools)."""
    return _APPS.get(rt)


def build_http_app(rt: Runtime[ApiSettings], ops: Starlette) -> ASGIApp:
    """The runtime's HTTP app factory: the API with the probes mounted."""
    app = create_app(rt.settings, ops)
    _APPS[rt] = app
    return app


async def wire(rt: Runtime[ApiSettings]) -> None:
    """Migration, outbox relay, WebSocket hub; then the API starts answering."""
    await apply_migrations(rt.pool, "ibflow_api")
    js = rt.nats.jetstream()
    relay = OutboxRelay(rt.pool, js)
    rt.add_worker(relay, name="outbox")
    hub = Hub(rt.nats, rt.settings.ws_queue_size)
    await hub.start()
    rt.on_shutdown(hub.close)
    served = await KeyCommands(rt.pool).serve(rt.nats)
    rt.on_shutdown(partial(unsubscribe, served))
    services = Services(
        settings=rt.settings,
        pool=rt.pool,
        nats=rt.nats,
        relay=relay,
        hub=hub,
        bridge=BridgeState(rt.nats),
        keys=KeyVerifier(rt.pool, rt.settings.key_cache_seconds),
    )
    app = _APPS.get(rt)
    if app is not None:
        app.state.services = services

        async def detach() -> None:
            app.state.services = None

        rt.on_shutdown(detach)


SERVICE: Service[ApiSettings] = Service(
    ApiSettings, startup=[wire], uses_nats=True, uses_database=True, http_app=build_http_app
)
"""The api service: settings, connections, startup and its HTTP app."""


def main() -> None:
    """Console script ``ibflow-api``: serve until SIGTERM/SIGINT; ``ibflow-api keys ...``
    manages the API keys."""
    import sys  # noqa: PLC0415

    if len(sys.argv) > 1 and sys.argv[1] == "keys":
        from ibflow_api.keys import cli  # noqa: PLC0415

        raise SystemExit(cli(sys.argv[2:]))
    run(SERVICE)
