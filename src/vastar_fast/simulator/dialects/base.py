"""Shared types of the simulator's dialects: request and completion records,
response plans (templates), error categories and the :class:`Dialect` base.

Why templates: a rendered response depends only on the request body, so the app
can cache it keyed by the raw body bytes and, per request, only substitute a
couple of placeholders (the response id, the ``created`` timestamp, the ISO
time) instead of re-serialising ~50 JSON chunks. That is what makes the
zero-delay throughput targets reachable with aiohttp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..answers import answer_for, tokenize, truncate_tokens

__all__ = [
    "CREATED_TOKEN",
    "CREATED_VALUE",
    "ID_TOKEN",
    "INVALID",
    "JSON_CT",
    "NDJSON_CT",
    "NOT_FOUND",
    "RATE_LIMITED",
    "SERVER",
    "SSE_CT",
    "TIME_TOKEN",
    "ApiError",
    "Completion",
    "Dialect",
    "FullPlan",
    "Generation",
    "RequestIds",
    "StreamPlan",
    "complete",
    "dumps",
    "group",
    "is_int",
    "sse",
    "text_of",
    "truncated_json",
    "type_name",
]


#: Placeholders substituted per request (see module docstring). They are plain
#: ASCII that json.dumps leaves untouched; CREATED_TOKEN includes its quotes
#: because it stands for a JSON number.
ID_TOKEN = "@@simid@@"
CREATED_TOKEN = '"@@simcreated@@"'
CREATED_VALUE = "@@simcreated@@"
TIME_TOKEN = "@@simtime@@"

dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Error categories shared by all dialects; each maps them to its own shapes.
INVALID = "invalid_request"
RATE_LIMITED = "rate_limit"
SERVER = "server_error"
NOT_FOUND = "not_found"

SSE_CT = "text/event-stream; charset=utf-8"
JSON_CT = "application/json"
NDJSON_CT = "application/x-ndjson"


class ApiError(Exception):
    """A request the real API would reject; rendered by the dialect's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = INVALID,
        param: Optional[str] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code


@dataclass(frozen=True)
class RequestIds:
    """Per-request values substituted into templates."""

    id: str
    created: int
    iso_time: str


@dataclass
class Generation:
    """A validated generation request, dialect-neutral."""

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: Optional[int]
    stream: bool
    include_usage: bool = False
    n: int = 1
    #: Dialect-specific extras (e.g. Gemini SSE vs JSON array streaming).
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    """The simulated model output for a Generation."""

    tokens: List[str]
    text: str
    truncated: bool

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


def complete(gen: Generation) -> Completion:
    """Produce the deterministic completion for ``gen`` (honours max_tokens)."""
    if gen.extra.get("load_only"):
        return Completion(tokens=[], text="", truncated=False)
    tokens, cut = truncate_tokens(tokenize(answer_for(gen.prompt)), gen.max_tokens)
    return Completion(tokens=tokens, text="".join(tokens), truncated=cut)


def group(tokens: Sequence[str], per_chunk: int) -> List[str]:
    """Join tokens into chunk texts of ``per_chunk`` tokens each."""
    if per_chunk <= 1:
        return list(tokens)
    return ["".join(tokens[i : i + per_chunk]) for i in range(0, len(tokens), per_chunk)]


def truncated_json(payload: str) -> str:
    """Cut a JSON object in half: always invalid, since the closing brace goes."""
    return payload[: max(1, len(payload) // 2)]


@dataclass
class StreamPlan:
    """Templates of a streamed response.

    ``lead`` frames go out immediately, ``body`` frames carry content (TTFT
    before the first, token delay between the others), ``tail`` frames follow
    the last body frame. ``broken`` is the malformed frame inserted after body
    frame ``broken_after`` by the ``malformed`` fault.
    """

    content_type: str
    lead: List[str]
    body: List[str]
    tail: List[str]
    broken: str
    broken_after: int
    _joined: Optional[str] = None
    _joined_malformed: Optional[str] = None

    @property
    def joined(self) -> str:
        if self._joined is None:
            self._joined = "".join(self.lead + self.body + self.tail)
        return self._joined

    @property
    def joined_malformed(self) -> str:
        if self._joined_malformed is None:
            self._joined_malformed = "".join(self.frames(malformed=True))
        return self._joined_malformed

    def frames(self, *, malformed: bool = False) -> List[str]:
        body = list(self.body)
        if malformed:
            body.insert(min(self.broken_after + 1, len(body)), self.broken)
        return self.lead + body + self.tail


@dataclass
class FullPlan:
    """Template of a non-streamed response body."""

    content_type: str
    body: str
    #: Number of content chunks the streamed equivalent would have (for pacing).
    chunks: int = 1


def sse(payload: str, event: Optional[str] = None) -> str:
    if event is None:
        return "data: " + payload + "\n\n"
    return "event: " + event + "\ndata: " + payload + "\n\n"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text_of(content: Any) -> Optional[str]:
    """Text of a message content: a string or a list of text parts; None if invalid."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: List[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
            else:
                return None
        return "".join(texts)
    return None


class Dialect:
    """Base class: one API's request validation, templates and error shapes."""

    name: str = "base"
    #: Extra headers sent with every response of this dialect.
    headers: Mapping[str, str] = {}
    #: Placeholders this dialect's templates use (avoids useless replaces).
    uses_created: bool = False
    uses_time: bool = False

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        raise NotImplementedError

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(400, f"Invalid JSON body: {exc}")

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        raise NotImplementedError

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        raise NotImplementedError

    def error_body(self, err: ApiError) -> str:
        raise NotImplementedError

    def make_id(self, counter: int, salt: str) -> str:
        return f"{salt}{counter:012x}"

    def fill(self, template: str, ids: RequestIds) -> str:
        """Substitute per-request values into a template."""
        out = template.replace(ID_TOKEN, ids.id)
        if self.uses_created:
            out = out.replace(CREATED_TOKEN, str(ids.created))
        if self.uses_time:
            out = out.replace(TIME_TOKEN, ids.iso_time)
        return out
