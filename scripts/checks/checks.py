"""The stack checks, one function each; `scripts/checks/<name>` runs one, `run-all` deploys and runs them all.

Each prints what it does, one PASS or FAIL line per assertion and a verdict, and exits 0 (all passed) or 1.
See checklib.py for the environment (API_BASE_URL, API_KEY, MODEL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from checklib import (
    READY_TIMEOUT_S,
    TERMINATED_TIMEOUT_S,
    Api,
    CheckError,
    Config,
    Report,
    Response,
    chat_body,
    deploy,
    deploy_pair,
    failure_text,
    mock_placement,
    new_session_id,
    on_signal,
    ready_instances,
    require_served,
    resolve_model,
    run_check,
    say,
    short,
    teardown,
    terminate,
    wait_for,
    wait_status,
)

HERE = Path(__file__).resolve().parent

_ENV_HELP = """environment:
  API_BASE_URL   the gateway (default http://127.0.0.1:8003)
  API_KEY        an admin key (or OPENAI_API_KEY)
  MODEL          the model to chat with (default demo/qwen-small)
"""


# -- chat-session -----------------------------------------------------------------------------------


def chat_session(report: Report, api: Api, args: argparse.Namespace) -> None:
    require_served(api, report)
    session = new_session_id("check-chat")
    report.step(
        f"{args.requests} chat requests (one streamed, one with X-Session-Id) with X-Inventiv-Session: {session}"
    )
    seen: list[str | None] = []
    statuses: list[int] = []
    for i in range(args.requests):
        if i == 1:
            stream = api.stream(
                "/v1/chat/completions",
                chat_body(api.config.model, f"turn {i} of {session}"),
                headers={"X-Inventiv-Session": session},
            )
            statuses.append(stream.status if stream.done else -1)
            seen.append(stream.instance)
            continue
        header = "X-Session-Id" if i == 2 else "X-Inventiv-Session"
        resp = api.chat(f"turn {i} of {session}", session=session, session_header=header)
        statuses.append(resp.status)
        seen.append(resp.instance)
    report.check(
        all(s == 200 for s in statuses),
        f"all {len(statuses)} requests answered 200 (stream read to [DONE])",
        f"statuses {statuses}",
    )
    report.check(None not in seen, "every answer names its instance in X-Inventiv-Instance", f"{seen}")
    instances = set(seen)
    report.check(
        len(instances) == 1,
        f"all {len(seen)} answered by one instance ({short(seen[0])})",
        f"answered by {sorted(short(i) for i in instances)}",
    )

    report.step(f"{args.other_sessions} other sessions, 2 requests each")
    landed: Counter[str | None] = Counter()
    sticky = 0
    for _ in range(args.other_sessions):
        other = new_session_id("check-chat")
        first, second = (api.chat(f"hello from {other}", session=other) for _ in range(2))
        if first.status == second.status == 200 and first.instance == second.instance:
            sticky += 1
        landed[first.instance] += 1
    report.check(
        sticky == args.other_sessions,
        f"each of {args.other_sessions} other sessions kept its instance",
        f"only {sticky} did",
    )
    spread = ", ".join(f"{short(i)}: {n}" for i, n in landed.most_common())
    ready = len(ready_instances(api, resolve_model(api, api.config.model)["id"]))
    report.info(f"the other sessions landed on {len(landed)} instance(s) of {ready} ready ({spread})")


# -- load-balancing ---------------------------------------------------------------------------------


def _two_ready(report: Report, api: Api, check: str) -> tuple[dict[str, Any], set[str]]:
    """The configured model and its ready instances, of which `check` needs two (or fails here)."""
    require_served(api, report)
    model = resolve_model(api, api.config.model)
    ready = {i["id"] for i in ready_instances(api, model["id"])}
    if not report.check(len(ready) >= 2, f"{len(ready)} ready instances of {model['hf_repo_id']} (2 or more needed)"):
        raise CheckError(f"{check} needs two ready instances of the model (run-all deploys them)")
    return model, ready


def load_balancing(report: Report, api: Api, args: argparse.Namespace) -> None:
    _, ready = _two_ready(report, api, "load-balancing")
    n = args.requests
    report.step(f"{n} chat requests without a session, {args.concurrency} at a time")

    def one(i: int) -> Response:
        return api.chat(f"balance me {i}", max_tokens=1)

    with ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(pool.map(one, range(n)))
    bad = [a.status for a in answers if a.status != 200]
    report.check(not bad, f"all {n} requests answered 200", f"{len(bad)} were not: {Counter(bad)}")
    counts = Counter(a.instance for a in answers if a.status == 200)
    spread = ", ".join(f"{short(i)}: {counts.get(i, 0)}" for i in sorted(ready))
    report.info(f"spread over the ready instances: {spread}")
    strangers = set(counts) - ready
    report.check(not strangers, "every answer came from a ready instance", f"also from {sorted(map(short, strangers))}")
    fair = n / len(ready)
    floor = int(fair * args.min_share)
    starved = [short(i) for i in ready if counts.get(i, 0) < floor]
    report.check(
        not starved,
        f"each ready instance got a fair share (at least {floor} of {n}, {args.min_share:.0%} of {fair:.0f})",
        f"starved: {starved}",
    )


# -- token-tracking ---------------------------------------------------------------------------------

# (label, route, body, expected prompt/completion tokens). The mock worker counts one prompt token per
# word of the messages' contents (or the prompt) and answers exactly max_tokens completion tokens.
_TOKEN_REQUESTS: list[tuple[str, str, dict[str, Any], int, int]] = [
    (
        "chat",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "one two three four five"}], "max_tokens": 7},
        5,
        7,
    ),
    (
        "chat, streamed with usage",
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "six seven eight"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        3,
        4,
    ),
    (
        "chat, streamed without usage",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "nine ten"}], "max_tokens": 6, "stream": True},
        2,
        6,
    ),
    ("completion", "/v1/completions", {"prompt": "a b c d", "max_tokens": 3}, 4, 3),
]
_SUMS = ("requests", "successful_requests", "prompt_tokens", "completion_tokens", "total_tokens")


def _usage(api: Api, since: str | None) -> dict[str, Any]:
    query = {"model": api.config.model, "from": since}
    body: dict[str, Any] = api.get_json("/usage", query)
    return body


def token_tracking(report: Report, api: Api, args: argparse.Namespace) -> None:
    require_served(api, report)
    # The window starts at the gateway's `now` (the `to` of a first report, to the microsecond): earlier
    # requests, whose records may still be on their way to the database, stay out of it.
    since = str(_usage(api, None)["to"])
    before = {k: int(_usage(api, since)["totals"][k]) for k in _SUMS}
    report.step(f"GET /usage?model={api.config.model}&from={since}: {before}")
    expected = dict.fromkeys(_SUMS, 0)
    for label, route, extra, prompt, completion in _TOKEN_REQUESTS:
        body = {"model": api.config.model, **extra}
        want = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if body.get("stream"):
            stream = api.stream(route, body)
            got = stream.usage
            report.check(
                stream.status == 200 and stream.done,
                f"{label}: 200, {stream.content_chunks} content chunks, [DONE]",
                f"HTTP {stream.status}",
            )
            if extra.get("stream_options"):
                report.check(got == want, f"{label}: the final chunk's usage is {want}", f"got {got}")
            else:
                report.check(got is None, f"{label}: no usage chunk (the client did not ask)", f"got {got}")
        else:
            resp = api.request("POST", route, body)
            got = resp.json().get("usage") if resp.status == 200 else None
            report.check(got == want, f"{label}: 200 with usage {want}", f"{resp.describe() if got is None else got}")
        expected["requests"] += 1
        expected["successful_requests"] += 1
        for k, v in want.items():
            expected[k] += v

    report.step(f"polling GET /usage until {expected['requests']} more requests show (expected: {expected})")

    def delta() -> dict[str, int]:
        totals = _usage(api, since)["totals"]
        return {k: int(totals[k]) - before[k] for k in _SUMS}

    started = time.monotonic()
    try:
        wait_for(
            "the usage records", lambda: True if delta()["requests"] >= expected["requests"] else None, args.timeout
        )
        report.info(f"the records showed up after {time.monotonic() - started:.1f} s")
        time.sleep(1.0)  # anything counted twice would show by now
    except CheckError as exc:
        report.info(str(exc))
    got = delta()
    report.info(f"GET /usage now: {got} more than before")
    for k in _SUMS:
        report.check(
            got[k] == expected[k],
            f"/usage {k} grew by {expected[k]}",
            f"it grew by {got[k]} (other traffic on this model at the same time counts too)",
        )


# -- failover ---------------------------------------------------------------------------------------


def _pin_session(api: Api, allowed: set[str], attempts: int = 20) -> tuple[str, str]:
    """A new session pinned to an instance in `allowed`: (session, instance id)."""
    for _ in range(attempts):
        session = new_session_id("check-failover")
        resp = api.chat(f"pin {session}", session=session, max_tokens=1)
        if resp.status != 200:
            raise CheckError(f"pinning a session: {resp.describe()}")
        if resp.instance in allowed:
            return session, resp.instance
    raise CheckError(f"no session landed on one of {sorted(map(short, allowed))} in {attempts} tries")


def failover(report: Report, api: Api, args: argparse.Namespace) -> None:
    model, ready = _two_ready(report, api, "failover")
    allowed = ready & api.config.instance_ids if api.config.instance_ids else ready
    if not allowed:
        raise CheckError("none of CHECK_INSTANCE_IDS is ready: nothing this run may terminate")
    session, pinned = _pin_session(api, allowed)
    again = [api.chat(f"again {session}", session=session, max_tokens=1) for _ in range(3)]
    report.check(
        all(r.status == 200 and r.instance == pinned for r in again),
        f"session {session} pinned to instance {short(pinned)}",
    )

    report.step(f"terminating instance {pinned} (DELETE /instances/{{id}}): this check destroys it")
    resp = terminate(api, pinned)
    report.check(
        resp.status == 202 and resp.json().get("status") == "terminating",
        "DELETE answered 202 terminating",
        resp.describe(),
    )
    deleted_at = time.monotonic()
    report.step("chatting on the same session until an answer comes from another instance")
    answers: list[Response] = []
    while True:
        answer = api.chat(f"after delete {session}", session=session, max_tokens=1)
        answers.append(answer)
        if answer.status != 200 or answer.instance != pinned or time.monotonic() - deleted_at > args.timeout:
            break
        time.sleep(0.1)
    moved_after = time.monotonic() - deleted_at
    last = answers[-1]
    report.check(
        all(a.status == 200 for a in answers),
        f"all {len(answers)} requests after DELETE answered 200",
        f"{last.describe()}",
    )
    if len(answers) > 1:
        report.info(f"{len(answers) - 1} request(s) still reached {short(pinned)} while it was terminating")
    report.check(
        last.instance not in (None, pinned),
        f"the session moved to instance {short(last.instance)} after {moved_after:.1f} s",
        f"still on {short(last.instance)} after {args.timeout:.0f} s",
    )
    report.check(last.moved, "that answer carries X-Inventiv-Session-Moved: 1", f"headers {last.headers}")
    new = last.instance

    report.step(f"waiting for {short(pinned)} to be terminated, then chatting on the session again")
    wait_status(api, pinned, {"terminated"}, TERMINATED_TIMEOUT_S)
    later = [api.chat(f"later {session}", session=session, max_tokens=1) for _ in range(args.requests)]
    report.check(
        all(r.status == 200 and r.instance == new for r in later),
        f"{len(later)} more requests answered 200 by {short(new)}",
        f"{[(r.status, short(r.instance)) for r in later]}",
    )
    repeated = sum(r.moved for r in later)
    if repeated:
        # With several gateway processes, each one that still remembers the old pin (for up to 5 s) moves
        # the session again on its own and says so.
        report.info(f"{repeated} of them also carried X-Inventiv-Session-Moved: 1 (another gateway process's move)")
    report.check(
        pinned not in {i["id"] for i in ready_instances(api, model["id"])},
        f"{short(pinned)} is no longer listed as ready",
    )


# -- volume-lifecycle -------------------------------------------------------------------------------

_CREATE_STEPS = (
    "REQUEST_CREATE",
    "PROVIDER_CREATE",
    "PROVIDER_CREATE_VOLUME",
    "PROVIDER_ATTACH_VOLUME",
    "PROVIDER_START",
    "HEALTH_CHECK",
)
_TERMINATE_STEPS = ("REQUEST_TERMINATE", "PROVIDER_TERMINATE", "PROVIDER_DELETE_VOLUME")


def volume_lifecycle(report: Report, api: Api, args: argparse.Namespace) -> None:
    model = resolve_model(api, api.config.model)
    type_id, zone_id = mock_placement(api, args.type)
    size = args.data_volume_gb
    report.step(f"POST /deployments: {args.type} on the mock cloud, {model['hf_repo_id']}, data_volume_gb={size}")
    instance = deploy(api, type_id, zone_id, model["id"], size)
    instance_id = instance["id"]
    report.check(
        instance["status"] == "provisioning" and instance.get("data_volume_gb") == size,
        f"instance {short(instance_id)} is provisioning with data_volume_gb {size}",
        f"status {instance['status']}, data_volume_gb {instance.get('data_volume_gb')}",
    )
    try:
        _volume_lifecycle(report, api, instance_id, size)
    finally:
        current = api.get_json(f"/instances/{instance_id}")
        if current["status"] not in ("terminating", "terminated"):
            report.info(f"cleaning up: DELETE /instances/{instance_id}")
            terminate(api, instance_id)


def _volume_lifecycle(report: Report, api: Api, instance_id: str, size: int) -> None:
    started = time.monotonic()
    ready = wait_status(api, instance_id, {"ready"}, READY_TIMEOUT_S)
    report.ok(f"ready after {time.monotonic() - started:.1f} s")
    storages = ready.get("storages") or []
    for s in storages:
        report.info(
            f"storage {s['name']}: boot={s['is_boot']} {s['size_gb']} GB slot={s['slot']} "
            f"attached_at={s['attached_at']}"
        )
    boot = [s for s in storages if s["is_boot"]]
    data = [s for s in storages if not s["is_boot"]]
    report.check(len(boot) == 1 and (boot[0]["size_gb"] or 0) > 0, "one boot volume, with a size", f"{boot}")
    report.check(
        len(data) == 1 and data[0]["size_gb"] == size,
        f"one data volume of {size} GB",
        f"{[(s['name'], s['size_gb']) for s in data]}",
    )
    report.check(all(s["deleted_at"] is None for s in storages), "no volume deleted while ready")
    report.check(
        ready["storage_count"] == 2 and sorted(ready["storage_sizes_gb"]) == sorted(s["size_gb"] for s in storages),
        f"storage_count 2, storage_sizes_gb {ready['storage_sizes_gb']}",
        f"storage_count {ready['storage_count']}",
    )

    report.step(f"DELETE /instances/{instance_id}")
    resp = terminate(api, instance_id)
    report.check(resp.status == 202, "DELETE answered 202", resp.describe())
    started = time.monotonic()
    gone = wait_status(api, instance_id, {"terminated"}, TERMINATED_TIMEOUT_S)
    report.ok(f"terminated after {time.monotonic() - started:.1f} s")
    after = gone.get("storages") or []
    report.check(
        len(after) == len(storages) and all(s["deleted_at"] for s in after),
        f"all {len(after)} storages have deleted_at set",
        f"{[(s['name'], s['deleted_at']) for s in after]}",
    )
    report.check(
        gone["storage_count"] == 0 and gone["storage_sizes_gb"] == [],
        "storage_count 0, storage_sizes_gb []",
        f"{gone['storage_count']}, {gone['storage_sizes_gb']}",
    )

    wanted = _CREATE_STEPS + _TERMINATE_STEPS

    def logs() -> list[dict[str, Any]] | None:
        rows = api.list_all("/action_logs", {"instance_id": instance_id})
        done = {r["action_type"] for r in rows if r["status"] == "success"}
        return rows if set(wanted) <= done else None

    try:
        rows = wait_for("the action logs", logs, 10.0)
    except CheckError:
        rows = api.list_all("/action_logs", {"instance_id": instance_id})
    rows = sorted(rows, key=lambda r: r["created_at"])
    for r in rows:
        report.info(f"action log {r['action_type']:<24} {r['component']:<9} {r['status']:<8} {r['duration_ms']} ms")
    succeeded = [r["action_type"] for r in rows if r["status"] == "success"]
    missing = [step for step in wanted if step not in succeeded]
    report.check(not missing, f"the action logs show {', '.join(wanted)} succeeded", f"missing: {missing}")
    order = [succeeded.index(step) for step in wanted if step in succeeded]
    report.check(order == sorted(order), "in that order", f"order: {succeeded}")
    failed = [(r["action_type"], r["error_code"]) for r in rows if r["status"] == "failed"]
    report.check(not failed, "no failed step", f"{failed}")


# -- run-all ----------------------------------------------------------------------------------------

CHECKS = ("chat-session", "load-balancing", "token-tracking", "failover", "volume-lifecycle")


def run_all(args: argparse.Namespace) -> int:
    """Deploy two instances, run every check on them, terminate what was deployed; exit 1 on any failure."""
    say(f"== run-all: deploy 2 x {args.type} of the model, run {', '.join(CHECKS)}, tear down")
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    results: dict[str, int | str] = {}
    created: list[str] = []
    api: Api | None = None
    try:
        config = Config.from_env()
        api = Api(config)
        say(f"   gateway {config.base_url}, model {config.model}")
        deploy_pair(api, created, args.type)
        env = {**os.environ, "CHECK_INSTANCE_IDS": ",".join(created)}
        for name in args.only or CHECKS:
            say("")
            try:
                results[name] = subprocess.run([str(HERE / name)], env=env, timeout=args.check_timeout).returncode
            except subprocess.TimeoutExpired:
                say(f"FAIL {name} ran past {args.check_timeout:.0f} s")
                results[name] = "timeout"
    except CheckError as exc:
        say(f"FAIL {exc}")
        results["setup"] = 1
    except KeyboardInterrupt:
        say("FAIL interrupted")
        results["interrupted"] = 1
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)
        say(f"FAIL {failure_text(exc)}")
        results["crash"] = 1
    finally:
        # A second Ctrl-C or SIGTERM must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if api is not None and created:
            results["teardown"] = 1 if teardown(api, created) else 0
    say("")
    say("== run-all summary")
    for name, status in results.items():
        say(f"{'PASS' if status == 0 else 'FAIL'} {name}" + ("" if status in (0, 1) else f" ({status})"))
    failed = [n for n, s in results.items() if s != 0]
    verdict = "PASS" if results and not failed else "FAIL"
    say(
        f"== run-all: {verdict} ({len(results) - len(failed)} passed, {len(failed)} failed, "
        f"{time.monotonic() - started:.1f} s)"
    )
    return 0 if verdict == "PASS" else 1


# -- command line -----------------------------------------------------------------------------------


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=name, description=description, epilog=_ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )


Body = Callable[[Report, Api, argparse.Namespace], None]
_DESCRIPTIONS = {
    "chat-session": "several chat requests with one X-Inventiv-Session are answered by one instance "
    "(X-Inventiv-Instance); other sessions may land elsewhere",
    "load-balancing": "requests without a session spread over the model's ready instances, each getting a fair share",
    "token-tracking": "requests with known token counts show up in GET /usage with the right prompt, completion "
    "and total tokens",
    "failover": "a session pinned to an instance keeps working when that instance is terminated: the next answer "
    "comes from another instance with X-Inventiv-Session-Moved: 1 (TERMINATES the pinned instance)",
    "volume-lifecycle": "an instance deployed with data_volume_gb on the mock cloud lists its boot and data "
    "volumes, and after DELETE they are deleted and the action logs show each step",
    "run-all": "deploy two MOCK-GPU-S instances of the model, wait until ready, run every check, tear down",
}
_BODIES: dict[str, Body] = {
    "chat-session": chat_session,
    "load-balancing": load_balancing,
    "token-tracking": token_tracking,
    "failover": failover,
    "volume-lifecycle": volume_lifecycle,
}


def _add_options(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "chat-session":
        parser.add_argument("--requests", type=int, default=5, help="requests on the session (default 5)")
        parser.add_argument("--other-sessions", type=int, default=6, help="other sessions tried (default 6)")
    elif name == "load-balancing":
        parser.add_argument("--requests", type=int, default=60, help="requests sent (default 60)")
        parser.add_argument("--concurrency", type=int, default=4, help="requests at a time (default 4)")
        parser.add_argument(
            "--min-share",
            type=float,
            default=0.5,
            help="least part of an even share each instance must get (default 0.5)",
        )
    elif name == "token-tracking":
        parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for /usage (default 15)")
    elif name == "failover":
        parser.add_argument(
            "--timeout",
            type=float,
            default=20.0,
            help="seconds the session may stay on the terminating instance (default 20)",
        )
        parser.add_argument("--requests", type=int, default=3, help="requests once it is terminated (default 3)")
    elif name in ("volume-lifecycle", "run-all"):
        parser.add_argument("--type", default="MOCK-GPU-S", help="mock instance type code (default MOCK-GPU-S)")
    if name == "volume-lifecycle":
        parser.add_argument("--data-volume-gb", type=int, default=12, help="data volume size (default 12)")
    if name == "run-all":
        parser.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks")
        parser.add_argument("--check-timeout", type=float, default=180.0, help="seconds per check (default 180)")


def main(name: str, argv: Sequence[str] | None = None) -> int:
    parser = _parser(name, _DESCRIPTIONS[name])
    _add_options(name, parser)
    args = parser.parse_args(argv)
    if name == "run-all":
        return run_all(args)
    body = _BODIES[name]
    return run_check(name, _DESCRIPTIONS[name], lambda report, api: body(report, api, args))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in _DESCRIPTIONS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(_DESCRIPTIONS)}}} [options]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
