"""The OpenAI-compatible routes: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models.

One request: authenticate (in memory) → read and check the body → resolve the model → pick a worker
(session affinity first) → forward, retrying once on another worker when nothing reached the client →
relay → exactly one usage record, whatever happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from gateway import metrics, tracing
from gateway.affinity import MAX_SESSION_LEN, AffinityUnavailable, session_of
from gateway.auth import Principal, authenticate
from gateway.connections import read_body
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, bad_request
from gateway.limits import Admission
from gateway.model_resolution import Resolved
from gateway.plane import DataPlane
from gateway.relay import Outcome, StreamSink, content_type, is_json, json_usage, relay_to
from gateway.request_body import InferenceRequest, forward_body, parse_request
from gateway.state import PLANE
from gateway.tracing import client_request_id, own_request_id
from gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    build_head,
)
from gateway.usage_recorder import UsageRecord
from gateway.workers import Worker, shows_instance

# A worker refusing the secret it was started with is misconfigured (or not ours): another may serve.
_REFUSED_SECRET = frozenset((401, 403))
# Worker answers that mean "not me, not now": retried once on another worker, as a connect error is.
_RETRY_STATUSES = frozenset((502, 503, 504)) | _REFUSED_SECRET
# What a call's hooks make of an answer: aiohttp's response object, or the inference connection's own.
Answer = TypeVar("Answer")

# Rough tokens per byte of prompt JSON, for the estimate recorded when a stream is cut before the
# worker reported usage (English text averages about 4 bytes per token).
_BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    streamable: bool

    @property
    def path_bytes(self) -> bytes:
        return self.path.encode()


CHAT = Route("/v1/chat/completions", streamable=True)
COMPLETIONS = Route("/v1/completions", streamable=True)
EMBEDDINGS = Route("/v1/embeddings", streamable=False)


ROUTES: tuple[Route, ...] = (CHAT, COMPLETIONS, EMBEDDINGS)


def setup_inference_routes(app: web.Application) -> None:
    """The routes on the application: what aiohttp serves (gateway/inference_connection.py serves most)."""
    for route in ROUTES:
        app.router.add_post(route.path, _handler(route))
    app.router.add_get("/v1/models", list_models)


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await AppCall(request, route, request.app[PLANE]).run()

    return handle


class InferenceCall(ABC, Generic[Answer]):
    """The state of one inference request, from authentication to its usage record.

    What it reads and writes on the client's side are its hooks (`_read_body`, `_answer`, `_refusal`,
    `_open_stream`, `_sent`): `AppCall` below serves a request of aiohttp's application, and
    gateway/inference_connection.py one that its own connection parsed.
    """

    __slots__ = (
        "admission", "authed", "connect_s", "first_byte_s", "headers", "own_id", "plane", "principal", "record",
        "recorded", "request_id", "resolved", "route", "selected", "session", "session_moved", "started", "worker",
    )  # fmt: skip

    def __init__(self, headers: Mapping[str, str], route: Route, plane: DataPlane) -> None:
        # The request's headers, looked up case-insensitively (the first of a repeated header).
        self.headers = headers
        self.route = route
        self.plane = plane
        # Our own id keys the usage row, so a client reusing an X-Request-Id cannot collide with another
        # record; the correlation id shown everywhere is the client's X-Request-Id when sane, else ours.
        self.own_id = own_request_id()
        self.request_id = client_request_id(headers.get("X-Request-Id")) or self.own_id
        self.started = time.perf_counter()
        # perf_counter() at the end of each phase (0.0: not reached), and the upstream's own two.
        self.authed = self.resolved = self.selected = 0.0
        self.connect_s = self.first_byte_s = -1.0
        self.worker: Worker | None = None
        self.session: str | None = None
        self.session_moved = False
        self.admission: Admission | None = None
        # The usage record went out before the answer ended (durable mode), not from _finish.
        self.recorded = False

    # -- the client's side --------------------------------------------------------------------------

    @abstractmethod
    async def _read_body(self) -> bytes:
        """The whole request body; an ApiError (408, 413, 400) when it cannot be read."""

    @abstractmethod
    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> Answer:
        """A whole answer, sent once `run()` returns it."""

    @abstractmethod
    def _refusal(self, error: ApiError, headers: dict[str, str]) -> Answer:
        """The JSON error answer for `error`, sent once `run()` returns it."""

    @abstractmethod
    async def _open_stream(self, status: int, headers: dict[str, str], content_type: str) -> tuple[StreamSink, Answer]:
        """Send a streamed answer's head; its chunks then go to the sink."""

    @abstractmethod
    def _sent(self, answer: Answer) -> bool:
        """Whether any of `answer` went out already (a stream), rather than once `run()` returns."""

    # -- the request ----------------------------------------------------------------------------------

    async def run(self) -> Answer:
        lifecycle = self.plane.lifecycle
        if lifecycle.draining:
            raise ApiError(503, "The gateway is shutting down; retry on another instance.", ErrorCode.DRAINING)
        self.principal: Principal = authenticate(self.plane.keys, self.headers.get("Authorization"))
        self.authed = time.perf_counter()
        self.record = UsageRecord(
            request_id=self.own_id, created_at=time.time(), route=self.route.path, model="-", stream=False,
            api_key_id=self.principal.key_id, organization_id=self.principal.organization_id,
            correlation_id=self.request_id,
        )  # fmt: skip
        lifecycle.enter()
        try:
            try:
                if self.principal.limits is not None:
                    self.admission = await self.plane.limits.admit(
                        self.principal.key_id, self.principal.organization_id, self.principal.limits
                    )
                response = await self._serve()
            except ApiError as exc:
                self.record.http_status = exc.status
                response = self._refusal(exc, self._headers())
            if self.plane.usage.durable and not self._sent(response):
                # A JSON answer is sent once this returns: its record is in Redis first.
                await self._record_durably()
            return response
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler): the upstream was closed on the way out.
            # One that left once the whole stream was relayed had its answer: that is a success.
            if self.record.status != "success":
                self.record.status = "client_cancelled"
                self.record.http_status = 499
            raise
        finally:
            self._finish()
            lifecycle.leave()

    async def _serve(self) -> Answer:
        req = parse_request(await self._read_body(), streamable=self.route.streamable)
        self.record.model, self.record.stream = req.model, req.stream
        resolved = self.plane.catalog.resolve(req.model, self.principal)
        self.record.model_id = resolved.model_id
        self.resolved = time.perf_counter()
        self.worker = await self._select(resolved)
        self.selected = time.perf_counter()
        add_usage = req.stream and not req.wants_usage
        up = await self._open(req, resolved, add_usage)
        try:
            if req.stream and up.status == 200:
                return await self._relay_stream(up, req, strip_usage=add_usage)
            return await self._relay_json(up, req)
        finally:
            up.close()

    # -- choosing the worker --------------------------------------------------------------------------

    async def _select(self, resolved: Resolved) -> Worker:
        workers = self.plane.workers
        now = time.time()
        session = session_of(self.headers)
        if session is not None:
            if len(session) > MAX_SESSION_LEN:
                raise bad_request(f"The session id is longer than {MAX_SESSION_LEN} characters.", "X-Inventiv-Session")
            pinned = await self._pinned(resolved.model_id, session)
            if pinned is not None:
                worker = workers.eligible(pinned, resolved.model_id, now)
                if worker is not None:
                    self.plane.hot.affinity["hit"] += 1
                    return worker
                self.plane.hot.affinity["failover"] += 1
                self.session_moved = True
        worker = workers.pick(resolved.model_id, now)
        if worker is None:
            raise _no_worker(self.record.model)
        if self.session is not None:
            await self._pin(resolved.model_id, worker)
        return worker

    async def _pinned(self, model_id: str, session: str) -> str | None:
        try:
            pinned = await self.plane.affinity.lookup(self.principal.organization_id, model_id, session)
        except AffinityUnavailable:
            self.plane.hot.affinity["unavailable"] += 1
            return None
        self.session = session
        if pinned is None:
            self.plane.hot.affinity["miss"] += 1
        return pinned

    async def _pin(self, model_id: str, worker: Worker) -> None:
        assert self.session is not None
        try:
            await self.plane.affinity.pin(self.principal.organization_id, model_id, self.session, worker.instance_id)
        except AffinityUnavailable:
            self.plane.hot.affinity["unavailable"] += 1

    # -- forwarding -----------------------------------------------------------------------------------

    async def _open(self, req: InferenceRequest, resolved: Resolved, add_usage: bool) -> UpstreamResponse:
        """Send the request; on a failure before any byte reached the client, once more elsewhere."""
        assert self.worker is not None
        plane = self.plane
        for attempt in (0, 1):
            worker = self.worker
            body = forward_body(req, worker.served_model or resolved.hf_repo_id, add_usage)
            extra = b"X-Request-Id: %s\r\nAccept: %s\r\n%s" % (
                self.request_id.encode(), b"text/event-stream" if req.stream else b"application/json",
                worker.authorization,
            )  # fmt: skip
            head = build_head(b"POST", self.route.path_bytes, worker.address, len(body), extra)
            # Also the in-flight gauge, set from this count (gateway/hot_metrics.py).
            plane.workers.acquire(worker)
            sent = time.perf_counter()
            try:
                up = await plane.upstream.request(
                    worker.host, worker.port, head, body, first_byte_timeout=self._first_byte_timeout
                )
                self.connect_s = up.connect_s
                self.first_byte_s = time.perf_counter() - sent - up.connect_s
            except UpstreamError as exc:
                metrics.upstream_errors(_error_kind(exc)).inc()
                if attempt or not await self._move(resolved):
                    self.record.status = "upstream_error"
                    raise _upstream_failed(exc) from None
                continue
            if up.status in _RETRY_STATUSES and attempt == 0 and await self._move(resolved):
                metrics.upstream_errors(f"http_{up.status}").inc()
                up.close()
                continue
            if up.status in _REFUSED_SECRET:
                # Never the client's 401: its key was accepted. The worker does not know its own secret.
                metrics.upstream_errors(f"http_{up.status}").inc()
                up.close()
                raise ApiError(502, "The worker refused the gateway's credentials.", ErrorCode.UPSTREAM_REFUSED)
            return up
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _move(self, resolved: Resolved) -> bool:
        """Leave the current worker for another one, if there is one; re-pin the session to it."""
        assert self.worker is not None
        self._release()
        other = self.plane.workers.pick(resolved.model_id, time.time(), exclude=self.worker.instance_id)
        if other is None:
            self.plane.workers.acquire(self.worker)  # released again in _finish
            return False
        metrics.RETRIES.inc()
        self.worker = other
        if self.session is not None:
            self.session_moved = True
            await self._pin(resolved.model_id, other)
        return True

    def _release(self) -> None:
        if self.worker is not None:
            self.plane.workers.release(self.worker)

    @property
    def _first_byte_timeout(self) -> float:
        return self.plane.settings.upstream_first_byte_timeout_s

    # -- relaying -------------------------------------------------------------------------------------

    async def _relay_json(self, up: UpstreamResponse, req: InferenceRequest) -> Answer:
        try:
            body = await up.read_all()
        except UpstreamError as exc:
            metrics.upstream_errors(_error_kind(exc)).inc()
            self.record.status = "upstream_error"
            raise _upstream_failed(exc) from None
        self.record.http_status = up.status
        if up.status == 200:
            usage = json_usage(body)
            # An OpenAI-compatible answer carries its usage; one without is parsed once to be sure it is JSON.
            if usage is None and not is_json(body):
                metrics.upstream_errors("invalid").inc()
                self.record.status = "upstream_error"
                raise ApiError(
                    502, "The worker answered with a body that is not JSON.", ErrorCode.UPSTREAM_INVALID_RESPONSE
                )
            self.record.status = "success"
            self.record.set_usage(usage)
        else:
            self.record.status = "upstream_error" if up.status >= 500 else "error"
        headers = self._headers()
        headers["Content-Type"] = content_type(up, "application/json")
        return self._answer(up.status, headers, body)

    async def _relay_stream(self, up: UpstreamResponse, req: InferenceRequest, strip_usage: bool) -> Answer:
        outcome = Outcome()
        self.record.http_status = 200
        up.watch_idle(self.plane.settings.upstream_first_byte_timeout_s)
        headers = self._headers()
        headers["Cache-Control"] = "no-cache"
        # Tells nginx-like proxies in front of us not to buffer the stream.
        headers["X-Accel-Buffering"] = "no"
        # What a stream cut by a crash of this process leaves in Postgres: replaced by the final record.
        opened = self._opened_record(req)
        before_end = None
        if self.plane.usage.durable:
            # In Redis before the client sees the stream begin, as the final one before it ends.
            await self.plane.usage.record_durably(opened)
            before_end = self._stream_ending(outcome, req)
        else:
            self.plane.usage.record(opened)
        try:
            sink, response = await self._open_stream(up.status, headers, content_type(up, "text/event-stream"))
            await relay_to(sink, up, outcome, strip_usage=strip_usage, clock=time.perf_counter, before_end=before_end)
        finally:
            if not self.recorded:
                self._account_stream(outcome, req)
        return response

    def _opened_record(self, req: InferenceRequest) -> UsageRecord:
        opened = dataclasses.replace(self.record, status="incomplete", http_status=200)
        if self.worker is not None:
            opened.instance_id = self.worker.instance_id
        opened.set_usage({"prompt_tokens": _prompt_estimate(req)}, estimated=True)
        return opened

    def _stream_ending(self, outcome: Outcome, req: InferenceRequest) -> Callable[[], Awaitable[None]]:
        async def before_end() -> None:
            # Durable mode: the stream's end goes out once its record is in Redis.
            self._account_stream(outcome, req)
            await self._record_durably()

        return before_end

    def _account_stream(self, outcome: Outcome, req: InferenceRequest) -> None:
        record = self.record
        if outcome.first_byte_at is not None:
            record.ttft_ms = int((outcome.first_byte_at - self.started) * 1000)
            self.plane.hot.ttft(self.route.path).observe(outcome.first_byte_at - self.started)
        if outcome.upstream_error is not None:
            record.status = "upstream_error"
            metrics.upstream_errors("stream_cut").inc()
        elif outcome.complete or (outcome.usage is not None and not outcome.client_gone):
            # The worker's usage is its answer's last event: a client gone after it had the whole answer.
            record.status = "success"
        elif outcome.client_gone:
            record.status = "client_cancelled"
            record.http_status = 499
        # else: cancelled by the client, set by run()
        if outcome.usage is not None:
            record.set_usage(outcome.usage)
        elif outcome.events:
            # Cut before the worker's count: one streamed event per token, the prompt from its size.
            estimate = {"prompt_tokens": _prompt_estimate(req), "completion_tokens": outcome.events}
            record.set_usage(estimate, estimated=True)

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"X-Request-Id": self.request_id}
        worker = self.worker
        if worker is not None and shows_instance(worker, self.principal.organization_id, self.principal.is_admin):
            headers["X-Inventiv-Instance"] = worker.instance_id
        if self.session_moved:
            headers["X-Inventiv-Session-Moved"] = "1"
        if self.admission is not None:
            headers.update(self.admission.headers)
        return headers

    async def _record_durably(self) -> None:
        self._complete_record()
        self.recorded = True
        await self.plane.usage.record_durably(self.record)

    def _complete_record(self) -> None:
        record = self.record
        record.latency_ms = int((time.perf_counter() - self.started) * 1000)
        if self.worker is not None:
            record.instance_id = self.worker.instance_id

    def _finish(self) -> None:
        self._release()
        record = self.record
        elapsed = time.perf_counter() - self.started
        if not self.recorded:
            self._complete_record()
            self.plane.usage.record(record)
        if self.admission is not None:
            self.plane.limits.settle(self.admission, record.total_tokens)
        entry = self.plane.catalog.by_id.get(record.model_id) if record.model_id else None
        model = entry.hf_repo_id if entry is not None else "-"
        hot = self.plane.hot
        hot.requests[(self.route.path, model, str(record.http_status or 0))] += 1
        hot.latency(self.route.path).observe(elapsed)
        if record.prompt_tokens:
            hot.tokens[(model, "prompt")] += record.prompt_tokens
        if record.completion_tokens:
            hot.tokens[(model, "completion")] += record.completion_tokens
        self._observe_phases(elapsed)
        access = self.plane.access
        if access is not None and tracing.enabled():
            access.write(self._access_fields(model, elapsed))

    def _observe_phases(self, elapsed: float) -> None:
        started, authed, resolved, selected = self.started, self.authed, self.resolved, self.selected
        phase = self.plane.hot.phase
        if authed:
            phase("auth").observe(authed - started)
        if resolved:
            phase("model_resolution").observe(resolved - authed)
        if selected:
            phase("worker_selection").observe(selected - resolved)
        if self.connect_s > 0.0:
            phase("upstream_connect").observe(self.connect_s)
        if self.first_byte_s >= 0.0:
            phase("first_byte").observe(self.first_byte_s)
        phase("total").observe(elapsed)

    def _access_fields(self, model: str, elapsed: float) -> dict[str, Any]:
        record = self.record
        return {
            "request_id": self.request_id, "method": "POST", "route": self.route.path,
            "model": model if model != "-" else record.model, "instance_id": record.instance_id,
            "status": record.http_status, "outcome": record.status, "stream": record.stream,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
            "ttft_ms": record.ttft_ms, "duration_ms": round(elapsed * 1000, 1), "key_id": record.api_key_id,
        }  # fmt: skip


class AppCall(InferenceCall[web.StreamResponse]):
    """An inference request served by aiohttp's application (aiohttp's request and response objects)."""

    __slots__ = ("request",)

    def __init__(self, request: web.Request, route: Route, plane: DataPlane) -> None:
        super().__init__(request.headers, route, plane)
        self.request = request

    async def _read_body(self) -> bytes:
        return await read_body(self.request, self.plane.settings.body_timeout_s)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    def _refusal(self, error: ApiError, headers: dict[str, str]) -> web.StreamResponse:
        return error.response(headers=headers)

    async def _open_stream(
        self, status: int, headers: dict[str, str], content_type: str
    ) -> tuple[StreamSink, web.StreamResponse]:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = content_type
        await response.prepare(self.request)
        return response, response

    def _sent(self, answer: web.StreamResponse) -> bool:
        return answer.prepared


def _prompt_estimate(req: InferenceRequest) -> int:
    return max(1, len(req.raw) // _BYTES_PER_TOKEN)


def _no_worker(model: str) -> ApiError:
    return ApiError(
        503, f"No ready worker serves the model `{model}` right now; retry shortly.", ErrorCode.NO_READY_WORKER, "model"
    )


def _error_kind(exc: UpstreamError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamConnectError):
        return "connect"
    if isinstance(exc, UpstreamProtocolError):
        return "invalid"
    return "closed"


def _upstream_failed(exc: UpstreamError) -> ApiError:
    if isinstance(exc, TimeoutError):
        return ApiError(504, f"The worker did not answer in time: {exc}", ErrorCode.UPSTREAM_TIMEOUT)
    if isinstance(exc, UpstreamProtocolError):
        return ApiError(502, f"The worker sent a response that is not HTTP: {exc}", ErrorCode.UPSTREAM_INVALID_RESPONSE)
    return ApiError(502, f"The worker could not be reached: {exc}", ErrorCode.UPSTREAM_UNAVAILABLE)


async def list_models(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    principal = authenticate(plane.keys, request.headers.get("Authorization"))
    names = plane.catalog.visible_names(plane.workers.model_ids(time.time()), principal)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "inventiv"} for name, _ in names]
    return web.json_response({"object": "list", "data": data})
