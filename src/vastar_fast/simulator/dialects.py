"""Wire formats ("dialects") of the AI APIs the simulator imitates.

Each dialect validates a decoded request body into a :class:`Generation`, and
renders responses as *templates*: strings in which the per-request values (the
response id, the ``created`` timestamp, the ISO time) are placeholders. Why
templates: a rendered response depends only on the request body, so the app can
cache it keyed by the raw body bytes and, per request, only substitute a couple
of placeholders instead of re-serialising ~50 JSON chunks. That is what makes
the zero-delay throughput targets reachable with aiohttp.

Field names and event sequences follow the real APIs (OpenAI chat completions,
Anthropic messages, Ollama ``/api/chat``, Cohere v1/v2 chat, Gemini
``generateContent``), checked against the official SDKs' types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .answers import answer_for, count_tokens, tokenize, truncate_tokens

__all__ = [
    "CREATED_TOKEN",
    "DIALECTS",
    "ID_TOKEN",
    "TIME_TOKEN",
    "AnthropicDialect",
    "ApiError",
    "CohereV1Dialect",
    "CohereV2Dialect",
    "Completion",
    "Dialect",
    "FullPlan",
    "GeminiDialect",
    "Generation",
    "OllamaDialect",
    "OpenAIDialect",
    "RequestIds",
    "StreamPlan",
    "complete",
]

#: Placeholders substituted per request (see module docstring). They are plain
#: ASCII that json.dumps leaves untouched; CREATED_TOKEN includes its quotes
#: because it stands for a JSON number.
ID_TOKEN = "@@simid@@"
CREATED_TOKEN = '"@@simcreated@@"'
_CREATED_VALUE = "@@simcreated@@"
TIME_TOKEN = "@@simtime@@"

_dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

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


def _truncated_json(payload: str) -> str:
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


def _sse(payload: str, event: Optional[str] = None) -> str:
    if event is None:
        return "data: " + payload + "\n\n"
    return "event: " + event + "\ndata: " + payload + "\n\n"


def _type_name(value: Any) -> str:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_of(content: Any) -> Optional[str]:
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


# --------------------------------------------------------------------------- OpenAI


class OpenAIDialect(Dialect):
    """OpenAI ``POST /v1/chat/completions`` (SSE ``data:`` chunks ending in ``[DONE]``)."""

    name = "openai"
    uses_created = True
    fingerprint = "fp_vastar_sim"

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON.)",
        )

    def make_id(self, counter: int, salt: str) -> str:
        return f"chatcmpl-{salt}{counter:012x}"

    @staticmethod
    def _bad_type(param: str, expected: str, value: Any) -> ApiError:
        return ApiError(
            400,
            f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} "
            "instead.",
            param=param,
            code="invalid_type",
        )

    def _opt_int(self, data: Mapping[str, Any], key: str, minimum: int) -> Optional[int]:
        value = data.get(key)
        if value is None:
            return None
        if not _is_int(value):
            raise self._bad_type(key, "an integer", value)
        if value < minimum:
            raise ApiError(
                400,
                f"Invalid '{key}': integer below minimum value. Expected a value >= "
                f"{minimum}, but got {value} instead.",
                param=key,
                code="integer_below_min_value",
            )
        return int(value)

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(
                400,
                f"Invalid type for request body: expected an object, but got "
                f"{_type_name(data)} instead.",
                code="invalid_type",
            )
        model = data.get("model")
        if model is None:
            raise ApiError(400, "you must provide a model parameter")
        if not isinstance(model, str):
            raise self._bad_type("model", "a string", model)
        messages = data.get("messages")
        if messages is None:
            raise ApiError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list):
            raise self._bad_type("messages", "an array of objects", messages)
        if not messages:
            raise ApiError(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        prompt = ""
        prompt_tokens = 3
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise self._bad_type(f"messages[{i}]", "an object", msg)
            role = msg.get("role")
            if role is None:
                raise ApiError(
                    400,
                    f"Missing required parameter: 'messages[{i}].role'.",
                    param=f"messages[{i}].role",
                    code="missing_required_parameter",
                )
            if not isinstance(role, str):
                raise self._bad_type(f"messages[{i}].role", "a string", role)
            content = msg.get("content")
            text = "" if content is None else _text_of(content)
            if text is None:
                raise self._bad_type(
                    f"messages[{i}].content", "one of a string or array of objects", content
                )
            prompt_tokens += 4 + count_tokens(text)
            if role == "user" or not prompt:
                prompt = text
        stream = data.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise self._bad_type("stream", "a boolean", stream)
        max_tokens = self._opt_int(data, "max_completion_tokens", 1)
        legacy_max = self._opt_int(data, "max_tokens", 1)
        if max_tokens is None:
            max_tokens = legacy_max
        n = self._opt_int(data, "n", 1) or 1
        if n > 128:
            raise ApiError(
                400,
                f"Invalid 'n': integer above maximum value. Expected a value <= 128, but got "
                f"{n} instead.",
                param="n",
                code="integer_above_max_value",
            )
        include_usage = False
        options = data.get("stream_options")
        if options is not None:
            if not isinstance(options, dict):
                raise self._bad_type("stream_options", "an object", options)
            if not stream:
                raise ApiError(
                    400,
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                )
            flag = options.get("include_usage")
            if flag is not None and not isinstance(flag, bool):
                raise self._bad_type("stream_options.include_usage", "a boolean", flag)
            include_usage = bool(flag)
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=bool(stream),
            include_usage=include_usage,
            n=n,
        )

    @staticmethod
    def _usage(gen: Generation, comp: Completion) -> Dict[str, Any]:
        completion_tokens = comp.completion_tokens * gen.n
        return {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": gen.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        finish = "length" if comp.truncated else "stop"
        usage_field: Dict[str, Any] = {"usage": None} if gen.include_usage else {}

        def chunk(choices: List[Dict[str, Any]], **extra: Any) -> str:
            obj: Dict[str, Any] = {
                "id": ID_TOKEN,
                "object": "chat.completion.chunk",
                "created": _CREATED_VALUE,
                "model": gen.model,
                "service_tier": "default",
                "system_fingerprint": self.fingerprint,
                "choices": choices,
            }
            obj.update(usage_field)
            obj.update(extra)
            return _dumps(obj)

        def choice(index: int, delta: Dict[str, Any], reason: Optional[str]) -> Dict[str, Any]:
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

        indices = range(gen.n)
        lead = [
            _sse(chunk([choice(i, {"role": "assistant", "content": "", "refusal": None}, None)]))
            for i in indices
        ]
        body_json = [
            chunk([choice(i, {"content": piece}, None)])
            for piece in group(comp.tokens, per_chunk)
            for i in indices
        ]
        tail = [_sse(chunk([choice(i, {}, finish)])) for i in indices]
        if gen.include_usage:
            tail.append(_sse(chunk([], usage=self._usage(gen, comp))))
        tail.append("data: [DONE]\n\n")
        mid = max(0, len(body_json) // 2 - 1)
        broken = _sse(_truncated_json(body_json[mid] if body_json else tail[0][6:-2]))
        return StreamPlan(SSE_CT, lead, [_sse(b) for b in body_json], tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        finish = "length" if comp.truncated else "stop"
        obj = {
            "id": ID_TOKEN,
            "object": "chat.completion",
            "created": _CREATED_VALUE,
            "model": gen.model,
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": comp.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(gen.n)
            ],
            "usage": self._usage(gen, comp),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        return FullPlan(JSON_CT, _dumps(obj))

    _ERR_TYPES: Mapping[str, Tuple[str, Optional[str]]] = {
        INVALID: ("invalid_request_error", None),
        NOT_FOUND: ("invalid_request_error", None),
        RATE_LIMITED: ("requests", "rate_limit_exceeded"),
        SERVER: ("server_error", None),
    }

    def error_body(self, err: ApiError) -> str:
        etype, default_code = self._ERR_TYPES.get(err.kind, ("invalid_request_error", None))
        return _dumps(
            {
                "error": {
                    "message": err.message,
                    "type": etype,
                    "param": err.param,
                    "code": err.code if err.code is not None else default_code,
                }
            }
        )


# ------------------------------------------------------------------------ Anthropic


class AnthropicDialect(Dialect):
    """Anthropic ``POST /v1/messages`` (named SSE events ending in ``message_stop``)."""

    name = "anthropic"

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(
            400,
            "There was an error parsing the body of your request. Make sure it is valid JSON.",
        )

    def make_id(self, counter: int, salt: str) -> str:
        return f"msg_01{salt}{counter:012x}"

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(400, "Input should be a valid dictionary")
        for key in ("model", "max_tokens", "messages"):
            if key not in data:
                raise ApiError(400, f"{key}: Field required")
        model = data["model"]
        if not isinstance(model, str):
            raise ApiError(400, "model: Input should be a valid string")
        max_tokens = data["max_tokens"]
        if not _is_int(max_tokens):
            raise ApiError(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
        messages = data["messages"]
        if not isinstance(messages, list):
            raise ApiError(400, "messages: Input should be a valid list")
        if not messages:
            raise ApiError(400, "messages: at least one message is required")
        system = data.get("system")
        system_text = "" if system is None else _text_of(system)
        if system_text is None:
            raise ApiError(400, "system: Input should be a valid string or list of text blocks")
        prompt = ""
        prompt_tokens = count_tokens(system_text) + 5
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise ApiError(400, f"messages.{i}: Input should be a valid dictionary")
            role = msg.get("role")
            if role not in ("user", "assistant"):
                raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if "content" not in msg:
                raise ApiError(400, f"messages.{i}.content: Field required")
            text = _text_of(msg["content"])
            if text is None:
                raise ApiError(400, f"messages.{i}.content: Input should be a valid list")
            prompt_tokens += 3 + count_tokens(text)
            if role == "user":
                prompt = text
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "stream: Input should be a valid boolean")
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=int(max_tokens),
            stream=stream,
        )

    @staticmethod
    def _usage(input_tokens: int, output_tokens: int) -> Dict[str, Any]:
        return {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def _message(
        self, gen: Generation, content: List[Dict[str, Any]], stop: Optional[str], out: int
    ) -> Dict[str, Any]:
        return {
            "id": ID_TOKEN,
            "type": "message",
            "role": "assistant",
            "model": gen.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(gen.prompt_tokens, out),
        }

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        stop = "max_tokens" if comp.truncated else "end_turn"

        def event(name: str, obj: Dict[str, Any]) -> str:
            return _sse(_dumps(obj), name)

        lead = [
            event(
                "message_start",
                {"type": "message_start", "message": self._message(gen, [], None, 1)},
            ),
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            event("ping", {"type": "ping"}),
        ]
        body_json = [
            _dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
            for piece in group(comp.tokens, per_chunk)
        ]
        tail = [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": comp.completion_tokens},
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken = _sse(_truncated_json(body_json[mid]), "content_block_delta")
        body = [_sse(b, "content_block_delta") for b in body_json]
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        stop = "max_tokens" if comp.truncated else "end_turn"
        content = [{"type": "text", "text": comp.text}]
        return FullPlan(JSON_CT, _dumps(self._message(gen, content, stop, comp.completion_tokens)))

    _ERR_TYPES: Mapping[str, str] = {
        INVALID: "invalid_request_error",
        NOT_FOUND: "not_found_error",
        RATE_LIMITED: "rate_limit_error",
        SERVER: "api_error",
    }

    def error_body(self, err: ApiError) -> str:
        etype = self._ERR_TYPES.get(err.kind, "invalid_request_error")
        return _dumps({"type": "error", "error": {"type": etype, "message": err.message}})


# --------------------------------------------------------------------------- Ollama


class OllamaDialect(Dialect):
    """Ollama ``POST /api/chat`` (NDJSON lines, last one ``"done": true``)."""

    name = "ollama"
    uses_time = True

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(400, f"invalid character in JSON body: {exc}")

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_type_name(data)} into Go value of type api.ChatRequest",
            )
        model = data.get("model")
        if not model:
            raise ApiError(400, "model is required")
        if not isinstance(model, str):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_type_name(model)} into Go struct field "
                "ChatRequest.model of type string",
            )
        messages = data.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_type_name(messages)} into Go struct field "
                "ChatRequest.messages of type []api.Message",
            )
        prompt = ""
        prompt_tokens = 0
        for msg in messages or []:
            if not isinstance(msg, dict):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {_type_name(msg)} into Go struct field "
                    "ChatRequest.messages of type api.Message",
                )
            content = msg.get("content", "")
            if not isinstance(content, str):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {_type_name(content)} into Go struct field "
                    "Message.messages.content of type string",
                )
            prompt_tokens += 4 + count_tokens(content)
            if msg.get("role") == "user" or not prompt:
                prompt = content
        stream = data.get("stream", True)
        if stream is None:
            stream = True
        if not isinstance(stream, bool):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_type_name(stream)} into Go struct field "
                "ChatRequest.stream of type bool",
            )
        max_tokens: Optional[int] = None
        options = data.get("options")
        if options is not None:
            if not isinstance(options, dict):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {_type_name(options)} into Go struct field "
                    "ChatRequest.options of type map[string]interface {}",
                )
            num_predict = options.get("num_predict")
            if num_predict is not None:
                if not _is_int(num_predict):
                    raise ApiError(400, 'option "num_predict" must be of type integer')
                if num_predict > 0:
                    max_tokens = int(num_predict)
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
            extra={"load_only": not messages},
        )

    @staticmethod
    def _reason(gen: Generation, comp: Completion) -> str:
        if gen.extra.get("load_only"):
            return "load"
        return "length" if comp.truncated else "stop"

    def _final(self, gen: Generation, comp: Completion, content: str) -> Dict[str, Any]:
        obj: Dict[str, Any] = {
            "model": gen.model,
            "created_at": TIME_TOKEN,
            "message": {"role": "assistant", "content": content},
            "done_reason": self._reason(gen, comp),
            "done": True,
        }
        if not gen.extra.get("load_only"):
            # Deterministic, plausible nanosecond durations (~20 ms per token).
            eval_ns = 20_000_000 * comp.completion_tokens
            prompt_ns = 1_000_000 * gen.prompt_tokens
            obj.update(
                total_duration=eval_ns + prompt_ns + 5_000_000,
                load_duration=5_000_000,
                prompt_eval_count=gen.prompt_tokens,
                prompt_eval_duration=prompt_ns,
                eval_count=comp.completion_tokens,
                eval_duration=eval_ns,
            )
        return obj

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        body_json = [
            _dumps(
                {
                    "model": gen.model,
                    "created_at": TIME_TOKEN,
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            )
            for piece in group(comp.tokens, per_chunk)
        ]
        final = _dumps(self._final(gen, comp, ""))
        mid = max(0, len(body_json) // 2 - 1)
        broken = _truncated_json(body_json[mid] if body_json else final) + "\n"
        return StreamPlan(NDJSON_CT, [], [b + "\n" for b in body_json], [final + "\n"], broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        return FullPlan(JSON_CT, _dumps(self._final(gen, comp, comp.text)))

    def error_body(self, err: ApiError) -> str:
        return _dumps({"error": err.message})


# --------------------------------------------------------------------------- Cohere


def _cohere_usage(gen: Generation, comp: Completion) -> Dict[str, Any]:
    return {
        "billed_units": {
            "input_tokens": gen.prompt_tokens,
            "output_tokens": comp.completion_tokens,
        },
        "tokens": {"input_tokens": gen.prompt_tokens + 6, "output_tokens": comp.completion_tokens},
    }


class CohereV2Dialect(Dialect):
    """Cohere v2 ``POST /v2/chat`` (SSE ``event:`` + ``data:``, ends with ``message-end``)."""

    name = "cohere-v2"

    def make_id(self, counter: int, salt: str) -> str:
        return f"{salt[:8]}-{salt[8:12]}-4{counter >> 48 & 0xFFF:03x}-a{counter >> 36 & 0xFFF:03x}-{counter & 0xFFFFFFFFF:012x}"

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(400, f"invalid request: could not parse JSON body: {exc}")

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(400, "invalid request: body must be a JSON object")
        model = data.get("model")
        if not model:
            raise ApiError(400, "invalid request: model is required")
        if not isinstance(model, str):
            raise ApiError(400, "invalid request: model must be a string")
        messages = data.get("messages")
        if messages is None:
            raise ApiError(400, "invalid request: messages is required")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "invalid request: messages must be a non-empty array")
        prompt = ""
        prompt_tokens = 0
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise ApiError(400, f"invalid request: messages[{i}] must be an object with a role")
            content = msg.get("content", "")
            text = "" if content is None else _text_of(content)
            if text is None:
                raise ApiError(400, f"invalid request: messages[{i}].content is invalid")
            prompt_tokens += count_tokens(text)
            if msg["role"] == "user" or not prompt:
                prompt = text
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "invalid request: stream must be a boolean")
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise ApiError(400, "invalid request: max_tokens must be a positive integer")
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
        )

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        finish = "MAX_TOKENS" if comp.truncated else "COMPLETE"

        def event(obj: Dict[str, Any]) -> str:
            return _sse(_dumps(obj), obj["type"])

        lead = [
            event(
                {
                    "id": ID_TOKEN,
                    "type": "message-start",
                    "delta": {
                        "message": {
                            "role": "assistant",
                            "content": [],
                            "tool_plan": "",
                            "tool_calls": [],
                            "citations": [],
                        }
                    },
                }
            ),
            event(
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                }
            ),
        ]
        body_json = [
            _dumps(
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": piece}}},
                }
            )
            for piece in group(comp.tokens, per_chunk)
        ]
        tail = [
            event({"type": "content-end", "index": 0}),
            event(
                {
                    "type": "message-end",
                    "delta": {"finish_reason": finish, "usage": _cohere_usage(gen, comp)},
                }
            ),
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken = _sse(_truncated_json(body_json[mid]), "content-delta")
        body = [_sse(b, "content-delta") for b in body_json]
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        obj = {
            "id": ID_TOKEN,
            "message": {"role": "assistant", "content": [{"type": "text", "text": comp.text}]},
            "finish_reason": "MAX_TOKENS" if comp.truncated else "COMPLETE",
            "usage": _cohere_usage(gen, comp),
        }
        return FullPlan(JSON_CT, _dumps(obj))

    def error_body(self, err: ApiError) -> str:
        return _dumps({"id": ID_TOKEN, "message": err.message})


class CohereV1Dialect(CohereV2Dialect):
    """Cohere v1 ``POST /v1/chat`` (NDJSON ``stream-start``/``text-generation``/``stream-end``)."""

    name = "cohere-v1"
    default_model = "command-r-plus"

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(400, "invalid request: body must be a JSON object")
        message = data.get("message")
        if not isinstance(message, str) or not message:
            raise ApiError(
                400,
                "invalid request: message must be at least 1 token long or tool results "
                "must be specified.",
            )
        model = data.get("model", self.default_model)
        if not isinstance(model, str):
            raise ApiError(400, "invalid request: model must be a string")
        history = data.get("chat_history", [])
        if history is None:
            history = []
        if not isinstance(history, list):
            raise ApiError(400, "invalid request: chat_history must be an array")
        prompt_tokens = count_tokens(message)
        for item in history:
            if not isinstance(item, dict):
                raise ApiError(400, "invalid request: chat_history entries must be objects")
            text = item.get("message", "")
            prompt_tokens += count_tokens(text) if isinstance(text, str) else 0
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "invalid request: stream must be a boolean")
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise ApiError(400, "invalid request: max_tokens must be a positive integer")
        return Generation(
            model=model,
            prompt=message,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
        )

    def _response(self, gen: Generation, comp: Completion) -> Dict[str, Any]:
        usage = _cohere_usage(gen, comp)
        return {
            "response_id": ID_TOKEN,
            "text": comp.text,
            "generation_id": ID_TOKEN,
            "chat_history": [
                {"role": "USER", "message": gen.prompt},
                {"role": "CHATBOT", "message": comp.text},
            ],
            "finish_reason": "MAX_TOKENS" if comp.truncated else "COMPLETE",
            "meta": {"api_version": {"version": "1"}, **usage},
        }

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        lead = [
            _dumps({"is_finished": False, "event_type": "stream-start", "generation_id": ID_TOKEN})
            + "\n"
        ]
        body_json = [
            _dumps({"is_finished": False, "event_type": "text-generation", "text": piece})
            for piece in group(comp.tokens, per_chunk)
        ]
        response = self._response(gen, comp)
        tail = [
            _dumps(
                {
                    "is_finished": True,
                    "event_type": "stream-end",
                    "response": response,
                    "finish_reason": response["finish_reason"],
                }
            )
            + "\n"
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken = _truncated_json(body_json[mid]) + "\n"
        body = [b + "\n" for b in body_json]
        return StreamPlan("application/stream+json", lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        return FullPlan(JSON_CT, _dumps(self._response(gen, comp)))


# --------------------------------------------------------------------------- Gemini


class GeminiDialect(Dialect):
    """Gemini ``models/{model}:generateContent`` and ``:streamGenerateContent``.

    Streaming is SSE (``data:`` frames, CRLF separated) with ``?alt=sse``, and a
    JSON array written element by element otherwise, as the real API does.
    """

    name = "gemini"

    def make_id(self, counter: int, salt: str) -> str:
        return f"sim{salt}{counter:010x}"

    def invalid_json(self, exc: Exception) -> ApiError:
        return ApiError(400, f"Invalid JSON payload received. {exc}")

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid JSON payload received. Expected an object.")
        contents = data.get("contents")
        if contents is None or contents == []:
            raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified\n")
        if isinstance(contents, dict):
            contents = [contents]
        if not isinstance(contents, list):
            raise ApiError(
                400,
                "Invalid value at 'contents' (type.googleapis.com/google.ai.generativelanguage"
                f'.v1beta.Content), "{_type_name(contents)}"',
            )
        prompt = ""
        prompt_tokens = 0
        for i, item in enumerate(contents):
            if not isinstance(item, dict) or not isinstance(item.get("parts", []), list):
                raise ApiError(400, f"Invalid value at 'contents[{i}]': expected a Content object")
            text = _text_of(item.get("parts", []))
            if text is None:
                raise ApiError(400, f"Invalid value at 'contents[{i}].parts'")
            prompt_tokens += count_tokens(text)
            if item.get("role", "user") == "user":
                prompt = text
        max_tokens: Optional[int] = None
        config = data.get("generationConfig", data.get("generation_config"))
        if config is not None:
            if not isinstance(config, dict):
                raise ApiError(400, "Invalid value at 'generation_config': expected an object")
            value = config.get("maxOutputTokens", config.get("max_output_tokens"))
            if value is not None:
                if not _is_int(value) or value < 1:
                    raise ApiError(
                        400,
                        "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32)",
                    )
                max_tokens = int(value)
        return Generation(
            model=str(route.get("model", "gemini-2.0-flash")),
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=bool(route.get("stream")),
            extra={"sse": bool(route.get("sse"))},
        )

    @staticmethod
    def _response(
        gen: Generation, text: str, finish: Optional[str], out_tokens: Optional[int]
    ) -> Dict[str, Any]:
        candidate: Dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        usage: Dict[str, Any] = {"promptTokenCount": gen.prompt_tokens}
        if out_tokens is not None:
            usage["candidatesTokenCount"] = out_tokens
        usage["totalTokenCount"] = gen.prompt_tokens + (out_tokens or 0)
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": gen.prompt_tokens}]
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": gen.model,
            "responseId": ID_TOKEN,
        }

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        finish = "MAX_TOKENS" if comp.truncated else "STOP"
        pieces = group(comp.tokens, per_chunk) or [""]
        last = len(pieces) - 1
        body_json = [
            _dumps(
                self._response(
                    gen,
                    piece,
                    finish if i == last else None,
                    comp.completion_tokens if i == last else None,
                )
            )
            for i, piece in enumerate(pieces)
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken_json = _truncated_json(body_json[mid])
        if gen.extra.get("sse"):
            body = ["data: " + b + "\r\n\r\n" for b in body_json]
            broken = "data: " + broken_json + "\r\n\r\n"
            return StreamPlan("text/event-stream", [], body, [], broken, mid)
        body = ["[" + body_json[0]] + [",\r\n" + b for b in body_json[1:]]
        return StreamPlan(
            "application/json; charset=UTF-8", [], body, ["]"], ",\r\n" + broken_json, mid
        )

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        finish = "MAX_TOKENS" if comp.truncated else "STOP"
        return FullPlan(
            JSON_CT, _dumps(self._response(gen, comp.text, finish, comp.completion_tokens))
        )

    _STATUS: Mapping[int, str] = {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
    }

    def error_body(self, err: ApiError) -> str:
        return _dumps(
            {
                "error": {
                    "code": err.status,
                    "message": err.message,
                    "status": self._STATUS.get(err.status, "UNKNOWN"),
                }
            }
        )


DIALECTS: Dict[str, Dialect] = {
    d.name: d
    for d in (
        OpenAIDialect(),
        AnthropicDialect(),
        OllamaDialect(),
        CohereV1Dialect(),
        CohereV2Dialect(),
        GeminiDialect(),
    )
}
