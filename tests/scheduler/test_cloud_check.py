"""The cloud check's lines: what each finding says, and what they add up to."""

from __future__ import annotations

import pytest

from providers.base import AuthError, Availability
from scheduler.cloud_check import (
    Credentials,
    Level,
    Line,
    Tagged,
    count,
    credentials_failed,
    credentials_ok,
    exit_status,
    not_configured,
    render,
    stock_lines,
    tagged_line,
)

SCW = Credentials("SCW_SECRET_KEY", "SCW_DEFAULT_PROJECT_ID", "105bdce1-64c0-48ab-899d-868455867ecf")


def test_render_aligns_the_columns_for_a_glance() -> None:
    lines = [
        Line(Level.OK, "scaleway", "-", "credentials valid"),
        Line(Level.FAIL, "scaleway", "nl-ams-1", "H100-1-80G: out of stock (shortage)"),
        Line(Level.SKIP, "mock", "-", "not configured"),
    ]
    assert render(lines).splitlines() == [
        "ok   scaleway -         credentials valid",
        "FAIL scaleway nl-ams-1  H100-1-80G: out of stock (shortage)",
        "skip mock     -         not configured",
    ]


@pytest.mark.parametrize(
    ("levels", "status"),
    [([], 0), ([Level.OK, Level.WARN, Level.SKIP], 0), ([Level.OK, Level.FAIL], 1)],
)
def test_only_a_failure_fails(levels: list[Level], status: int) -> None:
    assert exit_status([Line(level, "p", "-", "m") for level in levels]) == status


@pytest.mark.parametrize(
    ("live", "level", "tail"),
    [(0, Level.SKIP, "no live instance uses it"), (1, Level.FAIL, "1 live instance uses it"),
     (3, Level.FAIL, "3 live instances use it")],
)  # fmt: skip
def test_an_unconfigured_provider_fails_only_when_instances_use_it(live: int, level: Level, tail: str) -> None:
    line = not_configured("scaleway", "the scaleway provider needs SCW_SECRET_KEY", live)
    assert (line.level, line.zone) == (level, "-")
    assert line.message == f"not configured: the scaleway provider needs SCW_SECRET_KEY; {tail}"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "credentials rejected (401): check SCW_SECRET_KEY"),
        (403, "access denied (403) to project 105bdce1...: check SCW_DEFAULT_PROJECT_ID and SCW_SECRET_KEY's rights"),
        (None, "authentication failed (no status): check SCW_SECRET_KEY and SCW_DEFAULT_PROJECT_ID"),
    ],
)
def test_refused_credentials_name_the_setting(status: int | None, message: str) -> None:
    line = credentials_failed("scaleway", SCW, AuthError("Scaleway GET ...: 401 denied_authentication", status=status))
    assert (line.level, line.message) == (Level.FAIL, message)


def test_working_credentials_name_the_project() -> None:
    assert credentials_ok("scaleway", SCW).message == "credentials valid (project 105bdce1... reachable)"
    assert credentials_ok("mock", None, "state folder /x readable").message == "state folder /x readable"


@pytest.mark.parametrize(
    ("tagged", "level", "message"),
    [
        (Tagged(0, 0, 0, 0), Level.OK, "0 servers and 0 volumes tagged inventiv, all of live instances"),
        (Tagged(1, 2, 0, 0), Level.OK, "1 server and 2 volumes tagged inventiv, all of live instances"),
        (Tagged(2, 3, 1, 1), Level.WARN, "2 servers and 3 volumes tagged inventiv; 1 server and 1 volume belong to "
                                         "no live instance (the orphan sweep deletes them after "
                                         "INVENTIV_ORPHAN_GRACE_S)"),
    ],
)  # fmt: skip
def test_tagged_resources_and_orphans(tagged: Tagged, level: Level, message: str) -> None:
    line = tagged_line("scaleway", "fr-par-2", "inventiv", tagged)
    assert (line.level, line.zone, line.message) == (level, "fr-par-2", message)


def test_stock_one_ok_line_then_one_per_type_short_of_it() -> None:
    stock = {"A": Availability.AVAILABLE, "B": Availability.SCARCE, "C": Availability.SHORTAGE,
             "D": Availability.UNKNOWN, "E": Availability.AVAILABLE, "unoffered": Availability.SHORTAGE}  # fmt: skip
    lines = stock_lines("scaleway", "fr-par-2", ["A", "B", "C", "D", "E", "F"], stock)
    assert [(line.level, line.message) for line in lines] == [
        (Level.OK, "in stock: A, E"),
        (Level.WARN, "B: stock is scarce"),
        (Level.FAIL, "C: out of stock (shortage)"),
        (Level.WARN, "D: the provider reports no stock for this type"),
        (Level.WARN, "F: the provider reports no stock for this type"),
    ]
    assert stock_lines("scaleway", "fr-par-2", [], stock) == []


def test_count_says_one_or_the_plural() -> None:
    assert [count(n, "volume") for n in (0, 1, 2)] == ["0 volumes", "1 volume", "2 volumes"]
    assert [count(n, "mismatch", "es") for n in (1, 3)] == ["1 mismatch", "3 mismatches"]
