"""py-spy of every ibflow process of a benchmark phase, and a summary of the stacks.

``PhaseProfiler`` (used by ``bench/run.py --profile``) attaches ``py-spy record`` (raw
collapsed stacks, 200 Hz, ``--nonblocking``: the target is never paused) to this
process and to every child process running ``-m ibflow_<service>`` as soon as it
appears, and stops them at the end of the phase. py-spy comes from ``PATH`` or, if it
is not installed, from ``uvx py-spy`` (fetched once into uv's cache).

``summarise(path)`` reads one raw file: samples, the busy share of the wall time (py-spy
leaves idle samples out), and the functions with the most samples on CPU by themselves
(self) and anywhere on the stack (inclusive). Samples taken while importing modules
(start-up) are left out.

    uv run python bench/profiling.py bench/results/<stamp>-py-spy/*.txt
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 200
SERVICE = re.compile(r"-m\x00(ibflow_[a-z_]+)")


def _children(root: int) -> dict[int, str]:
    """pid → service module of every descendant of ``root`` started as ``-m ibflow_*``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    found: dict[int, str] = {}
    for pid in family - {root}:
        with contextlib.suppress(OSError):
            match = SERVICE.search((Path("/proc") / str(pid) / "cmdline").read_text())
            if match:
                found[pid] = match.group(1)
    return found


class PhaseProfiler:
    """py-spy on this process and its ``ibflow_*`` children during one phase."""

    def __init__(self, out_dir: Path, label: str) -> None:
        self.out_dir = out_dir
        self.label = label
        self.files: dict[str, str] = {}
        self._procs: list[asyncio.subprocess.Process] = []
        self._seen: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self.started = time.perf_counter()
        self.seconds = 0.0
        command = shutil.which("py-spy")
        self._base = [command] if command else [shutil.which("uvx") or "uvx", "py-spy"]

    async def _attach(self, pid: int, name: str) -> None:
        self._seen.add(pid)
        path = self.out_dir / f"{self.label}-{name}-{pid}.txt"
        self.files[f"{name} ({pid})"] = str(path)
        self._procs.append(
            await asyncio.create_subprocess_exec(
                *self._base,
                "record",
                *("--pid", str(pid), "--rate", str(RATE), "--format", "raw"),
                *("--output", str(path), "--nonblocking"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    async def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        await self._attach(os.getpid(), "bench")

        async def watch() -> None:
            while True:
                for pid, name in _children(os.getpid()).items():
                    if pid not in self._seen:
                        await self._attach(pid, name)
                await asyncio.sleep(2.0)  # reading /proc costs: keep it rare

        self._task = asyncio.create_task(watch())

    async def stop(self) -> dict[str, str]:
        self.seconds = time.perf_counter() - self.started
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs = []
        return self.files


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``module.py:func``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{short}:{func}"


def summarise(path: str | Path, seconds: float | None = None, top: int = 12) -> dict[str, Any]:
    """Samples, busy share and the top self / inclusive functions of one raw file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if "_find_and_load" in stack:
            continue  # importing at start-up, not the measured work
        frames = [_frame_name(f) for f in stack.split(";")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "busy_percent_of_one_core": round(100 * total / RATE / seconds, 1) if seconds else None,
        "self_percent": share(own),
        "inclusive_percent": share(
            Counter(
                {
                    k: v
                    for k, v in inclusive.items()
                    if not k.startswith(("asyncio/", "runners.py", "events.py", "base_events"))
                    and "<module>" not in k
                    and "run_forever" not in k
                    and "_run_once" not in k
                }
            )
        ),
    }


def main() -> None:
    for path in sys.argv[1:]:
        result = summarise(path)
        print(f"\n{path}: {result['samples']} samples")
        for title in ("self_percent", "inclusive_percent"):
            print(f"  {title}:")
            for name, pct in result.get(title, []):
                print(f"    {pct:5.1f} %  {name}")


if __name__ == "__main__":
    main()
