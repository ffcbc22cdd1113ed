"""Every metric a Grafana dashboard or a Prometheus rule uses is exported by a running service.

The stack runs as it does in docker-compose: ``ibflow-migrate`` (migrations, streams, the
demo portfolio on gateway-sim), then gateway-sim and the five services as separate
processes (each with its own metrics registry, as in their containers) against the real
nats-server and PostgreSQL of the test session. Each ``/metrics`` is scraped once the
gateway-bridge has connected the demo portfolio; every PromQL expression of
``deploy/prometheus/rules/*.yml`` and ``deploy/grafana/dashboards/*.json`` is then
checked name by name. A family with no sample yet (a labelled counter before its first
increment) still prints ``# TYPE``, which counts: the service exports it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml
from prometheus_client import REGISTRY

from ibflow.bus import subjects
from ibflow.bus.metrics import subject_root
from ibflow.contracts.enums import OrderStatus
from ibflow.testing.embedded import free_port
from ibflow.testing.pytest_plugin import with_database
from ibflow_gateway_bridge.domain.error_codes import ErrorClass
from ibflow_order_manager.domain.risk import RiskRule
from ibflow_scheduler.domain.schedule import EVENT_NAMES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SERVICES = ("gateway-bridge", "order-manager", "position-monitor", "scheduler", "api")
BIN = Path(sys.executable).parent
PROMETHEUS_BUILTINS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "Inf", "NaN", "atan2"}
)
APP_MODULES = tuple(f"ibflow_{name.replace('-', '_')}.app" for name in SERVICES)
ALWAYS_LABELS = frozenset({"job", "instance"})
KNOWN_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("ibflow_orders_entered_total", "status"): frozenset(OrderStatus),
    ("ibflow_orders_refused_total", "rule"): frozenset(RiskRule),
    ("ibflow_bridge_errors_total", "class"): frozenset(ErrorClass),
    ("ibflow_scheduler_next_event_timestamp_seconds", "name"): frozenset(EVENT_NAMES),
    ("ibflow_outbox_relayed_total", "subject_root"): frozenset(
        {subject_root(subjects.trading_halted("p")), subject_root(subjects.order_rejected("p"))}
    ),
}
"""Label values a rule or a panel may name, from the code that sets them."""
SCRAPED_WHEN = {"order-manager": 'ibflow_om_trading_halted{portfolio="demo"}'}
"""What a service's page must show before it is taken: the order-manager's per-portfolio
gauges come from its first recovery pass, shortly after ``/metrics`` answers."""
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana variable query) selects."""
    text = re.sub(r"label_values\(\s*([^,)]*)(?:,[^)]*)?\)", r"\1", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = re.findall(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {name for name in names if name not in PROMQL_WORDS}


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """``(metric, {label: (operator, value)})`` of every ``metric{...}`` selector."""
    found = []
    for name, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        pairs = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers)
        found.append((name, {label: (op, value) for label, op, value in pairs}))
    return found


def code_label_names() -> dict[str, frozenset[str]]:
    """``sample name -> label names`` of every metric the services define (their modules
    imported here, in one registry), for families that have no sample to show labels."""
    for module in APP_MODULES:
        importlib.import_module(module)
    found = {}
    for collector, names in REGISTRY._collector_to_names.items():
        labels = frozenset(getattr(collector, "_labelnames", ()))
        for name in names:
            found[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return found


def job_constraints(expr: str) -> dict[str, set[str]]:
    """``metric -> jobs`` for selectors like ``up{job="api"}`` or ``{job=~"a|b"}``."""
    found: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        match = re.search(r'\bjob\s*(=~?)\s*"([^"]*)"', matchers)
        if match:
            jobs = set(match.group(2).split("|")) if match.group(1) == "=~" else {match.group(2)}
            found.setdefault(name, set()).update(jobs)
    return found


def exported_names(exposition: str) -> set[str]:
    """Every sample name a ``/metrics`` page can carry, from its ``# TYPE`` lines and samples."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            # Text format 0.0.4 names a counter family with its _total (no sample needed).
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names.add(family)
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def rule_expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found.append((f"{path.name}: {name}", rule["expr"]))
    return found


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            if variable.get("type") == "query" and query:
                found.append((f"{path.name}: ${variable['name']}", query))
    return found


def problems(
    expressions: list[tuple[str, str]],
    scraped: dict[str, str],
    clock_only: frozenset[str] = frozenset(),
) -> list[str]:
    """What in ``expressions`` no running service exports (empty: all is exported).

    An expression without any metric is reported too, unless its place is in
    ``clock_only`` (an alert on the time of day alone); so is a selector on a label the
    metric does not have, or on a value its code never sets (``KNOWN_VALUES``).
    """
    labels = code_label_names()
    exports = {job: exported_names(text) for job, text in scraped.items()}
    everything = set().union(*exports.values())
    known = everything | recorded_names() | PROMETHEUS_BUILTINS
    found = []
    for where, expr in expressions:
        names = metric_names(expr)
        if not names and where not in clock_only:
            found.append(f"{where}: no metric in {expr!r}")
        found.extend(f"{where}: {name} is exported by no service" for name in names - known)
        for name, matchers in selectors(expr):
            if name in PROMETHEUS_BUILTINS or name not in labels:
                continue
            for label, (op, value) in matchers.items():
                if label not in labels[name] | ALWAYS_LABELS:
                    found.append(f"{where}: {name} has no label {label}")
                allowed = KNOWN_VALUES.get((name, label))
                if allowed is not None and op in {"=", "=~"}:
                    values = value.split("|") if op == "=~" else [value]
                    found.extend(
                        f"{where}: {name}{{{label}={v!r}}} is never set"
                        for v in values
                        if v not in allowed
                    )
        for name, jobs in job_constraints(expr).items():
            if name in PROMETHEUS_BUILTINS:
                continue
            for job in jobs:
                if name not in exports.get(job, set()):
                    found.append(f"{where}: {name} is not exported by {job}")
    return found


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return None


def wait_for(process: Process, condition: str | None = None, within: float = 60.0) -> str:
    """The ``/metrics`` page of ``process`` once it answers (and contains ``condition``)."""
    deadline = time.monotonic() + within
    while True:
        if process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited {process.popen.returncode}:\n{process.output()}")
        text = scrape(process.port)
        if text is not None and (condition is None or condition in text):
            return text
        if time.monotonic() > deadline:
            pytest.fail(
                f"{process.name}: no {condition or '/metrics'} in {within}s:\n{process.output()}"
            )
        time.sleep(0.2)


def stop(processes: list[Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


async def _create_database(server_url: str, name: str, *, drop: bool = False) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        if drop:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def scraped(
    nats_server_url: str, postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """``job -> /metrics text`` of every service of the stack, scraped while it runs."""
    logs = tmp_path_factory.mktemp("stack")
    database = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_create_database(postgres_server_url, database))
    sim_port, control_port = free_port(), free_port()
    env = {
        **os.environ,
        "IBFLOW_NATS_URL": nats_server_url,
        "IBFLOW_DATABASE_URL": with_database(postgres_server_url, database),
        "IBFLOW_LOG_FORMAT": "text",
        "IBFLOW_LOG_LEVEL": "WARNING",
        "IBFLOW_HTTP_HOST": "127.0.0.1",
        "IBFLOW_GATEWAY_TYPE": "simulator",
    }
    processes: list[Process] = []
    try:
        migrate = subprocess.run(
            [
                sys.executable,
                "-m",
                "ibflow.db.bootstrap",
                "--demo-portfolio",
                f"127.0.0.1:{sim_port}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stderr

        def start(name: str, args: list[str], port: int, extra: dict[str, str]) -> Process:
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    args, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT
                )
            process = Process(name, popen, log, port)
            processes.append(process)
            return process

        start(
            "gateway-sim",
            [
                str(BIN / "ibflow-gateway-sim"),
                "--host",
                "127.0.0.1",
                "--port",
                str(sim_port),
                "--control-port",
                str(control_port),
                "--log-level",
                "WARNING",
            ],
            control_port,
            {},
        )
        started = {}
        for name in SERVICES:
            port = free_port()
            variable = "IBFLOW_API_PORT" if name == "api" else "IBFLOW_HTTP_PORT"
            started[name] = start(name, [str(BIN / f"ibflow-{name}")], port, {variable: str(port)})
        # The bridge has connected the demo portfolio (state 3, ready) at the simulator.
        pages = {
            "gateway-bridge": wait_for(
                started["gateway-bridge"],
                'ibflow_bridge_connection_state{portfolio="demo"} 3.0',
            )
        }
        for name in SERVICES:
            pages[name] = wait_for(started[name], SCRAPED_WHEN.get(name))
        yield pages
    finally:
        stop(processes)
        asyncio.run(_create_database(postgres_server_url, database, drop=True))


def test_every_metric_in_a_dashboard_is_exported_by_a_running_service(
    scraped: dict[str, str],
) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 30
    assert problems(expressions, scraped) == []


def test_every_metric_in_an_alert_or_recording_rule_is_exported_by_a_running_service(
    scraped: dict[str, str],
) -> None:
    expressions = rule_expressions()
    assert len(expressions) >= 15
    reminder = frozenset({"ibflow.yml: IbflowWeeklyGatewayLogin"})
    assert problems(expressions, scraped, clock_only=reminder) == []


def test_the_order_manager_exports_each_portfolio_s_state_without_any_order(
    scraped: dict[str, str],
) -> None:
    """The alerts on a halt and on the day's loss need their gauges from startup, not
    only after the first order or fill of a portfolio."""
    page = scraped["order-manager"]
    for sample in (
        'ibflow_om_trading_halted{portfolio="demo"} 0.0',
        'ibflow_om_realized_pnl_today{portfolio="demo"} 0.0',
        'ibflow_portfolio_reserved_cash{portfolio="demo"} 0.0',
    ):
        assert sample in page


def test_a_metric_no_service_exports_is_reported(scraped: dict[str, str]) -> None:
    found = problems(
        [
            ("made up", "rate(ibflow_orders_teleported_total[5m]) > 0"),
            ("wrong job", 'ibflow_orders_unknown{job="scheduler"} > 0'),
            ("no metric", "vector(1)"),
            ("no such label", 'ibflow_orders_unknown{portfolio="demo"}'),
            ("no such value", 'ibflow_orders_entered_total{status=~"FILLED|PartiallyFilled"}'),
        ],
        scraped,
    )
    assert found == [
        "made up: ibflow_orders_teleported_total is exported by no service",
        "wrong job: ibflow_orders_unknown is not exported by scheduler",
        "no metric: no metric in 'vector(1)'",
        "no such label: ibflow_orders_unknown has no label portfolio",
        "no such value: ibflow_orders_entered_total{status='PartiallyFilled'} is never set",
    ]


def test_metric_names_are_read_from_promql_without_functions_labels_or_durations() -> None:
    expr = (
        'sum by (portfolio, le) (rate(a_seconds_bucket{job="x",status=~"A|B"}[5m])) * 60'
        " / on() group_left(name) b:recorded > bool 1e3 and day_of_week() == 0"
        " or label_values(c_state, portfolio) offset 5m + $__rate_interval"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b:recorded", "c_state"}
    assert job_constraints(expr) == {"a_seconds_bucket": {"x"}}
    page = (
        "# HELP c_total Things.\n# TYPE c_total counter\n"
        '# TYPE h histogram\nh_bucket{le="1"} 0.0\n# TYPE g gauge\n'
    )
    assert {"c_total", "h_bucket", "h_count", "g"} <= exported_names(page)
    assert "c" not in exported_names(page)
