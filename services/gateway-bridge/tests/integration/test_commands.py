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
from ibflow.contracts.enums import ConnectionState, OrderPurpose, OrderSide, OrderType
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged
from ibflow.contracts.gateway import (
    BrokerOrderPreviewed,
    BrokerOrderSearched,
    CancelBrokerOrder,
    FindBrokerOrder,
    ModifyBrokerOrder,
    PlaceBrokerOrder,
    PreviewBrokerOrder,
    RefreshBrokerState,
)
from ibflow.contracts.replies import CommandAccepted, ErrorReply, parse_reply
from ibflow_gateway_bridge.commands import BrokerCommands
from ibflow_gateway_bridge.pacing import Pacer
from ibflow_gateway_sim.server import GatewaySimulator

from .conftest import (
    FAST_TIMINGS,
    Bridge,
    RecordingPacer,
    portfolio_config,
    wait_stored,
    wait_until,
)

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


async def test_an_exit_is_sent_before_entries_queued_for_the_message_rate(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "cmd-prio"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=29))
    await bridge.wait_ready()
    pacer = Pacer(p, rate=4)
    commands = BrokerCommands(p, nc, bridge.connection, pacer, reconciler=bridge.reconciler)
    await commands.start()
    # once the reconciler's orders snapshot is complete, a place asks the broker nothing
    # (before it, the exit's own broker query is two sequential paced messages, and
    # entries may take the slots freed in between)
    await wait_until(lambda: bridge.reconciler.known_order("none")[0], within=10)
    try:
        await _send(nc, _place(p, "warm", order_type=OrderType.LMT, limit_price=Decimal(1)))
        entries = [
            _place(p, f"entry-{i}", order_type=OrderType.LMT, limit_price=Decimal(100))
            for i in range(10)
        ]
        sending = [asyncio.ensure_future(_send(nc, cmd, wait=10)) for cmd in entries]
        await wait_until(lambda: pacer.queue_depth >= 6)
        exit_ = _place(p, "exit-1", side=OrderSide.SELL, purpose=OrderPurpose.EXIT)

        await _send(nc, exit_, wait=10)
        await asyncio.gather(*sending)
    finally:
        await commands.stop()

    [exit_order] = _sim_orders(gateway_sim, "exit-1")
    entry_ids = [o.order_id for e in entries for o in _sim_orders(gateway_sim, e.client_order_id)]
    assert len(entry_ids) == 10
    # at most 3 entries fitted the first second's window with the warm-up order; the
    # exit took the next turn, ahead of every entry still waiting
    assert sum(order_id > exit_order.order_id for order_id in entry_ids) >= 6


async def test_a_failed_broker_query_refuses_the_place_command(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
) -> None:
    p = "cmd7"
    timings = dataclasses.replace(FAST_TIMINGS, heartbeat_interval=30.0, heartbeat_timeout=30.0)
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=27), timings=timings)
    # without a reconciler there is no trusted orders snapshot: place must ask the broker
    commands = BrokerCommands(p, nc, bridge.connection, Pacer(p), query_timeout=0.3)
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


# --------------------------------------------------------------------- brackets


@pytest.fixture
async def start_recorded_commands(
    nc: NatsClient,
) -> AsyncIterator[Callable[[Bridge], Any]]:
    """``await start_recorded_commands(bridge)`` → ``(commands, pacer)``, stopped after."""
    started: list[BrokerCommands] = []

    async def _start(bridge: Bridge) -> tuple[BrokerCommands, RecordingPacer]:
        p = bridge.connection.portfolio_id
        pacer = RecordingPacer(p)
        commands = BrokerCommands(
            p, nc, bridge.connection, pacer, reconciler=bridge.reconciler, query_timeout=3.0
        )
        await commands.start()
        started.append(commands)
        return commands, pacer

    yield _start
    for commands in started:
        await commands.stop()


def _bracket(p: str, coid: str, **terms: Any) -> PlaceBrokerOrder:
    fields: dict[str, Any] = {
        "order_type": OrderType.LMT,
        "limit_price": Decimal("185.00"),
        "take_profit_price": Decimal("200.00"),
        "stop_loss_price": Decimal("180.00"),
    }
    fields.update(terms)
    return _place(p, coid, **fields)


def _one(sim: GatewaySimulator, coid: str) -> Any:
    [order] = _sim_orders(sim, coid)
    return order


def _statuses(stored: list[Any], coid: str) -> list[str]:
    return [
        status.ib_status
        for status in (OrderStatusChanged.from_json(s.data) for s in stored)
        if status.client_order_id == coid
    ]


async def test_bracket_places_parent_and_children_with_oca(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_recorded_commands: Callable[[Bridge], Any],
) -> None:
    p = "brk1"
    gateway_sim.faults.set_price("AAPL", Decimal("190.00"))
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=31))
    _, pacer = await start_recorded_commands(bridge)
    await bridge.wait_ready()
    await wait_until(lambda: bridge.reconciler.known_order("brk-1")[0])
    cmd = _bracket(p, "brk-1", quantity=Decimal(20), tif="GTC", outside_rth=True)

    accepted = await _send(nc, cmd)

    assert accepted.duplicate is False
    assert accepted.client_order_ids == ("brk-1", "brk-1:tp", "brk-1:sl")
    assert accepted.detail is not None
    assert "brk-1:tp order_id=" in accepted.detail
    # the duplicate check uses the connection's orders snapshot (no broker query), then
    # ONE pacer wait for 3 orders + the contract's qualification
    assert pacer.acquired == [4]
    await wait_until(lambda: len(_sim_orders(gateway_sim, "brk-1:sl")) == 1)
    parent, take_profit, stop_loss = (_one(gateway_sim, c) for c in accepted.client_order_ids)
    assert (parent.status, parent.action, parent.order_type) == ("Submitted", "BUY", "LMT")
    assert parent.request.lmt_price == Decimal("185.00")
    assert parent.request.oca_group == ""
    for child in (take_profit, stop_loss):
        assert child.status == "PreSubmitted"  # waiting for the parent's fill
        assert child.transmitted
        assert child.action == "SELL"
        assert child.quantity == Decimal(20)
        assert (child.request.tif, child.request.outside_rth) == ("GTC", True)
        assert child.request.parent_id == parent.order_id
        assert child.parent_perm_id == parent.perm_id
        assert (child.request.oca_group, child.request.oca_type) == ("brk-1:oca", 2)
    assert (take_profit.order_type, take_profit.request.lmt_price) == ("LMT", Decimal("200.00"))
    assert (stop_loss.order_type, stop_loss.request.aux_price) == ("STP", Decimal("180.00"))
    assert parent.children == (take_profit.order_id, stop_loss.order_id)
    # ib_async sent them with IB's transmit pattern
    sent = {
        t.order.orderRef: t.order
        for c in cmd.bracket_client_order_ids()
        for t in bridge.client.trades_by_ref(c)
    }
    assert [sent[c].transmit for c in accepted.client_order_ids] == [False, False, True]
    # each child's status is published under its own client order id
    stored = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: all(_statuses(found, c) for c in accepted.client_order_ids),
    )
    assert _statuses(stored, "brk-1:tp")[0] == "PreSubmitted"
    assert _statuses(stored, "brk-1:sl")[0] == "PreSubmitted"

    # a take-profit-only bracket on the now known contract: 2 messages, no qualification
    pacer.acquired.clear()
    await _send(nc, _bracket(p, "brk-2", stop_loss_price=None))
    assert pacer.acquired == [2]
    await wait_until(lambda: len(_sim_orders(gateway_sim, "brk-2:tp")) == 1)
    assert _one(gateway_sim, "brk-2:tp").request.transmit is True  # the last child transmits
    assert _sim_orders(gateway_sim, "brk-2:sl") == []


async def test_bracket_target_fill_cancels_stop_and_publishes_both(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "brk2"
    gateway_sim.faults.set_price("AAPL", Decimal("190.00"))
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=32))
    await start_commands(bridge)
    await bridge.wait_ready()
    cmd = _bracket(
        p,
        "brk-fill",
        limit_price=Decimal("190.01"),  # marketable: the ask
        take_profit_price=Decimal("195.00"),
        stop_loss_price=Decimal("185.00"),
    )

    await _send(nc, cmd)
    await wait_until(lambda: _one(gateway_sim, "brk-fill").status == "Filled")
    await wait_until(lambda: _one(gateway_sim, "brk-fill:tp").status == "Submitted")
    gateway_sim.faults.set_price("AAPL", Decimal("195.00"))  # bid 195 reaches the target

    await wait_until(lambda: _one(gateway_sim, "brk-fill:tp").status == "Filled")
    await wait_until(lambda: _one(gateway_sim, "brk-fill:sl").status == "Cancelled")
    stored = await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: (
            "Filled" in _statuses(found, "brk-fill:tp")
            and "Cancelled" in _statuses(found, "brk-fill:sl")
        ),
    )
    assert "Filled" in _statuses(stored, "brk-fill")
    assert "Filled" not in _statuses(stored, "brk-fill:sl")
    executions = [
        ExecutionReported.from_json(s.data)
        for s in await wait_stored(bridge_js, subjects.execution(p), lambda f: len(f) >= 2)
    ]
    by_coid = {e.client_order_id: e for e in executions}
    assert set(by_coid) == {"brk-fill", "brk-fill:tp"}
    assert (by_coid["brk-fill"].side, by_coid["brk-fill"].price) == (
        OrderSide.BUY,
        Decimal("190.01"),
    )
    target = by_coid["brk-fill:tp"]
    assert (target.side, target.shares, target.price) == (
        OrderSide.SELL,
        Decimal(10),
        Decimal("195"),
    )
    commissions = [
        CommissionReported.from_json(s.data)
        for s in await wait_stored(bridge_js, subjects.commission(p), lambda f: len(f) >= 2)
    ]
    assert {c.exec_id for c in commissions} == {e.exec_id for e in executions}
    [target_commission] = [c for c in commissions if c.exec_id == target.exec_id]
    assert target_commission.commission == Decimal("1")
    assert target_commission.realized_pnl == Decimal("47.9")  # (195 - 190.01) * 10 - 2 * 1


async def test_repeated_bracket_place_is_one_broker_order_set(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "brk3"
    gateway_sim.faults.set_price("AAPL", Decimal("190.00"))
    config = portfolio_config(p, gateway_sim.port, client_id=33)
    first = start_portfolio(config)
    commands = await start_commands(first)
    await first.wait_ready()
    cmd = _bracket(p, "brk-dup")

    assert (await _send(nc, cmd)).duplicate is False
    again = await _send(nc, cmd)
    assert again.duplicate is True
    assert again.client_order_ids == ("brk-dup", "brk-dup:tp", "brk-dup:sl")
    assert again.detail is not None
    assert "already placed" in again.detail
    # concurrently: still one set
    race = _bracket(p, "brk-race")
    both = await asyncio.gather(*(_send(nc, race) for _ in range(2)))
    assert sorted(a.duplicate for a in both) == [False, True]
    # only the parent at the broker (placed as a plain order): the bracket adds nothing
    await _send(nc, _place(p, "brk-lone", order_type=OrderType.LMT, limit_price=Decimal(185)))
    assert (await _send(nc, _bracket(p, "brk-lone"))).duplicate is True

    # a bridge restart: found at the broker, nothing placed again
    await commands.stop()
    await first.connection.stop()
    second = start_portfolio(config)
    await start_commands(second)
    await second.wait_ready()
    assert (await _send(nc, cmd)).duplicate is True

    for coid in ("brk-dup", "brk-race"):
        for ref in (coid, f"{coid}:tp", f"{coid}:sl"):
            assert len(_sim_orders(gateway_sim, ref)) == 1, ref
    assert len(_sim_orders(gateway_sim, "brk-lone")) == 1
    assert _sim_orders(gateway_sim, "brk-lone:tp") == []
    assert _sim_orders(gateway_sim, "brk-lone:sl") == []


async def test_cancelling_a_bracket_parent_cancels_its_children(
    gateway_sim: GatewaySimulator,
    bridge_js: JetStreamContext,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "brk4"
    gateway_sim.faults.set_price("AAPL", Decimal("190.00"))
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=34))
    await start_commands(bridge)
    await bridge.wait_ready()
    coids = (await _send(nc, _bracket(p, "brk-cxl"))).client_order_ids

    cancel = CancelBrokerOrder(portfolio_id=p, client_order_id="brk-cxl")
    accepted = await request(
        nc, subjects.cancel_broker_order(p), cancel, CommandAccepted, timeout=5
    )

    assert accepted.client_order_ids == ("brk-cxl",)
    await wait_until(lambda: [_one(gateway_sim, c).status for c in coids] == ["Cancelled"] * 3)
    await wait_stored(
        bridge_js,
        subjects.order_status(p),
        lambda found: all("Cancelled" in _statuses(found, c) for c in coids),
    )


async def test_lookup_finds_orders_by_ref_across_a_bridge_restart(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd-lookup"
    config = portfolio_config(p, gateway_sim.port, client_id=31)
    first = start_portfolio(config)
    commands = await start_commands(first)
    await first.wait_ready()
    await _send(nc, _place(p, "look-mkt"))
    await _send(nc, _place(p, "look-lmt", order_type=OrderType.LMT, limit_price=Decimal("120")))
    await wait_until(lambda: [o.status for o in _sim_orders(gateway_sim, "look-mkt")] == ["Filled"])

    async def lookup(coid: str) -> BrokerOrderSearched:
        cmd = FindBrokerOrder(portfolio_id=p, client_order_id=coid)
        subject = subjects.lookup_broker_order(p)
        return await request(nc, subject, cmd, BrokerOrderSearched, timeout=5)

    await commands.stop()
    await first.connection.stop()
    second = start_portfolio(config)
    await start_commands(second)
    await second.wait_ready()

    filled, working, absent = [await lookup(c) for c in ("look-mkt", "look-lmt", "never")]
    assert filled.found
    assert filled.status is not None
    assert filled.status.ib_status == "Filled"
    assert working.found
    assert working.status is not None
    assert working.status.ib_status in {"Submitted", "PreSubmitted"}
    assert working.status.limit_price == Decimal(120)
    assert (absent.found, absent.status) == (False, None)


async def test_lookup_while_not_ready_is_an_error_not_absent(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd-lookup2"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=32))
    await start_commands(bridge)
    await bridge.wait_ready()
    gateway_sim.faults.connectivity_lost()
    await wait_until(lambda: bridge.connection.state is ConnectionState.IB_CONNECTIVITY_LOST)
    cmd = FindBrokerOrder(portfolio_id=p, client_order_id="anything")
    with pytest.raises(RemoteError) as refused:
        await request(nc, subjects.lookup_broker_order(p), cmd, BrokerOrderSearched, timeout=5)
    assert refused.value.code == "not_ready"


async def test_preview_answers_ib_what_if_figures_and_places_nothing(
    gateway_sim: GatewaySimulator,
    nc: NatsClient,
    start_portfolio: Callable[..., Bridge],
    start_commands: Callable[[Bridge], Any],
) -> None:
    p = "cmd-preview"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=33))
    await start_commands(bridge)
    await bridge.wait_ready()
    orders_before = len(gateway_sim.engine.open_orders()) + len(
        gateway_sim.engine.completed_orders()
    )
    cmd = PreviewBrokerOrder(
        portfolio_id=p,
        client_order_id="what-if-1",
        symbol="AAPL",
        side=OrderSide.BUY,
        order_type=OrderType.LMT,
        quantity=Decimal(100),
        limit_price=Decimal(150),
    )

    answer = await request(
        nc, subjects.preview_broker_order(p), cmd, BrokerOrderPreviewed, timeout=5
    )

    assert answer.client_order_id == "what-if-1"
    assert answer.init_margin_change is not None
    assert answer.init_margin_change > 0
    assert answer.init_margin_before is not None
    assert answer.init_margin_after == answer.init_margin_before + answer.init_margin_change
    assert answer.commission is not None
    assert answer.commission > 0
    orders_after = len(gateway_sim.engine.open_orders()) + len(
        gateway_sim.engine.completed_orders()
    )
    assert orders_after == orders_before
    unknown = cmd.model_copy(update={"symbol": "ZZZZQ"})
    with pytest.raises(RemoteError) as refused:
        await request(
            nc, subjects.preview_broker_order(p), unknown, BrokerOrderPreviewed, timeout=5
        )
    assert refused.value.code == "invalid_request"
    assert "ZZZZQ" in refused.value.message


async def test_concurrent_order_queries_are_all_answered(
    gateway_sim: GatewaySimulator,
    start_portfolio: Callable[..., Bridge],
) -> None:
    """ib_async keeps one future per kind of orders query: concurrent ones (a command's
    duplicate check, a cancel's lookup, the reconciler) must not orphan each other."""
    p = "cmd-queries"
    bridge = start_portfolio(portfolio_config(p, gateway_sim.port, client_id=30))
    await bridge.wait_ready()

    answers = await asyncio.wait_for(
        asyncio.gather(
            *(bridge.client.open_orders(2.0) for _ in range(3)),
            *(bridge.client.completed_orders(2.0) for _ in range(3)),
        ),
        10,
    )

    assert all(isinstance(answer, list) for answer in answers)
