"""Composition root of position-monitor: owns day-trade positions.

For now the service only connects to NATS and PostgreSQL and serves ``/metrics``,
``/healthz`` and ``/readyz``; its workers are wired here by later issues.
"""

from __future__ import annotations

from ibflow.runtime import Service, run
from ibflow_position_monitor.settings import PositionMonitorSettings

SERVICE: Service[PositionMonitorSettings] = Service(
    PositionMonitorSettings, uses_nats=True, uses_database=True
)
"""The position-monitor service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-position-monitor``: run until SIGTERM/SIGINT."""
    run(SERVICE)
