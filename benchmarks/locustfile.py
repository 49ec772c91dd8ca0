"""Locust load on the gateway's chat route: JSON answers and streams, each simulated user on its own session.

    API_BASE_URL=http://127.0.0.1:8003 API_KEY=ik_... \\
        locust -f benchmarks/locustfile.py --headless -u 5 -r 5 -t 10s --host "$API_BASE_URL"

Locust is not in the project's dependencies: it comes with the `load` extra, best in a virtualenv of its
own (`make load-tools` makes one in ~/.cache/inventiv/load-venv): it imports gevent, which patches the
standard library at import.

Each user sends `X-Inventiv-Session: locust-<id>` on every request and expects every answer from one
instance (`X-Inventiv-Instance`), unless the gateway says it moved the session (`X-Inventiv-Session-Moved:
1`). Tasks: a JSON chat (weight 3) and a streamed chat (weight 2), read to its end, counting its chunks; half
of the streams ask for usage with `stream_options.include_usage` and must get a usage chunk, the other half
must not. A streamed answer is reported twice: `chat stream` (time to the response headers, as locust
times streams) and `chat stream, whole` (time to its end; its "size" is the number of chunks).

Environment: API_KEY (or OPENAI_API_KEY) the key, an inference key is enough; MODEL (default
demo/qwen-small); API_BASE_URL the host when --host is not given (a trailing /v1 is dropped);
LOCUST_MAX_TOKENS (default 16) the completion length asked for.

The run fails (exit status 1) when any request failed, when none was made, or when no key was set.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

MODEL = os.environ.get("MODEL") or "demo/qwen-small"
KEY = os.environ.get("API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
MAX_TOKENS = int(os.environ.get("LOCUST_MAX_TOKENS") or "16")
CHAT = "/v1/chat/completions"

log = logging.getLogger("locustfile")

# Totals over every user of this process, printed when the run ends.
TOTALS = {"streams": 0, "chunks": 0, "usage_chunks": 0, "sessions": 0, "moved": 0}
INSTANCES: set[str] = set()


def base_url(raw: str | None) -> str:
    url = (raw or "http://127.0.0.1:8003").strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def chat_body(content: str, *, stream: bool = False, include_usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def read_stream(lines: Any) -> tuple[int, dict[str, Any] | None, bool]:
    """(content chunks, the usage chunk's usage or None, whether `data: [DONE]` ended it) of SSE lines."""
    chunks = 0
    usage: dict[str, Any] | None = None
    done = False
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if event.get("usage"):
            usage = event["usage"]
        if any((choice.get("delta") or {}).get("content") for choice in event.get("choices") or []):
            chunks += 1
    return chunks, usage, done


class ChatUser(HttpUser):
    host = base_url(os.environ.get("API_BASE_URL"))
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.session_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.instance: str | None = None
        self.turn = 0
        self.headers = {"Authorization": f"Bearer {KEY}", "X-Inventiv-Session": self.session_id}
        TOTALS["sessions"] += 1

    def _affinity_error(self, headers: Any) -> str | None:
        """None when the answer came from this session's instance (or the gateway said it moved it)."""
        instance = headers.get("X-Inventiv-Instance")
        if not instance:
            return "no X-Inventiv-Instance header"
        INSTANCES.add(instance)
        moved = headers.get("X-Inventiv-Session-Moved") == "1"
        TOTALS["moved"] += moved
        previous, self.instance = self.instance, instance
        if previous is not None and instance != previous and not moved:
            return f"session {self.session_id} went from {previous[:8]} to {instance[:8]} without Session-Moved"
        return None

    @task(3)
    def chat(self) -> None:
        self.turn += 1
        body = chat_body(f"turn {self.turn} of {self.session_id}")
        with self.client.post(CHAT, json=body, headers=self.headers, name="chat", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                answer = resp.json()
                content = answer["choices"][0]["message"]["content"]
                usage = answer["usage"]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                resp.failure(f"not a chat completion ({exc!r}): {resp.text[:200]}")
                return
            error = self._affinity_error(resp.headers)
            if error is None and not content:
                error = "empty content"
            if error is None and not usage.get("completion_tokens"):
                error = f"no completion tokens in usage {usage}"
            if error:
                resp.failure(error)

    @task(2)
    def chat_stream(self) -> None:
        self.turn += 1
        include_usage = self.turn % 2 == 0
        body = chat_body(f"turn {self.turn} of {self.session_id}", stream=True, include_usage=include_usage)
        name = "chat stream" + (" +usage" if include_usage else "")
        started = time.perf_counter()
        chunks, error = 0, None
        with self.client.post(
            CHAT, json=body, headers=self.headers, name=name, stream=True, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                chunks, usage, done = read_stream(resp.iter_lines())
            except Exception as exc:  # a cut connection, a malformed event: the request failed
                error = f"reading the stream: {exc!r}"
            else:
                error = self._affinity_error(resp.headers)
                if error is None and not done:
                    error = "the stream ended without data: [DONE]"
                elif error is None and chunks == 0:
                    error = "no content chunk"
                elif error is None and include_usage and not (usage or {}).get("completion_tokens"):
                    error = f"stream_options.include_usage asked, usage chunk missing or empty: {usage}"
                elif error is None and not include_usage and usage is not None:
                    error = f"a usage chunk the client did not ask for: {usage}"
                TOTALS["streams"] += 1
                TOTALS["chunks"] += chunks
                TOTALS["usage_chunks"] += usage is not None
            if error:
                resp.failure(error)
        self.environment.events.request.fire(
            request_type="SSE",
            name=f"{name}, whole",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=chunks,
            exception=RuntimeError(error) if error else None,
            context={},
        )


@events.test_start.add_listener
def _check_key(environment: Environment, **_: Any) -> None:
    if not KEY:
        log.error("API_KEY (or OPENAI_API_KEY) is not set: every request would be refused")
        if environment.runner is not None:
            environment.runner.quit()


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    total = environment.stats.total
    log.info(
        "streams read to the end: %d, content chunks: %d, usage chunks: %d; sessions: %d on %d instance(s), "
        "Session-Moved answers: %d",
        TOTALS["streams"], TOTALS["chunks"], TOTALS["usage_chunks"], TOTALS["sessions"], len(INSTANCES),
        TOTALS["moved"],
    )  # fmt: skip
    if not KEY or total.num_requests == 0 or total.num_failures > 0:
        log.error("FAIL: %d requests, %d failures%s", total.num_requests, total.num_failures,
                  "" if KEY else ", no key")  # fmt: skip
        environment.process_exit_code = 1
    else:
        log.info("PASS: %d requests, no failure (%.1f requests/s)", total.num_requests, total.total_rps)
