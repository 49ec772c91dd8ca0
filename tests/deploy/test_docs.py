"""README.md and deploy/README.md against the code: settings and their defaults, metric names, and the
`inventiv` command lines they show."""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics
from inventiv.cli import build_parser
from inventiv.deploy.vm_settings import env_names as vm_env_names
from inventiv.settings import Settings
from worker.agent import AGENT_ENV_NAMES
from worker.engines import CONTAINER_ENV_NAMES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "deploy" / "README.md"]
# Read by the test fixtures, not by Inventiv itself.
# Names that are not settings: the tests' services, the worker containers' and the agent's environment
# (the agent's names that are settings too, like INVENTIV_AGENT_GATEWAY_URL, are still checked as settings).
TEST_ONLY_ENV = {"INVENTIV_TEST_DATABASE_URL", "INVENTIV_TEST_REDIS_URL", "INVENTIV_REQUIRE_LLAMA",
                 "INVENTIV_REQUIRE_SYSTEM_TOOLS", "INVENTIV_LLAMA_CACHE", "INVENTIV_CONSOLE_SCREENSHOTS"}  # fmt: skip
# Read when the package is built (setup.py) or a compiled build is made for tests and benchmarks
# (benchmarks/compiled.py), not by a running Inventiv.
BUILD_ENV = {"INVENTIV_MYPYC", "INVENTIV_MYPYC_BUILD", "INVENTIV_MYPYC_CACHE"}
AGENT_ONLY_ENV = set(AGENT_ENV_NAMES) - {"INVENTIV_AGENT_GATEWAY_URL", "INVENTIV_AGENT_INTERVAL_S"}
NOT_SETTINGS = TEST_ONLY_ENV | BUILD_ENV | set(CONTAINER_ENV_NAMES) | AGENT_ONLY_ENV
ENV_NAME = re.compile(r"\b(?:INVENTIV_[A-Z0-9_]+|SCW_[A-Z0-9_]+|WORKER_DATA_VOLUME_GB)\b")
TABLE_ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.+?) \|", re.MULTILINE)


def _settings_by_env() -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata.get("env", f"INVENTIV_{f.name.upper()}"): f for f in dataclasses.fields(Settings)}


SETTINGS = _settings_by_env()


def documented_default(value: Any) -> str:
    """A default as the configuration table writes it: `30` for 30.0, `false` for False."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _code_lines(path: Path) -> Iterator[str]:
    for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.DOTALL):
        yield from block.splitlines()


def shown_commands(line: str) -> list[list[str]]:
    """The argument lists given to `inventiv` on one shell line (comments and continuations dropped)."""
    words = shlex.split(line.rstrip("\\ "), comments=True)
    found = []
    for i, word in enumerate(words):
        if (word == "inventiv" or word.endswith("/bin/inventiv")) and i + 1 < len(words):
            args = words[i + 1:]
            found.append(args[: args.index("&&")] if "&&" in args else args)
    return found


def _metric_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            described = next(iter(value.describe()))
            names.add(described.name + ("_total" if described.type == "counter" else ""))
    return names


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sudo /opt/inventiv/bin/inventiv --env-file /etc/x migrate", [["--env-file", "/etc/x", "migrate"]]),
        ("kubectl exec deploy/inventiv-gateway -- inventiv seed     # once", [["seed"]]),
        ("a && inventiv migrate && b", [["migrate"]]),
        ("sudo useradd --system --home-dir /var/lib/inventiv inventiv", []),
        ("kubectl create secret generic inventiv \\", []),
    ],
)
def test_shown_commands(line: str, expected: list[list[str]]) -> None:
    assert shown_commands(line) == expected


@pytest.mark.parametrize(("value", "text"), [(30.0, "30"), (0.5, "0.5"), (False, "false"), (8003, "8003")])
def test_documented_default(value: Any, text: str) -> None:
    assert documented_default(value) == text


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_real_settings(path: Path) -> None:
    # The control-plane VM's settings (inventiv deploy) are real too, in their own env files.
    known = set(SETTINGS) | vm_env_names()
    names = set(ENV_NAME.findall(path.read_text())) - NOT_SETTINGS
    unknown = {n for n in names if n not in known and n.removesuffix("_FILE") not in known}
    assert unknown == set()


def test_deploy_readme_lists_every_vm_setting() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    rows = re.findall(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \|", text, re.MULTILINE)
    listed = {name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row)}
    assert vm_env_names() <= listed


def test_configuration_table_lists_every_setting_with_its_default() -> None:
    rows = dict(TABLE_ROW.findall(README.read_text()))
    assert set(rows) == set(SETTINGS)
    for name, cell in rows.items():
        default = SETTINGS[name].default
        if default is None:
            assert cell.startswith(("unset", "`<")), name
        else:
            assert cell == f"`{documented_default(default)}`", name


def test_readme_lists_every_gateway_metric() -> None:
    listed = set(re.findall(r"\binventiv_gateway_[a-z_]+", README.read_text()))
    assert listed == _metric_names()


def test_shown_inventiv_commands_parse() -> None:
    shown = set()
    for path in DOCS:
        for line in _code_lines(path):
            for argv in shown_commands(line):
                try:
                    shown.add(build_parser().parse_args(argv).command)
                except SystemExit:
                    pytest.fail(f"{path.name} shows `inventiv {shlex.join(argv)}`, which the CLI refuses")
    assert shown >= {"migrate", "seed", "deploy"}


def test_readme_says_what_data_volume_gb_null_and_0_mean() -> None:
    # The API's own wording (gateway/control/openapi.py); operators read the README first.
    text = " ".join(README.read_text().split())
    assert "`data_volume_gb`, on `POST /deployments` and on a model" in text
    assert "`null` (or absent) means sized by the scheduler" in text
    assert "`0` means no data volume" in text
