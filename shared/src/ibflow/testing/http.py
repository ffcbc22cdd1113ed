"""A minimal HTTP/1.1 GET for tests probing a service's ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio

from ibflow.testing.embedded import LOOPBACK


async def http_get(port: int, path: str, host: str = LOOPBACK) -> tuple[int, str]:
    """``GET path`` on ``host:port``; returns the status code and the body as text."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()
