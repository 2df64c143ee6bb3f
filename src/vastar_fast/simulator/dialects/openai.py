"""OpenAI chat completions: ``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..answers import count_tokens
from .base import (
    AUTO,
    CREATED_VALUE,
    ID_TOKEN,
    INVALID,
    JSON_CT,
    NONE,
    NOT_FOUND,
    OVERLOADED,
    RATE_LIMITED,
    RATE_LIMITED_TOKENS,
    REQUIRED,
    SERVER,
    SSE_CT,
    SUFFIX_TOKEN,
    ApiError,
    Completion,
    Dialect,
    FullPlan,
    Generation,
    StreamPlan,
    ToolSpec,
    dumps,
    group,
    is_int,
    pick_tool,
    sse,
    text_of,
    tool_specs,
    truncated_json,
    type_name,
)

__all__ = ["OpenAIDialect"]


class OpenAIDialect(Dialect):
    """OpenAI ``POST /v1/chat/completions`` (SSE ``data:`` chunks ending in ``[DONE]``)."""

    name = "openai"
    ratelimit_headers = "openai"
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
            f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
            param=param,
            code="invalid_type",
        )

    def _opt_int(self, data: Mapping[str, Any], key: str, minimum: int) -> Optional[int]:
        value = data.get(key)
        if value is None:
            return None
        if not is_int(value):
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
                f"{type_name(data)} instead.",
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
        answered = False
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
            text = "" if content is None else text_of(content)
            if text is None:
                raise self._bad_type(
                    f"messages[{i}].content", "one of a string or array of objects", content
                )
            prompt_tokens += 4 + count_tokens(text)
            if role == "user" or not prompt:
                prompt = text
            if role == "user":
                answered = False
            elif role == "tool" or role == "function":
                answered = True
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
        ignore_eos = data.get("ignore_eos")
        if ignore_eos is not None and not isinstance(ignore_eos, bool):
            raise self._bad_type("ignore_eos", "a boolean", ignore_eos)
        tool = self.parse_tools(data, prompt, answered)
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=bool(stream),
            include_usage=include_usage,
            n=n,
            ignore_eos=bool(ignore_eos),
            tool=tool,
        )

    @staticmethod
    def _function_name(tool: Mapping[str, Any]) -> Any:
        if tool.get("type", "function") != "function":
            return None
        fn = tool.get("function")
        return fn.get("name") if isinstance(fn, Mapping) else ""

    @staticmethod
    def _function_schema(tool: Mapping[str, Any]) -> Any:
        fn = tool.get("function")
        return fn.get("parameters") if isinstance(fn, Mapping) else None

    #: Where a tool's name and schema sit (chat completions nest them in "function").
    tool_name_of = _function_name
    tool_schema_of = _function_schema

    def parse_tools(
        self, data: Mapping[str, Any], prompt: str, answered: bool
    ) -> Optional[ToolSpec]:
        """``tools`` + ``tool_choice`` -> the tool this turn calls (None: a text answer)."""
        tools = tool_specs(
            data.get("tools"), "tools", type(self).tool_name_of, type(self).tool_schema_of
        )
        choice = data.get("tool_choice")
        forced: Optional[str] = None
        if choice is None or choice == "auto":
            mode = AUTO
        elif choice in ("none", "required"):
            mode = NONE if choice == "none" else REQUIRED
        elif isinstance(choice, Mapping):
            mode = REQUIRED
            fn = choice.get("function")
            forced = fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
            if not isinstance(forced, str) or forced not in {t.name for t in tools}:
                raise ApiError(
                    400,
                    f"Invalid value for 'tool_choice': tool '{forced}' is not among the "
                    "declared tools.",
                    param="tool_choice",
                    code="invalid_value",
                )
        else:
            raise ApiError(
                400,
                "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an "
                "object naming a function.",
                param="tool_choice",
                code="invalid_value",
            )
        if mode != NONE and not tools and choice is not None:
            raise ApiError(
                400,
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                param="tool_choice",
            )
        return pick_tool(tools, mode, forced, prompt, answered)

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
                "created": CREATED_VALUE,
                "model": gen.model,
                "service_tier": "default",
                "system_fingerprint": self.fingerprint,
                "choices": choices,
            }
            obj.update(usage_field)
            obj.update(extra)
            return dumps(obj)

        def choice(index: int, delta: Dict[str, Any], reason: Optional[str]) -> Dict[str, Any]:
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

        indices = range(gen.n)
        if comp.calls:
            finish = "tool_calls"
            lead = [
                sse(chunk([choice(i, {"role": "assistant", "content": None, "tool_calls": [
                    {"index": k, "id": self._call_id(k), "type": "function",
                     "function": {"name": call.name, "arguments": ""}}
                ], "refusal": None}, None)]))
                for i in indices
                for k, call in enumerate(comp.calls[:1])
            ]  # fmt: skip
            body_json = [
                chunk(
                    [
                        choice(
                            i,
                            {"tool_calls": [{"index": k, "function": {"arguments": piece}}]},
                            None,
                        )
                    ]
                )
                for k, call in enumerate(comp.calls)
                for piece in group(call.tokens, per_chunk)
                for i in indices
            ]
        else:
            lead = [
                sse(chunk([choice(i, {"role": "assistant", "content": "", "refusal": None}, None)]))
                for i in indices
            ]
            body_json = [
                chunk([choice(i, {"content": piece}, None)])
                for piece in group(comp.tokens, per_chunk)
                for i in indices
            ]
        tail = [sse(chunk([choice(i, {}, finish)])) for i in indices]
        if gen.include_usage:
            tail.append(sse(chunk([], usage=self._usage(gen, comp))))
        tail.append("data: [DONE]\n\n")
        mid = max(0, len(body_json) // 2 - 1)
        broken = sse(truncated_json(body_json[mid] if body_json else tail[0][6:-2]))
        return StreamPlan(
            SSE_CT,
            lead,
            [sse(b) for b in body_json],
            tail,
            broken,
            mid,
            uses_suffix=bool(comp.calls),
        )

    @staticmethod
    def _call_id(index: int) -> str:
        return f"call_{SUFFIX_TOKEN}{index:02d}"

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        finish = "length" if comp.truncated else "stop"
        message: Dict[str, Any] = {
            "role": "assistant",
            "content": comp.text,
            "refusal": None,
            "annotations": [],
        }
        if comp.calls:
            finish = "tool_calls"
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": self._call_id(k),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for k, call in enumerate(comp.calls)
            ]
        obj = {
            "id": ID_TOKEN,
            "object": "chat.completion",
            "created": CREATED_VALUE,
            "model": gen.model,
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(gen.n)
            ],
            "usage": self._usage(gen, comp),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        return FullPlan(JSON_CT, dumps(obj), uses_suffix=bool(comp.calls))

    _ERR_TYPES: Mapping[str, Tuple[str, Optional[str]]] = {
        INVALID: ("invalid_request_error", None),
        NOT_FOUND: ("invalid_request_error", None),
        RATE_LIMITED: ("requests", "rate_limit_exceeded"),
        RATE_LIMITED_TOKENS: ("tokens", "rate_limit_exceeded"),
        SERVER: ("server_error", None),
        OVERLOADED: ("server_error", "server_overloaded"),
    }

    def error_body(self, err: ApiError) -> str:
        etype, default_code = self._ERR_TYPES.get(err.kind, ("invalid_request_error", None))
        return dumps(
            {
                "error": {
                    "message": err.message,
                    "type": etype,
                    "param": err.param,
                    "code": err.code if err.code is not None else default_code,
                }
            }
        )
