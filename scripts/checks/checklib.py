"""What the stack checks share: the gateway's address and key, HTTP, PASS/FAIL lines, waiting, the catalog.

Standard library only, so an operator runs the checks with any Python 3.11+ against any running stack:

    API_BASE_URL=http://127.0.0.1:8003 API_KEY=ik_... scripts/checks/<name>

API_BASE_URL defaults to http://127.0.0.1:8003 (a trailing `/v1` is dropped: OpenAI clients' base URL works
too); the key is API_KEY, or OPENAI_API_KEY when API_KEY is unset; it must be an admin key (the checks read
/instances, /usage and /action_logs). MODEL names the model (default `demo/qwen-small`, the demo catalog's
offering). CHECK_INSTANCE_IDS (comma-separated), set by run-all, limits the instances a destructive check
may terminate to the ones it deployed.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8003"
DEFAULT_MODEL = "demo/qwen-small"
SESSION_HEADER = "X-Inventiv-Session"
INSTANCE_HEADER = "X-Inventiv-Instance"
MOVED_HEADER = "X-Inventiv-Session-Moved"
# The mock cloud's GPU type and provider the checks deploy on (the demo catalog seeds them).
MOCK_PROVIDER = "mock"
MOCK_TYPE = "MOCK-GPU-S"
# One HTTP request; chat answers of the mock workers take milliseconds.
REQUEST_TIMEOUT_S = 30.0
# Instances on the mock cloud are ready in ~5 s and terminated in ~5 s; real clouds take minutes.
READY_TIMEOUT_S = float(os.environ.get("CHECK_READY_TIMEOUT_S", "120"))
TERMINATED_TIMEOUT_S = float(os.environ.get("CHECK_TERMINATED_TIMEOUT_S", "120"))
POLL_S = 0.25


class CheckError(Exception):
    """Stops a check: the message is printed as its last FAIL line."""


# -- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    base_url: str
    key: str
    model: str
    instance_ids: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if environ is None else environ)
        key = env.get("API_KEY") or env.get("OPENAI_API_KEY") or ""
        if not key:
            raise CheckError("API_KEY is not set (an admin key, as `inventiv up` printed it: ik_...)")
        ids = frozenset(i.strip() for i in env.get("CHECK_INSTANCE_IDS", "").split(",") if i.strip())
        return cls(base_url(env.get("API_BASE_URL")), key, env.get("MODEL") or DEFAULT_MODEL, ids)


def base_url(raw: str | None) -> str:
    """The gateway's root URL: default when unset, without a trailing slash or `/v1`."""
    url = (raw or DEFAULT_BASE_URL).strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CheckError(f"API_BASE_URL must be an http(s) URL, got {raw!r}")
    return url


def new_session_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- HTTP -------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckError(f"HTTP {self.status}: not JSON: {self.body[:200]!r}") from None

    @property
    def instance(self) -> str | None:
        return self.header(INSTANCE_HEADER)

    @property
    def moved(self) -> bool:
        return self.header(MOVED_HEADER) == "1"

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.body[:300].decode(errors='replace')}"


@dataclass
class Stream:
    """A streamed answer read to its end: the parsed `data:` events and whether `[DONE]` closed it."""

    status: int
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error_body: bytes = b""

    @property
    def instance(self) -> str | None:
        return self.headers.get(INSTANCE_HEADER.lower())

    @property
    def usage(self) -> dict[str, Any] | None:
        for event in self.events:
            if event.get("usage"):
                return dict(event["usage"])
        return None

    @property
    def content_chunks(self) -> int:
        return sum(1 for e in self.events if any((c.get("delta") or {}).get("content") for c in e.get("choices", [])))


class Api:
    """A small blocking client of the gateway: one connection per request, the key on every request."""

    def __init__(self, config: Config, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.config = config
        parts = urllib.parse.urlsplit(config.base_url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout_s

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._netloc, timeout=self._timeout)

    def _send(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None, query: dict[str, Any] | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self._prefix + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        head = {"Authorization": f"Bearer {self.config.key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            head["Content-Type"] = "application/json"
        head.update(headers or {})
        conn = self._connection()
        try:
            conn.request(method, url, body=data, headers=head)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise CheckError(f"{method} {self.config.base_url}{path}: {exc or type(exc).__name__}") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Response:
        conn, resp = self._send(method, path, body, headers, query)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise CheckError(f"{method} {path}: reading the answer: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def get_json(self, path: str, query: dict[str, Any] | None = None) -> Any:
        resp = self.request("GET", path, query=query)
        if resp.status != 200:
            raise CheckError(f"GET {path}: {resp.describe()}")
        return resp.json()

    def list_all(self, path: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        params = {**(query or {}), "limit": 500}
        while True:
            page = self.get_json(path, params)
            items.extend(page["data"])
            if not page.get("has_more") or not page.get("next_cursor"):
                return items
            params["cursor"] = page["next_cursor"]

    def stream(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Stream:
        """POST with `"stream": true` and read the SSE answer to its end."""
        conn, resp = self._send(
            "POST", path, {**body, "stream": True}, {"Accept": "text/event-stream", **(headers or {})}, None
        )
        out = Stream(resp.status, {k.lower(): v for k, v in resp.getheaders()})
        try:
            if resp.status != 200:
                out.error_body = resp.read()
                return out
            # Read to the end of the response, as the openai SDK does, not only to `[DONE]`.
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    out.done = True
                elif out.done:
                    raise ValueError(f"an event after [DONE]: {data[:100]}")
                else:
                    out.events.append(json.loads(data))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise CheckError(f"POST {path} (stream): {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        return out

    def chat(
        self,
        content: str,
        *,
        session: str | None = None,
        session_header: str = SESSION_HEADER,
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Response:
        return self.request(
            "POST",
            "/v1/chat/completions",
            chat_body(model or self.config.model, content, max_tokens),
            headers={session_header: session} if session else None,
        )


def chat_body(model: str, content: str, max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


# -- output -----------------------------------------------------------------------------------------


class Report:
    """Prints what a check does and one PASS or FAIL line per assertion; exit status 1 on any FAIL."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.passed = 0
        self.failed = 0
        self.started = time.monotonic()
        say(f"== {name}: {description}")

    def step(self, message: str) -> None:
        say(f"   .. {message}")

    def info(self, message: str) -> None:
        say(f"   INFO {message}")

    def ok(self, message: str) -> None:
        self.passed += 1
        say(f"PASS {message}")

    def fail(self, message: str) -> None:
        self.failed += 1
        say(f"FAIL {message}")

    def check(self, condition: bool, message: str, detail: str = "") -> bool:
        if condition:
            self.ok(message)
        else:
            self.fail(f"{message}{': ' + detail if detail else ''}")
        return condition

    def finish(self) -> int:
        verdict = "PASS" if self.failed == 0 and self.passed > 0 else "FAIL"
        elapsed = time.monotonic() - self.started
        say(f"== {self.name}: {verdict} ({self.passed} passed, {self.failed} failed, {elapsed:.1f} s)")
        return 0 if verdict == "PASS" else 1


def say(line: str) -> None:
    print(line, flush=True)


def short(instance_id: str | None) -> str:
    return (instance_id or "none")[:8]


def failure_text(exc: BaseException) -> str:
    """What a FAIL line says of an exception: a CheckError's message; the type too of any other (a crash:
    a bug, or an answer of an unexpected shape, such as a KeyError)."""
    if isinstance(exc, CheckError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def on_signal(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: stop as Ctrl-C does, so that `finally` blocks still tear down."""
    raise KeyboardInterrupt


def run_check(name: str, description: str, body: Callable[[Report, Api], None]) -> int:
    """Run one check: a CheckError or a crash is its last FAIL line; Ctrl-C too."""
    report = Report(name, description)
    try:
        config = Config.from_env()
        report.info(f"gateway {config.base_url}, model {config.model}")
        body(report, Api(config))
    except CheckError as exc:
        report.fail(str(exc))
    except KeyboardInterrupt:
        report.fail("interrupted")
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)  # where it crashed, for whoever fixes it
        report.fail(failure_text(exc))
    return report.finish()


# -- waiting ----------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = POLL_S) -> T:
    """probe() until it returns something other than None; CheckError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise CheckError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def wait_status(api: Api, instance_id: str, wanted: Iterable[str], timeout_s: float) -> dict[str, Any]:
    """GET /instances/{id} until its status is one of `wanted`; failed is an error unless wanted."""
    targets = set(wanted)

    def probe() -> dict[str, Any] | None:
        inst: dict[str, Any] = api.get_json(f"/instances/{instance_id}")
        if inst["status"] in targets:
            return inst
        if inst["status"] == "failed" and "failed" not in targets:
            raise CheckError(f"instance {instance_id} failed: {inst.get('error_code')}: {inst.get('error_message')}")
        return None

    return wait_for(f"instance {short(instance_id)} to be {'/'.join(sorted(targets))}", probe, timeout_s)


# -- catalog, instances -----------------------------------------------------------------------------


def resolve_model(api: Api, name: str) -> dict[str, Any]:
    """The catalog model a name stands for: a model id, an hf_repo_id or an offering `org/code`."""
    models = api.list_all("/models")
    for model in models:
        if name in (model["id"], model["hf_repo_id"]):
            return model
    for offering in api.list_all("/offerings"):
        if offering.get("name") == name:
            for model in models:
                if model["id"] == offering["model_id"]:
                    return model
    raise CheckError(
        f"model {name!r} is neither a model id, an hf_repo_id nor an offering name in GET /models, /offerings"
    )


def ready_instances(api: Api, model_id: str) -> list[dict[str, Any]]:
    return api.list_all("/instances", {"status": "ready", "model": model_id})


def mock_placement(api: Api, type_code: str = MOCK_TYPE) -> tuple[str, str]:
    """(instance_type_id, zone_id) of the mock provider's `type_code` and its first zone."""
    types = [t for t in api.list_all("/instance_types", {"provider": MOCK_PROVIDER}) if t["code"] == type_code]
    zones = api.list_all("/zones", {"provider": MOCK_PROVIDER})
    if not types or not zones:
        raise CheckError(f"the catalog has no {MOCK_PROVIDER} instance type {type_code} or no {MOCK_PROVIDER} zone")
    return types[0]["id"], zones[0]["id"]


def deploy(api: Api, type_id: str, zone_id: str, model_id: str, data_volume_gb: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"instance_type_id": type_id, "zone_id": zone_id, "model_id": model_id}
    if data_volume_gb is not None:
        body["data_volume_gb"] = data_volume_gb
    # Safe to retry by hand: the same key gives the same instance.
    resp = api.request("POST", "/deployments", body, headers={"Idempotency-Key": secrets.token_hex(16)})
    if resp.status not in (200, 201, 202):
        raise CheckError(f"POST /deployments: {resp.describe()}")
    instance: dict[str, Any] = resp.json()
    return instance


def terminate(api: Api, instance_id: str) -> Response:
    """DELETE /instances/{id}: 202 (terminating), or 409 when it was terminated already."""
    resp = api.request("DELETE", f"/instances/{instance_id}")
    if resp.status not in (202, 409):
        raise CheckError(f"DELETE /instances/{instance_id}: {resp.describe()}")
    return resp


def deploy_pair(
    api: Api,
    created: list[str],
    type_code: str = MOCK_TYPE,
    ready_timeout_s: float = READY_TIMEOUT_S,
    answer_timeout_s: float = 30.0,
) -> list[str]:
    """Deploy two instances of the configured model on the mock cloud, appending their ids to `created` as
    they are made (so a caller's teardown sees them even if this fails), wait until both are ready and both
    answer chat through the gateway; returns `created`."""
    model = resolve_model(api, api.config.model)
    type_id, zone_id = mock_placement(api, type_code)
    say(f"   .. POST /deployments x 2: {type_code}, zone {short(zone_id)}, model {model['hf_repo_id']}")
    for _ in range(2):
        created.append(deploy(api, type_id, zone_id, model["id"])["id"])
    started = time.monotonic()
    for instance_id in created:
        wait_status(api, instance_id, {"ready"}, ready_timeout_s)
    say(f"PASS instances {', '.join(map(short, created))} ready after {time.monotonic() - started:.1f} s")
    # The gateways reload their workers every INVENTIV_ROUTING_REFRESH_S: wait until both answer.
    seen: set[str | None] = set()

    def both_answer() -> bool | None:
        seen.add(api.chat("warm up", max_tokens=1).instance)
        return True if set(created) <= seen else None

    wait_for("both instances to answer through the gateway", both_answer, answer_timeout_s, interval_s=0.05)
    say("PASS both instances answer through the gateway")
    return created


def teardown(api: Api, ids: list[str], timeout_s: float = TERMINATED_TIMEOUT_S) -> list[str]:
    """Terminate the instances and wait until each is terminated; the failures (also printed as FAIL lines),
    none when all went. One failure, even a crash, does not stop the others: this is the clean-up."""
    if not ids:
        return []
    say("")
    say(f"== teardown: terminating {', '.join(map(short, ids))}")
    failures = []
    asked = []
    for instance_id in ids:
        try:
            terminate(api, instance_id)
            asked.append(instance_id)
        except Exception as exc:
            failures.append(failure_text(exc))
            say(f"FAIL {failures[-1]}")
    for instance_id in asked:
        try:
            wait_status(api, instance_id, {"terminated"}, timeout_s)
            say(f"PASS {short(instance_id)} terminated")
        except Exception as exc:
            failures.append(failure_text(exc))
            say(f"FAIL {failures[-1]}")
    return failures


def served_models(api: Api) -> set[str]:
    """The model names GET /v1/models lists: those with a ready worker the key may use."""
    return {m["id"] for m in api.get_json("/v1/models")["data"]}


def require_served(api: Api, report: Report) -> None:
    model = api.config.model
    if model not in served_models(api):
        raise CheckError(f"GET /v1/models does not list {model}: no ready worker serves it (run-all deploys two)")
    report.ok(f"GET /v1/models lists {model}")
