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
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ..answers import answer_tokens as answer_token_list
from ..answers import tokenize, truncate_tokens
from ..tool_args import generate_arguments

__all__ = [
    "AUTO",
    "CREATED_TOKEN",
    "CREATED_VALUE",
    "ID_TOKEN",
    "INVALID",
    "JSON_CT",
    "NDJSON_CT",
    "NONE",
    "NOT_FOUND",
    "OVERLOADED",
    "RATE_LIMITED",
    "RATE_LIMITED_TOKENS",
    "REQUIRED",
    "SERVER",
    "SSE_CT",
    "SUFFIX_TOKEN",
    "TIME_TOKEN",
    "ApiError",
    "Completion",
    "Dialect",
    "FullPlan",
    "Generation",
    "RequestIds",
    "StreamPlan",
    "Template",
    "ToolCall",
    "ToolSpec",
    "complete",
    "dumps",
    "group",
    "is_int",
    "pick_tool",
    "sse",
    "text_of",
    "tool_specs",
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
#: The unique part of the response id (salt + counter), for ids of items inside
#: a response (tool call ids, Responses API item ids). Only plans that set
#: ``uses_suffix`` get it replaced.
SUFFIX_TOKEN = "@@simsfx@@"

dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Error categories shared by all dialects; each maps them to its own shapes.
INVALID = "invalid_request"
RATE_LIMITED = "rate_limit"
SERVER = "server_error"
NOT_FOUND = "not_found"
RATE_LIMITED_TOKENS = "rate_limit_tokens"
OVERLOADED = "overloaded"

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


class RequestIds(NamedTuple):
    """Per-request values substituted into templates (a tuple: built once per request,
    and a frozen dataclass costs about a microsecond more to construct)."""

    id: str
    created: int
    iso_time: str
    suffix: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the caller declared: its name and the JSON schema of its arguments."""

    name: str
    schema: Mapping[str, Any]


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
    #: vLLM's ``ignore_eos``: generate exactly ``max_tokens`` tokens.
    ignore_eos: bool = False
    #: The tool the simulated model calls instead of answering (see :func:`pick_tool`).
    tool: Optional[ToolSpec] = None
    #: Dialect-specific extras (e.g. Gemini SSE vs JSON array streaming).
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolCall:
    """One simulated tool call: the name and the arguments as compact JSON text."""

    name: str
    arguments: Dict[str, Any]
    arguments_json: str
    tokens: List[str]


@dataclass
class Completion:
    """The simulated model output for a Generation: text tokens or tool calls."""

    tokens: List[str]
    text: str
    truncated: bool
    calls: List[ToolCall] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        if self.calls:
            return sum(len(c.tokens) for c in self.calls)
        return len(self.tokens)


def complete(
    gen: Generation, answer_tokens: Optional[int] = None, seed: Optional[int] = None
) -> Completion:
    """Produce the deterministic completion for ``gen``.

    Length: ``ignore_eos`` with ``max_tokens`` gives exactly ``max_tokens`` tokens;
    else ``answer_tokens`` (the ``--answer-tokens`` option) pins the answer's length,
    and ``max_tokens`` cuts it. A request whose :attr:`Generation.tool` is set gets
    one call of that tool, with arguments generated from its schema.
    """
    if gen.extra.get("load_only"):
        return Completion(tokens=[], text="", truncated=False)
    if gen.tool is not None:
        args = generate_arguments(gen.tool.schema, gen.prompt, gen.tool.name, seed)
        text = dumps(args)
        call = ToolCall(gen.tool.name, args, text, tokenize(text))
        return Completion(tokens=[], text="", truncated=False, calls=[call])
    if gen.ignore_eos and gen.max_tokens is not None:
        tokens = answer_token_list(gen.prompt, gen.max_tokens, seed)
        return Completion(tokens=tokens, text="".join(tokens), truncated=True)
    tokens, cut = truncate_tokens(
        answer_token_list(gen.prompt, answer_tokens, seed), gen.max_tokens
    )
    return Completion(tokens=tokens, text="".join(tokens), truncated=cut)


#: Tool choice modes, dialect-neutral (OpenAI "auto"/"required"/"none"/named,
#: Anthropic "auto"/"any"/"none"/"tool", Gemini AUTO/ANY/NONE).
AUTO = "auto"
REQUIRED = "required"
NONE = "none"


def pick_tool(
    tools: Sequence[ToolSpec],
    mode: str,
    forced: Optional[str],
    prompt: str,
    answered: bool,
) -> Optional[ToolSpec]:
    """Which tool the simulated model calls, or None for a text answer.

    The rule imitates an agent loop deterministically: with ``auto`` the model
    calls a tool until the conversation holds a tool result (``answered``), then
    answers in text; ``required`` (and a named tool) always call. The tool is the
    forced one, else the first whose name words all appear in the prompt, else
    the first declared.
    """
    if not tools or mode == NONE or (mode == AUTO and answered and forced is None):
        return None
    if forced is not None:
        for tool in tools:
            if tool.name == forced:
                return tool
        return None
    low = prompt.lower()
    for tool in tools:
        words = [w for w in tool.name.lower().replace("-", "_").split("_") if w]
        if words and all(w in low for w in words):
            return tool
    return tools[0]


def group(tokens: Sequence[str], per_chunk: int) -> List[str]:
    """Join tokens into chunk texts of ``per_chunk`` tokens each."""
    if per_chunk <= 1:
        return list(tokens)
    return ["".join(tokens[i : i + per_chunk]) for i in range(0, len(tokens), per_chunk)]


def truncated_json(payload: str) -> str:
    """Cut a JSON object in half: always invalid, since the closing brace goes."""
    return payload[: max(1, len(payload) // 2)]


_PLACEHOLDER_RE = re.compile(
    "(" + "|".join(re.escape(p) for p in (ID_TOKEN, CREATED_TOKEN, TIME_TOKEN, SUFFIX_TOKEN)) + ")"
)
_SLOT = {ID_TOKEN: 0, CREATED_TOKEN: 1, TIME_TOKEN: 2, SUFFIX_TOKEN: 3}


class Template:
    """A response template split at its placeholders, rendered straight to bytes.

    Why: ``str.replace`` walks a 12 KB stream template once per placeholder kind
    (about 17 us for a 50-chunk OpenAI stream); slotting the values between the
    pre-encoded segments and joining costs a fraction of that (docs/decisions.md).
    """

    __slots__ = ("_parts", "_pick", "_single")

    def __init__(self, text: str) -> None:
        pieces = _PLACEHOLDER_RE.split(text)
        self._parts: List[bytes] = [p.encode("utf-8") for p in pieces]
        slots = [_SLOT[p] for p in pieces[1::2]]
        self._pick: Optional[Callable[[Tuple[bytes, ...]], Any]] = (
            operator.itemgetter(*slots) if slots else None
        )
        self._single = len(slots) == 1

    def render(self, ids: RequestIds) -> bytes:
        if self._pick is None:
            return self._parts[0]
        values = (
            ids.id.encode(),
            str(ids.created).encode(),
            ids.iso_time.encode(),
            ids.suffix.encode(),
        )
        picked = self._pick(values)
        parts = self._parts[:]
        parts[1::2] = (picked,) if self._single else picked
        return b"".join(parts)


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
    #: Usage of this response (token budgets, prefill time), set by the app.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uses_suffix: bool = False
    _joined: Optional[str] = None
    _joined_malformed: Optional[str] = None
    _compiled: Optional[Template] = None

    @property
    def compiled(self) -> Template:
        """The whole stream as a :class:`Template` (the zero-delay fast path)."""
        if self._compiled is None:
            self._compiled = Template(self.joined)
        return self._compiled

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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uses_suffix: bool = False
    _compiled: Optional[Template] = None

    @property
    def compiled(self) -> Template:
        if self._compiled is None:
            self._compiled = Template(self.body)
        return self._compiled


def tool_specs(
    tools: Any,
    where: str,
    name_of: Callable[[Mapping[str, Any]], Any],
    schema_of: Callable[[Mapping[str, Any]], Any],
) -> List[ToolSpec]:
    """Tool declarations -> specs; ``ApiError`` naming ``where[i]`` for a bad one."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ApiError(
            400,
            f"Invalid type for '{where}': expected an array, but got {type_name(tools)} instead.",
            param=where,
            code="invalid_type",
        )
    specs: List[ToolSpec] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ApiError(
                400,
                f"Invalid type for '{where}[{i}]': expected an object, but got {type_name(tool)} instead.",
                param=f"{where}[{i}]",
                code="invalid_type",
            )
        name = name_of(tool)
        if name is None:
            continue  # a tool type the simulator does not call (built-in tools)
        if not isinstance(name, str) or not name:
            raise ApiError(
                400,
                f"Missing required parameter: '{where}[{i}].name'.",
                param=f"{where}[{i}].name",
                code="missing_required_parameter",
            )
        schema = schema_of(tool)
        specs.append(ToolSpec(name, schema if isinstance(schema, Mapping) else {}))
    return specs


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

    #: Rate-limit header family sent with every answer: "openai", "anthropic" or "".
    ratelimit_headers: str = ""
    #: HTTP status of the "overloaded" fault (Anthropic: 529).
    overloaded_status: int = 503

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        raise NotImplementedError

    def make_plan(
        self,
        data: Any,
        route: Mapping[str, Any],
        answer_tokens: Optional[int],
        seed: Optional[int],
        per_chunk: int,
    ) -> Union[StreamPlan, FullPlan]:
        """Validate a decoded body and render its response templates (cached by the app)."""
        gen = self.parse(data, route)
        comp = complete(gen, answer_tokens, seed)
        plan: Union[StreamPlan, FullPlan]
        if gen.stream:
            plan = self.build_stream(gen, comp, per_chunk)
        else:
            plan = self.build_full(gen, comp)
            plan.chunks = max(1, -(-comp.completion_tokens // per_chunk))
        plan.prompt_tokens = gen.prompt_tokens
        plan.completion_tokens = comp.completion_tokens * gen.n
        return plan

    def overloaded(self) -> ApiError:
        return ApiError(
            self.overloaded_status,
            "The server is overloaded, please try again later (simulated).",
            kind=OVERLOADED,
        )

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

    def fill(self, template: str, ids: RequestIds, suffix: bool = False) -> str:
        """Substitute per-request values into a template."""
        out = template.replace(ID_TOKEN, ids.id)
        if suffix:
            out = out.replace(SUFFIX_TOKEN, ids.suffix)
        if self.uses_created:
            out = out.replace(CREATED_TOKEN, str(ids.created))
        if self.uses_time:
            out = out.replace(TIME_TOKEN, ids.iso_time)
        return out
