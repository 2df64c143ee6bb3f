"""Anthropic messages: ``POST /v1/messages``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..answers import count_tokens
from .base import (
    AUTO,
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
)

__all__ = ["AnthropicDialect"]


class AnthropicDialect(Dialect):
    """Anthropic ``POST /v1/messages`` (named SSE events ending in ``message_stop``)."""

    name = "anthropic"
    ratelimit_headers = "anthropic"
    overloaded_status = 529

    def overloaded(self) -> ApiError:
        return ApiError(529, "Overloaded", kind=OVERLOADED)

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
        if not is_int(max_tokens):
            raise ApiError(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
        messages = data["messages"]
        if not isinstance(messages, list):
            raise ApiError(400, "messages: Input should be a valid list")
        if not messages:
            raise ApiError(400, "messages: at least one message is required")
        system = data.get("system")
        system_text = "" if system is None else text_of(system)
        if system_text is None:
            raise ApiError(400, "system: Input should be a valid string or list of text blocks")
        prompt = ""
        prompt_tokens = count_tokens(system_text) + 5
        answered = False
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise ApiError(400, f"messages.{i}: Input should be a valid dictionary")
            role = msg.get("role")
            if role not in ("user", "assistant"):
                raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if "content" not in msg:
                raise ApiError(400, f"messages.{i}.content: Field required")
            text = text_of(msg["content"])
            if text is None:
                raise ApiError(400, f"messages.{i}.content: Input should be a valid list")
            prompt_tokens += 3 + count_tokens(text)
            if role == "user":
                # A user turn that only carries tool results continues the tool loop.
                results = isinstance(msg["content"], list) and any(
                    isinstance(b, Mapping) and b.get("type") == "tool_result"
                    for b in msg["content"]
                )
                answered = results
                if text or not results:
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
            ignore_eos=data.get("ignore_eos") is True,
            tool=self._tool(data, prompt, answered),
        )

    @staticmethod
    def _tool(data: Mapping[str, Any], prompt: str, answered: bool) -> Optional[ToolSpec]:
        tools = tool_specs(
            data.get("tools"),
            "tools",
            # Server tools (web search, ...) carry a "type" other than "custom".
            lambda t: t.get("name", "") if t.get("type", "custom") == "custom" else None,
            lambda t: t.get("input_schema"),
        )
        choice = data.get("tool_choice")
        forced: Optional[str] = None
        mode = AUTO
        if choice is not None:
            kind = choice.get("type") if isinstance(choice, Mapping) else None
            if kind not in ("auto", "any", "tool", "none"):
                raise ApiError(
                    400, "tool_choice: Input tag does not match 'auto', 'any', 'tool' or 'none'"
                )
            assert isinstance(choice, Mapping)
            if kind == "tool":
                forced = choice.get("name")
                if not isinstance(forced, str) or forced not in {t.name for t in tools}:
                    raise ApiError(400, f"tool_choice: tool '{forced}' not found in 'tools'")
            mode = {"auto": AUTO, "any": REQUIRED, "tool": REQUIRED, "none": NONE}[kind]
        return pick_tool(tools, mode, forced, prompt, answered)

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

    @staticmethod
    def _tool_id(index: int) -> str:
        return f"toolu_01{SUFFIX_TOKEN}{index:02d}"

    def _tool_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        def event(name: str, obj: Dict[str, Any]) -> str:
            return sse(dumps(obj), name)

        call = comp.calls[0]
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
                    "content_block": {
                        "type": "tool_use",
                        "id": self._tool_id(0),
                        "name": call.name,
                        "input": {},
                    },
                },
            ),
            event("ping", {"type": "ping"}),
        ]
        body_json = [
            dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
            )
            for piece in group(call.tokens, per_chunk)
        ]
        tail = [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": comp.completion_tokens},
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken = sse(truncated_json(body_json[mid]), "content_block_delta")
        body = [sse(b, "content_block_delta") for b in body_json]
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid, uses_suffix=True)

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        if comp.calls:
            return self._tool_stream(gen, comp, per_chunk)
        stop = "max_tokens" if comp.truncated else "end_turn"

        def event(name: str, obj: Dict[str, Any]) -> str:
            return sse(dumps(obj), name)

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
            dumps(
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
        broken = sse(truncated_json(body_json[mid]), "content_block_delta")
        body = [sse(b, "content_block_delta") for b in body_json]
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        stop = "max_tokens" if comp.truncated else "end_turn"
        content: List[Dict[str, Any]] = [{"type": "text", "text": comp.text}]
        if comp.calls:
            stop = "tool_use"
            content = [
                {"type": "tool_use", "id": self._tool_id(k), "name": c.name, "input": c.arguments}
                for k, c in enumerate(comp.calls)
            ]
        body = dumps(self._message(gen, content, stop, comp.completion_tokens))
        return FullPlan(JSON_CT, body, uses_suffix=bool(comp.calls))

    _ERR_TYPES: Mapping[str, str] = {
        INVALID: "invalid_request_error",
        NOT_FOUND: "not_found_error",
        RATE_LIMITED: "rate_limit_error",
        RATE_LIMITED_TOKENS: "rate_limit_error",
        SERVER: "api_error",
        OVERLOADED: "overloaded_error",
    }

    def error_body(self, err: ApiError) -> str:
        etype = self._ERR_TYPES.get(err.kind, "invalid_request_error")
        return dumps({"type": "error", "error": {"type": etype, "message": err.message}})
