"""The Dockerfiles' build stages replayed without Docker.

Each Dockerfile's build stage is read line by line: its ``COPY`` lines copy the same
files from the repository into a scratch directory, and its ``uv sync`` commands run there
with the real uv and the committed ``uv.lock`` (``--dry-run`` for every image, a real
install for gateway-sim's small one). So a lock the files copied in step 1 cannot check,
a missing workspace member, or a package name that is not in the lock, fails here
before it fails in ``docker build``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted([*ROOT.glob("services/*/Dockerfile"), ROOT / "deploy" / "tools.Dockerfile"])
UV = shutil.which("uv")


def build_stage(dockerfile: Path) -> list[str]:
    """The logical lines (continuations joined) of the stage named ``build``."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("FROM "):
            inside = stripped.endswith(" AS build")
        elif inside and stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def replay(dockerfile: Path, scratch: Path, *, dry_run: bool) -> list[str]:
    """Run the build stage's COPY and ``uv sync`` lines in ``scratch``; the commands run."""
    work = scratch / "src"
    work.mkdir()
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(scratch / "venv"),
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    ran = []
    for line in build_stage(dockerfile):
        words = shlex.split(line)
        if words[0] == "COPY" and not words[1].startswith("--from"):
            *sources, target = words[1:]
            for source in sources:
                origin = ROOT / source
                destination = work / target / (origin.name if target.endswith("/") else "")
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        work / target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "tests", ".venv"),
                    )
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination)
        elif words[0] == "RUN" and "uv sync" in line:
            command = line[line.index("uv sync") :].split()
            if dry_run:
                command.append("--dry-run")
            done = subprocess.run(
                [str(UV), *command[1:]],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"{dockerfile}: {' '.join(command)}\n{done.stderr}"
            ran.append(" ".join(command))
    return ran


@pytest.mark.skipif(UV is None, reason="uv is not on PATH")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_build_stage_s_uv_syncs_succeed_from_exactly_the_files_it_copies(
    dockerfile: Path, tmp_path: Path
) -> None:
    ran = replay(dockerfile, tmp_path, dry_run=True)
    assert len(ran) == 2
    assert "--no-install-workspace" in ran[0]
    assert "--no-editable" in ran[1]


@pytest.mark.skipif(UV is None, reason="uv is not on PATH")
def test_the_gateway_sim_image_s_environment_has_its_console_script(tmp_path: Path) -> None:
    replay(ROOT / "services" / "gateway-sim" / "Dockerfile", tmp_path, dry_run=False)
    script = tmp_path / "venv" / "bin" / "ibflow-gateway-sim"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--control-port" in done.stdout
    # Not editable: the package lives in the environment, not in the copied sources.
    site = next((tmp_path / "venv" / "lib").glob("python3.*/site-packages"))
    assert (site / "ibflow_gateway_sim" / "app.py").is_file()
