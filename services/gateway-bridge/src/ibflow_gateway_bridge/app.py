"""Composition root of gateway-bridge: the only process that talks to Interactive Brokers.

For now the service only connects to NATS and PostgreSQL and serves ``/metrics``,
``/healthz`` and ``/readyz``; its workers are wired here by later issues.
"""

from __future__ import annotations

from ibflow.runtime import Service, run
from ibflow_gateway_bridge.settings import GatewayBridgeSettings

SERVICE: Service[GatewayBridgeSettings] = Service(
    GatewayBridgeSettings, uses_nats=True, uses_database=True
)
"""The gateway-bridge service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-gateway-bridge``: run until SIGTERM/SIGINT."""
    run(SERVICE)
