"""Benchmark of the gateway against direct-to-worker, sglang-router, vllm-router and nginx, side by side in one run.

    python -m benchmarks.gateway_bench [--quick] [--peers sglang-router,vllm-router,nginx | --no-peer] [--reps N]
                                       [--interpreted] [--json PATH]

Starts its own Postgres database, Redis prefix, mock workers, nginx as a static upstream (on CPU 0),
the gateway (one process, `taskset -c 1`; compiled with mypyc as a production install builds it,
benchmarks/compiled.py, unless `--interpreted`) and the peers, the routers and nginx as a reverse proxy
(also on CPU 1), then runs (a) non-streaming max RPS, (a-static) the same against nginx's `return
200` of the same bytes, (b) latency at a fixed rate, (c) streaming throughput, (d) TTFT with paced
streams, (e) memory with 1,000 open streams; every answer is compared byte for byte with the
worker's. Prints a markdown table, the issue's targets, each met or not, and the issue's table of
the gateway beside each peer. A peer that cannot be installed, or nginx when missing, is skipped
with the reason. See benchmarks/RESULTS.md for a recorded run and how to read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

from benchmarks import compiled, peer, report, scenarios, static_upstream
from benchmarks.processes import ProcessFailed
from benchmarks.stack import LOAD_CPU, PROXY_CPU, running_stack, worker_specs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repetition: a smoke run of ~2 minutes")
    parser.add_argument("--peers", default=",".join(peer.PEERS),
                        help="comma-separated peers to run beside the gateway (default and choices: %(default)s)")
    parser.add_argument("--no-peer", action="store_true", help="skip every peer (no ratios then)")
    parser.add_argument("--reps", type=int, help="repetitions of (a)-(d) (default 3, or 1 with --quick)")
    parser.add_argument("--interpreted", action="store_true",
                        help="run the gateway as plain Python, not compiled with mypyc (setup.py's INVENTIV_MYPYC=1)")
    parser.add_argument("--json", type=Path, help="also write the figures and checks as JSON to this file")
    return parser


def pin_to_load_cpu() -> None:
    cpus = os.sched_getaffinity(0)
    if not {LOAD_CPU, PROXY_CPU} <= cpus:
        raise SystemExit(f"the benchmark needs CPUs {LOAD_CPU} and {PROXY_CPU}; this process may use {sorted(cpus)}")
    # The orchestrator and load driver share CPU 0 with the workers; CPU 1 is the proxies' alone.
    os.sched_setaffinity(0, {LOAD_CPU})


def _peer_binaries(names: str, no_peer: bool) -> dict[peer.Peer, Path]:
    if no_peer:
        print("peers: skipped (--no-peer); no ratios will be computed", file=sys.stderr)
        return {}
    return peer.available(names)


def _nginx() -> Path | None:
    found = static_upstream.find_nginx()
    if found is None:
        print(f"(a-static): skipped, {static_upstream.NGINX_MISSING}", file=sys.stderr)
    return found


async def _run(plan: scenarios.Plan, peers: dict[peer.Peer, Path], nginx: Path | None,
               run_dir: Path, compiled_dir: Path | None) -> scenarios.Results:  # fmt: skip
    results = scenarios.Results(plan)
    specs = worker_specs(plan.d_delay_ms, plan.e_delay_ms)
    started = time.monotonic()
    async with running_stack(run_dir, specs, peers, nginx, compiled_dir) as stack:
        print(f"stack up in {time.monotonic() - started:.0f} s; logs in {run_dir}", file=sys.stderr, flush=True)
        steps = [
            ("warm-up", scenarios.warm_up), ("integrity checks", scenarios.check_bodies),
            ("(a) non-streaming max RPS", scenarios.run_a),
            ("(a-static) non-streaming max RPS, static upstream", scenarios.run_a_static),
            ("(b) latency at a fixed rate", scenarios.run_b),
            ("(c) streaming throughput", scenarios.run_c), ("(d) TTFT, paced streams", scenarios.run_d),
            ("(e) memory, streams held open", scenarios.run_e),
        ]  # fmt: skip
        for title, step in steps:
            print(f"== {title} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            await step(stack, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = scenarios.QUICK if args.quick else scenarios.FULL
    if args.reps is not None:
        if args.reps < 1:
            raise SystemExit("--reps must be at least 1")
        plan = dataclasses.replace(plan, reps=args.reps)
    pin_to_load_cpu()
    peers = _peer_binaries(args.peers, args.no_peer)
    nginx = _nginx()
    run_dir = Path(tempfile.mkdtemp(prefix="inventiv-bench-"))
    compiled_dir = compiled.for_run(args.interpreted)
    began = time.monotonic()
    # Other work on this machine shows here first: compare it between runs before their figures.
    load_before = os.getloadavg()
    try:
        results = uvloop.run(_run(plan, peers, nginx, run_dir, compiled_dir))
    except ProcessFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    figures = report.figures(results)
    checks = report.checks({f.key: f for f in figures}, plan.e_streams)
    elapsed = time.monotonic() - began
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_after = os.getloadavg()
    print(f"\n{stamp}, {elapsed:.0f} s, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"plan {plan}")
    print(f"gateway: {compiled.describe(compiled_dir)}\n")
    print(report.render(figures, checks))
    for name, problem in report.first_problems(results).items():
        print(f"\nfirst problem through {name}: {problem}")
    print(f"\n{report.issue_table(figures, plan)}")
    if args.json is not None:
        payload = {
            "date": stamp,
            "elapsed_s": round(elapsed),
            "load_average": [load_before[0], load_after[0]],
            "plan": dataclasses.asdict(plan),
            "gateway_compiled": compiled_dir is not None,
            "figures": [dataclasses.asdict(f) for f in figures],
            "checks": [dataclasses.asdict(c) for c in checks],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
