"""The `make run` stack for the CLI's integration tests: ``ibflow-devstack`` with the
repository's Procfile in a temporary directory, every port free and chosen here, killed
(the launcher, its descendants and its servers) whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ibflow.testing.devstack import PROCESS_PORTS
from ibflow.testing.embedded import free_port

REPO_ROOT = Path(__file__).resolve().parents[4]
STARTUP = 90.0


def http_request(
    url: str, key: str | None = None, body: dict[str, object] | None = None
) -> tuple[int, bytes]:
    """GET (or POST ``body`` as JSON) ``url``; ``(status, body)``, status 0 if unreachable."""
    headers = {"X-API-Key": key} if key else {}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Stack:
    """One ``ibflow-devstack`` run in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {entry.variable: free_port() for e in PROCESS_PORTS.values() for entry in e}
        self.nats_port, self.pg_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBFLOW_")}
        env.update({k: str(v) for k, v in self.ports.items()})
        env.update(
            IBFLOW_DEV_NATS_PORT=str(self.nats_port),
            IBFLOW_DEV_PG_PORT=str(self.pg_port),
            IBFLOW_SHUTDOWN_GRACE_SECONDS="5",
        )
        self.env = env
        self.log = root / "devstack.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.servers: dict[str, int] = {}
        self.seen: set[int] = set()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['IBFLOW_API_PORT']}"

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ibflow.testing.devstack",
                    "--procfile",
                    str(REPO_ROOT / "Procfile"),
                ],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], bool], within: float = STARTUP) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while not check():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"devstack exited ({self.proc.returncode}) before {what}:\n"
                    f"{self.output()[-6000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {within:g}s:\n{self.output()[-6000:]}")
            time.sleep(0.25)

    def remember_servers(self) -> None:
        state = self.root / ".ibflow" / "devstack.json"
        with contextlib.suppress(OSError, ValueError):
            self.servers = json.loads(state.read_text())

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, IBFLOW_NATS_URL=f"nats://127.0.0.1:{self.nats_port}")
        env["COLUMNS"] = "200"
        return subprocess.run(
            [sys.executable, "-m", "ibflow_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def tree(self) -> set[int]:
        """The launcher, its servers and every descendant of them, alive right now."""
        assert self.proc is not None
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
        roots = {self.proc.pid, *self.servers.values()}
        found = {pid for pid in roots if pid in parents}
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            found |= more
            grew = bool(more)
        return found

    def alive(self, pids: set[int]) -> set[int]:
        """Those of ``pids`` still running (zombies count as gone)."""
        left = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                if fields[0] != "Z":
                    left.add(pid)
        return left

    http = staticmethod(http_request)
    port_free = staticmethod(port_free)

    def kill_everything(self) -> None:
        """Stop the launcher as Ctrl-C does, then SIGKILL whatever of its tree is left.

        The tree (launcher, honcho's processes, the servers) is taken *before* anything
        is stopped: once the launcher is gone its children belong to init and are no
        longer found through it.
        """
        if self.proc is None:
            return
        self.remember_servers()
        doomed = self.tree() | self.seen
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        for pid in self.alive(doomed | self.tree()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    run = Stack(tmp_path)
    try:
        yield run
    finally:
        run.kill_everything()
