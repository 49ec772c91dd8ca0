"""deploy/ against the code: every manifest parses, runs real `inventiv` commands, sets only real
settings, probes real routes, and gives the gateway longer to stop than it takes to drain."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from gateway.app import create_app
from inventiv.cli import build_parser
from inventiv.deploy.firewall import PUBLIC_PORTS
from inventiv.deploy.stack import STACK_FILES
from inventiv.deploy.user_data import STACK_IMAGES
from inventiv.deploy.vm_settings import env_names as vm_env_names
from inventiv.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
# The image's own variables for Python and pip, not Inventiv settings.
IMAGE_ONLY_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
# gateway.server waits this long past the drain timeout before it kills its processes.
GATEWAY_KILL_GRACE_S = 5
# Every command a production install needs.
REQUIRED_COMMANDS = {"migrate", "gateway", "scheduler"}

Invocation = tuple[str, list[str]]


def _setting_names() -> set[str]:
    names = {f.metadata.get("env", f"INVENTIV_{f.name.upper()}") for f in dataclasses.fields(Settings)}
    return names | {f"{name}_FILE" for name in names}


SETTING_NAMES = _setting_names()


def is_setting(name: str) -> bool:
    return name in SETTING_NAMES or name.startswith("SCW_")


def parse_command(argv: list[str]) -> str:
    """The subcommand `inventiv <argv>` runs; fails the test if the parser refuses it."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`inventiv {shlex.join(argv)}` is not a valid command")
    command: str = args.command
    return command


def _load(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _load(DEPLOY / "docker-compose.yml")[0]
    return compose


def _compose_inventiv_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items() if svc.get("image", "").startswith("inventiv")}


def _kubernetes_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in _load(path)]


def _kubernetes_workload(kind: str, name: str) -> dict[str, Any]:
    for doc in _kubernetes_docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {KUBERNETES}")


def _kubernetes_containers() -> Iterator[dict[str, Any]]:
    for doc in _kubernetes_docs():
        if doc["kind"] in ("Deployment", "Job"):
            yield from doc["spec"]["template"]["spec"]["containers"]


def _unit_values(path: Path, key: str) -> list[str]:
    prefix = f"{key}="
    return [line[len(prefix):] for line in path.read_text().splitlines() if line.startswith(prefix)]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _invocations() -> Iterator[Invocation]:
    for name, svc in _compose_inventiv_services().items():
        yield f"docker-compose.yml: {name}", svc["command"]
    for container in _kubernetes_containers():
        assert container["image"] == "inventiv", "kustomization.yaml's `images` sets the registry"
        yield f"kubernetes: {container['name']}", container["args"]
    for unit in sorted(SYSTEMD.glob("*.service")):
        for line in _unit_values(unit, "ExecStart"):
            argv = shlex.split(line)
            assert argv[0].endswith("/inventiv"), f"{unit.name} runs {argv[0]}"
            yield unit.name, argv[1:]
    instructions = dict(_dockerfile_instructions())
    assert json.loads(instructions["ENTRYPOINT"]) == ["inventiv"]
    yield "Dockerfile CMD", json.loads(instructions["CMD"])


def _dotenv_names(path: Path) -> set[str]:
    return set(dotenv_values(path))


def _env_names() -> Iterator[tuple[str, str]]:
    for name, svc in _compose_inventiv_services().items():
        yield from ((f"docker-compose.yml: {name}", var) for var in svc.get("environment", {}))
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", (DEPLOY / "docker-compose.yml").read_text()))
    yield from ((".env.example", var) for var in _dotenv_names(DEPLOY / ".env.example") - interpolated)
    for doc in _kubernetes_docs():
        if doc["kind"] in ("ConfigMap", "Secret"):
            data = doc.get("data") or doc.get("stringData") or {}
            yield from ((f"kubernetes {doc['kind']}", var) for var in data)
    for container in _kubernetes_containers():
        yield from ((f"kubernetes: {container['name']}", var["name"]) for var in container.get("env", []))
    yield from (("systemd inventiv.env.example", var) for var in _dotenv_names(SYSTEMD / "inventiv.env.example"))
    for unit in sorted(SYSTEMD.glob("*.service")):
        for line in _unit_values(unit, "Environment"):
            yield from ((unit.name, pair.split("=", 1)[0]) for pair in shlex.split(line))
    for instruction, rest in _dockerfile_instructions():
        if instruction == "ENV":
            names = {pair.split("=", 1)[0] for pair in shlex.split(rest)} - IMAGE_ONLY_ENV
            yield from (("Dockerfile", var) for var in names)


def _duration_s(value: str) -> float:
    """Seconds of a compose or systemd duration as written here ("45s", "45")."""
    match = re.fullmatch(r"(\d+)s?", value.strip())
    assert match, f"unexpected duration {value!r}"
    return float(match.group(1))


def _drain_timeout_s(settings_source: dict[str, Any]) -> float:
    return float(settings_source.get("INVENTIV_DRAIN_TIMEOUT_S", Settings.drain_timeout_s))


# -- the checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "valid"),
    [
        (["gateway", "--workers", "4"], True),
        (["scheduler", "--dry-run"], True),
        (["migrate"], True),
        (["gatewy"], False),
        (["gateway", "--workers", "four"], False),
        (["scheduler", "--workers", "2"], False),
    ],
)
def test_parse_command_accepts_only_real_commands(argv: list[str], valid: bool) -> None:
    if valid:
        assert parse_command(argv) == argv[0]
    else:
        with pytest.raises(pytest.fail.Exception):
            parse_command(argv)


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("INVENTIV_DATABASE_URL", True),
        ("INVENTIV_DATABASE_URL_FILE", True),
        ("WORKER_DATA_VOLUME_GB", True),
        ("SCW_SECRET_KEY", True),
        ("INVENTIV_WORKER_DATA_VOLUME_GB", False),
        ("INVENTIV_DRAIN_TIMEOUT", False),
        ("DATABASE_URL", False),
    ],
)
def test_is_setting(name: str, known: bool) -> None:
    assert is_setting(name) is known


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = _load(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(_load(KUBERNETES / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def test_manifests_run_real_inventiv_commands() -> None:
    used = {parse_command(argv) for _, argv in _invocations()}
    assert used >= REQUIRED_COMMANDS


def test_manifests_set_only_real_settings() -> None:
    names = list(_env_names())
    assert {var for _, var in names} >= {"INVENTIV_DATABASE_URL", "INVENTIV_REDIS_URL", "INVENTIV_GATEWAY_HOST"}
    unknown = [f"{source}: {var}" for source, var in names if not is_setting(var)]
    assert unknown == []


def test_compose_gives_the_gateway_longer_than_its_drain() -> None:
    drain = _drain_timeout_s(dotenv_values(DEPLOY / ".env.example"))
    gateway = _compose_inventiv_services()["gateway"]
    assert _duration_s(gateway["stop_grace_period"]) > drain + GATEWAY_KILL_GRACE_S
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])


def test_systemd_units_stop_on_sigterm_after_the_drain() -> None:
    drain = _drain_timeout_s(dotenv_values(SYSTEMD / "inventiv.env.example"))
    for unit in sorted(SYSTEMD.glob("*.service")):
        assert _unit_values(unit, "KillSignal") == ["SIGTERM"]
        assert _unit_values(unit, "Restart") == ["on-failure"]
        (timeout,) = _unit_values(unit, "TimeoutStopSec")
        assert _duration_s(timeout) > drain + GATEWAY_KILL_GRACE_S, unit.name


def test_kubernetes_gateway_stops_after_prestop_and_drain() -> None:
    config = _kubernetes_workload("ConfigMap", "inventiv")["data"]
    pod = _kubernetes_workload("Deployment", "inventiv-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    needed = float(prestop[1]) + _drain_timeout_s(config) + GATEWAY_KILL_GRACE_S
    assert pod["terminationGracePeriodSeconds"] > needed


def test_kubernetes_probes_hit_gateway_routes_on_its_port() -> None:
    routes = {resource.canonical for resource in create_app(Settings(worker_secret_key='k' * 32)).router.resources()}
    config = _kubernetes_workload("ConfigMap", "inventiv")["data"]
    pod = _kubernetes_workload("Deployment", "inventiv-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(config.get("INVENTIV_GATEWAY_PORT", Settings.gateway_port))
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] == "http"


def test_schedulers_run_active_standby() -> None:
    assert _compose_inventiv_services()["scheduler"]["deploy"]["replicas"] == 2
    assert _kubernetes_workload("Deployment", "inventiv-scheduler")["spec"]["replicas"] == 2


# -- the control-plane VM (inventiv deploy): docker-compose.vm.yml, Caddyfile, env/*.env.example -------------


def _compose_vm() -> dict[str, Any]:
    overlay: dict[str, Any] = _load(DEPLOY / "docker-compose.vm.yml")[0]
    return overlay


def test_vm_overlay_changes_only_inventiv_services_and_adds_caddy() -> None:
    services = _compose_vm()["services"]
    assert set(services) - {"caddy"} == set(_compose_inventiv_services())
    for name in set(services) - {"caddy"}:
        assert services[name]["image"].startswith("${DEPLOY_IMAGE:?")
        assert services[name]["volumes"] == ["${SECRETS_DIR:?set SECRETS_DIR}:/run/secrets/inventiv:ro"]


def test_caddy_serves_what_the_vm_firewall_opens() -> None:
    caddy = _compose_vm()["services"]["caddy"]
    published = {int(port.split(":")[0]) for port in caddy["ports"]}
    assert published == set(PUBLIC_PORTS)
    assert caddy["image"] in STACK_IMAGES
    assert caddy["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_caddyfile_proxies_the_domain_to_the_gateway_port() -> None:
    text = (DEPLOY / "Caddyfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "{$DOMAIN} {"
    (target,) = [line.split()[1] for line in lines if line.startswith("reverse_proxy")]
    host, port = target.split(":")
    assert host in _compose_inventiv_services() and host == "gateway"
    gateway_port = int(_compose_inventiv_services()["gateway"]["ports"][0].rsplit(":", 1)[1])
    assert int(port) == gateway_port == Settings.gateway_port


def test_deploy_up_uploads_every_file_the_overlay_reads() -> None:
    caddy_file = _compose_vm()["services"]["caddy"]["volumes"][0].split(":")[0]
    assert Path(caddy_file).name in STACK_FILES and (DEPLOY / Path(caddy_file).name).is_file()
    assert all((DEPLOY / name).is_file() for name in STACK_FILES)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_vm_env_examples_set_only_vm_settings(env: str) -> None:
    names = _dotenv_names(DEPLOY / "env" / f"{env}.env.example")
    assert names <= vm_env_names()
    assert {"DEPLOY_ENV", "SCW_ROOT_VOLUME_SIZE_GB", "SECRETS_DIR", "SECRET_FILES", "DOMAIN"} <= names
