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
import itertools
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

from aiohttp import web

from .dialects import (
    DIALECTS,
    NOT_FOUND,
    RATE_LIMITED,
    SERVER,
    ApiError,
    Dialect,
    FullPlan,
    RequestIds,
    StreamPlan,
    complete,
)
from .faults import DISCONNECT, FAULT_HEADER, MALFORMED, RATE_LIMIT, STALL, FaultInjector
from .settings import SimulatorSettings

__all__ = ["SETTINGS_KEY", "STATE_KEY", "SimulatorState", "create_app"]

log = logging.getLogger("vastar_fast.simulator")

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


class SimulatorState:
    """Mutable per-app state: fault RNG, id counter, response cache, counters."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.faults = FaultInjector(settings.fault_rate, settings.seed)
        self.salt = os.urandom(8).hex()
        self._counter = itertools.count(1)
        self.cache: Dict[Tuple[str, str, bytes], Plan] = {}
        self.requests = 0
        self.shutdown = asyncio.Event()

    def ids(self, dialect: Dialect) -> RequestIds:
        """Fresh id and timestamps for one response (cheap: counter + cached second)."""
        now = time.time()
        second = int(now)
        iso = ""
        if dialect.uses_time:
            iso = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return RequestIds(dialect.make_id(next(self._counter), self.salt), second, iso)

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


def _schedule(
    plan: StreamPlan, settings: SimulatorSettings, fault: Optional[str]
) -> List[Tuple[float, List[str]]]:
    """Turn a plan into (sleep-before-seconds, frames) steps, applying stream faults.

    Consecutive frames with no delay between them are merged into one step so
    they go out in a single write.
    """
    ttft = settings.ttft_ms / 1000.0
    gap = settings.token_delay_ms / 1000.0
    body: List[Tuple[float, str]] = [
        (ttft if i == 0 else gap, frame) for i, frame in enumerate(plan.body)
    ]
    tail = [(0.0 if body else ttft, frame) for frame in plan.tail]
    if fault == MALFORMED:
        at = min(plan.broken_after + 1, len(body))
        body.insert(at, (0.0, plan.broken))
    timed: List[Tuple[float, str]] = [(0.0, f) for f in plan.lead]
    if fault in (DISCONNECT, STALL):
        timed += body[: settings.fault_after_chunks]
    else:
        timed += body + tail
    steps: List[Tuple[float, List[str]]] = []
    for delay, frame in timed:
        if steps and delay == 0.0:
            steps[-1][1].append(frame)
        else:
            steps.append((delay, [frame]))
    return steps


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

        async def handler(request: web.Request) -> web.StreamResponse:
            state.requests += 1
            raw = await request.read()
            fault = state.faults.choose(request.headers.get(FAULT_HEADER))
            if fault is not None:
                log.info("%s %s: injecting fault %s", request.method, request.path, fault)
                if fault == RATE_LIMIT:
                    return _error_response(
                        state,
                        dialect,
                        ApiError(
                            429, "Rate limit reached for requests (simulated).", kind=RATE_LIMITED
                        ),
                        {
                            "Retry-After": str(settings.retry_after_s),
                            "x-ratelimit-remaining-requests": "0",
                            FAULT_HEADER: fault,
                        },
                    )
                if fault != DISCONNECT and fault != STALL and fault != MALFORMED:
                    return _error_response(
                        state,
                        dialect,
                        ApiError(
                            500,
                            "The server had an error while processing your request (simulated).",
                            kind=SERVER,
                        ),
                        {FAULT_HEADER: fault},
                    )
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
                    gen = dialect.parse(data, route)
                except ApiError as err:
                    log.debug(
                        "%s %s: invalid request: %s", request.method, request.path, err.message
                    )
                    return _error_response(state, dialect, err)
                comp = complete(gen)
                if gen.stream:
                    plan = dialect.build_stream(gen, comp, settings.tokens_per_chunk)
                else:
                    plan = dialect.build_full(gen, comp)
                    plan.chunks = -(-comp.completion_tokens // settings.tokens_per_chunk)
                state.cache_put(key, plan)
            ids = state.ids(dialect)
            if isinstance(plan, FullPlan):
                return await self._full(request, dialect, plan, ids, fault, headers)
            return await self._stream(request, dialect, plan, ids, fault, headers)

        return handler

    async def _full(
        self,
        request: web.Request,
        dialect: Dialect,
        plan: FullPlan,
        ids: RequestIds,
        fault: Optional[str],
        headers: Dict[str, str],
    ) -> web.StreamResponse:
        settings = self.settings
        body = dialect.fill(plan.body, ids).encode("utf-8")
        hdrs = {"Content-Type": plan.content_type, **headers}
        if fault is not None:
            hdrs[FAULT_HEADER] = fault
        if not settings.zero_delay:
            # A real model only answers once the whole completion is generated.
            gaps = max(0, plan.chunks - 1)
            await asyncio.sleep((settings.ttft_ms + settings.token_delay_ms * gaps) / 1000.0)
        if fault is None:
            return web.Response(body=body, headers=hdrs)
        if fault == MALFORMED:
            return web.Response(body=body[: len(body) // 2], headers=hdrs)
        resp = web.StreamResponse(headers=hdrs)
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            await resp.write(body[: len(body) // 2])
        except ConnectionError:
            return resp
        if fault == STALL:
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
        fault: Optional[str],
        headers: Dict[str, str],
    ) -> web.StreamResponse:
        settings = self.settings
        hdrs = {"Content-Type": plan.content_type, "Cache-Control": "no-cache", **headers}
        if fault is not None:
            hdrs[FAULT_HEADER] = fault
        if settings.zero_delay and (fault is None or fault == MALFORMED):
            template = plan.joined if fault is None else plan.joined_malformed
            return web.Response(body=dialect.fill(template, ids).encode("utf-8"), headers=hdrs)
        resp = web.StreamResponse(headers=hdrs)
        await resp.prepare(request)
        try:
            for delay, frames in _schedule(plan, settings, fault):
                if delay > 0:
                    await asyncio.sleep(delay)
                await resp.write(dialect.fill("".join(frames), ids).encode("utf-8"))
        except ConnectionError:
            log.debug("%s %s: client went away mid-stream", request.method, request.path)
            return resp
        if fault == STALL:
            await _stall(request, self.state)
        elif fault == DISCONNECT:
            await _flush_and_abort(request)
        return resp

    # ------------------------------------------------------------------ other routes

    async def health(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        body = {
            "status": "ok",
            "service": "vastar-simulator",
            "requests": self.state.requests,
            "faults": self.state.faults.counts,
            "settings": {
                "ttft_ms": s.ttft_ms,
                "token_delay_ms": s.token_delay_ms,
                "tokens_per_chunk": s.tokens_per_chunk,
                "fault_rate": s.fault_rate,
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
    same settings behave identically for the same request sequence.
    """
    settings = settings or SimulatorSettings()
    state = SimulatorState(settings)
    sim = _Simulator(state)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = state
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_post("/v1/chat/completions", sim.generation(DIALECTS["openai"], _static_route))
    r.add_post("/chat/completions", sim.generation(DIALECTS["openai"], _static_route))
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
