"""Gemini ``models/{model}:generateContent`` and ``:streamGenerateContent``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..answers import count_tokens
from .base import (
    AUTO,
    ID_TOKEN,
    JSON_CT,
    NONE,
    REQUIRED,
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
    text_of,
    tool_specs,
    truncated_json,
    type_name,
)

__all__ = ["GeminiDialect"]


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
                f'.v1beta.Content), "{type_name(contents)}"',
            )
        prompt = ""
        prompt_tokens = 0
        answered = False
        for i, item in enumerate(contents):
            if not isinstance(item, dict) or not isinstance(item.get("parts", []), list):
                raise ApiError(400, f"Invalid value at 'contents[{i}]': expected a Content object")
            text = text_of(item.get("parts", []))
            if text is None:
                raise ApiError(400, f"Invalid value at 'contents[{i}].parts'")
            prompt_tokens += count_tokens(text)
            if item.get("role", "user") in ("user", "function", "tool"):
                results = any(
                    isinstance(p, Mapping) and ("functionResponse" in p or "function_response" in p)
                    for p in item.get("parts", [])
                )
                answered = results
                if text or not results:
                    prompt = text
        max_tokens: Optional[int] = None
        config = data.get("generationConfig", data.get("generation_config"))
        if config is not None:
            if not isinstance(config, dict):
                raise ApiError(400, "Invalid value at 'generation_config': expected an object")
            value = config.get("maxOutputTokens", config.get("max_output_tokens"))
            if value is not None:
                if not is_int(value) or value < 1:
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
            ignore_eos=data.get("ignore_eos") is True,
            tool=self._tool(data, prompt, answered),
            extra={"sse": bool(route.get("sse"))},
        )

    @staticmethod
    def _tool(data: Mapping[str, Any], prompt: str, answered: bool) -> Optional[ToolSpec]:
        tools = data.get("tools")
        declared: List[Any] = []
        if isinstance(tools, list):
            for entry in tools:
                if isinstance(entry, Mapping):
                    decls = entry.get("functionDeclarations", entry.get("function_declarations"))
                    if isinstance(decls, list):
                        declared.extend(decls)
        elif tools is not None:
            raise ApiError(400, "Invalid value at 'tools': expected a list of Tool objects")
        specs = tool_specs(
            declared,
            "tools.function_declarations",
            lambda d: d.get("name", ""),
            lambda d: d.get("parameters", d.get("parametersJsonSchema")),
        )
        config = data.get("toolConfig", data.get("tool_config"))
        mode, forced = AUTO, None
        if isinstance(config, Mapping):
            fcc = config.get("functionCallingConfig", config.get("function_calling_config"))
            if isinstance(fcc, Mapping):
                raw = str(fcc.get("mode", "AUTO")).upper()
                mode = {"ANY": REQUIRED, "NONE": NONE}.get(raw, AUTO)
                allowed = fcc.get("allowedFunctionNames", fcc.get("allowed_function_names"))
                if mode == REQUIRED and isinstance(allowed, list) and allowed:
                    specs = [s for s in specs if s.name in allowed] or specs
        return pick_tool(specs, mode, forced, prompt, answered)

    @staticmethod
    def _response(
        gen: Generation,
        text: str,
        finish: Optional[str],
        out_tokens: Optional[int],
        parts: Optional[List[Dict[str, Any]]] = None,
    ) -> Dict[str, Any]:
        content = {"parts": parts if parts is not None else [{"text": text}], "role": "model"}
        candidate: Dict[str, Any] = {"content": content}
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

    @staticmethod
    def _call_parts(comp: Completion) -> List[Dict[str, Any]]:
        return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in comp.calls]

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        finish = "MAX_TOKENS" if comp.truncated else "STOP"
        pieces = group(comp.tokens, per_chunk) or [""]
        last = len(pieces) - 1
        if comp.calls:  # Gemini sends a function call whole, in one chunk
            pieces, last = [""], 0
        body_json = [
            dumps(
                self._response(
                    gen,
                    piece,
                    finish if i == last else None,
                    comp.completion_tokens if i == last else None,
                    self._call_parts(comp) if comp.calls else None,
                )
            )
            for i, piece in enumerate(pieces)
        ]
        mid = max(0, len(body_json) // 2 - 1)
        broken_json = truncated_json(body_json[mid])
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
        parts = self._call_parts(comp) if comp.calls else None
        return FullPlan(
            JSON_CT, dumps(self._response(gen, comp.text, finish, comp.completion_tokens, parts))
        )

    _STATUS: Mapping[int, str] = {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }

    def error_body(self, err: ApiError) -> str:
        return dumps(
            {
                "error": {
                    "code": err.status,
                    "message": err.message,
                    "status": self._STATUS.get(err.status, "UNKNOWN"),
                }
            }
        )
