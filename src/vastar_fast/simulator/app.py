"""aiohttp application of the AI endpoint simulator: routes, timing and faults.

Hot path design (why it looks the way it does): a rendered response depends only
on the route and the raw request body, so rendered templates are cached keyed by
``(route, body bytes)``; a cache hit skips JSON parsing and serialisation
entirely. With zero delays a stream is sent as one ``web.Response`` (one write,
Content-Length framed) instead of ~50 ``StreamResponse.write`` calls with
``asyncio.sleep`` in between; clients parse SSE/NDJSON from the byte stream and
cannot tell the difference. Only delayed streams and stream faults use
``StreamResponse``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import os
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

from aiohttp import web

from vastar_fast._log import logger

from .dialects import (
    DIALECTS,
    NOT_FOUND,
    RATE_LIMITED,
    RATE_LIMITED_TOKENS,
    SERVER,
    ApiError,
    Dialect,
    FullPlan,
    RequestIds,
    StreamPlan,
)
from .faults import (
    DISCONNECT,
    DUPLICATE,
    FAULT_HEADER,
    LATENCY_SPIKE,
    MALFORMED,
    OVERLOADED,
    RATE_LIMIT,
    SERVER_ERROR,
    STALL,
    TRUNCATE,
    Fault,
    FaultInjector,
)
from .latency import LATENCY_HEADER, LatencyModel, Timing
from .ratelimit import Decision, RateLimiter, api_key_of, duration
from .settings import SimulatorSettings

__all__ = ["SETTINGS_KEY", "STATE_KEY", "SimulatorState", "create_app"]

log = logger("vastar_fast.simulator")  # the real one, with the package's NullHandler

Plan = Union[StreamPlan, FullPlan]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MODELS: Tuple[Tuple[str, int, str], ...] = (
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4.1", 1744316542, "system"),
    ("gpt-3.5-turbo", 1677610602, "openai"),
    ("o3-mini", 1737146383, "system"),
)
_ANTHROPIC_MODELS: Tuple[Tuple[str, str], ...] = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5"),
)
_MAX_CACHED_BODY = 64 * 1024
#: Stream faults that need the timed writer even when no delay is configured.
_TIMED_FAULTS = frozenset((DISCONNECT, STALL, LATENCY_SPIKE))


def _fault_error(state: SimulatorState, dialect: Dialect, kind: str) -> Optional[web.Response]:
    """The HTTP error answer of an error fault (None for stream faults)."""
    if kind == RATE_LIMIT:
        return _error_response(
            state,
            dialect,
            ApiError(429, "Rate limit reached for requests (simulated).", kind=RATE_LIMITED),
            {
                "Retry-After": str(state.settings.retry_after_s),
                "retry-after-ms": str(state.settings.retry_after_s * 1000),
                "x-ratelimit-remaining-requests": "0",
                FAULT_HEADER: kind,
            },
        )
    if kind == SERVER_ERROR:
        err = ApiError(
            500,
            "The server had an error while processing your request (simulated).",
            kind=SERVER,
        )
        return _error_response(state, dialect, err, {FAULT_HEADER: kind})
    if kind == OVERLOADED:
        return _error_response(state, dialect, dialect.overloaded(), {FAULT_HEADER: kind})
    return None


class SimulatorState:
    """Mutable per-app state: fault and latency generators, budgets, id counter,
    response cache, counters."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.faults = FaultInjector(settings.fault_rate, settings.seed, settings.fault_kinds)
        self.latency = LatencyModel(settings)
        self.limiter = RateLimiter(settings.rpm, settings.tpm)
        self.enforce_budgets = settings.rpm is not None or settings.tpm is not None
        self.slots: Optional[asyncio.Semaphore] = (
            asyncio.Semaphore(settings.max_concurrency) if settings.max_concurrency else None
        )
        self.waiting = 0
        self.salt = os.urandom(8).hex()
        self._counter = itertools.count(1)
        self.cache: Dict[Tuple[str, str, bytes], Plan] = {}
        self.requests = 0
        self.shutdown = asyncio.Event()

    def ids(self, dialect: Dialect, suffix: bool = False) -> RequestIds:
        """Fresh id and timestamps for one response (cheap: counter + cached second)."""
        now = time.time()
        second = int(now)
        iso = ""
        if dialect.uses_time:
            iso = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        count = next(self._counter)
        unique = f"{self.salt}{count:012x}" if suffix else ""
        return RequestIds(dialect.make_id(count, self.salt), second, iso, unique)

    def cache_put(self, key: Tuple[str, str, bytes], plan: Plan) -> None:
        if len(key[2]) > _MAX_CACHED_BODY:
            return
        if len(self.cache) >= self.settings.cache_size:
            self.cache.clear()  # crude but O(1) amortised; the working set is tiny
        self.cache[key] = plan


STATE_KEY = web.AppKey("vastar_simulator_state", SimulatorState)
SETTINGS_KEY = web.AppKey("vastar_simulator_settings", SimulatorSettings)


def _json_response(
    body: str, status: int = 200, headers: Optional[Mapping[str, str]] = None
) -> web.Response:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=body.encode("utf-8"), status=status, headers=hdrs)


def _error_response(
    state: SimulatorState,
    dialect: Dialect,
    err: ApiError,
    extra: Optional[Mapping[str, str]] = None,
) -> web.Response:
    body = dialect.fill(dialect.error_body(err), state.ids(dialect))
    headers = dict(dialect.headers)
    if extra:
        headers.update(extra)
    return _json_response(body, err.status, headers)


def _retry_headers(seconds: float) -> Dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000.0))),
    }


def _rate_headers(style: str, d: Decision) -> Dict[str, str]:
    if style == "openai":
        return {
            "x-ratelimit-limit-requests": _str_int(d.limit_requests),
            "x-ratelimit-limit-tokens": _str_int(d.limit_tokens),
            "x-ratelimit-remaining-requests": str(d.remaining_requests),
            "x-ratelimit-remaining-tokens": str(d.remaining_tokens),
            "x-ratelimit-reset-requests": duration(d.reset_requests_s),
            "x-ratelimit-reset-tokens": duration(d.reset_tokens_s),
        }
    now = time.time()
    return {
        "anthropic-ratelimit-requests-limit": str(d.limit_requests),
        "anthropic-ratelimit-requests-remaining": str(d.remaining_requests),
        "anthropic-ratelimit-requests-reset": _rfc3339(now + d.reset_requests_s),
        "anthropic-ratelimit-tokens-limit": str(d.limit_tokens),
        "anthropic-ratelimit-tokens-remaining": str(d.remaining_tokens),
        "anthropic-ratelimit-tokens-reset": _rfc3339(now + d.reset_tokens_s),
    }


@functools.lru_cache(maxsize=8)
def _str_int(value: int) -> str:
    return str(value)


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(epoch)))


def _budget_error(d: Decision, tokens: int) -> ApiError:
    wait = (
        "" if math.isinf(d.retry_after_s) else f" Please try again in {duration(d.retry_after_s)}."
    )
    if d.refused == "requests":
        return ApiError(
            429,
            f"Rate limit reached for requests per min (RPM) (simulated): Limit "
            f"{d.limit_requests}, Requested 1.{wait}",
            kind=RATE_LIMITED,
        )
    if math.isinf(d.retry_after_s):
        return ApiError(
            429,
            f"Request too large for tokens per min (TPM) (simulated): Limit {d.limit_tokens}, "
            f"Requested {tokens}. Reduce the prompt or max_tokens, or raise --tpm.",
            kind=RATE_LIMITED_TOKENS,
        )
    return ApiError(
        429,
        f"Rate limit reached for tokens per min (TPM) (simulated): Limit {d.limit_tokens}, "
        f"Remaining {d.remaining_tokens}, Requested {tokens}.{wait}",
        kind=RATE_LIMITED_TOKENS,
    )


async def _flush_and_abort(request: web.Request) -> None:
    """Let buffered bytes reach the kernel, then drop the TCP connection.

    ``abort()`` discards the transport's user-space buffer, so wait (bounded)
    for it to drain first: the client must see the partial stream, then EOF in
    the middle of the HTTP body.
    """
    transport = request.transport
    if transport is None:
        return
    for _ in range(400):
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    transport.abort()


async def _stall(request: web.Request, state: SimulatorState) -> None:
    """Keep the connection open without sending, until the client leaves,
    the server shuts down, or ``stall_max_s`` passes; then drop the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.stall_max_s
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(state.shutdown.wait(), timeout=min(0.25, remaining))
            break
        except asyncio.TimeoutError:
            continue
    await _flush_and_abort(request)


# Delay kinds of a timeline step: none, time to first token, inter-token gap.
_NOW, _FIRST, _GAP = 0, 1, 2
Step = Tuple[int, float, str]  # (delay kind, extra seconds, frame)


def _timeline(plan: StreamPlan, settings: SimulatorSettings, fault: Optional[Fault]) -> List[Step]:
    """The frames of a stream with their delay kinds, stream faults applied."""
    body: List[Step] = [(_FIRST if i == 0 else _GAP, 0.0, f) for i, f in enumerate(plan.body)]
    kind = fault.kind if fault is not None else None
    cut: Optional[int] = None
    if kind == MALFORMED:
        body.insert(min(plan.broken_after + 1, len(body)), (_NOW, 0.0, plan.broken))
    elif kind == DUPLICATE and body:
        at = min(plan.broken_after, len(body) - 1)
        body.insert(at + 1, (_NOW, 0.0, body[at][2]))
    elif kind == LATENCY_SPIKE and body:
        at = min(settings.fault_after_chunks, len(body) - 1)
        ms = settings.spike_ms if fault is None or fault.param is None else fault.param
        body[at] = (body[at][0], ms / 1000.0, body[at][2])
    elif kind in (DISCONNECT, STALL):
        cut = settings.fault_after_chunks
    elif kind == TRUNCATE:
        cut = (
            settings.fault_after_chunks
            if fault is None or fault.param is None
            else int(fault.param)
        )
    steps: List[Step] = [(_NOW, 0.0, f) for f in plan.lead]
    if cut is not None:
        return steps + body[:cut]
    steps += body
    steps += [(_NOW if body else _FIRST, 0.0, f) for f in plan.tail]
    return steps


def _single_write(plan: StreamPlan, settings: SimulatorSettings, fault: Optional[Fault]) -> str:
    """The whole faulted stream as one template, for the zero-delay path."""
    if fault is None:
        return plan.joined
    if fault.kind == MALFORMED:
        return plan.joined_malformed
    return "".join(step[2] for step in _timeline(plan, settings, fault))


class _Simulator:
    """Request handlers bound to one app's state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.settings = state.settings

    # ------------------------------------------------------------------ generation

    def generation(
        self, dialect: Dialect, route_key: Callable[[web.Request], Tuple[str, Dict[str, Any]]]
    ) -> Handler:
        state = self.state
        settings = self.settings
        cache = state.cache
        name = dialect.name
        headers = dict(dialect.headers)
        latency = state.latency
        limiter = state.limiter
        style = dialect.ratelimit_headers
        check_budget = bool(style) or state.enforce_budgets

        async def handler(request: web.Request) -> web.StreamResponse:
            state.requests += 1
            raw = await request.read()
            req_headers = request.headers
            fault = state.faults.choose(req_headers.get(FAULT_HEADER))
            if fault is not None:
                log.info("%s %s: injecting fault %s", request.method, request.path, fault.kind)
                error = _fault_error(state, dialect, fault.kind)
                if error is not None:
                    return error
            subkey, route = route_key(request)
            key = (name, subkey, raw)
            plan = cache.get(key)
            if plan is None:
                if route.get("error") is not None:
                    return _error_response(state, dialect, route["error"])
                try:
                    data = json.loads(raw) if raw else None
                except ValueError as exc:
                    return _error_response(state, dialect, dialect.invalid_json(exc))
                try:
                    plan = dialect.make_plan(
                        data,
                        route,
                        settings.answer_tokens,
                        settings.seed,
                        settings.tokens_per_chunk,
                    )
                except ApiError as err:
                    log.debug(
                        "%s %s: invalid request: %s", request.method, request.path, err.message
                    )
                    return _error_response(state, dialect, err)
                state.cache_put(key, plan)
            try:
                timing = latency.timing(req_headers.get(LATENCY_HEADER))
            except ValueError as exc:
                return _error_response(state, dialect, ApiError(400, str(exc)))
            hdrs = headers
            if check_budget:
                tokens = plan.prompt_tokens + plan.completion_tokens
                api_key = api_key_of(req_headers) or request.query.get("key", "")
                decision = limiter.check(api_key, tokens)
                if style:
                    hdrs = {**headers, **_rate_headers(style, decision)}
                if decision.refused is not None:
                    retry = 60.0 if math.isinf(decision.retry_after_s) else decision.retry_after_s
                    return _error_response(
                        state,
                        dialect,
                        _budget_error(decision, tokens),
                        {**hdrs, **_retry_headers(retry)},
                    )
            ids = state.ids(dialect, plan.uses_suffix)
            slots = state.slots
            if slots is not None:
                state.waiting += 1
                try:
                    await slots.acquire()
                finally:
                    state.waiting -= 1
            latency.active += 1
            try:
                if isinstance(plan, FullPlan):
                    return await self._full(request, dialect, plan, ids, fault, hdrs, timing)
                return await self._stream(request, dialect, plan, ids, fault, hdrs, timing)
            finally:
                latency.active -= 1
                if slots is not None:
                    slots.release()

        return handler

    async def _full(
        self,
        request: web.Request,
        dialect: Dialect,
        plan: FullPlan,
        ids: RequestIds,
        fault: Optional[Fault],
        headers: Mapping[str, str],
        timing: Timing,
    ) -> web.StreamResponse:
        settings = self.settings
        body = plan.compiled.render(ids)
        hdrs = {"Content-Type": plan.content_type, **headers}
        kind = fault.kind if fault is not None else None
        if kind is not None:
            hdrs[FAULT_HEADER] = kind
        delay = 0.0
        if not timing.zero:
            # A real model only answers once the whole completion is generated.
            delay = self.state.latency.total(timing, plan.prompt_tokens, plan.chunks)
        if kind == LATENCY_SPIKE:
            assert fault is not None
            delay += (settings.spike_ms if fault.param is None else fault.param) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)
        if kind is None or kind == DUPLICATE or kind == LATENCY_SPIKE:
            return web.Response(body=body, headers=hdrs)
        if kind == MALFORMED or kind == TRUNCATE:
            return web.Response(body=body[: len(body) // 2], headers=hdrs)
        resp = web.StreamResponse(headers=hdrs)
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            await resp.write(body[: len(body) // 2])
        except ConnectionError:
            return resp
        if kind == STALL:
            await _stall(request, self.state)
        else:
            await _flush_and_abort(request)
        return resp

    async def _stream(
        self,
        request: web.Request,
        dialect: Dialect,
        plan: StreamPlan,
        ids: RequestIds,
        fault: Optional[Fault],
        headers: Mapping[str, str],
        timing: Timing,
    ) -> web.StreamResponse:
        settings = self.settings
        hdrs = {"Content-Type": plan.content_type, "Cache-Control": "no-cache", **headers}
        kind = fault.kind if fault is not None else None
        if kind is not None:
            hdrs[FAULT_HEADER] = kind
        suffix = plan.uses_suffix
        if timing.zero and kind not in _TIMED_FAULTS:
            if kind is None:
                return web.Response(body=plan.compiled.render(ids), headers=hdrs)
            template = _single_write(plan, settings, fault)
            return web.Response(
                body=dialect.fill(template, ids, suffix).encode("utf-8"), headers=hdrs
            )
        latency = self.state.latency
        resp = web.StreamResponse(headers=hdrs)
        await resp.prepare(request)
        pending: List[str] = []
        try:
            for delay_kind, extra, frame in _timeline(plan, settings, fault):
                if delay_kind == _FIRST:
                    delay = latency.ttft(timing, plan.prompt_tokens) + extra
                elif delay_kind == _GAP:
                    delay = latency.gap(timing) + extra
                else:
                    delay = extra
                if delay > 0:
                    if pending:
                        await resp.write(
                            dialect.fill("".join(pending), ids, suffix).encode("utf-8")
                        )
                        pending = []
                    await asyncio.sleep(delay)
                pending.append(frame)
            if pending:
                await resp.write(dialect.fill("".join(pending), ids, suffix).encode("utf-8"))
        except ConnectionError:
            log.debug("%s %s: client went away mid-stream", request.method, request.path)
            return resp
        if kind == STALL:
            await _stall(request, self.state)
        elif kind == DISCONNECT:
            await _flush_and_abort(request)
        return resp

    # ------------------------------------------------------------------ other routes

    async def health(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        state = self.state
        body = {
            "status": "ok",
            "service": "vastar-simulator",
            "requests": state.requests,
            "faults": state.faults.counts,
            "active": state.latency.active,
            "waiting": state.waiting,
            "rate_limited": state.limiter.refused,
            "settings": {
                "ttft_ms": s.ttft_ms,
                "ttft_std_ms": s.ttft_std_ms,
                "token_delay_ms": s.token_delay_ms,
                "token_delay_std_ms": s.token_delay_std_ms,
                "prefill_ms_per_token": s.prefill_ms_per_token,
                "load_factor": s.load_factor,
                "max_concurrency": s.max_concurrency,
                "tokens_per_chunk": s.tokens_per_chunk,
                "answer_tokens": s.answer_tokens,
                "rpm": s.rpm,
                "tpm": s.tpm,
                "fault_rate": s.fault_rate,
                "fault_kinds": list(s.fault_kinds),
                "seed": s.seed,
            },
            "dialects": sorted(DIALECTS),
        }
        return _json_response(json.dumps(body, separators=(",", ":")))

    async def models(self, request: web.Request) -> web.StreamResponse:
        if "anthropic-version" in request.headers:
            data = [
                {
                    "type": "model",
                    "id": mid,
                    "display_name": display,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for mid, display in _ANTHROPIC_MODELS
            ]
            body: Dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"],
                "last_id": data[-1]["id"],
            }
        else:
            body = {
                "object": "list",
                "data": [
                    {"id": mid, "object": "model", "created": created, "owned_by": owner}
                    for mid, created, owner in _MODELS
                ],
            }
        return _json_response(json.dumps(body, separators=(",", ":")))

    async def model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model"]
        for mid, created, owner in _MODELS:
            if mid == model_id:
                body = {"id": mid, "object": "model", "created": created, "owned_by": owner}
                return _json_response(json.dumps(body, separators=(",", ":")))
        err = ApiError(
            404,
            f"The model '{model_id}' does not exist",
            kind=NOT_FOUND,
            param="model",
            code="model_not_found",
        )
        return _error_response(self.state, DIALECTS["openai"], err)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/v1beta/", "/v1/models/")) and ":" in path:
            dialect = DIALECTS["gemini"]
        elif path.startswith("/api/"):
            dialect = DIALECTS["ollama"]
        elif path.startswith("/v2/"):
            dialect = DIALECTS["cohere-v2"]
        else:
            dialect = DIALECTS["openai"]
        err = ApiError(404, f"Invalid URL ({request.method} {path})", kind=NOT_FOUND)
        return _error_response(self.state, dialect, err)


_NO_ROUTE: Dict[str, Any] = {}


def _static_route(request: web.Request) -> Tuple[str, Dict[str, Any]]:
    """Routes whose response depends on the body only."""
    return "", _NO_ROUTE


_LEGACY_ROUTE: Dict[str, Any] = {"legacy": True}


def _legacy_embed_route(request: web.Request) -> Tuple[str, Dict[str, Any]]:
    return "legacy", _LEGACY_ROUTE


def _gemini_route(request: web.Request) -> Tuple[str, Dict[str, Any]]:
    """Split ``{model}:{method}`` from the path; ``alt=sse`` selects SSE framing."""
    spec = request.match_info["spec"]
    model, _, method = spec.partition(":")
    sse = request.query.get("alt") == "sse"
    route: Dict[str, Any] = {"model": model}
    if method == "streamGenerateContent":
        route["stream"] = True
        route["sse"] = sse
    elif method != "generateContent":
        route["error"] = ApiError(
            404,
            f"Method '{method or spec}' is not supported by the simulator for models/{model}.",
            kind=NOT_FOUND,
        )
    return f"{spec}|{sse}", route


async def _on_shutdown(app: web.Application) -> None:
    app[STATE_KEY].shutdown.set()


def create_app(settings: Optional[SimulatorSettings] = None) -> web.Application:
    """Build the simulator's aiohttp application.

    One app holds one fault RNG and one response cache, so two apps with the
    same settings behave identically for the same request sequence. With
    ``record_dir`` or ``replay_dir`` set it is the record or replay proxy instead
    (see :mod:`.recording`).
    """
    settings = settings or SimulatorSettings()
    if settings.record_dir is not None:
        from .recording import create_record_app

        return create_record_app(settings)
    if settings.replay_dir is not None:
        from .recording import create_replay_app

        return create_replay_app(settings)
    state = SimulatorState(settings)
    sim = _Simulator(state)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = state
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_post("/v1/chat/completions", sim.generation(DIALECTS["openai"], _static_route))
    r.add_post("/chat/completions", sim.generation(DIALECTS["openai"], _static_route))
    responses = sim.generation(DIALECTS["openai-responses"], _static_route)
    r.add_post("/v1/responses", responses)
    r.add_post("/responses", responses)
    embeddings = sim.generation(DIALECTS["openai-embeddings"], _static_route)
    r.add_post("/v1/embeddings", embeddings)
    r.add_post("/embeddings", embeddings)
    r.add_post("/api/embed", sim.generation(DIALECTS["ollama-embed"], _static_route))
    r.add_post("/api/embeddings", sim.generation(DIALECTS["ollama-embed"], _legacy_embed_route))
    r.add_post("/v1/messages", sim.generation(DIALECTS["anthropic"], _static_route))
    r.add_post("/api/chat", sim.generation(DIALECTS["ollama"], _static_route))
    r.add_post("/v1/chat", sim.generation(DIALECTS["cohere-v1"], _static_route))
    r.add_post("/v2/chat", sim.generation(DIALECTS["cohere-v2"], _static_route))
    gemini = sim.generation(DIALECTS["gemini"], _gemini_route)
    r.add_post("/v1beta/models/{spec}", gemini)
    r.add_post("/v1/models/{spec}", gemini)
    r.add_get("/health", sim.health)
    r.add_get("/v1/models", sim.models)
    r.add_get("/v1/models/{model}", sim.model)
    r.add_route("*", "/{tail:.*}", sim.not_found)
    return app
