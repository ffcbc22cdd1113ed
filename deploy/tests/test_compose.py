"""docker-compose.yml, .env.example and the Dockerfiles, checked without Docker.

CI has no Docker daemon (so no ``docker compose config``): the compose file is validated
against the Compose Specification's JSON Schema (vendored in ``deploy/compose-spec/``),
then against ibflow's own rules: a healthcheck and a restart policy on every service,
nothing published beyond 127.0.0.1, the real gateway only in the ``live`` profile and on
paper by default, every variable documented in ``.env.example``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "compose-spec" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"

IBFLOW_SERVICES = ("gateway-bridge", "order-manager", "position-monitor", "scheduler", "api")
SECRETS = ("POSTGRES_PASSWORD", "NATS_IBFLOW_PASSWORD", "NATS_OPERATOR_PASSWORD")
SECRETS += ("GRAFANA_ADMIN_PASSWORD", "TWS_PASSWORD", "TWS_USERID")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:[:?+-][^}]*)?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def one_shots() -> set[str]:
    """Services others wait for with ``service_completed_successfully``."""
    names = set()
    for service in services().values():
        depends = service.get("depends_on") or {}
        if isinstance(depends, dict):
            for name, condition in depends.items():
                if condition.get("condition") == "service_completed_successfully":
                    names.add(name)
    return names


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_the_vendored_schema_is_the_published_compose_specification() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert '"title": "Compose Specification"' in SCHEMA.read_text()


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(SCHEMA.read_text())
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = compose()
    broken["services"]["api"]["healtcheck"] = broken["services"]["api"].pop("healthcheck")
    validator = jsonschema_rs.validator_for(SCHEMA.read_text())
    assert not validator.is_valid(broken)


def test_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    shots = one_shots()
    problems = []
    for name, service in services().items():
        restart = service.get("restart")
        if restart not in {"always", "unless-stopped"} and not (
            name in shots and str(restart).startswith("on-failure")
        ):
            problems.append(f"{name}: restart {restart!r}")
        check = service.get("healthcheck") or {}
        if name in shots:
            # Exits when done: compose waits for its exit status, there is nothing to probe.
            if check != {"disable": True}:
                problems.append(f"{name}: one-shot without an explicit `disable: true`")
        elif not check.get("test") or check.get("disable") or check["test"][0] == "NONE":
            problems.append(f"{name}: no healthcheck")
    assert shots == {"migrate"}
    assert problems == []


def test_every_ibflow_service_waits_for_the_migration_and_healthy_infrastructure() -> None:
    for name in IBFLOW_SERVICES:
        depends = services()[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["nats"] == {"condition": "service_healthy"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name


def test_nothing_is_published_on_a_public_interface() -> None:
    published = {}
    for name, service in services().items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
            published[name] = port
        assert service.get("network_mode") != "host", name
    # Only what people use from the host; the IB Gateway's API never leaves the network.
    assert set(published) == {"nats", "api", "prometheus", "grafana"}


def test_the_real_gateway_runs_only_in_the_live_profile_on_paper_by_default() -> None:
    gateway = services()["ib-gateway"]
    assert gateway["profiles"] == ["live"]
    assert gateway["image"].startswith("ghcr.io/gnzsnz/ib-gateway:")
    env = gateway["environment"]
    assert env["TRADING_MODE"] == "${TRADING_MODE:-paper}"
    assert env_example()["TRADING_MODE"] == "paper"
    assert env["TWOFA_TIMEOUT_ACTION"] == "restart"
    assert env["AUTO_RESTART_TIME"].startswith("${AUTO_RESTART_TIME:-")
    assert "PM" in env_example()["AUTO_RESTART_TIME"]  # evening ET, outside trading hours
    # The password is a secret file, never in the container's environment.
    assert "TWS_PASSWORD" not in env
    assert env["TWS_PASSWORD_FILE"] == "/run/secrets/tws_password"
    assert compose()["secrets"]["tws_password"] == {"environment": "TWS_PASSWORD"}
    assert "ports" not in gateway
    assert all("profiles" not in s for n, s in services().items() if n != "ib-gateway")


def test_every_variable_the_compose_file_reads_is_documented_in_env_example() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    used |= {s["environment"] for s in compose()["secrets"].values()}
    documented = env_example()
    assert sorted(used - set(documented)) == []
    assert sorted(set(documented) - used) == []


def test_env_example_holds_placeholders_only() -> None:
    documented = env_example()
    for name in SECRETS:
        assert documented[name] == "change-me", name
    assert re.search(r"(?i)password\s*=\s*(?!change-me)\S", ENV_EXAMPLE.read_text()) is None
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_prometheus_scrapes_every_ibflow_service_on_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    for name in IBFLOW_SERVICES:
        env = services()[name]["environment"]
        port = env.get("IBFLOW_API_PORT") or env["IBFLOW_HTTP_PORT"]
        assert targets[name] == [f"{name}:{port}"], name
        assert env["IBFLOW_HTTP_HOST"] == "0.0.0.0"
        assert f":{port}/healthz" in " ".join(services()[name]["healthcheck"]["test"]), name


def workspace_members() -> list[str]:
    return [
        "shared",
        *sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("services/*/pyproject.toml")),
    ]


def dockerfiles() -> dict[str, Path]:
    found = {name: ROOT / "services" / name / "Dockerfile" for name in IBFLOW_SERVICES}
    found["gateway-sim"] = ROOT / "services" / "gateway-sim" / "Dockerfile"
    found["tools"] = ROOT / "deploy" / "tools.Dockerfile"
    return found


@pytest.mark.parametrize("name", sorted(dockerfiles()))
def test_each_image_is_built_with_uv_in_two_steps_and_runs_as_a_non_root_user(name: str) -> None:
    text = dockerfiles()[name].read_text()
    lines = [line.strip() for line in text.splitlines()]
    # Step 1: the lock and every member's pyproject.toml (uv checks the whole lock), the
    # dependencies synced without any workspace member; step 2: sources, then the package.
    for member in workspace_members():
        assert f"COPY {member}/pyproject.toml {member}/" in lines, f"{name}: {member}"
    first = next(i for i, line in enumerate(lines) if "--no-install-workspace" in line)
    sources = [i for i, line in enumerate(lines) if re.match(r"COPY (shared|services\S*)/ ", line)]
    assert lines.index("COPY pyproject.toml uv.lock ./") < first < min(sources)
    assert text.count("uv sync --locked --no-dev") == 2
    assert "--no-editable" in "\n".join(lines[max(sources) :])
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"root", "0"}
    assert any(line.startswith("HEALTHCHECK") for line in lines)


@pytest.mark.parametrize("name", [*IBFLOW_SERVICES, "gateway-sim"])
def test_each_service_image_runs_its_console_script(name: str) -> None:
    project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
    script = f"ibflow-{name}"
    assert script in project["project"]["scripts"]
    text = dockerfiles()[name].read_text()
    assert f"--package {project['project']['name']}" in text
    assert f'ENTRYPOINT ["{script}"]' in text
    assert services()[name]["build"] == {
        "context": ".",
        "dockerfile": f"services/{name}/Dockerfile",
    }
