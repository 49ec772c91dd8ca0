"""The system's Chromium (Debian's package) for the console's browser tests, driven by Playwright.

Playwright's own browser downloads are never used: the tests point it at /usr/bin/chromium. Without it
the tests skip and say how to get it; with INVENTIV_REQUIRE_SYSTEM_TOOLS=1 (CI) they fail instead.
Screenshots go to INVENTIV_CONSOLE_SCREENSHOTS when set (docs/console/ holds the ones README shows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_ENV = "INVENTIV_REQUIRE_SYSTEM_TOOLS"
SCREENSHOTS_ENV = "INVENTIV_CONSOLE_SCREENSHOTS"
INSTALL_HINT = "apt-get install chromium"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def executable() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def require() -> str:
    """The Chromium executable; skips the calling test without it (fails under INVENTIV_REQUIRE_SYSTEM_TOOLS=1)."""
    path = executable()
    if path is not None:
        return path
    reason = f"Chromium is not installed: {INSTALL_HINT}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def screenshot_dir(default: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
