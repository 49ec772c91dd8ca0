"""From measured runs to figures, from figures to the issue's targets, and both to a markdown table.

Each figure is the median over the repetitions of one run's value. The targets are ratios to a peer
router or differences to direct measured in the same run, as the issue states them; a target whose
inputs were not measured (no peer, no nginx) reads "not measured", never "met". The CPU target is
judged on the gateway with every feature on as a plain client uses it: access log written, no session
header; in (a) against the mock worker and in (a-static) against nginx. The issue table at the end puts
the gateway so run beside each peer in the issue's own columns, nginx as a proxy the floor among them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from benchmarks.loadgen import LoadResult
from benchmarks.peer import NGINX_PROXY, SGLANG_ROUTER, VLLM_ROUTER
from benchmarks.scenarios import Measured, Plan, Results
from benchmarks.stack import DIRECT, GATEWAY
from benchmarks.stats import median, percentile

SGLANG, VLLM, NGINX = SGLANG_ROUTER.name, VLLM_ROUTER.name, NGINX_PROXY.name
TARGETS = (DIRECT, GATEWAY, SGLANG, VLLM, NGINX)
# The peers of the ratio columns, gateway / peer, in this order.
RATIO_PEERS = (VLLM, SGLANG)
# What the issue's targets allow.
CPU_PER_REQUEST_LIMIT = 1.3
CPU_PER_1K_CHUNKS_LIMIT = 1.2
ADDED_P50_LIMIT_MS = 0.2
ADDED_P99_LIMIT_MS = 1.0
TTFT_P99_LIMIT_MS = 5.0
_MB = 1024.0


def cpu_ms_per_request(run: Measured) -> float | None:
    if run.proxy_cpu_s is None or run.reached_worker <= 0:
        return None
    return 1000.0 * run.proxy_cpu_s / run.reached_worker


def wait_ms_per_1k_requests(run: Measured) -> float | None:
    """How long the proxy waited for a CPU while runnable, per 1,000 requests that reached the worker."""
    if run.proxy_wait_s is None or run.reached_worker <= 0:
        return None
    return 1e6 * run.proxy_wait_s / run.reached_worker


def cpu_ms_per_1k_chunks(run: Measured, chunks_per_stream: int) -> float | None:
    chunks = run.streams * chunks_per_stream
    if run.proxy_cpu_s is None or chunks <= 0:
        return None
    return 1000.0 * run.proxy_cpu_s / (chunks / 1000.0)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


def _rate(count: int, wall_s: float) -> float | None:
    return count / wall_s if wall_s > 0 else None


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    values: dict[str, float | None]
    # Decimals shown.
    digits: int = 2
    # Whether gateway / peer ratios mean something for this figure.
    ratio: bool = False
    # The figure whose peer values the ratios divide by, when not this one: a gateway variant (no
    # session header, access log on) is run by the gateway alone and compared with the peers' run.
    peers_from: str | None = None


def _per_run(results: Results, scenario: str, label: str, key: str, value: Callable[[Measured], float | None],
             digits: int = 2, ratio: bool = False, peers_from: str | None = None) -> Figure:  # fmt: skip
    runs = results.runs.get(scenario, {})
    values = {name: median(value(run) for run in runs[name]) if name in runs else None for name in TARGETS}
    return Figure(key, label, values, digits, ratio, peers_from)


def _non_streaming(results: Results, scenario: str, title: str) -> list[Figure]:
    """A non-streaming scenario's throughput and CPU per request, the gateway's variants beside."""
    base = f"{scenario}_cpu_ms"
    return [
        _per_run(results, scenario, f"{title} non-streaming req/s, {results.plan.concurrency} connections",
                 f"{scenario}_rps", lambda r: _rate(r.load.ok, r.load.wall_s), 0),
        _per_run(results, scenario, f"{title} proxy CPU ms per request", base, cpu_ms_per_request, 3, ratio=True),
        *(_per_run(results, f"{scenario}_{variant}", f"{title} proxy CPU ms per request, {label}", f"{base}_{variant}",
                   cpu_ms_per_request, 3, ratio=True, peers_from=base)
          for variant, label in (("no_session", "no session header"), ("access_log", "access log on"),
                                 ("access_log_no_session", "access log on, no session header"))),
    ]  # fmt: skip


def _loads(results: Results, target: str) -> Iterable[LoadResult]:
    for runs in results.runs.values():
        yield from (run.load for run in runs.get(target, []))
    if target in results.checked:
        yield results.checked[target]
    if target in results.held:
        yield results.held[target].load


def _totals(results: Results) -> list[Figure]:
    errors: dict[str, float | None] = dict.fromkeys(TARGETS)
    mismatched: dict[str, float | None] = dict.fromkeys(TARGETS)
    checked: dict[str, float | None] = dict.fromkeys(TARGETS)
    for name in TARGETS:
        loads = list(_loads(results, name))
        if not loads:
            continue
        errors[name] = float(sum(x.errors + x.non_2xx for x in loads) + results.warmup_errors.get(name, 0))
        mismatched[name] = float(sum(x.mismatched for x in loads))
        checked[name] = float(sum(x.ok for x in loads))
    return [
        Figure("errors", "errors + non-2xx answers (all runs)", errors, 0),
        Figure("checked", "answers compared byte for byte with the worker's", checked, 0),
        Figure("mismatched", "answers that differed", mismatched, 0),
    ]


def first_problems(results: Results) -> dict[str, str]:
    """Per target, the first error or differing answer seen, for a person to act on."""
    found = {}
    for name in TARGETS:
        for load in _loads(results, name):
            problem = load.first_error or load.first_mismatch
            if problem:
                found[name] = problem
                break
    return found


def _held(results: Results, label: str, key: str, value: Callable[[int, int, int], float], digits: int) -> Figure:
    values: dict[str, float | None] = dict.fromkeys(TARGETS)
    for name, held in results.held.items():
        values[name] = value(held.hwm_kb, held.rss_kb, held.open_streams)
    return Figure(key, label, values, digits, ratio=True)


def figures(results: Results) -> list[Figure]:
    plan = results.plan
    chunks = plan.chunks
    return [
        *_non_streaming(results, "a", "(a)"),
        *_non_streaming(results, "a_static", "(a-static)"),
        _per_run(results, "b", f"(b) latency p50 ms at {plan.rate:.0f} req/s", "b_p50",
                 lambda r: _ms(percentile(r.load.latencies_s, 50))),
        _per_run(results, "b", f"(b) latency p99 ms at {plan.rate:.0f} req/s", "b_p99",
                 lambda r: _ms(percentile(r.load.latencies_s, 99))),
        _per_run(results, "b", f"(b) proxy CPU ms per request at {plan.rate:.0f} req/s", "b_cpu_ms",
                 cpu_ms_per_request, 3, ratio=True),
        _per_run(results, "b", "(b) ms the proxy waited for a CPU, per 1,000 requests", "b_wait_ms_1k",
                 wait_ms_per_1k_requests, 1),
        _per_run(results, "c", f"(c) streamed chunks/s ({chunks} per stream)", "c_chunks_s",
                 lambda r: _rate(r.load.ok * chunks, r.load.wall_s), 0),
        _per_run(results, "c", "(c) proxy CPU ms per 1,000 chunks", "c_cpu_ms_1k",
                 lambda r: cpu_ms_per_1k_chunks(r, chunks), 2, ratio=True),
        _per_run(results, "d", f"(d) TTFT p50 ms, {plan.d_streams} streams at {plan.d_delay_ms:.0f} ms/chunk",
                 "d_ttft_p50", lambda r: _ms(percentile(r.load.ttfb_s, 50))),
        _per_run(results, "d", "(d) TTFT p99 ms", "d_ttft_p99", lambda r: _ms(percentile(r.load.ttfb_s, 99))),
        _per_run(results, "d", "(d) proxy CPU % of one core", "d_cpu_pct", lambda r: r.proxy_cpu_pct, 0, ratio=True),
        _held(results, f"(e) streams open when sampled (of {plan.e_streams})", "e_open", lambda h, r, n: n, 0),
        _held(results, "(e) VmRSS MB with those streams open", "e_rss_mb", lambda h, r, n: r / _MB, 0),
        _held(results, "(e) VmHWM MB (peak over the whole run)", "e_hwm_mb", lambda h, r, n: h / _MB, 0),
        *_totals(results),
        _per_run(results, "a", "steal % CPU 0 during (a)", "steal_cpu0", lambda r: r.steal_pct.get("cpu0"), 0),
        _per_run(results, "a", "steal % CPU 1 during (a)", "steal_cpu1", lambda r: r.steal_pct.get("cpu1"), 0),
        _per_run(results, "a", "CPU 1 busy % not the proxy under test, (a)", "cpu1_other",
                 lambda r: r.cpu1_other_pct, 0),
        _per_run(results, "a_static", "steal % CPU 1 during (a-static)", "steal_cpu1_static",
                 lambda r: r.steal_pct.get("cpu1"), 0),
    ]  # fmt: skip


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    # None: not measured (no peer, or the scenario did not run).
    met: bool | None


def _value(table: dict[str, Figure], key: str, target: str) -> float | None:
    figure = table.get(key)
    return None if figure is None else figure.values.get(target)


def _ratio_check(table: dict[str, Figure], key: str, peer: str, limit: float, what: str, unit: str) -> Check:
    """gateway / peer for one figure, the peer's value from the figure it is compared with."""
    figure = table.get(key)
    peers_from = figure.peers_from if figure is not None and figure.peers_from else key
    gateway, theirs = _value(table, key, GATEWAY), _value(table, peers_from, peer)
    target = f"{what} <= {limit:g}x {peer}'s"
    if gateway is None or theirs is None or theirs <= 0:
        return Check(target, "not measured", None)
    ratio = gateway / theirs
    return Check(target, f"{gateway:.3f} vs {theirs:.3f} {unit} = {ratio:.2f}x", ratio <= limit)


def _added_check(table: dict[str, Figure], key: str, limit_ms: float, what: str) -> Check:
    gateway, direct = _value(table, key, GATEWAY), _value(table, key, DIRECT)
    target = f"{what} <= {limit_ms:g} ms over direct"
    if gateway is None or direct is None:
        return Check(target, "not measured", None)
    added = gateway - direct
    return Check(target, f"{gateway:.2f} - {direct:.2f} = {added:+.2f} ms", added <= limit_ms)


def checks(table: dict[str, Figure], e_streams: int, rss_limit_mb: float = 200.0) -> list[Check]:
    every_feature = "gateway CPU per non-streaming request with the access log on and no session header"
    found = [
        _ratio_check(table, "a_cpu_ms_access_log_no_session", VLLM, CPU_PER_REQUEST_LIMIT, f"(a) {every_feature}",
                     "ms"),
        _ratio_check(table, "a_static_cpu_ms_access_log_no_session", VLLM, CPU_PER_REQUEST_LIMIT,
                     f"(a-static) {every_feature}", "ms"),
        _ratio_check(table, "c_cpu_ms_1k", SGLANG, CPU_PER_1K_CHUNKS_LIMIT, "gateway CPU per 1,000 streamed chunks",
                     "ms"),
        _added_check(table, "b_p50", ADDED_P50_LIMIT_MS, "added latency p50 at 200 req/s"),
        _added_check(table, "b_p99", ADDED_P99_LIMIT_MS, "added latency p99 at 200 req/s"),
        _added_check(table, "d_ttft_p99", TTFT_P99_LIMIT_MS, "TTFT p99 with paced streams"),
    ]  # fmt: skip
    hwm, open_streams = _value(table, "e_hwm_mb", GATEWAY), _value(table, "e_open", GATEWAY)
    rss_target = f"gateway peak RSS <= {rss_limit_mb:g} MB with {e_streams} streams open"
    if hwm is None or open_streams is None:
        found.append(Check(rss_target, "not measured", None))
    else:
        found.append(Check(rss_target, f"{hwm:.0f} MB, {open_streams:.0f} streams open",
                           hwm <= rss_limit_mb and open_streams >= e_streams))  # fmt: skip
    errors, checked, mismatched = (_value(table, k, GATEWAY) for k in ("errors", "checked", "mismatched"))
    found.append(Check("zero errors through the gateway", "not measured" if errors is None else f"{errors:.0f}",
                       None if errors is None else errors == 0))  # fmt: skip
    if checked is None or mismatched is None or checked == 0:
        found.append(Check("every answer byte-identical to direct", "not measured", None))
    else:
        found.append(Check("every answer byte-identical to direct", f"{mismatched:.0f} of {checked:.0f} differ",
                           mismatched == 0))  # fmt: skip
    return found


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratios(figure: Figure, table: dict[str, Figure]) -> list[str]:
    gateway = figure.values.get(GATEWAY)
    source = table.get(figure.peers_from, figure) if figure.peers_from else figure
    cells = []
    for peer in RATIO_PEERS:
        theirs = source.values.get(peer)
        cells.append(f"{gateway / theirs:.2f}x" if figure.ratio and gateway is not None and theirs else "")
    return cells


def render(figure_list: list[Figure], check_list: list[Check]) -> str:
    table = {f.key: f for f in figure_list}
    lines = [
        f"| figure | {' | '.join(TARGETS)} | {' | '.join(f'gateway / {peer}' for peer in RATIO_PEERS)} |",
        "|---|" + "---:|" * (len(TARGETS) + len(RATIO_PEERS)),
    ]
    for figure in figure_list:
        cells = [_cell(figure.values.get(name), figure.digits) for name in TARGETS]
        lines.append(f"| {figure.label} | {' | '.join(cells + _ratios(figure, table))} |")
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    for check in check_list:
        result = {True: "met", False: "**not met**", None: "not measured"}[check.met]
        lines.append(f"| {check.target} | {check.measured} | {result} |")
    return "\n".join(lines)


# The issue table's rows: (label, target, the gateway variant whose (a) and (a-static) CPU it shows).
_ISSUE_ROWS = (
    ("Inventiv gateway (access log on, no session header)", GATEWAY, "_access_log_no_session"),
    (VLLM, VLLM, ""),
    (SGLANG, SGLANG, ""),
    (NGINX, NGINX, ""),
)


def _added(table: dict[str, Figure], key: str, target: str) -> float | None:
    mine, direct = _value(table, key, target), _value(table, key, DIRECT)
    return None if mine is None or direct is None else mine - direct


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def issue_table(figure_list: list[Figure], plan: Plan) -> str:
    """The issue's table: per proxy, CPU per non-streaming request ((a), and (a-static)), latency added
    over direct at the fixed rate ((b)), CPU per 1,000 streamed chunks and streams/s ((c))."""
    table = {f.key: f for f in figure_list}
    lines = [
        f"| | CPU ms per non-streaming request (a) | the same, static upstream (a-static) | added latency p50 / "
        f"p99 ms at {plan.rate:.0f} req/s (b) | CPU ms per 1,000 streamed chunks (c) | streams/s of {plan.chunks} "
        "chunks (c) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, target, variant in _ISSUE_ROWS:
        chunks_s = _value(table, "c_chunks_s", target)
        cells = [
            _cell(_value(table, f"a_cpu_ms{variant}", target), 3),
            _cell(_value(table, f"a_static_cpu_ms{variant}", target), 3),
            f"{_signed(_added(table, 'b_p50', target))} / {_signed(_added(table, 'b_p99', target))}",
            _cell(_value(table, "c_cpu_ms_1k", target), 2),
            _cell(None if chunks_s is None else chunks_s / plan.chunks, 0),
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines.append("")
    lines.append("The gateway's latency and streaming cells are the plain gateway's of (b) and (c): session "
                 "header sent, access log off.")
    return "\n".join(lines)
