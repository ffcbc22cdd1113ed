"""The ``ibflow-scheduler`` command line: run the service, or print a day's plan.

::

    ibflow-scheduler                      # run the service (same as ``run``)
    ibflow-scheduler plan --date 2026-11-27
    ibflow-scheduler plan --date 2026-11-27 --json

``plan`` is a dry run for operators: the occurrences of that date's session from the
configuration (the same ``IBFLOW_SCHEDULE`` environment as the service) and the NYSE
calendar, without NATS: name, New York wall time and UTC instant. ``--json`` prints a
list of ``{"name", "et", "utc"}`` (ISO 8601, ``et`` with its UTC offset), empty on a day
without a session.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TextIO

from ibflow.runtime import load_settings
from ibflow_scheduler.domain.calendar import NyseCalendar, new_york_date
from ibflow_scheduler.domain.schedule import Occurrence, plan
from ibflow_scheduler.settings import SchedulerSettings

__all__ = ["build_parser", "plan_as_json", "plan_as_text", "run_plan"]


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ibflow-scheduler``."""
    parser = argparse.ArgumentParser(
        prog="ibflow-scheduler",
        description="Trading-session events on the NYSE calendar, exactly once across replicas.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,plan}")
    commands.add_parser("run", help="run the service until SIGTERM/SIGINT (the default)")
    dry_run = commands.add_parser(
        "plan", help="print a date's session events from the configuration, without NATS"
    )
    dry_run.add_argument(
        "--date",
        type=_iso_date,
        default=None,
        help="the session date, YYYY-MM-DD (default: today in New York)",
    )
    dry_run.add_argument("--json", action="store_true", help="print a JSON list of {name, et, utc}")
    return parser


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_as_json(items: Sequence[Occurrence]) -> str:
    """The JSON list of ``{"name", "et", "utc"}`` printed by ``plan --json``."""
    rows = [
        {"name": occ.name, "et": occ.local_time.isoformat(), "utc": _utc(occ.scheduled_for)}
        for occ in items
    ]
    return json.dumps(rows, indent=2)


def plan_as_text(day: date, items: Sequence[Occurrence]) -> str:
    """The table printed by ``plan``: one line per occurrence."""
    if not items:
        return f"{day.isoformat()}: no NYSE session (the exchange is closed)"
    session = items[0].session
    kind = "half day" if session.early_close else "regular day"
    lines = [
        f"{day.isoformat()}: NYSE session {session.local_open:%H:%M}-{session.local_close:%H:%M}"
        f" {session.local_open:%Z} ({kind}), {len(items)} events",
        f"{'occurrence':<32} {'New York':<10} UTC",
    ]
    lines.extend(
        f"{occ.occurrence_id:<32} {occ.local_time:%H:%M %Z}  {_utc(occ.scheduled_for)}"
        for occ in items
    )
    return "\n".join(lines)


def run_plan(day: date | None, *, as_json: bool, out: TextIO | None = None) -> int:
    """``ibflow-scheduler plan``: print ``day``'s plan; invalid settings exit with status 2."""
    settings = load_settings(SchedulerSettings)
    calendar = NyseCalendar()
    chosen = day or new_york_date(datetime.now(UTC))
    items = plan(settings.schedule_config(), calendar, chosen)
    print(plan_as_json(items) if as_json else plan_as_text(chosen, items), file=out or sys.stdout)
    return 0
