"""test-connection's diagnoses: each failure mode from what the bridge published."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ibflow.contracts import BrokerErrorReported, ConnectionState, GatewayConnectionChanged
from ibflow_cli.diagnose import Probe, Problem, diagnose, probe


def state(**fields: Any) -> GatewayConnectionChanged:
    body: dict[str, Any] = {
        "portfolio_id": "p",
        "state": ConnectionState.CONNECTING,
        "connected": False,
        "gateway_type": "ib_gateway",
        "host": "127.0.0.1",
        "port": 4002,
        "client_id": 7,
        "account_id": "DU111",
    }
    body.update(fields)
    return GatewayConnectionChanged.model_validate(body)


def error(code: int, message: str = "") -> BrokerErrorReported:
    return BrokerErrorReported(portfolio_id="p", code=code, message=message or f"IB {code}")


def test_a_portfolio_the_bridge_does_not_know_is_named() -> None:
    result = diagnose("p", None)
    assert result.problem is Problem.UNKNOWN_PORTFOLIO
    assert "enabled" in result.fix


def test_ready_with_the_configured_account_is_ok() -> None:
    ready = state(state=ConnectionState.READY, connected=True)
    result = diagnose("p", ready, reported_accounts=("DU111",))
    assert result.ok
    assert "DU111" in result.finding


def test_ready_but_the_login_does_not_manage_the_account() -> None:
    ready = state(state=ConnectionState.READY, connected=True, account_id="DU999")
    result = diagnose("p", ready, reported_accounts=("DU111", "DU222"))
    assert result.problem is Problem.ACCOUNT_NOT_IN_LOGIN
    assert "DU111, DU222, not DU999" in result.finding


def test_client_id_in_use_from_the_last_broker_error() -> None:
    result = diagnose(
        "p", state(error_message="connection lost"), last_error=error(326), tcp=Probe.OPEN
    )
    assert result.problem is Problem.CLIENT_ID_IN_USE
    assert "client id 7" in result.finding
    assert "fallback_client_id" in result.fix


def test_client_id_in_use_from_the_bridges_error_message_alone() -> None:
    result = diagnose("p", state(error_message="client id in use"), tcp=Probe.OPEN)
    assert result.problem is Problem.CLIENT_ID_IN_USE


def test_refused_on_an_ib_port_is_the_gateway_down_or_its_api_off() -> None:
    result = diagnose("p", state(error_message="cannot connect"), tcp=Probe.REFUSED)
    assert result.problem is Problem.GATEWAY_DOWN
    assert "IB Gateway paper" in result.finding
    assert "Enable ActiveX and Socket Clients" in result.fix


def test_refused_on_a_port_no_gateway_uses_is_a_wrong_port() -> None:
    result = diagnose("p", state(port=4555), tcp=Probe.REFUSED)
    assert result.problem is Problem.WRONG_PORT
    assert "4002" in result.fix


def test_open_socket_without_an_api_session_is_an_untrusted_ip_or_disabled_api() -> None:
    timed_out = state(error_message="connecting to 127.0.0.1:4002 timed out after 10s")
    result = diagnose("p", timed_out, tcp=Probe.OPEN)
    assert result.problem is Problem.API_NOT_ACCEPTED
    assert "Trusted IPs" in result.fix


def test_live_refusal_and_lost_ib_connectivity_are_told_apart() -> None:
    refused = state(error_message="live trading refused: port 4001 is a live trading port")
    assert diagnose("p", refused, tcp=Probe.OPEN).problem is Problem.LIVE_REFUSED
    lost = state(state=ConnectionState.IB_CONNECTIVITY_LOST, connected=True)
    assert diagnose("p", lost, last_error=error(1100)).problem is Problem.IB_CONNECTIVITY_LOST


@pytest.mark.parametrize(("listening", "expected"), [(True, Probe.OPEN), (False, Probe.REFUSED)])
def test_tcp_probe_tells_open_from_refused(listening: bool, expected: Probe) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        if listening:
            server.listen()
        else:
            server.close()
        assert probe("127.0.0.1", port, timeout=2) is expected
