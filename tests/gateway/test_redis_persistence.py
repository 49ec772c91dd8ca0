"""The start-up check of Redis persistence, against redis-servers started with and without it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.outages import PrivateRedis
from gateway.redis_persistence import check_persistence, persistence_risk


@pytest.mark.parametrize(
    ("appendonly", "save", "risky"),
    [("no", "", True), ("no", "3600 1 300 100 60 10000", False), ("yes", "", False), ("yes", "900 1", False)],
)
def test_only_a_redis_without_aof_and_snapshots_is_a_risk(appendonly: str, save: str, risky: bool) -> None:
    assert (persistence_risk(appendonly, save) is not None) == risky


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(started)}", args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize(
    ("args", "level", "says"),
    [
        (("--save", "", "--appendonly", "no"), "WARNING", "neither an append-only file nor snapshots"),
        (("--save", "", "--appendonly", "yes"), None, None),
        (("--save", "60", "1", "--appendonly", "no"), None, None),
        (("--save", "", "--rename-command", "CONFIG", ""), "INFO", "could not check"),
    ],
    ids=["none", "aof", "snapshots", "config-refused"],
)
def test_the_gateway_says_when_redis_keeps_nothing(
    redis_server: Callable[..., PrivateRedis], caplog: pytest.LogCaptureFixture, args: tuple[str, ...],
    level: str | None, says: str | None,
) -> None:  # fmt: skip
    server = redis_server(*args)
    caplog.set_level("INFO", logger="gateway.redis_persistence")
    check_persistence(server.url)
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.redis_persistence"]
    if level is None:
        assert logged == []
    else:
        assert len(logged) == 1 and logged[0][0] == level and says in logged[0][1]
