"""Connecting to NATS: reconnect forever, log every state change, export a gauge.

::

    nc = await connect(settings.nats_url, name="order-manager", creds=settings.nats_creds)
    js = nc.jetstream()

or, holding both, ``bus = await Bus.connect(url, name=...)`` and ``await bus.close()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from nats.aio.client import Client
from nats.js import JetStreamContext

from ibflow.bus.metrics import CONNECTED

logger = logging.getLogger("ibflow.bus")

_Callback = Callable[[], Awaitable[None]]
_ErrorCallback = Callable[[Exception], Awaitable[None]]


def _servers(url: str) -> list[str]:
    return [server.strip() for server in url.split(",") if server.strip()]


def _where(nc: Client) -> str:
    """Host and port of the current server, without any credentials in the URL."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


async def connect(
    url: str,
    *,
    name: str,
    creds: str | None = None,
    max_reconnect_attempts: int = -1,
    reconnect_time_wait: int = 2,
    connect_timeout: int = 5,
    **opts: Any,
) -> Client:
    """Connect to NATS at ``url`` (comma-separated for a cluster) as connection ``name``.

    Reconnects forever by default (``max_reconnect_attempts=-1``). Disconnects,
    reconnects, errors and the final close are logged on logger ``ibflow.bus`` and
    reflected in the ``ibflow_bus_connected{connection=name}`` gauge. ``creds`` is a
    NATS credentials file. Other keyword arguments go to nats-py's ``connect``; any
    ``disconnected_cb``/``reconnected_cb``/``error_cb``/``closed_cb`` given there are
    called after ours. The initial connection failing raises nats-py's error.
    """
    nc = Client()
    gauge = CONNECTED.labels(name)
    user_disconnected: _Callback | None = opts.pop("disconnected_cb", None)
    user_reconnected: _Callback | None = opts.pop("reconnected_cb", None)
    user_error: _ErrorCallback | None = opts.pop("error_cb", None)
    user_closed: _Callback | None = opts.pop("closed_cb", None)

    async def disconnected() -> None:
        gauge.set(0)
        # A drain or close ends with a disconnect too: only an unasked-for one is a warning.
        level = logging.INFO if nc.is_draining or nc.is_closed else logging.WARNING
        logger.log(level, "NATS connection %r disconnected", name)
        if user_disconnected is not None:
            await user_disconnected()

    async def reconnected() -> None:
        gauge.set(1)
        logger.info("NATS connection %r reconnected to %s", name, _where(nc))
        if user_reconnected is not None:
            await user_reconnected()

    async def error(exc: Exception) -> None:
        logger.warning("NATS connection %r error: %r", name, exc)
        if user_error is not None:
            await user_error(exc)

    async def closed() -> None:
        gauge.set(0)
        logger.info("NATS connection %r closed", name)
        if user_closed is not None:
            await user_closed()

    if creds is not None:
        opts["user_credentials"] = creds
    await nc.connect(
        servers=_servers(url),
        name=name,
        max_reconnect_attempts=max_reconnect_attempts,
        reconnect_time_wait=reconnect_time_wait,
        connect_timeout=connect_timeout,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        closed_cb=closed,
        **opts,
    )
    gauge.set(1)
    logger.info("NATS connection %r connected to %s", name, _where(nc))
    return nc


@dataclass(frozen=True, slots=True)
class Bus:
    """A NATS connection and its JetStream context, created together."""

    nc: Client
    js: JetStreamContext

    @classmethod
    async def connect(cls, url: str, *, name: str, creds: str | None = None, **opts: Any) -> Self:
        """:func:`connect`, then wrap the client and ``nc.jetstream()``."""
        nc = await connect(url, name=name, creds=creds, **opts)
        return cls(nc=nc, js=nc.jetstream())

    async def close(self) -> None:
        """Drain subscriptions and pending publishes, then close the connection."""
        if not self.nc.is_closed:
            await self.nc.drain()
