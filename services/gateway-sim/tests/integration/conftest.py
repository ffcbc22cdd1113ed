"""Fixtures: a GatewaySimulator on port 0 in the test's event loop, and IB clients.

Every scenario runs against the UNMODIFIED ``ib_async`` 2.1.0 and ``ib_insync`` 0.9.86
over real TCP (the ``ibmod`` fixture is parametrized over both libraries).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

from ibflow_gateway_sim.config import SimConfig
from ibflow_gateway_sim.server import GatewaySimulator

LIBRARIES = ("ib_async", "ib_insync")
SEED = 7

Connect = Callable[..., Awaitable[Any]]
Eventually = Callable[..., Awaitable[None]]


@pytest.fixture(params=LIBRARIES)
def ibmod(request: pytest.FixtureRequest) -> ModuleType:
    """The client library under test (``ib_async`` or ``ib_insync``)."""
    return importlib.import_module(request.param)


@pytest.fixture
def sim_config() -> SimConfig:
    """Default configuration with a fixed seed (override in a module to change it)."""
    return SimConfig().with_seed(SEED)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[GatewaySimulator]:
    """A running simulator on a free port."""
    simulator = GatewaySimulator(sim_config)
    await simulator.start("127.0.0.1", 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def connect(ibmod: ModuleType, sim: GatewaySimulator) -> AsyncIterator[Connect]:
    """``await connect(client_id=1)`` → a connected ``IB`` of the library under test."""
    clients: list[Any] = []

    async def _connect(
        client_id: int = 1, *, connect_timeout: float = 5, port: int | None = None, **kwargs: Any
    ) -> Any:
        ib = ibmod.IB()
        clients.append(ib)
        await ib.connectAsync(
            "127.0.0.1", port or sim.port, clientId=client_id, timeout=connect_timeout, **kwargs
        )
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()
    await asyncio.sleep(0)


async def _eventually(
    condition: Callable[[], object], within: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(lambda: cond, within=5, what="...")``: poll with a deadline."""
    return _eventually


@pytest.fixture
def frozen(sim: GatewaySimulator) -> GatewaySimulator:
    """The simulator with its random walk frozen (prices move only via ``set_price``)."""
    sim.faults.freeze(True)
    return sim
