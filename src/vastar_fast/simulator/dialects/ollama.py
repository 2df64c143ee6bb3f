"""Ollama chat: ``POST /api/chat``."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ..answers import count_tokens
from .base import (
    JSON_CT,
    NDJSON_CT,
    TIME_TOKEN,
    ApiError,
    Completion,
    Dialect,
    FullPlan,
    Generation,
    StreamPlan,
    dumps,
    group,
    is_int,
    truncated_json,
    type_name,
)

__all__ = ["OllamaDialect"]


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
                f"json: cannot unmarshal {type_name(data)} into Go value of type api.ChatRequest",
            )
        model = data.get("model")
        if not model:
            raise ApiError(400, "model is required")
        if not isinstance(model, str):
            raise ApiError(
                400,
                f"json: cannot unmarshal {type_name(model)} into Go struct field "
                "ChatRequest.model of type string",
            )
        messages = data.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise ApiError(
                400,
                f"json: cannot unmarshal {type_name(messages)} into Go struct field "
                "ChatRequest.messages of type []api.Message",
            )
        prompt = ""
        prompt_tokens = 0
        for msg in messages or []:
            if not isinstance(msg, dict):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {type_name(msg)} into Go struct field "
                    "ChatRequest.messages of type api.Message",
                )
            content = msg.get("content", "")
            if not isinstance(content, str):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {type_name(content)} into Go struct field "
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
                f"json: cannot unmarshal {type_name(stream)} into Go struct field "
                "ChatRequest.stream of type bool",
            )
        max_tokens: Optional[int] = None
        options = data.get("options")
        if options is not None:
            if not isinstance(options, dict):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {type_name(options)} into Go struct field "
                    "ChatRequest.options of type map[string]interface {}",
                )
            num_predict = options.get("num_predict")
            if num_predict is not None:
                if not is_int(num_predict):
                    raise ApiError(400, 'option "num_predict" must be of type integer')
                if num_predict > 0:
                    max_tokens = int(num_predict)
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
            ignore_eos=data.get("ignore_eos") is True,
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
            dumps(
                {
                    "model": gen.model,
                    "created_at": TIME_TOKEN,
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            )
            for piece in group(comp.tokens, per_chunk)
        ]
        final = dumps(self._final(gen, comp, ""))
        mid = max(0, len(body_json) // 2 - 1)
        broken = truncated_json(body_json[mid] if body_json else final) + "\n"
        return StreamPlan(NDJSON_CT, [], [b + "\n" for b in body_json], [final + "\n"], broken, mid)

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        return FullPlan(JSON_CT, dumps(self._final(gen, comp, comp.text)))

    def error_body(self, err: ApiError) -> str:
        return dumps({"error": err.message})
