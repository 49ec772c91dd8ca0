from __future__ import annotations

import dataclasses

import pytest

from benchmarks import soak
from benchmarks.loadgen import LoadResult
from benchmarks.soak import CLIENTS, OTHER, POSTGRES, REDIS, WORKERS, Sample, Totals

_MB = 1024


def _sample(at_s: float, rss_mb: float, fds: int, *, streams_open: int = soak.STREAMS) -> Sample:
    return Sample(
        at_s=at_s,
        rss_kb=int(rss_mb * _MB),
        fds=fds,
        fd_kinds={OTHER: fds},
        requests=1000,
        p99_ms=5.0,
        streams_done=200,
        streams_open=streams_open,
        problems=0,
    )


def _steady(*rss_fds: tuple[float, int]) -> list[Sample]:
    return [_sample(60.0 * (i + 1), rss, fds) for i, (rss, fds) in enumerate(rss_fds)]


def _totals(ok: int = 1000, streams: int = 200, rows: int = 1200) -> Totals:
    return Totals(requests=LoadResult(ok=ok), streams=LoadResult(ok=streams), usage_rows=rows)


def _verdicts(samples: list[Sample], totals: Totals | None = None) -> dict[str, bool]:
    return {j.name: j.passed for j in soak.judge(samples, 1, totals or _totals())}


def _failed(samples: list[Sample], totals: Totals | None = None) -> list[str]:
    return [name for name, passed in _verdicts(samples, totals).items() if not passed]


@pytest.mark.parametrize(("minutes", "interval"), [(0.5, 10.0), (3.0, 10.0), (4.99, 10.0), (5.0, 60.0), (10.0, 60.0)])
def test_runs_under_five_minutes_sample_every_ten_seconds(minutes: float, interval: float) -> None:
    assert soak.interval_s(minutes) == interval


def test_interval_p99_in_milliseconds_and_none_for_an_empty_interval() -> None:
    latencies = [0.001 * i for i in range(1, 101)]  # 1 ms .. 100 ms
    assert soak.interval_p99_ms(latencies) == pytest.approx(99.01)
    assert soak.interval_p99_ms([0.004]) == pytest.approx(4.0)
    assert soak.interval_p99_ms([]) is None


@pytest.mark.parametrize(("minutes", "warmup", "seconds"), [(1.0, 3, 30.0), (4.99, 3, 30.0), (5.0, 2, 120.0),
                                                            (10.0, 2, 120.0)])
def test_the_warm_up_is_two_minutes_or_30_s_of_a_run_that_does_not_judge_rss(
    minutes: float, warmup: int, seconds: float
) -> None:
    assert soak.warmup_intervals(minutes) == warmup
    assert warmup * soak.interval_s(minutes) == seconds
    assert soak.judges_rss(minutes) == (seconds == soak.WARMUP_S)


def test_rss_floor_is_the_lowest_sample_of_the_last_half_after_the_warm_up() -> None:
    # After the warm-up (80): 90, 95 | 82, 99: the last half's lowest is 82.
    samples = _steady((80, 500), (90, 500), (95, 500), (82, 500), (99, 500))
    assert soak.rss_floor(samples, 1) == 82 * _MB
    assert soak.rss_growth(samples, 1) == pytest.approx(0.025)
    # With two warm-up intervals: 95 | 82, 99.
    assert soak.rss_floor(samples, 2) == 82 * _MB
    assert soak.rss_growth(samples, 2) == pytest.approx(82 / 90 - 1)


def test_rss_the_allocator_gives_back_passes_and_a_steady_climb_fails() -> None:
    rss = "RSS growth after the warm-up < 5%"
    sawtooth = _steady((80, 500), (90, 500), (98, 500), (81, 500), (95, 500))
    climb = _steady((80, 500), (82, 500), (84, 500), (86, 500), (88, 500))
    assert rss not in _failed(sawtooth)
    assert _failed(climb) == [rss]
    judgement = next(j for j in soak.judge(climb, 1, _totals()) if j.name == rss)
    assert (
        judgement.measured == "80.0 MB at the warm-up's end, lowest of the last half 86.0 MB (+7.5%), highest 88.0 MB"
    )


def test_fd_growth_compares_the_floor_of_the_last_half_with_the_end_of_the_warm_up() -> None:
    samples = _steady((80, 500), (80, 510), (80, 470), (80, 505))
    assert soak.fd_growth(samples, 1) == -30
    assert soak.fd_growth(samples, 2) == -5
    assert soak.fd_swing(samples, 1) == (470, 510)
    assert soak.fd_swing(samples, 3) == (470, 505)


def test_a_steady_run_passes_every_judgement() -> None:
    samples = _steady((80, 500), (81, 510), (80.5, 495), (83.9, 505))
    verdicts = _verdicts(samples)
    assert verdicts and all(verdicts.values()), verdicts


def test_rss_growing_five_percent_after_the_warm_up_fails() -> None:
    assert _failed(_steady((80, 500), (82, 500), (84, 500))) == ["RSS growth after the warm-up < 5%"]
    assert _failed(_steady((80, 500), (90, 500), (83.9, 500))) == []


def test_fds_above_the_tolerance_all_through_the_last_half_fail_and_a_swing_does_not() -> None:
    name = f"open fds flat after the warm-up (at most {soak.FD_TOLERANCE} more)"
    over = 500 + soak.FD_TOLERANCE + 1
    grown = _steady((80, 500), (80, 500), (80, over), (80, over))
    assert _failed(grown) == [name]
    # A pool that opened 5 x the tolerance for one sample, then closed them: no leak.
    swing = _steady((80, 500), (80, 500), (80, 500 + 5 * soak.FD_TOLERANCE), (80, 500 + soak.FD_TOLERANCE))
    assert _failed(swing) == []
    # Fewer at the end (a pool that shrank after a busy warm-up) is no leak.
    assert _failed(_steady((80, 700), (80, 500))) == []
    judgement = next(j for j in soak.judge(grown, 1, _totals()) if j.name == name)
    assert judgement.measured == (
        f"500 at the warm-up's end, fewest of the last half {over} (+{soak.FD_TOLERANCE + 1}; 500-{over} in between)"
    )


def test_a_run_without_samples_after_the_warm_up_fails() -> None:
    judgements = soak.judge(_steady((80, 500)), 1, _totals())
    assert [(j.name, j.passed) for j in judgements] == [("samples after the warm-up", False)]


def test_fewer_streams_open_at_one_sample_fails() -> None:
    samples = _steady((80, 500), (80, 500))
    samples.append(_sample(180, 80, 500, streams_open=soak.STREAMS - 1))
    assert _failed(samples) == [f"{soak.STREAMS} streams open at every sample"]


@pytest.mark.parametrize(
    ("totals", "failing"),
    [
        (Totals(LoadResult(ok=1000, errors=1, first_error="TimeoutError"), LoadResult(ok=200), 1200), "zero errors"),
        (Totals(LoadResult(ok=1000), LoadResult(ok=200, non_2xx=1), 1200), "zero errors"),
        (Totals(LoadResult(ok=1000, mismatched=2), LoadResult(ok=200), 1200), "every answer identical to the worker's"),
        (Totals(LoadResult(ok=1000, skipped=11), LoadResult(ok=200), 1200),
         "at most 1% of the scheduled requests not sent"),
        (_totals(rows=1199), "a usage row for every completed request"),
    ],
)  # fmt: skip
def test_each_kind_of_problem_fails_its_own_judgement(totals: Totals, failing: str) -> None:
    assert _failed(_steady((80, 500), (80, 500)), totals) == [failing]


def test_fd_kinds_by_the_port_at_either_end() -> None:
    roles = {8080: CLIENTS, 9001: WORKERS, 6379: REDIS, 5432: POSTGRES}
    tcp = {
        1: (8080, 0),  # the gateway's listener
        2: (8080, 50000),  # a client's connection
        3: (40000, 9001),  # to a worker
        4: (40001, 6379),
        5: (40002, 5432),
        6: (40003, 443),  # a socket to something else
    }
    targets = [f"socket:[{inode}]" for inode in (1, 2, 2, 3, 4, 5, 6, 7)] + ["pipe:[99]", "/dev/null"]
    # inode 7 is not TCP (a unix socket): OTHER, as are the pipe and the file.
    assert soak.fd_kinds(targets, tcp, roles) == {CLIENTS: 3, WORKERS: 1, REDIS: 1, POSTGRES: 1, OTHER: 4}


def test_render_marks_the_warm_up_and_shows_no_p99_for_an_empty_interval() -> None:
    quiet = dataclasses.replace(_sample(20, 80, 500), p99_ms=None, requests=0)
    table = soak.render([_sample(10, 80, 500), quiet], 1).splitlines()
    assert table[2].startswith("| 10 s (warm-up) | 80.0 | 500 |")
    assert table[3].startswith("| 20 s | 80.0 | 500 |")
    assert "| 0 | — |" in table[3]


def test_a_few_unsent_requests_pass_and_more_than_one_percent_fail() -> None:
    name = "at most 1% of the scheduled requests not sent"
    few = Totals(LoadResult(ok=990, skipped=10), LoadResult(ok=200), 1190)
    assert _failed(_steady((80, 500), (80, 500)), few) == []
    judgement = next(j for j in soak.judge(_steady((80, 500), (80, 500)), 1, few) if j.name == name)
    assert judgement.measured == "10 of 1,000 not sent (1.00%)"


def test_a_short_run_reports_rss_growth_without_failing_on_it() -> None:
    climb = _steady((80, 500), (84, 500), (88, 500))
    rss = next(j for j in soak.judge(climb, 1, _totals(), rss=False) if j.name.startswith("RSS"))
    assert rss.passed
    assert rss.measured.endswith("; not judged under 5 minutes")
    assert not next(j for j in soak.judge(climb, 1, _totals()) if j.name.startswith("RSS")).passed
