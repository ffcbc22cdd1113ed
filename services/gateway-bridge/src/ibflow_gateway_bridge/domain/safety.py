"""Paper by default: the guard that refuses live trading without an explicit opt-in.

A portfolio may reach real money in two ways: its connection points at a live
Gateway/TWS port, or its account is a real (non-paper) IB account. Either needs the
portfolio's ``allow_live`` flag; otherwise the bridge refuses to connect (or, once
connected, to trade) with the reason :func:`check_live_allowed` returns.

Ports: IB Gateway 4001 live / 4002 paper, TWS 7496 live / 7497 paper, and the
gnzsnz/ib-gateway container's socat relays 4003 live / 4004 paper. Any other port
(e.g. the simulator on a free port) is not judged by its number; the account still is.

Accounts: IB's paper account ids start with ``DU`` (paper individual or sub-account)
or ``DF`` (paper advisor master); live ones start with ``U``, ``F``, ``I``, ...
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "LIVE_PORTS",
    "PAPER_ACCOUNT_PREFIXES",
    "PAPER_PORTS",
    "check_live_allowed",
    "is_paper_account",
]

LIVE_PORTS: Final = frozenset({4001, 4003, 7496})
"""Ports on which a Gateway/TWS trades real money: IB Gateway 4001, the gnzsnz
container's live relay 4003, TWS 7496."""

PAPER_PORTS: Final = frozenset({4002, 4004, 7497})
"""The paper counterparts: IB Gateway 4002, gnzsnz relay 4004, TWS 7497 (informational)."""

PAPER_ACCOUNT_PREFIXES: Final = ("DU", "DF")
"""Prefixes of IB paper trading account ids."""


def is_paper_account(account: str) -> bool:
    """Whether ``account`` is an IB paper trading account id (``DU1234567``, ``DF...``).

    Case and surrounding blanks are ignored; an empty id is not a paper account.
    """
    return account.strip().upper().startswith(PAPER_ACCOUNT_PREFIXES)


def check_live_allowed(
    port: int, account: str | None, is_paper: bool, allow_live: bool
) -> str | None:
    """Why connecting/trading must be refused, or ``None`` if it is allowed.

    Refused unless ``allow_live`` when: ``port`` is a live port (:data:`LIVE_PORTS`),
    ``account`` is known and not a paper account, or the portfolio is configured as
    live (``is_paper=False``). With ``allow_live`` everything is allowed. An unknown
    ``account`` (``None``, before connecting) is judged by the port alone: call again
    with the account the Gateway reports once connected.
    """
    if allow_live:
        return None
    reasons: list[str] = []
    if port in LIVE_PORTS:
        reasons.append(f"port {port} is a live trading port")
    if account is not None and not is_paper_account(account):
        reasons.append(f"account {account!r} is not a paper account (DU/DF)")
    if not is_paper:
        reasons.append("the portfolio is configured as live (is_paper=false)")
    if not reasons:
        return None
    return f"live trading refused: {'; '.join(reasons)}, and allow_live is not set"
