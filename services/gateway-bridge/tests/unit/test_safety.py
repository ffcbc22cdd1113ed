"""Paper by default: live ports and real accounts need the portfolio's allow_live."""

from __future__ import annotations

import pytest

from ibflow_gateway_bridge.domain.safety import (
    LIVE_PORTS,
    PAPER_PORTS,
    check_live_allowed,
    is_paper_account,
)


def test_live_and_paper_port_sets() -> None:
    assert {4001, 4003, 7496} == LIVE_PORTS
    assert {4002, 4004, 7497} == PAPER_PORTS
    assert not LIVE_PORTS & PAPER_PORTS


@pytest.mark.parametrize("port", [4002, 4004, 7497, 45123])
def test_paper_port_and_paper_account_is_allowed(port: int) -> None:
    assert check_live_allowed(port, "DU1234567", is_paper=True, allow_live=False) is None


def test_unknown_account_on_a_paper_port_is_allowed_until_the_gateway_names_it() -> None:
    assert check_live_allowed(4002, None, is_paper=True, allow_live=False) is None


@pytest.mark.parametrize("port", [4001, 4003, 7496])
def test_live_port_is_refused_without_allow_live(port: int) -> None:
    reason = check_live_allowed(port, "DU1234567", is_paper=True, allow_live=False)
    assert reason is not None
    assert f"port {port}" in reason
    assert "allow_live" in reason


@pytest.mark.parametrize("account", ["U1234567", "F7654321", "I1234567", ""])
def test_real_account_on_a_paper_port_is_refused(account: str) -> None:
    reason = check_live_allowed(4002, account, is_paper=True, allow_live=False)
    assert reason is not None
    assert "not a paper account" in reason


def test_portfolio_configured_as_live_is_refused_without_allow_live() -> None:
    reason = check_live_allowed(4002, "DU1234567", is_paper=False, allow_live=False)
    assert reason is not None
    assert "is_paper" in reason


def test_every_reason_is_named_at_once() -> None:
    reason = check_live_allowed(7496, "U1234567", is_paper=False, allow_live=False)
    assert reason is not None
    assert "port 7496" in reason
    assert "'U1234567'" in reason
    assert "is_paper" in reason


@pytest.mark.parametrize(
    ("port", "account", "is_paper"),
    [(4001, "U1234567", False), (7496, None, False), (4003, "DU1234567", True)],
)
def test_allow_live_permits_live_trading(port: int, account: str | None, is_paper: bool) -> None:
    assert check_live_allowed(port, account, is_paper=is_paper, allow_live=True) is None


@pytest.mark.parametrize(
    ("account", "paper"),
    [
        ("DU1234567", True),
        ("DF1234567", True),
        ("du1234567", True),
        (" DU1234567 ", True),
        ("U1234567", False),
        ("F1234567", False),
        ("D1234567", False),
        ("", False),
    ],
)
def test_paper_accounts_are_recognised_by_prefix(account: str, paper: bool) -> None:
    assert is_paper_account(account) is paper
