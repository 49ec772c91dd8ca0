"""Relative times on the console's pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.console.render import ago

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=0), "0s"), (timedelta(seconds=59), "59s"), (timedelta(minutes=1), "1m"),
    (timedelta(minutes=119), "1h"), (timedelta(hours=25), "1d"), (timedelta(seconds=-3), "0s"),
])
def test_ago(delta: timedelta, text: str) -> None:
    assert ago(NOW - delta, NOW) == text


def test_ago_of_nothing() -> None:
    assert ago(None) == "-"
