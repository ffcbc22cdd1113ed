"""Interleaved A/B of two revisions of ibflow on this machine.

On these shared 2-core machines the run-to-run noise (20 % and more, and whole minutes
when a neighbour is busy) is larger than most effects of one change, so a figure from
before a change and one from after it, taken at different times, say little. This
script runs ``bench/run.py --only <phase>`` for A and B in alternation (A B, B A, A B,
...), so both see the same moments of the machine, and prints every figure of every
run with the median of each side.

* B is this checkout (its working tree, as it is);
* A is ``base`` (any git revision), checked out in a temporary git worktree with its
  own ``.venv`` (``uv sync --locked``), removed at the end.

    uv run python bench/ab.py <base> [--pairs 2] [--phase system] [--phase tick_exit]

Each run writes its own ``bench/results/<stamp>.json`` in its tree; this script only
reads them. Exit 1 if a run fails or its books are not exact.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def _run(tree: Path, phases: list[str]) -> dict[str, float]:
    """One ``bench/run.py`` in ``tree``: its figures by key (``value`` of each)."""
    results = tree / "bench" / "results"
    before = set(results.glob("2*Z.json")) if results.exists() else set()
    only = [arg for phase in phases for arg in ("--only", phase)]
    done = subprocess.run(
        ["uv", "run", "--locked", "python", "bench/run.py", *only],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    written = sorted(set(results.glob("2*Z.json")) - before)
    if not written:
        sys.exit(f"bench/run.py in {tree} wrote no result (exit {done.returncode}):\n{done.stderr}")
    data: dict[str, Any] = json.loads(written[-1].read_text())
    figures = {
        f["key"]: float(f["value"])
        for f in data["figures"]
        if isinstance(f.get("value"), int | float) and not isinstance(f.get("value"), bool)
    }
    figures |= _cpu_per_execution(data)
    if done.returncode != 0:
        figures["failed"] = 1.0
    return figures


def _cpu_per_execution(data: dict[str, Any]) -> dict[str, float]:
    """CPU per execution of each process in the system phase's passes
    (``cpu_<pass>_<process>``): it moves much less with the machine's load than latency
    does, so it is the steadier figure to compare on a noisy machine."""
    out: dict[str, float] = {}
    system = data.get("results", {}).get("system", {})
    for name in ("latency_light", "latency", "burst"):
        for process, figures in system.get(name, {}).get("scheduling", {}).items():
            if isinstance(figures, dict) and "cpu_ms_per_execution" in figures:
                out[f"cpu_{name}_{process.split()[0]}"] = float(figures["cpu_ms_per_execution"])
            elif process == "all_cpu_ms_per_execution":
                out[f"cpu_{name}_all"] = float(figures)
    return out


def _worktree(base: str, where: Path) -> Path:
    tree = where / "a"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), base],
        cwd=HERE,
        check=True,
        capture_output=True,
    )
    subprocess.run(["uv", "sync", "--locked", "--quiet"], cwd=tree, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("base", help="revision A (B is this checkout)")
    parser.add_argument("--pairs", type=int, default=2, help="runs of each side")
    parser.add_argument(
        "--phase",
        action="append",
        choices=("floor", "system", "tick_exit"),
        help="bench/run.py phase (repeatable; default: system)",
    )
    args = parser.parse_args()
    phases = args.phase or ["system"]
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="ibflow-ab-") as tmp:
        a_tree = _worktree(args.base, Path(tmp))
        trees = {"A": a_tree, "B": HERE}
        try:
            for pair in range(args.pairs):
                order = ("A", "B") if pair % 2 == 0 else ("B", "A")
                for side in order:
                    figures = _run(trees[side], phases)
                    runs[side].append(figures)
                    print(f"pair {pair + 1} {side}: done", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(a_tree)],
                cwd=HERE,
                check=False,
                capture_output=True,
            )
    keys = [k for k in runs["B"][0] if all(k in r for side in runs.values() for r in side)]
    print(f"\nA = {args.base}, B = this checkout; {args.pairs} run(s) each, interleaved\n")
    print("| figure | A runs | B runs | A median | B median | B / A |")
    print("|---|---|---|---:|---:|---:|")
    for key in keys:
        a = [r[key] for r in runs["A"]]
        b = [r[key] for r in runs["B"]]
        a_med, b_med = statistics.median(a), statistics.median(b)
        ratio = f"{b_med / a_med:.2f}" if a_med else "-"
        print(
            f"| {key} | {' / '.join(f'{v:g}' for v in a)} | {' / '.join(f'{v:g}' for v in b)}"
            f" | {a_med:g} | {b_med:g} | {ratio} |"
        )
    if any(r.get("failed") for side in runs.values() for r in side):
        sys.exit("a run failed (see its bench/results/<stamp>.md)")


if __name__ == "__main__":
    main()
