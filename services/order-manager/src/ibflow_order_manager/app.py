"""Composition root of order-manager: owns orders and money.

For now the service only connects to NATS and PostgreSQL and serves ``/metrics``,
``/healthz`` and ``/readyz``; its workers are wired here by later issues.
"""

from __future__ import annotations

from ibflow.runtime import Service, run
from ibflow_order_manager.settings import OrderManagerSettings

SERVICE: Service[OrderManagerSettings] = Service(
    OrderManagerSettings, uses_nats=True, uses_database=True
)
"""The order-manager service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-order-manager``: run until SIGTERM/SIGINT."""
    run(SERVICE)
