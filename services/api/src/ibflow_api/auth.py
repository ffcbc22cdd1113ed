"""Authentication (which key) in a middleware; authorisation (which scope) per route.

Every HTTP request except ``/healthz``, ``/readyz`` and ``/metrics`` must carry an API
key, as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``; without a valid one
the answer is 401 before anything else is looked at (body, path, method). The key
found is put in ``request.state.api_key``; routes declare the scope they need with
:data:`~ibflow_api.deps.ReadKey`, :data:`~ibflow_api.deps.TradeKey` or
:data:`~ibflow_api.deps.AdminKey` (403 when the key's scope is too small).

The middleware also bounds request bodies (413), and never logs a key: a refused
request is logged with the key's public id at most.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ibflow.runtime.service import DbPool
from ibflow_api.errors import error_response
from ibflow_api.keys import ApiKey, verify_key

log = logging.getLogger("ibflow.api.auth")

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
"""The only paths answered without a key."""
KEY_HEADER: Final = "x-api-key"


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class KeyVerifier:
    """Verifies keys against the ``api_keys`` table, trusting a verified one for
    ``cache_seconds`` (a revocation takes effect within that delay)."""

    def __init__(self, pool: DbPool, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}

    async def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or ``None``."""
        digest = hashlib.sha256(presented.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._pool.acquire() as conn:
            key = await verify_key(conn, presented)
            if key is not None:
                await conn.execute(  # at most one write a minute per key
                    "UPDATE api_keys SET last_used_at = now() WHERE id = $1"
                    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                    key.id,
                )
        if key is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (key, now + self._cache_seconds)
        return key


class _TooLarge(Exception):  # noqa: N818 - internal signal
    pass


class AuthMiddleware:
    """Pure ASGI middleware: the key check and the body size limit (see the module doc).

    ``verifier`` returns ``None`` while the service is starting (answered 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Callable[[], KeyVerifier | None],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        presented = presented_key(headers)
        if presented is None:
            await _send(
                scope,
                receive,
                send,
                status=401,
                code="unauthenticated",
                message="an API key is required",
            )
            return
        verifier = self._verifier()
        if verifier is None:
            await _send(
                scope, receive, send, status=503, code="not_ready", message="the API is starting"
            )
            return
        key = await verifier.verify(presented)
        if key is None:
            await _send(
                scope,
                receive,
                send,
                status=401,
                code="unauthenticated",
                message="invalid or revoked API key",
            )
            return
        scope.setdefault("state", {})["api_key"] = key
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                await _send(
                    scope, receive, send, status=413, code="too_large", message=self._too_large()
                )
                return
        await self._call_bounded(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body larger than {self._max_body} bytes"

    async def _call_bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_body:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send(
                    scope, receive, send, status=413, code="too_large", message=self._too_large()
                )


async def _send(
    scope: Scope, receive: Receive, send: Send, *, status: int, code: str, message: str
) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="ibflow"'} if status == 401 else None
    await error_response(status, code, message, headers)(scope, receive, send)
