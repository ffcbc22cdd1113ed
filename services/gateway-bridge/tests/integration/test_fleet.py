"""PortfolioFleet with stand-in runners (real nats-server for the PortfolioChanged trigger)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from nats.aio.client import Client as NatsClient

from ibflow.bus.subjects import portfolio_changed
from ibflow_gateway_bridge.fleet import PortfolioFleet
from ibflow_gateway_bridge.repository import PortfolioConfig

from .conftest import portfolio_config, wait_until


class Runner:
    """Runs until stopped, or fails when told to."""

    def __init__(self, config: PortfolioConfig) -> None:
        self.config = config
        self.stopped = asyncio.Event()
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        stopped = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait({stopped, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if self.failure.done():
            self.failure.result()

    async def stop(self) -> None:
        self.stopped.set()


class Table:
    """The portfolios table as the fleet's loader sees it."""

    def __init__(self, *configs: PortfolioConfig) -> None:
        self.rows = {c.id: c for c in configs}
        self.broken = False
        self.built: list[Runner] = []
        self.retired: list[str] = []

    async def load(self) -> list[PortfolioConfig]:
        if self.broken:
            raise OSError("database unreachable")
        return list(self.rows.values())

    def build(self, config: PortfolioConfig) -> Runner:
        runner = Runner(config)
        self.built.append(runner)
        return runner

    async def retire(self, config: PortfolioConfig) -> None:
        self.retired.append(config.id)


def _fleet(nc: NatsClient, table: Table) -> PortfolioFleet:
    return PortfolioFleet(nc, table.load, table.build, table.retire, reload_interval=30)


async def test_failed_reload_keeps_running_portfolios(nc: NatsClient) -> None:
    table = Table(portfolio_config("f1", 4002, client_id=1))
    fleet = _fleet(nc, table)
    await fleet.start(await table.load())
    running = asyncio.create_task(fleet.run())
    table.broken = True
    table.rows.clear()
    await nc.publish(portfolio_changed("f1"), b"{}")
    await asyncio.sleep(0.2)
    assert set(fleet.portfolios) == {"f1"}
    assert table.retired == []

    table.broken = False
    await nc.publish(portfolio_changed("f1"), b"{}")
    await wait_until(lambda: not fleet.portfolios)
    assert table.retired == ["f1"]
    await fleet.stop()
    await asyncio.wait_for(running, 5)


async def test_crashed_portfolio_runner_fails_the_fleet(nc: NatsClient) -> None:
    first = portfolio_config("f2", 4002, client_id=2)
    table = Table(first, portfolio_config("f3", 4002, client_id=3))
    fleet = _fleet(nc, table)
    await fleet.start(await table.load())
    running = asyncio.create_task(fleet.run())
    table.built[0].failure.set_exception(RuntimeError("socket exploded"))
    with pytest.raises(RuntimeError, match="socket exploded"):
        await asyncio.wait_for(running, 5)
    await fleet.stop()
    assert sorted(table.retired) == ["f2", "f3"]


async def test_unchanged_portfolio_is_left_alone_by_a_reload(nc: NatsClient) -> None:
    table = Table(portfolio_config("f4", 4002, client_id=4))
    fleet = _fleet(nc, table)
    await fleet.start(await table.load())
    await fleet.reload()
    await fleet.reload()
    assert len(table.built) == 1
    assert not table.built[0].stopped.is_set()
    await fleet.stop()
    assert table.built[0].stopped.is_set()


async def test_renamed_portfolio_keeps_its_connection(nc: NatsClient) -> None:
    config = portfolio_config("f5", 4002, client_id=5)
    table = Table(config)
    fleet = _fleet(nc, table)
    await fleet.start(await table.load())
    table.rows["f5"] = dataclasses.replace(config, name="renamed")
    await fleet.reload()
    assert len(table.built) == 1
    assert not table.built[0].stopped.is_set()
    assert fleet.portfolios["f5"].name == "renamed"
    table.rows["f5"] = dataclasses.replace(config, name="renamed", client_id=55)
    await fleet.reload()
    assert len(table.built) == 2
    assert table.built[0].stopped.is_set()
    await fleet.stop()


async def test_a_flow_of_portfolio_changed_events_reloads_at_most_once_per_gap(
    nc: NatsClient,
) -> None:
    config = portfolio_config("f6", 4002, client_id=6)
    table = Table(config)
    fleet = PortfolioFleet(
        nc, table.load, table.build, table.retire, reload_interval=30, reload_min_gap=0.5
    )
    await fleet.start(await table.load())
    running = asyncio.create_task(fleet.run())
    started = time.monotonic()
    for _ in range(40):  # a fill every 25 ms for a second, each followed by its event
        await nc.publish(portfolio_changed("f6"), b"{}")
        await asyncio.sleep(0.025)
    await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started

    assert 1 <= fleet.reloads <= 1 + elapsed / 0.5  # not one per event

    table.rows["f6"] = dataclasses.replace(config, client_id=66)  # a settings change
    await nc.publish(portfolio_changed("f6"), b"{}")
    await wait_until(lambda: len(table.built) == 2, within=2.0)
    await fleet.stop()
    await running
