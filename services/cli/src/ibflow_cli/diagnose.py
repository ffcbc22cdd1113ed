"""``ibflow test-connection``: what is wrong with a portfolio's IB connection, and the fix.

The gateway-bridge owns the IB connections, so the diagnosis reads what it publishes:
the connection state and its last error in the KV bucket (``connection.<portfolio>``),
the accounts it reported (``account.<portfolio>``) and the last ``BrokerErrorReported``
of the portfolio. One thing the bridge cannot say is *why* a socket failed; for that
the CLI may open (and at once close) a plain TCP connection to the portfolio's
``host:port`` (:class:`Probe`): refused means nothing listens there, open means
something listens but did not accept the API session. No IB API bytes are sent.

:func:`diagnose` is pure: the same inputs always give the same :class:`Diagnosis`.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ibflow.contracts import BrokerErrorReported, ConnectionState, GatewayConnectionChanged

IB_PORTS: Final = {
    4001: "IB Gateway live",
    4002: "IB Gateway paper",
    7496: "TWS live",
    7497: "TWS paper",
    4003: "ib-gateway container live (socat)",
    4004: "ib-gateway container paper (socat)",
}
"""The ports an IB Gateway or TWS API listens on by default."""

CLIENT_ID_IN_USE: Final = 326
CONNECTIVITY_CODES: Final = frozenset({1100, 2110})


class Probe(StrEnum):
    """The outcome of a plain TCP connect to the gateway's ``host:port``."""

    OPEN = "open"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    NOT_TRIED = "not_tried"


class Problem(StrEnum):
    """What :func:`diagnose` concluded."""

    OK = "ok"
    UNKNOWN_PORTFOLIO = "unknown_portfolio"
    LIVE_REFUSED = "live_refused"
    CLIENT_ID_IN_USE = "client_id_in_use"
    ACCOUNT_NOT_IN_LOGIN = "account_not_in_login"
    GATEWAY_DOWN = "gateway_down"
    WRONG_PORT = "wrong_port"
    API_NOT_ACCEPTED = "api_disabled_or_untrusted_ip"
    HOST_UNREACHABLE = "host_unreachable"
    IB_CONNECTIVITY_LOST = "ib_connectivity_lost"
    CONNECTING = "connecting"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The problem, what was seen, and what to do."""

    problem: Problem
    finding: str
    fix: str

    @property
    def ok(self) -> bool:
        """True when the connection is ready and trades the configured account."""
        return self.problem is Problem.OK


def probe(host: str, port: int, timeout: float = 3.0) -> Probe:
    """Open and close a TCP connection to ``host:port`` (no bytes sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return Probe.OPEN
    except ConnectionRefusedError:
        return Probe.REFUSED
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return Probe.REFUSED
        return Probe.UNREACHABLE


def _where(state: GatewayConnectionChanged) -> str:
    return f"{state.host}:{state.port} (client id {state.client_id})"


def diagnose(  # noqa: PLR0911 - one return per diagnosis, in order
    portfolio_id: str,
    state: GatewayConnectionChanged | None,
    *,
    last_error: BrokerErrorReported | None = None,
    reported_accounts: tuple[str, ...] = (),
    tcp: Probe = Probe.NOT_TRIED,
) -> Diagnosis:
    """The first problem that explains what the bridge reports, with its fix."""
    if state is None:
        return Diagnosis(
            Problem.UNKNOWN_PORTFOLIO,
            f"the gateway-bridge keeps no connection state for {portfolio_id!r}",
            "check that the portfolio exists and is enabled (GET /portfolios), and that "
            "gateway-bridge runs: it connects every enabled portfolio within "
            "IBFLOW_PORTFOLIO_RELOAD_INTERVAL (60 s) of a change",
        )
    message = state.error_message or ""
    error_code = last_error.code if last_error is not None else None
    where = _where(state)
    if "live trading refused" in message:
        return Diagnosis(
            Problem.LIVE_REFUSED,
            f"the bridge refused to connect to {where}: {message}",
            "use a paper port (4002 IB Gateway, 7497 TWS) and a DU/DF account, or set "
            "allow_live on the portfolio if live trading is really meant",
        )
    if state.state is ConnectionState.READY or state.state is ConnectionState.DEGRADED:
        account = state.account_id
        if account and reported_accounts and account not in reported_accounts:
            return Diagnosis(
                Problem.ACCOUNT_NOT_IN_LOGIN,
                f"connected to {where}, but the login reports account(s) "
                f"{', '.join(reported_accounts)}, not {account}",
                "set the portfolio's account to one this login manages, or log the "
                "gateway in with the user that owns the account",
            )
        detail = " (a market data farm is down: orders work, quotes may not)" * (
            state.state is ConnectionState.DEGRADED
        )
        heartbeat = (
            f", last heartbeat {state.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC"
            if state.last_heartbeat is not None
            else ""
        )
        return Diagnosis(
            Problem.OK,
            f"{state.state} on {where}, account {account or '?'}{heartbeat}{detail}",
            "nothing to do",
        )
    lowered = message.lower()
    in_use = "326" in message or ("client id" in lowered and "in use" in lowered)
    if error_code == CLIENT_ID_IN_USE or in_use:
        return Diagnosis(
            Problem.CLIENT_ID_IN_USE,
            f"the gateway at {where} says client id {state.client_id} is already in use (326)",
            "another API session holds this client id: a second bridge, TWS with the same "
            "id, or a crashed session the gateway has not dropped yet. Stop the other "
            "client, give the portfolio another client_id (or a fallback_client_id), or "
            "restart the gateway",
        )
    if state.state is ConnectionState.IB_CONNECTIVITY_LOST or error_code in CONNECTIVITY_CODES:
        return Diagnosis(
            Problem.IB_CONNECTIVITY_LOST,
            f"the gateway at {where} is up but has lost its connection to IB (1100)",
            "usually the nightly reset (back within minutes: 1101/1102); if it lasts, the "
            "gateway's login expired: log in again (weekly 2FA)",
        )
    if "account" in message.lower() and state.account_id:
        return Diagnosis(
            Problem.ACCOUNT_NOT_IN_LOGIN,
            f"connecting to {where} failed on account {state.account_id}: {message}",
            "set the portfolio's account to one this login manages, or log the "
            "gateway in with the user that owns the account",
        )
    known = IB_PORTS.get(state.port)
    if tcp is Probe.REFUSED:
        if known is None:
            return Diagnosis(
                Problem.WRONG_PORT,
                f"nothing listens on {state.host}:{state.port}, which is not an IB port",
                "set the portfolio's port to the gateway's API port: IB Gateway 4002 "
                "paper / 4001 live, TWS 7497 paper / 7496 live, the ib-gateway "
                "container 4004 paper / 4003 live",
            )
        return Diagnosis(
            Problem.GATEWAY_DOWN,
            f"nothing listens on {state.host}:{state.port} ({known})",
            "start IB Gateway (or TWS) and log in; if it runs, its API socket is off or "
            "on another port: Configure > Settings > API > Settings, tick 'Enable "
            "ActiveX and Socket Clients' and check 'Socket port'",
        )
    if tcp is Probe.UNREACHABLE:
        return Diagnosis(
            Problem.HOST_UNREACHABLE,
            f"{state.host}:{state.port} does not answer at all (timeout or no route)",
            "check the host name and that no firewall drops the port",
        )
    if tcp is Probe.OPEN and state.state is not ConnectionState.SYNCHRONISING:
        return Diagnosis(
            Problem.API_NOT_ACCEPTED,
            f"{state.host}:{state.port} accepts TCP but the API session is not accepted"
            + (f" ({message})" if message else ""),
            "in the gateway: Configure > Settings > API > Settings, add this machine to "
            "'Trusted IPs' (or untick 'Allow connections from localhost only') and "
            "accept the incoming-connection prompt; if the port is not the gateway's "
            "API port (4002/4001, TWS 7497/7496), fix the portfolio's port",
        )
    return Diagnosis(
        Problem.CONNECTING,
        f"{state.state} on {where}" + (f": {message}" if message else ""),
        "wait a few seconds and run test-connection again; the bridge retries with "
        "backoff (up to 60 s)",
    )
