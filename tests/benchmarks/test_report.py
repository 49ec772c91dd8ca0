from __future__ import annotations

import pytest

from benchmarks import report
from benchmarks.loadgen import LoadResult
from benchmarks.scenarios import QUICK, Held, Measured, Results
from benchmarks.stack import DIRECT, GATEWAY, PEER


def _run(cpu_s: float | None, reached: int = 0, streams: int = 0, latencies: list[float] | None = None,
         ok: int = 0, errors: int = 0) -> Measured:  # fmt: skip
    load = LoadResult(ok=ok, errors=errors, latencies_s=latencies or [], wall_s=2.0)
    return Measured(load, 2.0, cpu_s, None, reached, streams, {"cpu0": 1.0, "cpu1": 3.0}, 5.0)


@pytest.mark.parametrize(
    ("cpu_s", "reached", "expected"),
    [(1.0, 4000, 0.25), (0.5, 1000, 0.5), (None, 1000, None), (1.0, 0, None)],
)
def test_cpu_ms_per_request(cpu_s: float | None, reached: int, expected: float | None) -> None:
    assert report.cpu_ms_per_request(_run(cpu_s, reached=reached)) == expected


@pytest.mark.parametrize(
    ("cpu_s", "streams", "chunks", "expected"),
    # 100 streams of 100 chunks = 10,000 chunks; 0.1 s of CPU = 10 ms per 1,000 chunks
    [(0.1, 100, 100, 10.0), (0.1, 0, 100, None), (None, 100, 100, None)],
)
def test_cpu_ms_per_1k_chunks(cpu_s: float | None, streams: int, chunks: int, expected: float | None) -> None:
    got = report.cpu_ms_per_1k_chunks(_run(cpu_s, streams=streams), chunks)
    assert got == (None if expected is None else pytest.approx(expected))


def _results(gateway_cpu_s: float, peer: bool = True) -> Results:
    results = Results(QUICK)
    for name, cpu_s in ((DIRECT, None), (GATEWAY, gateway_cpu_s), (PEER, 0.2)):
        if name == PEER and not peer:
            continue
        results.add("a", name, _run(cpu_s, reached=1000, ok=1000))
        results.add("b", name, _run(cpu_s, reached=100, ok=100, latencies=[0.001] * 99 + [0.004]))
    results.held[GATEWAY] = Held(LoadResult(ok=1000), hwm_kb=150 * 1024, rss_kb=120 * 1024, open_streams=1000)
    return results


def _checks(results: Results) -> dict[str, report.Check]:
    table = {f.key: f for f in report.figures(results)}
    return {c.target.split(" <=")[0]: c for c in report.checks(table, e_streams=1000)}


def test_targets_met_or_not_from_the_same_run() -> None:
    checks = _checks(_results(gateway_cpu_s=0.3))
    assert checks["gateway CPU per non-streaming request"].met is True  # 0.3 / 0.2 = 1.5x
    assert checks["gateway CPU per non-streaming request"].measured == "0.300 vs 0.200 ms = 1.50x"
    assert checks["added latency p50 at 200 req/s"].met is True  # same latencies as direct
    assert checks["gateway peak RSS"].met is True
    assert checks["zero errors through the gateway"].met is True
    assert checks["every answer byte-identical to direct"].met is True
    # (c) and (d) did not run: never reported as met
    assert checks["gateway CPU per 1,000 streamed chunks"].met is None
    assert checks["TTFT p99 with paced streams"].met is None

    assert _checks(_results(gateway_cpu_s=0.5))["gateway CPU per non-streaming request"].met is False  # 2.5x


def test_without_the_peer_ratios_are_not_measured() -> None:
    checks = _checks(_results(gateway_cpu_s=0.3, peer=False))
    assert checks["gateway CPU per non-streaming request"].met is None
    assert checks["gateway CPU per non-streaming request"].measured == "not measured"


def test_errors_and_differences_fail_their_targets() -> None:
    results = _results(gateway_cpu_s=0.3)
    results.add("a", GATEWAY, _run(0.3, reached=1000, ok=999, errors=1))
    results.checked[GATEWAY] = LoadResult(ok=10, mismatched=2, first_mismatch="byte 3")
    checks = _checks(results)
    assert checks["zero errors through the gateway"].met is False
    assert checks["every answer byte-identical to direct"].measured.startswith("2 of ")
    assert report.first_problems(results)[GATEWAY] == "byte 3"


def test_render_shows_every_target_and_the_ratio_column() -> None:
    results = _results(gateway_cpu_s=0.3)
    figures = report.figures(results)
    table = report.render(figures, report.checks({f.key: f for f in figures}, 1000))
    assert "| (a) proxy CPU ms per request | — | 0.300 | 0.200 | 1.50x |" in table
    assert "| gateway CPU per non-streaming request <= 2x sglang-router's | 0.300 vs 0.200 ms = 1.50x | met |" in table
    assert "not measured" in table
