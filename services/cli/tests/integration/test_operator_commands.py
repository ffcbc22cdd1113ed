"""The operator's commands against the `make run` stack (real NATS, PostgreSQL,
gateway-sim and the five services), through the ``ibflow`` console entry point.

Refusals print the service's reason and exit 1, bad usage exits 2 naming the rule,
an unreachable NATS exits 3; test-connection names a wrong port and a client id in
use from what the gateway-bridge published.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from ibflow.testing.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HOLD_CLIENT_ID = """
import sys, time
from ib_async import IB
IB().connect("127.0.0.1", int(sys.argv[1]), clientId=31, timeout=15)
print("held", flush=True)
time.sleep(300)
"""


def until(what: str, check: Any, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:g}s")
        time.sleep(0.5)


def test_operator_halts_places_cancels_follows_and_diagnoses_over_nats(stack: Any) -> None:
    stack.start()
    stack.wait_for("the API ready", lambda: stack.http(f"{stack.api}/readyz")[0] == 200)
    stack.wait_for("demo ready", lambda: stack.cli("test-connection", "demo").returncode == 0)
    key = (stack.root / ".ibflow" / "api-key").read_text().strip()

    # a halt refuses a manual order with the order-manager's reason (exit 1)
    assert stack.cli("halt", "demo", "--reason", "test halt").returncode == 0
    refused = stack.cli("orders", "place", "demo", "BUY", "1", "MSFT", "--id", "op-halted")
    assert refused.returncode == 1
    assert "refused" in refused.stderr
    assert "halted" in refused.stderr
    assert "trading: HALTED" in stack.cli("status", "demo").stdout
    assert stack.cli("resume", "demo").returncode == 0
    assert "trading: active" in stack.cli("status", "demo").stdout

    # a resting limit order is listed as working, then cancelled; events tail sees it
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ibflow_cli",
            "events",
            "tail",
            "--json",
            "--count",
            "1",
            "--subject",
            "ibflow.evt.v1.order.updated.demo",
        ],
        env=dict(stack.env, IBFLOW_NATS_URL=f"nats://127.0.0.1:{stack.nats_port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stderr is not None
    assert "following ibflow.evt.v1.order.updated.demo" in tail.stderr.readline()
    placed = stack.cli(
        "orders",
        "place",
        "demo",
        "BUY",
        "5",
        "MSFT",
        "--type",
        "LMT",
        "--limit",
        "1",
        "--id",
        "op-rest",
        "--wait",
        "0",
    )
    assert placed.returncode == 0, placed.stderr
    out, _ = tail.communicate(timeout=30)
    first = json.loads(out.splitlines()[0])
    assert first["type"] == "OrderBookUpdated"
    assert first["data"]["client_order_id"] == "op-rest"
    until("op-rest working", lambda: "op-rest" in stack.cli("orders", "list", "demo").stdout)
    assert stack.cli("orders", "cancel", "demo", "op-rest").returncode == 0
    until(
        "op-rest cancelled",
        lambda: any(
            "op-rest" in line and "CANCELLED" in line
            for line in stack.cli("orders", "list", "demo", "--all").stdout.splitlines()
        ),
    )
    missing = stack.cli("orders", "cancel", "demo", "no-such-order")
    assert missing.returncode == 1
    assert "no-such-order" in missing.stderr

    # usage errors name the rule (2); an unreachable NATS is 3
    both = stack.cli("halt")
    assert both.returncode == 2
    assert "give a portfolio id or --all" in both.stderr
    no_limit = stack.cli("orders", "place", "demo", "BUY", "1", "MSFT", "--type", "LMT")
    assert no_limit.returncode == 2
    assert "LMT order needs limit_price" in no_limit.stderr
    unknown = stack.cli("session", "trigger", "bogus", "--yes")
    assert unknown.returncode == 1
    assert "unknown session event 'bogus'" in unknown.stderr
    down = stack.cli("--nats-url", "nats://127.0.0.1:1", "status")
    assert down.returncode == 3
    assert "cannot reach NATS" in down.stderr
    schedule = stack.cli("session", "schedule")
    assert schedule.returncode == 0
    assert "morning_entry" in schedule.stdout

    # test-connection: a port nothing listens on; a client id another API client holds
    wrong_port = free_port()
    sim_port = stack.ports["IBFLOW_DEV_SIM_PORT"]
    holder = subprocess.Popen(  # another API client holding client id 31 at the simulator
        [sys.executable, "-c", HOLD_CLIENT_ID, str(sim_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    try:
        for body in (
            {"id": "wrongport", "name": "w", "broker_port": wrong_port, "client_id": 21},
            {"id": "clash", "name": "c", "broker_port": sim_port, "client_id": 31},
        ):
            body.update(account="DU1234567", cash="1000")
            status, reply = stack.http(f"{stack.api}/api/v1/portfolios", key, body)
            assert status == 201, reply

        def diagnosis(portfolio: str, problem: str) -> subprocess.CompletedProcess[str] | None:
            result = stack.cli("test-connection", portfolio)
            return result if problem in result.stdout else None

        wrong = until("wrong port diagnosed", lambda: diagnosis("wrongport", "wrong_port"))
        assert wrong.returncode == 1
        assert f"nothing listens on 127.0.0.1:{wrong_port}" in wrong.stdout
        clash = until("326 diagnosed", lambda: diagnosis("clash", "client_id_in_use"))
        assert clash.returncode == 1
        assert "client id 31 is already in use" in clash.stdout
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
