"""``promtool check config``, ``promtool check rules`` and ``promtool test rules`` on
``deploy/prometheus/``, and the Grafana dashboards' shape.

promtool comes from, in order: ``$PROMTOOL``; ``promtool`` on PATH (CI: the OS package,
``apt-get install prometheus``); else the Debian package of Prometheus, downloaded once
into ``~/.cache/ibflow/promtool`` with its sha256 checked (a .deb is an ar archive: read
with the standard library, nothing installed). Only when that download fails is the test
skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

DEB_URL = (
    "https://deb.debian.org/debian/pool/main/p/prometheus/prometheus_2.42.0+ds-5+deb12u1_amd64.deb"
)
DEB_SHA256 = "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ibflow" / "promtool"


def _ar_member(archive: bytes, prefix: str) -> bytes:
    """The first member of an ``ar`` archive whose name starts with ``prefix``."""
    assert archive[:8] == b"!<arch>\n", "not an ar archive"
    offset = 8
    while offset < len(archive):
        header = archive[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = archive[offset + 60 : offset + 60 + size]
        if name.startswith(prefix):
            return body
        offset += 60 + size + (size % 2)
    raise LookupError(prefix)


def _download_promtool() -> Path:
    target = CACHE / "promtool"
    if target.exists():
        return target
    with urllib.request.urlopen(DEB_URL, timeout=60) as response:
        deb = response.read()
    digest = hashlib.sha256(deb).hexdigest()
    if digest != DEB_SHA256:
        raise RuntimeError(f"{DEB_URL}: sha256 {digest}, expected {DEB_SHA256}")
    data = _ar_member(deb, "data.tar.xz")
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))) as tar:
        member = tar.extractfile("./usr/bin/promtool")
        assert member is not None
        binary = member.read()
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / "promtool.partial"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    return target


@pytest.fixture(scope="module")
def promtool() -> Path:
    configured = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if configured:
        return Path(configured)
    try:
        return _download_promtool()
    except (OSError, RuntimeError) as exc:
        pytest.skip(
            f"promtool not on PATH and its download failed ({DEB_URL}: {exc}); "
            "install it (apt-get install prometheus) or set PROMTOOL"
        )


def run(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_prometheus_config_and_its_rule_files(promtool: Path) -> None:
    output = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_accepts_every_rule_file(promtool: Path) -> None:
    files = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("rules/*.yml"))
    assert files
    output = run(promtool, "check", "rules", *files)
    assert "FAILED" not in output


def test_the_alerts_fire_when_they_should_and_only_then(promtool: Path) -> None:
    """promtool unit tests: the session-only bridge alert (in a session, not before the
    open), a dead letter, the Sunday login reminder, UNKNOWN orders for 2 minutes."""
    files = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("tests/*.yml"))
    assert len(files) == 2
    output = run(promtool, "test", "rules", *files)
    assert output.count("SUCCESS") == len(files)


def test_promtool_rejects_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    broken = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(foo[5m]"}]}]}
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0


def test_the_issue_s_alerts_are_all_defined() -> None:
    names = {
        rule["alert"]
        for path in PROMETHEUS_DIR.glob("rules/*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {
        "IbflowBridgeNotReadyInSession",
        "IbflowNoHealthyRoundTrip",
        "IbflowDeadLetters",
        "IbflowPositionDrift",
        "IbflowUnknownOrders",
        "IbflowTradingHaltedOrDailyLoss",
        "IbflowWeeklyGatewayLogin",
    } <= names
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    missing = [name for name in sorted(names) if f"### {name}" not in runbook]
    assert missing == [], "alerts without a runbook section"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_each_dashboard_is_provisionable_and_queries_the_provisioned_datasource(
    path: Path,
) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"].startswith("ibflow-")
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            assert target["expr"].strip()


def test_the_three_dashboards_of_the_issue_exist() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"ibflow / Trading", "ibflow / IB connectivity", "ibflow / Pipeline"}
