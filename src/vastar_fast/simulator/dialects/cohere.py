"""Cohere chat, v2 (``POST /v2/chat``, SSE) and v1 (``POST /v1/chat``, NDJSON).

One module for both: v1 is a subclass of v2 that differs in the request and framing."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ..answers import count_tokens
from .base import (
    ID_TOKEN,
    JSON_CT,
    SSE_CT,
    ApiError,
    Completion,
    Dialect,
    FullPlan,
    Generation,
    StreamPlan,
    dumps,
    group,
    is_int,
    sse,
    text_of,
    truncated_json,
)

__all__ = ["CohereV1Dialect", "CohereV2Dialect"]


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
            text = "" if content is None else text_of(content)
            if text is None:
                raise ApiError(400, f"invalid request: messages[{i}].content is invalid")
            prompt_tokens += count_tokens(text)
            if msg["role"] == "user" or not prompt:
                prompt = text
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "invalid request: stream must be a boolean")
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            raise ApiError(400, "invalid request: max_tokens must be a positive integer")
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
            ignore_eos=data.get("ignore_eos") is True,
        )

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        finish = "MAX_TOKENS" if comp.truncated else "COMPLETE"

        def event(obj: Dict[str, Any]) -> str:
            return sse(dumps(obj), obj["type"])

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
            dumps(
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
        broken = sse(truncated_json(body_json[mid]), "content-delta")
        body = [sse(b, "content-delta") for b in body_json]
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        obj = {
            "id": ID_TOKEN,
            "message": {"role": "assistant", "content": [{"type": "text", "text": comp.text}]},
            "finish_reason": "MAX_TOKENS" if comp.truncated else "COMPLETE",
            "usage": _cohere_usage(gen, comp),
        }
        return FullPlan(JSON_CT, dumps(obj))

    def error_body(self, err: ApiError) -> str:
        return dumps({"id": ID_TOKEN, "message": err.message})


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
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            raise ApiError(400, "invalid request: max_tokens must be a positive integer")
        return Generation(
            model=model,
            prompt=message,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
            ignore_eos=data.get("ignore_eos") is True,
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
            dumps({"is_finished": False, "event_type": "stream-start", "generation_id": ID_TOKEN})
            + "\n"
        ]
        body_json = [
            dumps({"is_finished": False, "event_type": "text-generation", "text": piece})
            for piece in group(comp.tokens, per_chunk)
        ]
        response = self._response(gen, comp)
        tail = [
            dumps(
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
        broken = truncated_json(body_json[mid]) + "\n"
        body = [b + "\n" for b in body_json]
        return StreamPlan("application/stream+json", lead, body, tail, broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        return FullPlan(JSON_CT, dumps(self._response(gen, comp)))
