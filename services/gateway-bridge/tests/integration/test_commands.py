"""Broker commands over NATS request/reply: REAL gateway-sim over TCP, REAL nats-server.

Commands are sent with ``ibflow.bus.request`` (or raw bytes for bad bodies) to the
portfolio's subjects; what reached the broker is read from the simulator's engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from ibflow.bus import request, subjects
from ibflow.bus.errors import RemoteError, RequestError
from ibflow.contracts.enums import ConnectionState, OrderSide, OrderType
from ibflow.contracts.execution import OrderStatusChanged
from ibflow.contracts.gateway import (
    CancelBrokerOrder,
    ModifyBrokerOrder,
    PlaceBrokerOrder,
    RefreshBrokerState,
)
from ibflow.contracts.replies import CommandAccepted, ErrorReply, parse_reply
from ibflow_gateway_bridge.commands import BrokerCommands
from ibflow_gateway_bridge.pacing import Pacer
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import FAST_TIMINGS, Bridge, portfolio_config, wait_stored, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def start_commands(nc: NatsClient) -> AsyncIterator[Callable[[Bridge], Any]]:
    """``await start_commands(bridge)`` → subscribed :class:`BrokerCommands` (stopped after)."""
    started: list[BrokerCommands] = []

    async def _start(bridge: Bridge) -> BrokerCommands:
        p = bridge.connection.portfolio_id
        commands = BrokerCommands(
            p, nc, bridge.connection, Pacer(p), reconciler=bridge.reconciler, query_timeout=3.0
        )
        await commands.start()
        started.append(commands)
        return commands

    yield _start
    for commands in started:
        await commands.stop()


def _place(p: str, coid: str, **terms: Any) -> PlaceBrokerOrder:
    fields: dict[str, Any] = {
        "portfolio_id": p,
        "client_order_id": coid,
        "symbol": "AAPL",
        "side": OrderSide.BUY,
        "order_type": OrderType.MKT,
        "quantity": Decimal(10),
    }
    fields.update(terms)
    return PlaceBrokerOrder.model_validate(fields)


async def _send(nc: NatsClient, cmd: PlaceBrokerOrder, wait: float = 5.0) -> CommandAccepted:
    return await request(
        nc, subjects.place_broker_order(cmd.portfolio_id), cmd, CommandAccepted, timeout=wait
    )


async def _raw(nc: NatsClient, subject: str, body: dict[str, Any]) -> ErrorReply:
    reply = parse_reply((await nc.request(subject, json.dumps(body).encode(), timeout=5)).data)
    assert isinstance(reply, ErrorReply), reply
    return reply


def _sim_orders(sim: GatewaySimulator, coid: str) -> list[Any]:
    engine = sim.engine
    return [
        o
        for o in [*engine.open_orders(), *engine.completed_orders()]
        if o.request.order_ref == coid
    ]


async def test_place_command_reaches_the_broker_and_replies_accepted(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd1"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=21))
    await start_commands(bridge)
    await bridge.wait_ready()
    cmd = _place(p, "place-1", order_type=OrderType.LMT, limit_price=Decimal("150.00"))

    accepted = await _send(nc, cmd)

    assert accepted.command_id == cmd.event_id
    assert accepted.duplicate is False
    assert accepted.client_order_ids == ("place-1",)
    assert accepted.detail is not None
    assert "order_id=" in accepted.detail
    [order] = _sim_orders(gateway_sim, "place-1")
    assert order.order_type == "LMT"
    assert order.request.lmt_price == Decimal("150.00")
    assert order.client_id == 21
    stored = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: any(
            OrderStatusChanged.from_json(s.data).client_order_id == "place-1" for s in found
        ),
    )
    assert stored
    count = REGISTRY.get_sample_value("ibflow_bridge_order_ack_seconds_count", {"portfolio": p})
    assert count == 1

    refresh = RefreshBrokerState(portfolio_id=p, requested_by="test")
    await request(nc, subjects.refresh_broker_state(p), refresh, CommandAccepted, timeout=5)
    await wait_until(
        lambda: (
            bridge.reconciler.last_snapshot is not None
            and bridge.reconciler.last_snapshot.reason == "requested"
        )
    )


async def test_same_place_command_twice_gives_one_broker_order(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd2"
    config = portfolio_config(p, gateway_sim.port, client_id=22)
    first = start_portfolio(config)
    commands = await start_commands(first)
    await first.wait_ready()
    filled = _place(p, "dup-mkt")
    working = _place(p, "dup-lmt", order_type=OrderType.LMT, limit_price=Decimal("120"))

    assert (await _send(nc, filled)).duplicate is False
    assert (await _send(nc, working)).duplicate is False
    again = await _send(nc, filled)
    assert again.duplicate is True
    assert again.detail is not None
    assert "already placed" in again.detail
    # the same command concurrently: still one order
    both = await asyncio.gather(*(_send(nc, _place(p, "dup-race")) for _ in range(2)))
    assert sorted(a.duplicate for a in both) == [False, True]

    # a bridge restart: new connection (same client id), new command handlers
    await commands.stop()
    await first.connection.stop()
    second = start_portfolio(config)
    await start_commands(second)
    await second.wait_ready()
    for cmd in (filled, working):
        reply = await _send(nc, cmd)
        assert reply.duplicate is True, cmd.client_order_id

    for coid in ("dup-mkt", "dup-lmt", "dup-race"):
        assert len(_sim_orders(gateway_sim, coid)) == 1, coid
    assert [o.status for o in _sim_orders(gateway_sim, "dup-mkt")] == ["Filled"]


async def test_commands_are_refused_while_not_ready_with_the_state(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd3"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=23))
    await start_commands(bridge)
    await bridge.wait_ready()

    gateway_sim.faults.connectivity_lost()
    await wait_until(lambda: bridge.connection.state is ConnectionState.IB_CONNECTIVITY_LOST)
    with pytest.raises(RemoteError) as refused:
        await _send(nc, _place(p, "outage-1"))
    assert refused.value.code == "not_ready"
    assert "portfolio cmd3 is ib_connectivity_lost" in refused.value.message
    cancel = CancelBrokerOrder(portfolio_id=p, client_order_id="outage-1")
    with pytest.raises(RemoteError) as refused_cancel:
        await request(nc, subjects.cancel_broker_order(p), cancel, CommandAccepted, timeout=5)
    assert refused_cancel.value.code == "not_ready"
    assert _sim_orders(gateway_sim, "outage-1") == []

    gateway_sim.faults.connectivity_restored(data_lost=False)
    await bridge.wait_ready()
    assert (await _send(nc, _place(p, "outage-1"))).duplicate is False


async def test_cancel_and_modify_by_client_order_id(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd4"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=24))
    await start_commands(bridge)
    await bridge.wait_ready()
    terms: dict[str, Any] = {"order_type": OrderType.LMT, "limit_price": Decimal("150")}
    await _send(nc, _place(p, "cm-1", **terms))

    modify = ModifyBrokerOrder.model_validate(
        {
            **_place(p, "cm-1", **terms).model_dump(include=set(ModifyBrokerOrder.model_fields)),
            "quantity": Decimal(25),
            "limit_price": Decimal("151.5"),
            "revision": 2,
        }
    )
    await request(nc, subjects.modify_broker_order(p), modify, CommandAccepted, timeout=5)
    await wait_until(
        lambda: (
            [(o.quantity, o.request.lmt_price) for o in _sim_orders(gateway_sim, "cm-1")]
            == [(Decimal(25), Decimal("151.5"))]
        )
    )

    cancel = CancelBrokerOrder(portfolio_id=p, client_order_id="cm-1")
    accepted = await request(
        nc, subjects.cancel_broker_order(p), cancel, CommandAccepted, timeout=5
    )
    assert accepted.duplicate is False
    await wait_until(lambda: [o.status for o in _sim_orders(gateway_sim, "cm-1")] == ["Cancelled"])
    await wait_until(
        lambda: bridge.client.trades_by_ref("cm-1")[0].orderStatus.status == "Cancelled"
    )
    again = await request(nc, subjects.cancel_broker_order(p), cancel, CommandAccepted, timeout=5)
    assert again.duplicate is True

    with pytest.raises(RemoteError) as refused:
        await request(nc, subjects.modify_broker_order(p), modify, CommandAccepted, timeout=5)
    assert refused.value.code == "refused"
    unknown = CancelBrokerOrder(portfolio_id=p, client_order_id="never-placed")
    with pytest.raises(RemoteError) as missing:
        await request(nc, subjects.cancel_broker_order(p), unknown, CommandAccepted, timeout=5)
    assert missing.value.code == "not_found"
    assert "never-placed" in missing.value.message


async def test_unknown_portfolio_or_invalid_body_gets_error_naming_the_field(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd5"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=25))
    await start_commands(bridge)
    await bridge.wait_ready()
    subject = subjects.place_broker_order(p)
    body = json.loads(_place(p, "bad-1").to_json())

    no_symbol = await _raw(nc, subject, {k: v for k, v in body.items() if k != "symbol"})
    assert no_symbol.error.code == "invalid_request"
    assert "symbol" in no_symbol.error.message
    no_price = await _raw(nc, subject, {**body, "order_type": "LMT"})
    assert no_price.error.code == "invalid_request"
    assert "limit_price" in no_price.error.message
    bad_type = await _raw(nc, subject, {**body, "order_type": "MOC"})
    assert bad_type.error.code == "invalid_request"
    assert "order_type" in bad_type.error.message
    other = await _raw(nc, subject, {**body, "portfolio_id": "elsewhere"})
    assert other.error.code == "not_found"
    assert "portfolio_id" in other.error.message
    unknown_symbol = await _raw(nc, subject, {**body, "symbol": "ZZZZQ"})
    assert unknown_symbol.error.code == "invalid_request"
    assert "symbol" in unknown_symbol.error.message

    with pytest.raises(RequestError) as nobody:
        await _send(nc, _place("nosuchportfolio", "bad-2"))
    assert nobody.value.code == "no_responders"
    assert _sim_orders(gateway_sim, "bad-1") == []


async def test_burst_of_200_orders_produces_no_error_100(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd6"
    # heartbeats are not paced; under a 200-order burst, allow them the default-ish time
    timings = dataclasses.replace(FAST_TIMINGS, heartbeat_interval=1.0, heartbeat_timeout=3.0)
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=26), timings=timings)
    codes: list[int] = []
    bridge.client.on_error(lambda _req, code, _msg: codes.append(code))
    await start_commands(bridge)
    await bridge.wait_ready()
    cmds = [
        _place(p, f"burst-{i}", order_type=OrderType.LMT, limit_price=Decimal("100"))
        for i in range(200)
    ]

    started = time.monotonic()
    replies = await asyncio.gather(*(_send(nc, cmd, wait=20) for cmd in cmds))
    elapsed = time.monotonic() - started

    assert all(not r.duplicate for r in replies)
    assert len({o.request.order_ref for o in gateway_sim.engine.open_orders()}) == 200
    await asyncio.sleep(0.2)  # let any late error arrive
    assert 100 not in codes
    assert elapsed < 15, elapsed
    assert bridge.connection.state is ConnectionState.READY


async def test_a_failed_broker_query_refuses_the_place_command(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "cmd7"
    timings = dataclasses.replace(FAST_TIMINGS, heartbeat_interval=30.0, heartbeat_timeout=30.0)
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=27), timings=timings)
    commands = BrokerCommands(
        p, nc, bridge.connection, Pacer(p), reconciler=bridge.reconciler, query_timeout=0.3
    )
    await commands.start()
    try:
        await bridge.wait_ready()
        gateway_sim.faults.silence(True, client_id=27)
        with pytest.raises(RemoteError) as unknown:
            await _send(nc, _place(p, "silent-1"))
        assert unknown.value.code == "timeout"
        assert "unknown" in unknown.value.message
        gateway_sim.faults.silence(False, client_id=27)
        await asyncio.sleep(0.1)
        assert _sim_orders(gateway_sim, "silent-1") == []
    finally:
        await commands.stop()
