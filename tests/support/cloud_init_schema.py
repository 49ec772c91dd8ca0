"""Validates cloud-config user data with the real `cloud-init schema` command (Debian: apt-get install cloud-init).

Offline and unprivileged: `cloud-init schema --config-file F` reads only F and the schema shipped with the
package; it needs neither root nor a system booted by cloud-init (`--system` would).

Why the output is read and not only the exit status (cloud-init 22.4.2, Debian 12):
- deprecated keys exit 0 and only print `Cloud config schema deprecations: <key>: DEPRECATED ...`;
- `--annotate` exits 0 even on schema errors, so it is never used here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REQUIRE_ENV = "INVENTIV_REQUIRE_SYSTEM_TOOLS"
INSTALL_HINT = "apt-get install cloud-init"
# Lines that report a problem in any cloud-init release seen so far (errors, warnings, deprecations).
_PROBLEM = re.compile(r"deprecat|warn|error|invalid|not valid", re.IGNORECASE)
# Stands in for the temporary file's path in messages, so a random file name cannot read as a problem.
_PLACEHOLDER = "<user-data>"


def tool() -> str | None:
    """The `cloud-init` executable, or None when the package is not installed."""
    return shutil.which("cloud-init")


def available() -> bool:
    return tool() is not None


def version() -> str:
    """`cloud-init --version`, e.g. `/usr/bin/cloud-init 22.4.2`."""
    return _run([_require_tool(), "--version"]).stdout.strip()


def require() -> None:
    """Skips the calling test without the tool; fails it instead when INVENTIV_REQUIRE_SYSTEM_TOOLS=1 (CI)."""
    if available():
        return
    reason = f"cloud-init is not installed: {INSTALL_HINT}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def validate(document: str) -> None:
    """Raises AssertionError, with the tool's output, unless `document` is clean cloud-config.

    Clean: exit status 0, a `Valid ...` line and no error, warning or deprecation anywhere in the output.
    """
    with tempfile.TemporaryDirectory(prefix="inventiv-cloud-config-") as folder:
        path = Path(folder) / "user-data"
        path.write_text(document)
        result = _run([_require_tool(), "schema", "--config-file", str(path)])
    output = result.stdout.replace(str(path), _PLACEHOLDER)
    problems = [line for line in output.splitlines() if _PROBLEM.search(line)]
    valid = any(line.strip().lower().startswith("valid") for line in output.splitlines())
    if result.returncode != 0 or problems or not valid:
        raise AssertionError(f"cloud-init schema rejected the document (exit status {result.returncode}):\n{output}")


def _require_tool() -> str:
    path = tool()
    if path is None:
        raise AssertionError(f"cloud-init is not installed: {INSTALL_HINT}")
    return path


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    # cloud-init runs on the system python3: the test run's Python settings must not leak into it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env["LC_ALL"] = "C.UTF-8"
    return subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=False
    )
