"""``ibflow-devstack``: the whole system on one machine, for ``make run``.

Run from the repository root (``make run`` does ``uv run --locked --no-sync
ibflow-devstack``). In order, it

1. refuses to start while another launcher runs on the same data directory, and stops
   what a killed one left behind (NATS, PostgreSQL, and the Procfile processes, found
   by ``IBFLOW_DEVSTACK_DATA`` in their environment);
2. checks every port it will need and names the one already taken with the variable
   that moves it (exit 1): ``IBFLOW_DEV_NATS_PORT`` (4222), ``IBFLOW_DEV_PG_PORT``
   (5433) and the Procfile processes' ports of :data:`PROCESS_PORTS`
   (``IBFLOW_DEV_SIM_PORT`` 4002, ``IBFLOW_API_PORT`` 8000, ...), which it exports;
3. starts the embedded ``nats-server -js`` and PostgreSQL (database ``ibflow``) with
   their data under ``IBFLOW_DEV_DATA_DIR`` (default ``.ibflow``); a second run reuses it;
4. applies the migrations of ``ibflow.db`` and of every installed ``ibflow_*`` service
   package that has a ``migrations`` directory, seeds the ``demo`` portfolio on the
   simulator, its instruments and (the first time) a few recommendations, provisions
   the JetStream streams, and makes sure there is an API key in ``<data>/api-key``
   (mode 0600; a new one only when the file is missing or its key no longer valid);
5. runs the processes of ``./Procfile`` through **honcho's Python API**
   (:class:`honcho.manager.Manager`, not a ``honcho start`` subprocess), with
   ``IBFLOW_NATS_URL`` and ``IBFLOW_DATABASE_URL`` exported and this environment's
   scripts directory first on ``PATH``; their output is one stream, each line
   prefixed with the process name. Once the api answers ``/readyz`` it prints a banner
   with the API, docs and metrics URLs and the key (its secret only when just created).

Ctrl-C (or SIGTERM) stops the services first (honcho sends SIGTERM, they drain), then
PostgreSQL (fast shutdown), then NATS. The servers run with ``die_with_parent=False``:
they are in their own session, so the terminal's Ctrl-C reaches only this launcher,
which stops them after the services are gone. Their pids (and the launcher's) are kept
in ``<data>/devstack.json``.

``--infra-only`` skips step 5 and keeps NATS and PostgreSQL up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Final
from zoneinfo import ZoneInfo

import asyncpg

from ibflow.bus.connection import connect
from ibflow.bus.provision import provision
from ibflow.bus.subjects import DEAD_LETTER_STREAM, EVENTS_STREAM
from ibflow.db.migrations import apply_migrations
from ibflow.testing.embedded import (
    LOOPBACK,
    EmbeddedError,
    NatsServer,
    PortInUseError,
    PostgresServer,
    ensure_port_free,
)

log = logging.getLogger("ibflow.devstack")

STATE_DIR: Final = ".ibflow"
STATE_FILE: Final = "devstack.json"
DATABASE: Final = "ibflow"
NATS_PORT_VAR: Final = "IBFLOW_DEV_NATS_PORT"
PG_PORT_VAR: Final = "IBFLOW_DEV_PG_PORT"
DEFAULT_NATS_PORT: Final = 4222
DEFAULT_PG_PORT: Final = 5433
STREAMS: Final = (EVENTS_STREAM, DEAD_LETTER_STREAM)

_PROBES: Final = "/metrics /healthz /readyz"


@dataclass(frozen=True, slots=True)
class ProcessPort:
    """A port a Procfile process listens on, and the variable that sets it.

    The launcher exports ``variable`` (its value from the environment, else
    ``default``) to every process; the ``Procfile`` passes it on to the process.
    """

    variable: str
    default: int
    purpose: str


PROCESS_PORTS: Final[Mapping[str, tuple[ProcessPort, ...]]] = {
    "gateway-sim": (
        ProcessPort("IBFLOW_DEV_SIM_PORT", 4002, "TWS API"),
        ProcessPort("IBFLOW_DEV_SIM_CONTROL_PORT", 4010, "control API"),
    ),
    "gateway-bridge": (ProcessPort("IBFLOW_DEV_BRIDGE_HTTP_PORT", 9101, _PROBES),),
    "order-manager": (ProcessPort("IBFLOW_DEV_ORDER_MANAGER_HTTP_PORT", 9102, _PROBES),),
    "position-monitor": (ProcessPort("IBFLOW_DEV_POSITION_MONITOR_HTTP_PORT", 9103, _PROBES),),
    "scheduler": (ProcessPort("IBFLOW_DEV_SCHEDULER_HTTP_PORT", 9104, _PROBES),),
    "api": (ProcessPort("IBFLOW_API_PORT", 8000, "REST API, /docs, /ws, " + _PROBES),),
}
"""Ports each Procfile process listens on (the services' default ``http_port``; the
api's is ``IBFLOW_API_PORT``, which it reads itself).

Checked before anything starts, so a busy port is reported with who wanted it and the
variable that moves it.
"""

SIM_PORT_VAR: Final = "IBFLOW_DEV_SIM_PORT"
API_PORT_VAR: Final = "IBFLOW_API_PORT"
DATA_DIR_VAR: Final = "IBFLOW_DEV_DATA_DIR"
API_KEY_FILE: Final = "api-key"
DEMO_PORTFOLIO: Final = "demo"

MARKER_VAR: Final = "IBFLOW_DEVSTACK_DATA"
"""Set to the data directory in every Procfile process's environment, so that a later
run can find (and stop) the processes a killed launcher left behind."""

PER_PROCESS_VARS: Final = ("IBFLOW_HTTP_PORT", "IBFLOW_SERVICE_NAME")
"""Not passed on to the services: each has its own default, one shared value would clash."""

READY_WAIT_SECONDS: Final = 120.0
"""How long the launcher waits for the api's ``/readyz`` before printing the banner anyway."""

KILL_MARGIN_SECONDS: Final = 5.0
"""Extra time, beyond the services' shutdown grace, before honcho sends SIGKILL."""


class DevstackError(RuntimeError):
    """The launcher cannot go on; the message says why."""


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Ctrl-C/SIGTERM arrived while the infrastructure was starting."""


@dataclass
class _Signals:
    """Defers SIGINT/SIGTERM while servers start, so none is left half-started."""

    requested: bool = False

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested:
            log.info("%s received: stopping once the current step is done", _signame(signum))
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise _Stop

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handler) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _signame(signum: int) -> str:
    return signal.Signals(signum).name


def _already_stopping(signum: int, _frame: FrameType | None) -> None:
    log.info("%s received: already stopping, please wait", _signame(signum))


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise DevstackError(f"{variable}: not a TCP port number (got {raw!r})")
    return port


def _grace_seconds() -> float:
    try:
        return float(os.environ.get("IBFLOW_SHUTDOWN_GRACE_SECONDS", "10"))
    except ValueError:
        return 10.0


# --------------------------------------------------------------------------- leftovers


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _stop_leftover(what: str, pid: int, marker: str, sig: signal.Signals) -> None:
    """Stop ``pid`` if it still runs our server (its command line mentions ``marker``)."""
    if not _alive(pid) or marker not in _cmdline(pid):
        return
    log.warning("stopping %s left over from a previous run (pid %d)", what, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _marked_processes(state_dir: Path) -> list[int]:
    """Processes started for ``state_dir`` (their environment has :data:`MARKER_VAR`)."""
    marker = f"{MARKER_VAR}={state_dir.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _stop_orphaned_processes(state_dir: Path) -> None:
    """SIGTERM, then SIGKILL, the Procfile processes a killed launcher left running
    (honcho starts each in its own session, so they outlive a SIGKILLed launcher)."""
    orphans = _marked_processes(state_dir)
    if not orphans:
        return
    log.warning("stopping %d process(es) left over from a previous run", len(orphans))
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _grace_seconds() + KILL_MARGIN_SECONDS
    while any(_alive(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in orphans:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stop_leftovers(state_dir: Path) -> None:
    """Stop the servers a killed launcher left behind; refuse while that launcher runs."""
    state_file = state_dir / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    launcher = state.get("launcher")
    if (
        isinstance(launcher, int)
        and launcher != os.getpid()
        and _alive(launcher)
        and "devstack" in _cmdline(launcher)
    ):
        raise DevstackError(
            f"ibflow-devstack already runs on {state_dir} (pid {launcher}): use it, or stop "
            "it with Ctrl-C in its terminal first"
        )
    _stop_orphaned_processes(state_dir)
    if isinstance(pid := state.get("nats"), int):
        _stop_leftover("nats-server", pid, str(state_dir / "nats"), signal.SIGTERM)
    if isinstance(pid := state.get("postgres"), int):
        _stop_leftover("PostgreSQL", pid, str(state_dir / "pg"), signal.SIGINT)
    state_file.unlink(missing_ok=True)


def _save_state(state_dir: Path, pids: Mapping[str, int]) -> None:
    state = {"launcher": os.getpid(), **pids}
    (state_dir / STATE_FILE).write_text(json.dumps(state) + "\n")


# --------------------------------------------------------------------------- steps


def read_procfile(path: Path) -> dict[str, str]:
    """The processes of a Procfile, ``name -> command``, in file order."""
    from honcho.environ import parse_procfile  # noqa: PLC0415 - honcho is a dev dependency

    try:
        content = path.read_text()
    except FileNotFoundError:
        raise DevstackError(
            f"no Procfile at {path}: run ibflow-devstack from the repository root (make run)"
        ) from None
    processes: dict[str, str] = dict(parse_procfile(content).processes)
    if not processes:
        raise DevstackError(f"{path} lists no process")
    return processes


def process_ports(processes: Sequence[str]) -> dict[str, int]:
    """``variable -> port`` of every port the ``processes`` listen on (env, else default).

    Raises :class:`DevstackError` naming a variable that is not a port number, or two
    variables given the same port.
    """
    ports: dict[str, int] = {}
    for name in processes:
        for entry in PROCESS_PORTS.get(name, ()):
            ports[entry.variable] = _port_from_env(entry.variable, entry.default)
    seen: dict[int, str] = {}
    for variable, port in ports.items():
        if port in seen:
            raise DevstackError(f"{variable} and {seen[port]} are both port {port}")
        seen[port] = variable
    return ports


def check_ports(nats_port: int, pg_port: int, processes: Sequence[str]) -> None:
    """Raise :class:`PortInUseError` naming the first busy port, what wanted it and the
    variable that moves it."""
    ensure_port_free(nats_port, f"nats-server (set {NATS_PORT_VAR} to use another port)")
    ensure_port_free(pg_port, f"PostgreSQL (set {PG_PORT_VAR} to use another port)")
    ports = process_ports(processes)
    for name in processes:
        for entry in PROCESS_PORTS.get(name, ()):
            ensure_port_free(
                ports[entry.variable],
                f"{name} {entry.purpose} (set {entry.variable} to use another port)",
            )


def migration_packages() -> list[str]:
    """``ibflow.db`` first, then each installed ``ibflow_*`` package with a ``migrations`` dir."""
    packages = ["ibflow.db"]
    names = {
        re.sub(r"[-_.]+", "_", dist.metadata["Name"] or "").lower()
        for dist in importlib.metadata.distributions()
    }
    for module in sorted(name for name in names if name.startswith("ibflow_")):
        spec = importlib.util.find_spec(module)
        locations = spec.submodule_search_locations if spec is not None else None
        if locations and any((Path(loc) / "migrations").is_dir() for loc in locations):
            packages.append(module)
    return packages


async def _provision_streams(nats_url: str) -> None:
    nc = await connect(nats_url, name="ibflow-devstack", max_reconnect_attempts=0)
    try:
        for result in await provision(nc.jetstream(), STREAMS):
            log.info("stream %s: %s", result.name, result.action)
    finally:
        await nc.close()


DEMO_PORTFOLIO_SQL: Final = """
INSERT INTO portfolios (id, name, broker_host, broker_port, client_id, account, cash)
VALUES ('demo', 'Demo portfolio (gateway-sim)', '127.0.0.1', $1, 1, 'DU1234567', 1000000)
ON CONFLICT (id) DO NOTHING
"""
"""The demo portfolio ``make run`` trades: paper, on the simulator's port, client id 1."""


DEMO_INSTRUMENTS: Final = (
    ("AAPL", 265598, "NASDAQ"),
    ("MSFT", 272093, "NASDAQ"),
    ("SPY", 756733, "ARCA"),
    ("QQQ", 320227571, "NASDAQ"),
    ("NVDA", 4815747, "NASDAQ"),
    ("AMZN", 3691937, "NASDAQ"),
    ("TSLA", 76792991, "NASDAQ"),
    ("META", 107113386, "NASDAQ"),
    ("GOOGL", 208813719, "NASDAQ"),
    ("AMD", 4391, "NASDAQ"),
    ("JPM", 1520593, "NYSE"),
    ("IWM", 9579970, "ARCA"),
)
"""The simulator's default symbols (symbol, IB con id, primary exchange), all USD stocks."""

DEMO_INSTRUMENTS_SQL: Final = """
INSERT INTO instruments (symbol, con_id, currency, primary_exchange)
SELECT symbol, con_id, 'USD', exchange FROM unnest($1::text[], $2::bigint[], $3::text[])
    AS t(symbol, con_id, exchange)
ON CONFLICT (symbol) DO NOTHING
"""


DEMO_RECOMMENDATIONS: Final = (
    # symbol, quantity, stop loss, take profit (the simulator starts AAPL at 190,
    # MSFT at 410, SPY at 510)
    ("AAPL", "20", "180.00", "200.00"),
    ("MSFT", "10", "395.00", "425.00"),
    ("SPY", "5", "495.00", "525.00"),
)
"""Market buys for the demo portfolio's next morning entry, with stops and targets."""

DEMO_RECOMMENDATIONS_SQL: Final = """
INSERT INTO recommendations
    (portfolio_id, session_date, symbol, side, quantity, entry_type, stop_loss, take_profit,
     source)
SELECT 'demo', $1, symbol, 'BUY', quantity, 'MKT', stop_loss, take_profit, 'operator'
FROM unnest($2::text[], $3::numeric[], $4::numeric[], $5::numeric[])
    AS t(symbol, quantity, stop_loss, take_profit)
WHERE NOT EXISTS (SELECT 1 FROM recommendations WHERE portfolio_id = 'demo')
ON CONFLICT DO NOTHING
"""

NEW_YORK: Final = ZoneInfo("America/New_York")
MORNING_ENTRY: Final = dt.time(9, 15)


def next_entry_session(now: dt.datetime | None = None) -> dt.date:
    """The date of the next morning entry (09:15 New York) on the NYSE calendar.

    Today when it is a session and 09:15 has not passed in New York, else the next
    session. Without ``exchange_calendars`` (the scheduler's dependency), weekdays.
    """
    local = (now or dt.datetime.now(dt.UTC)).astimezone(NEW_YORK)
    day = local.date() if local.time() < MORNING_ENTRY else local.date() + dt.timedelta(days=1)
    try:
        import exchange_calendars  # noqa: PLC0415 - optional, slow to import

        with warnings.catch_warnings():  # pandas deprecations inside exchange_calendars
            warnings.simplefilter("ignore")
            calendar = exchange_calendars.get_calendar("XNYS")
            session = calendar.date_to_session(day.isoformat(), direction="next")
        return dt.date(session.year, session.month, session.day)
    except Exception:  # not installed, or outside the calendar's range
        while day.weekday() >= 5:
            day += dt.timedelta(days=1)
        return day


async def seed_demo_portfolio(database_url: str, *, sim_port: int = 4002) -> bool:
    """Create the demo portfolio (on the simulator at ``sim_port``), the simulator's
    instruments and, the first time, a few recommendations for the next morning entry,
    unless they exist; False when there is no portfolios table."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('portfolios')") is None:
            return False
        await conn.execute(DEMO_PORTFOLIO_SQL, sim_port)
        if await conn.fetchval("SELECT to_regclass('instruments')") is not None:
            symbols, con_ids, exchanges = zip(*DEMO_INSTRUMENTS, strict=True)
            await conn.execute(DEMO_INSTRUMENTS_SQL, list(symbols), list(con_ids), list(exchanges))
        if await conn.fetchval("SELECT to_regclass('recommendations')") is not None:
            symbols, quantities, stops, targets = zip(*DEMO_RECOMMENDATIONS, strict=True)
            await conn.execute(
                DEMO_RECOMMENDATIONS_SQL,
                next_entry_session(),
                list(symbols),
                [Decimal(q) for q in quantities],
                [Decimal(p) for p in stops],
                [Decimal(p) for p in targets],
            )
        return True
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class ApiKeyOutcome:
    """What :func:`ensure_api_key` did: ``secret`` is set only for a key created now."""

    path: Path
    key_id: str
    secret: str | None


async def _api_key(database_url: str, presented: str | None) -> tuple[str, str | None] | None:
    """``(key id, secret if created now)``: the presented key if the database accepts
    it, else a new ``admin`` key; ``None`` without the api package or its table."""
    try:
        from ibflow_api.keys import Scope, create_key, verify_key  # noqa: PLC0415
    except ImportError:
        return None
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('api_keys')") is None:
            return None
        if presented:
            key = await verify_key(conn, presented)
            if key is not None:
                return key.id, None
        created = await create_key(conn, "make run", Scope.ADMIN, created_by="ibflow-devstack")
        return created.key.id, created.secret
    finally:
        await conn.close()


def ensure_api_key(database_url: str, path: Path) -> ApiKeyOutcome | None:
    """The dev stack's API key: kept when ``path`` holds a key the database accepts,
    else a new ``admin`` key written to ``path`` (mode 0600). ``None`` without the api
    package. The secret is returned only when created, to be printed once."""
    try:
        presented: str | None = path.read_text().strip()
    except OSError:
        presented = None
    result = asyncio.run(_api_key(database_url, presented))
    if result is None:
        return None
    key_id, secret = result
    if secret is not None:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
    return ApiKeyOutcome(path, key_id, secret)


def prepare(
    nats_url: str, database_url: str, *, sim_port: int = 4002, key_file: Path | None = None
) -> ApiKeyOutcome | None:
    """Apply every migration, seed the demo portfolio, provision the streams and (with
    ``key_file``) make sure there is an API key; what :func:`ensure_api_key` did."""
    packages = migration_packages()
    applied = asyncio.run(apply_migrations(database_url, *packages))
    log.info(
        "migrations of %s: %s",
        ", ".join(packages),
        f"{len(applied)} applied" if applied else "up to date",
    )
    if asyncio.run(seed_demo_portfolio(database_url, sim_port=sim_port)):
        log.info("demo portfolio: 'demo' on gateway-sim %s:%d, client id 1", LOOPBACK, sim_port)
    asyncio.run(_provision_streams(nats_url))
    if key_file is None:
        return None
    outcome = ensure_api_key(database_url, key_file)
    if outcome is not None:
        log.info(
            "API key %s: %s",
            outcome.key_id,
            "created" if outcome.secret is not None else f"kept (in {outcome.path})",
        )
    return outcome


def service_environment(
    nats_url: str,
    database_url: str,
    ports: Mapping[str, int] | None = None,
    state_dir: Path | None = None,
) -> dict[str, str]:
    """The environment of the Procfile processes (``ports``: ``variable -> port``)."""
    env = dict(os.environ)
    if state_dir is not None:
        env[MARKER_VAR] = str(state_dir.resolve())
    for variable in PER_PROCESS_VARS:
        if env.pop(variable, None) is not None:
            log.warning("%s is not passed on: each service uses its own default", variable)
    for variable, port in (ports or {}).items():
        env[variable] = str(port)
    env["IBFLOW_NATS_URL"] = nats_url
    env["IBFLOW_DATABASE_URL"] = database_url
    env.setdefault("IBFLOW_LOG_FORMAT", "text")
    env["PYTHONUNBUFFERED"] = "1"
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    return env


def run_processes(processes: Mapping[str, str], env: Mapping[str, str], cwd: Path) -> int:
    """Run ``processes`` with honcho until one exits or SIGINT/SIGTERM; honcho's status."""
    import honcho.manager  # noqa: PLC0415 - honcho is a dev dependency

    honcho.manager.KILL_WAIT = _grace_seconds() + KILL_MARGIN_SECONDS
    manager = honcho.manager.Manager()
    for name, command in processes.items():
        manager.add_process(name, command, env=dict(env), cwd=str(cwd))
    manager.loop()
    status = manager.returncode
    return int(status) if status is not None else 1


def _wait_for_signal() -> None:
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        log.info("infrastructure up; Ctrl-C stops it")
        while not received:
            signal.pause()
        log.info("%s received", _signame(received[0]))
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- main


@dataclass
class _Infrastructure:
    """The embedded servers of one run, stopped in reverse order."""

    state_dir: Path
    sim_port: int = 4002
    with_api_key: bool = False
    nats: NatsServer | None = None
    pg: PostgresServer | None = None
    api_key: ApiKeyOutcome | None = None

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    @property
    def database_url(self) -> str:
        assert self.pg is not None
        return self.pg.url(DATABASE)

    def start(self, nats_port: int, pg_port: int, signals: _Signals) -> None:
        """Start NATS, then PostgreSQL, then migrate and provision; stop early on a signal."""
        pids: dict[str, int] = {}
        self.nats = NatsServer.start(self.state_dir / "nats", port=nats_port, die_with_parent=False)
        pids["nats"] = self.nats.process.pid
        _save_state(self.state_dir, pids)
        log.info("nats-server %s (JetStream store %s)", self.nats.url, self.nats.store_dir)
        signals.check()
        self.pg = PostgresServer.start(
            self.state_dir / "pg", port=pg_port, database=DATABASE, die_with_parent=False
        )
        pids["postgres"] = self.pg.process.pid
        _save_state(self.state_dir, pids)
        log.info("PostgreSQL %s (data %s)", self.database_url, self.pg.data_dir)
        signals.check()
        key_file = self.state_dir / API_KEY_FILE if self.with_api_key else None
        self.api_key = prepare(
            self.nats_url, self.database_url, sim_port=self.sim_port, key_file=key_file
        )
        signals.check()

    def stop(self) -> None:
        """PostgreSQL (fast shutdown), then NATS; forget the pids."""
        if self.pg is not None:
            log.info("stopping PostgreSQL")
            self.pg.stop()
        if self.nats is not None:
            log.info("stopping nats-server")
            self.nats.stop()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)


def banner(
    ports: Mapping[str, int], nats_url: str, api_key: ApiKeyOutcome | None, *, ready: bool
) -> str:
    """What to tell the person who typed ``make run``: URLs, the key, the next commands.

    The key's secret appears only when it was created by this run (shown once)."""
    api = f"http://{LOOPBACK}:{ports[API_PORT_VAR]}" if API_PORT_VAR in ports else None
    metrics = [f"http://{LOOPBACK}:{port}/metrics" for var, port in ports.items() if "HTTP" in var]
    lines = ["", "=" * 72, "ibflow is up" if ready else "ibflow is starting (not ready yet)"]
    if api is not None:
        lines += [f"  API      {api}", f"  docs     {api}/docs", f"  metrics  {api}/metrics"]
    lines += [f"           {url}" for url in metrics]
    lines.append(f"  NATS     {nats_url}   (the ibflow CLI: IBFLOW_NATS_URL={nats_url})")
    if api_key is not None:
        if api_key.secret is not None:
            lines.append(f"  API key  {api_key.secret}")
            lines.append(
                f"           (admin scope, shown once, saved in {api_key.path}, mode 0600)"
            )
        else:
            lines.append(f"  API key  id {api_key.key_id}, in {api_key.path}")
    if api is not None:
        key_file = api_key.path if api_key is not None else "<key file>"
        lines.append(f'  try      curl -H "X-API-Key: $(cat {key_file})" {api}/api/v1/portfolios')
    lines += [
        "           uv run ibflow status",
        "           uv run ibflow orders place demo BUY 10 AAPL",
        "  Ctrl-C stops everything; the data stays in the data directory for the next run.",
        "=" * 72,
        "",
    ]
    return "\n".join(lines)


def _announce_when_ready(
    ports: Mapping[str, int], nats_url: str, api_key: ApiKeyOutcome | None, within: float
) -> threading.Thread:
    """Print :func:`banner` once the api answers ``/readyz`` (or after ``within`` s)."""

    def ready() -> bool:
        port = ports.get(API_PORT_VAR)
        if port is None:
            return True
        try:
            url = f"http://{LOOPBACK}:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def watch() -> None:
        deadline = time.monotonic() + within
        while not (up := ready()) and time.monotonic() < deadline:
            time.sleep(0.25)
        sys.stdout.write(banner(ports, nats_url, api_key, ready=up) + "\n")
        sys.stdout.flush()

    thread = threading.Thread(target=watch, name="devstack-banner", daemon=True)
    thread.start()
    return thread


def _run_services(
    processes: Mapping[str, str], ports: Mapping[str, int], infra: _Infrastructure, root: Path
) -> int:
    for name in processes:
        for entry in PROCESS_PORTS.get(name, ()):
            port = ports[entry.variable]
            log.info("%s: %s on %s:%d", name, entry.purpose, LOOPBACK, port)
    env = service_environment(infra.nats_url, infra.database_url, ports, infra.state_dir)
    _announce_when_ready(ports, infra.nats_url, infra.api_key, within=READY_WAIT_SECONDS)
    returncode = run_processes(processes, env, root)
    if returncode in {128 + signal.SIGINT, 128 + signal.SIGTERM}:
        return 0
    log.error("a process exited on its own (status %d): stopped everything", returncode)
    return returncode or 1


def data_dir(root: Path) -> Path:
    """Where the run keeps its data: ``IBFLOW_DEV_DATA_DIR``, else ``<root>/.ibflow``."""
    raw = os.environ.get(DATA_DIR_VAR, "").strip()
    return (root / raw) if raw else root / STATE_DIR


def devstack(root: Path, *, procfile: Path, infra_only: bool = False) -> int:
    """Start everything under ``root`` and stop it all on Ctrl-C; the exit status."""
    nats_port = _port_from_env(NATS_PORT_VAR, DEFAULT_NATS_PORT)
    pg_port = _port_from_env(PG_PORT_VAR, DEFAULT_PG_PORT)
    processes = {} if infra_only else read_procfile(procfile)
    ports = process_ports(list(processes))
    state_dir = data_dir(root)
    state_dir.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(state_dir)
    check_ports(nats_port, pg_port, list(processes))

    signals = _Signals()
    infra = _Infrastructure(
        state_dir,
        sim_port=ports.get(SIM_PORT_VAR, _port_from_env(SIM_PORT_VAR, 4002)),
        with_api_key=API_PORT_VAR in ports,
    )
    status = 0
    try:
        with signals.deferred():
            infra.start(nats_port, pg_port, signals)
        if infra_only:
            _wait_for_signal()
        else:
            status = _run_services(processes, ports, infra, root)
    except _Stop:
        pass
    finally:
        for sig in _SIGNALS:
            signal.signal(sig, _already_stopping)
        infra.stop()
        log.info("stopped")
    return status


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``ibflow-devstack``."""
    parser = argparse.ArgumentParser(
        prog="ibflow-devstack",
        description="NATS + PostgreSQL (embedded, data in ./.ibflow), migrations, streams, "
        "then every process of ./Procfile. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--procfile", type=Path, default=Path("Procfile"), help="default ./Procfile"
    )
    parser.add_argument(
        "--infra-only", action="store_true", help="only NATS and PostgreSQL (no Procfile)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s devstack | %(message)s",
        datefmt="%H:%M:%S",
    )
    root = Path.cwd()
    try:
        status = devstack(root, procfile=root / args.procfile, infra_only=args.infra_only)
    except (PortInUseError, DevstackError, EmbeddedError) as exc:
        print(f"ibflow-devstack: error: {exc}", file=sys.stderr)
        status = 1
    except Exception as exc:
        log.exception("failed")
        print(f"ibflow-devstack: error: {exc}", file=sys.stderr)
        status = 1
    raise SystemExit(status)


if __name__ == "__main__":
    main()
