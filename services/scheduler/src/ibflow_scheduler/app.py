"""Composition root of scheduler: trading-session events on the exchange calendar.

For now the service only connects to NATS and PostgreSQL and serves ``/metrics``,
``/healthz`` and ``/readyz``; its workers are wired here by later issues.
"""

from __future__ import annotations

from ibflow.runtime import Service, run
from ibflow_scheduler.settings import SchedulerSettings

SERVICE: Service[SchedulerSettings] = Service(SchedulerSettings, uses_nats=True, uses_database=True)
"""The scheduler service: settings, connections and startup steps."""


def main() -> None:
    """Console script ``ibflow-scheduler``: run until SIGTERM/SIGINT."""
    run(SERVICE)
