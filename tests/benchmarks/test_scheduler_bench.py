"""benchmarks/scheduler_bench.py: the figures it derives from what the fake Scaleway recorded, and that it starts.

The scale runs themselves take minutes (benchmarks/RESULTS.md); these only catch helpers that count wrong
and a module that no longer imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scheduler_bench import ZONE, duplicates, per_instance_calls, route, spread
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parents[2]
SERVER = "0b7e8a3c-5a7d-4c8e-9a11-3f2d1c0b9e8f"
VOLUME = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def test_route_groups_calls_by_what_they_do() -> None:
    assert route("GET", f"/instance/v1/zones/{ZONE}/servers/{SERVER}") == "GET /instance/v1/zones/{zone}/servers/{id}"
    assert (
        route("DELETE", f"/block/v1alpha1/zones/{ZONE}/volumes/{VOLUME}")
        == "DELETE /block/v1alpha1/zones/{zone}/volumes/{id}"
    )
    # Two ids in one path, and a path with none.
    assert (
        route("POST", f"/instance/v1/zones/{ZONE}/servers/{SERVER}/volumes/{VOLUME}")
        == "POST /instance/v1/zones/{zone}/servers/{id}/volumes/{id}"
    )
    assert (
        route("GET", f"/instance/v1/zones/{ZONE}/products/servers") == "GET /instance/v1/zones/{zone}/products/servers"
    )
    # Only the benchmark's zone is generalised: a call elsewhere shows as such.
    assert route("GET", "/instance/v1/zones/nl-ams-1/servers") == "GET /instance/v1/zones/nl-ams-1/servers"


def test_spread_is_median_p95_max_rounded() -> None:
    values = [float(v) for v in range(1, 21)]  # 1 .. 20
    assert spread(values) == {"median": 10.5, "p95": 19.05, "max": 20.0}
    # The p95 is the one the other benchmarks report (interpolated), not the nearest rank.
    assert spread(values)["p95"] == round(percentile(values, 95) or 0, 2)
    assert spread([0.123456]) == {"median": 0.12, "p95": 0.12, "max": 0.12}
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "p95": 2.9, "max": 3.0}  # order does not matter
    assert spread([]) == {}


def test_per_instance_calls_averages_each_route_and_the_total() -> None:
    calls = [
        ("POST", f"/instance/v1/zones/{ZONE}/servers"),
        ("POST", f"/instance/v1/zones/{ZONE}/servers"),
        ("GET", f"/instance/v1/zones/{ZONE}/servers/{SERVER}"),
        ("GET", f"/instance/v1/zones/{ZONE}/servers/{VOLUME}"),
        ("GET", f"/instance/v1/zones/{ZONE}/servers/{SERVER}"),
    ]
    table = per_instance_calls(calls, instances=2)
    assert table == {
        "GET /instance/v1/zones/{zone}/servers/{id}": 1.5,
        "POST /instance/v1/zones/{zone}/servers": 1.0,
        "total": 2.5,
    }
    # Most frequent first, the total last.
    assert list(table) == [
        "GET /instance/v1/zones/{zone}/servers/{id}",
        "POST /instance/v1/zones/{zone}/servers",
        "total",
    ]
    assert per_instance_calls([("GET", "/x")], instances=3) == {"GET /x": 0.33, "total": 0.33}
    assert per_instance_calls([], instances=5) == {"total": 0.0}


def test_duplicates_counts_instances_with_more_than_one_resource() -> None:
    mine = {"instance=a", "instance=b", "instance=c"}
    created = {
        "srv-1": ("inventiv", "instance=a"),
        "srv-2": ("inventiv", "instance=a"),  # a second server for a: a duplicate
        "srv-3": ("inventiv", "instance=b"),
        "srv-4": ("inventiv", "instance=z"),  # not an instance of this run, twice
        "srv-5": ("inventiv", "instance=z"),
        "srv-6": ("inventiv",),  # untagged (a root volume, say)
        "srv-7": ("instance=c", "instance=c"),  # one resource tagged twice still counts twice
    }
    assert duplicates(created, mine) == 2
    assert duplicates({"srv-1": ("instance=a",), "srv-2": ("instance=b",)}, mine) == 0
    assert duplicates({}, mine) == 0


@pytest.mark.slow
def test_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scheduler_bench", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m benchmarks.scheduler_bench")
    for option in ("--sizes", "--faulty", "--boot-s", "--json"):
        assert option in done.stdout
