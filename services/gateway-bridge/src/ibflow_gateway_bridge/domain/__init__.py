"""Pure domain logic of gateway-bridge: no I/O, no ib_async, no clock.

* :mod:`~ibflow_gateway_bridge.domain.connection`: the per-portfolio connection state
  machine (:class:`ConnectionMachine`, :class:`Transition`);
* :mod:`~ibflow_gateway_bridge.domain.error_codes`: IB error codes as named sets that
  drive the state machine, and :func:`classify` for metrics;
* :mod:`~ibflow_gateway_bridge.domain.safety`: the paper-by-default guard
  (:func:`check_live_allowed`);
* :mod:`~ibflow_gateway_bridge.domain.backoff`: :func:`reconnect_delay`.
"""

from __future__ import annotations

from ibflow_gateway_bridge.domain.backoff import reconnect_delay
from ibflow_gateway_bridge.domain.connection import ConnectionMachine, Transition
from ibflow_gateway_bridge.domain.error_codes import ErrorClass, classify
from ibflow_gateway_bridge.domain.safety import (
    LIVE_PORTS,
    PAPER_ACCOUNT_PREFIXES,
    PAPER_PORTS,
    check_live_allowed,
    is_paper_account,
)

__all__ = [
    "LIVE_PORTS",
    "PAPER_ACCOUNT_PREFIXES",
    "PAPER_PORTS",
    "ConnectionMachine",
    "ErrorClass",
    "Transition",
    "check_live_allowed",
    "classify",
    "is_paper_account",
    "reconnect_delay",
]
