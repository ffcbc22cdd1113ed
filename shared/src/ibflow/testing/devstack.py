"""``ibflow-devstack``: the whole system on one machine, for ``make run``.

Run from the repository root (``make run`` does ``uv run --locked --no-sync
ibflow-devstack``). In order, it

1. checks every port it will need and names the one already taken (exit 1);
2. starts the embedded ``nats-server -js`` (``IBFLOW_DEV_NATS_PORT``, default 4222,
   store ``.ibflow/nats``) and PostgreSQL (``IBFLOW_DEV_PG_PORT``, default 5433, data
   ``.ibflow/pg``, database ``ibflow``); the data survives, a second run reuses it;
3. applies the migrations of ``ibflow.db`` and of every installed ``ibflow_*`` service
   package that has a ``migrations`` directory;
4. provisions the JetStream streams of :mod:`ibflow.bus.subjects`;
5. runs the processes of ``./Procfile`` through **honcho's Python API**
   (:class:`honcho.manager.Manager`, not a ``honcho start`` subprocess), with
   ``IBFLOW_NATS_URL`` and ``IBFLOW_DATABASE_URL`` exported and this environment's
   scripts directory first on ``PATH``; their output is one stream, each line
   prefixed with the process name.

Ctrl-C (or SIGTERM) stops the services first (honcho sends SIGTERM, they drain), then
PostgreSQL (fast shutdown), then NATS. The servers run with ``die_with_parent=False``:
they are in their own session, so the terminal's Ctrl-C reaches only this launcher,
which stops them after the services are gone. Their pids are kept in
``.ibflow/devstack.json``; if the launcher itself was killed, the next run stops
those leftovers before starting afresh.

``--infra-only`` skips step 5 and keeps NATS and PostgreSQL up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import signal
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

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
PROCESS_PORTS: Final[Mapping[str, tuple[tuple[int, str], ...]]] = {
    "gateway-sim": (
        (4002, "TWS API (--port in the Procfile)"),
        (4010, "control API (--control-port in the Procfile)"),
    ),
    "gateway-bridge": ((9101, _PROBES),),
    "order-manager": ((9102, _PROBES),),
    "position-monitor": ((9103, _PROBES),),
    "scheduler": ((9104, _PROBES),),
    "api": ((9105, _PROBES),),
}
"""Ports each Procfile process listens on (the services' default ``http_port``).

Checked before anything starts, so a busy port is reported with who wanted it.
"""

PER_PROCESS_VARS: Final = ("IBFLOW_HTTP_PORT", "IBFLOW_SERVICE_NAME")
"""Not passed on to the services: each has its own default, one shared value would clash."""

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


def _stop_leftovers(state_dir: Path) -> None:
    state_file = state_dir / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    if isinstance(pid := state.get("nats"), int):
        _stop_leftover("nats-server", pid, str(state_dir / "nats"), signal.SIGTERM)
    if isinstance(pid := state.get("postgres"), int):
        _stop_leftover("PostgreSQL", pid, str(state_dir / "pg"), signal.SIGINT)
    state_file.unlink(missing_ok=True)


def _save_state(state_dir: Path, pids: Mapping[str, int]) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps(dict(pids)) + "\n")


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


def check_ports(nats_port: int, pg_port: int, processes: Sequence[str]) -> None:
    """Raise :class:`PortInUseError` naming the first busy port and what wanted it."""
    ensure_port_free(nats_port, f"nats-server ({NATS_PORT_VAR})")
    ensure_port_free(pg_port, f"PostgreSQL ({PG_PORT_VAR})")
    for name in processes:
        for port, purpose in PROCESS_PORTS.get(name, ()):
            ensure_port_free(port, f"{name} {purpose}")


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
VALUES ('demo', 'Demo portfolio (gateway-sim)', '127.0.0.1', 4002, 1, 'DU1234567', 1000000)
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


async def seed_demo_portfolio(database_url: str) -> bool:
    """Create the demo portfolio and the simulator's instruments unless they exist;
    False when there is no portfolios table."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('portfolios')") is None:
            return False
        await conn.execute(DEMO_PORTFOLIO_SQL)
        if await conn.fetchval("SELECT to_regclass('instruments')") is not None:
            symbols, con_ids, exchanges = zip(*DEMO_INSTRUMENTS, strict=True)
            await conn.execute(DEMO_INSTRUMENTS_SQL, list(symbols), list(con_ids), list(exchanges))
        return True
    finally:
        await conn.close()


def prepare(nats_url: str, database_url: str) -> None:
    """Apply every migration, seed the demo portfolio and provision the streams."""
    packages = migration_packages()
    applied = asyncio.run(apply_migrations(database_url, *packages))
    log.info(
        "migrations of %s: %s",
        ", ".join(packages),
        f"{len(applied)} applied" if applied else "up to date",
    )
    if asyncio.run(seed_demo_portfolio(database_url)):
        log.info("demo portfolio: 'demo' on gateway-sim 127.0.0.1:4002, client id 1")
    asyncio.run(_provision_streams(nats_url))


def service_environment(nats_url: str, database_url: str) -> dict[str, str]:
    """The environment of the Procfile processes."""
    env = dict(os.environ)
    for variable in PER_PROCESS_VARS:
        if env.pop(variable, None) is not None:
            log.warning("%s is not passed on: each service uses its own default", variable)
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
    nats: NatsServer | None = None
    pg: PostgresServer | None = None

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
        prepare(self.nats_url, self.database_url)
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


def _run_services(processes: Mapping[str, str], infra: _Infrastructure, root: Path) -> int:
    for name in processes:
        for port, purpose in PROCESS_PORTS.get(name, ()):
            log.info("%s: %s on %s:%d", name, purpose, LOOPBACK, port)
    env = service_environment(infra.nats_url, infra.database_url)
    returncode = run_processes(processes, env, root)
    if returncode in {128 + signal.SIGINT, 128 + signal.SIGTERM}:
        return 0
    log.error("a process exited on its own (status %d): stopped everything", returncode)
    return returncode or 1


def devstack(root: Path, *, procfile: Path, infra_only: bool = False) -> int:
    """Start everything under ``root`` and stop it all on Ctrl-C; the exit status."""
    nats_port = _port_from_env(NATS_PORT_VAR, DEFAULT_NATS_PORT)
    pg_port = _port_from_env(PG_PORT_VAR, DEFAULT_PG_PORT)
    processes = {} if infra_only else read_procfile(procfile)
    state_dir = root / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(state_dir)
    check_ports(nats_port, pg_port, list(processes))

    signals = _Signals()
    infra = _Infrastructure(state_dir)
    status = 0
    try:
        with signals.deferred():
            infra.start(nats_port, pg_port, signals)
        if infra_only:
            _wait_for_signal()
        else:
            status = _run_services(processes, infra, root)
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
