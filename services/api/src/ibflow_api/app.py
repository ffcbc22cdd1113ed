"""Composition root of api: REST + WebSocket for people and programs.

For now the service only connects to NATS and PostgreSQL and serves ``/metrics``,
``/healthz`` and ``/readyz``; its workers are wired here by later issues.
"""

from __future__ import annotations

from ibflow.runtime import Service, run
from ibflow_api.settings import ApiSettings

SERVICE: Service[ApiSettings] = Service(ApiSettings, uses_nats=True, uses_database=True)
"""The api service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-api``: run until SIGTERM/SIGINT."""
    run(SERVICE)
