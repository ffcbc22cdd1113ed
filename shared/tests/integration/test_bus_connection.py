"""Connecting through ibflow.bus to a real nats-server: gauge, callbacks, Bus."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from ibflow.bus import Bus, connect

pytestmark = pytest.mark.integration


def connected(name: str) -> float | None:
    return REGISTRY.get_sample_value("ibflow_bus_connected", {"connection": name})


async def test_connect_sets_gauge_and_chains_user_callbacks(nats_url: str) -> None:
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await connect(nats_url, name="conn-test", closed_cb=on_closed)
    try:
        assert nc.is_connected
        assert connected("conn-test") == 1.0
        assert nc.jetstream() is not None
    finally:
        await nc.close()
    await asyncio.wait_for(closed.wait(), 2)
    assert connected("conn-test") == 0.0


async def test_bus_holds_connection_and_jetstream(nats_url: str) -> None:
    bus = await Bus.connect(f" {nats_url} , {nats_url}", name="bus-test")
    try:
        info = await bus.js.account_info()
        assert info.limits is not None
        assert connected("bus-test") == 1.0
    finally:
        await bus.close()
    assert bus.nc.is_closed
    await bus.close()  # idempotent
