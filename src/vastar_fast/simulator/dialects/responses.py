"""OpenAI Responses API: ``POST /v1/responses`` (JSON, or SSE with named events).

A streamed text answer is the event sequence of the real API: ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` (one per chunk),
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done`` and ``response.completed`` (``response.incomplete``
when ``max_output_tokens`` cut the answer). A function call streams
``response.function_call_arguments.delta`` events between the item's ``added``
and ``done``. Every event carries its ``sequence_number``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..answers import count_tokens
from .base import (
    CREATED_VALUE,
    ID_TOKEN,
    JSON_CT,
    SSE_CT,
    SUFFIX_TOKEN,
    ApiError,
    Completion,
    FullPlan,
    Generation,
    StreamPlan,
    dumps,
    group,
    sse,
    text_of,
    truncated_json,
)
from .openai import OpenAIDialect

__all__ = ["ResponsesDialect"]

_MSG_ID = f"msg_{SUFFIX_TOKEN}"
_FC_ID = f"fc_{SUFFIX_TOKEN}"
_CALL_ID = f"call_{SUFFIX_TOKEN}"

# Request fields echoed back in the response object, with the API's defaults.
_ECHO_DEFAULTS: Dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}


class ResponsesDialect(OpenAIDialect):
    """``POST /v1/responses``; OpenAI's error shapes and rate-limit headers."""

    name = "openai-responses"
    uses_created = True

    def make_id(self, counter: int, salt: str) -> str:
        return f"resp_{salt}{counter:012x}"

    @staticmethod
    def _responses_tool_name(tool: Mapping[str, Any]) -> Any:
        # Function tools are flat here ({"type": "function", "name": ...}); built-in
        # tools (web_search, file_search, ...) are accepted and never called.
        return tool.get("name", "") if tool.get("type", "function") == "function" else None

    @staticmethod
    def _responses_tool_schema(tool: Mapping[str, Any]) -> Any:
        return tool.get("parameters")

    tool_name_of = _responses_tool_name
    tool_schema_of = _responses_tool_schema

    def parse(self, data: Any, route: Mapping[str, Any]) -> Generation:
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid type for request body: expected an object.")
        model = data.get("model")
        if model is None:
            raise ApiError(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        if not isinstance(model, str):
            raise self._bad_type("model", "a string", model)
        instructions = data.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise self._bad_type("instructions", "a string", instructions)
        prompt_tokens = 3 + (count_tokens(instructions) if instructions else 0)
        items = data.get("input")
        if items is None:
            raise ApiError(
                400,
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        prompt = ""
        answered = False
        if isinstance(items, str):
            prompt = items
            prompt_tokens += 4 + count_tokens(items)
        elif isinstance(items, list):
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise self._bad_type(f"input[{i}]", "an object", item)
                kind = item.get("type", "message")
                if kind == "function_call_output":
                    answered = True
                    output = item.get("output")
                    prompt_tokens += count_tokens(output if isinstance(output, str) else "")
                    continue
                if kind != "message":
                    continue  # function_call echoes, reasoning items: not part of the prompt
                role = item.get("role")
                if role not in ("user", "assistant", "system", "developer"):
                    raise ApiError(
                        400,
                        f"Invalid value: '{role}'. Supported values are: 'assistant', "
                        "'system', 'developer', and 'user'.",
                        param=f"input[{i}].role",
                        code="invalid_value",
                    )
                text = text_of(item.get("content", ""))
                if text is None:
                    raise self._bad_type(
                        f"input[{i}].content", "a string or an array of content parts", None
                    )
                prompt_tokens += 4 + count_tokens(text)
                if role == "user":
                    prompt, answered = text, False
                elif not prompt:
                    prompt = text
        else:
            raise self._bad_type("input", "a string or an array of input items", items)
        stream = data.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise self._bad_type("stream", "a boolean", stream)
        max_tokens = self._opt_int(data, "max_output_tokens", 16)
        ignore_eos = data.get("ignore_eos")
        if ignore_eos is not None and not isinstance(ignore_eos, bool):
            raise self._bad_type("ignore_eos", "a boolean", ignore_eos)
        tool = self.parse_tools(data, prompt, answered)
        echo = {k: data.get(k, v) for k, v in _ECHO_DEFAULTS.items()}
        echo["tools"] = data.get("tools") or []
        return Generation(
            model=model,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=bool(stream),
            ignore_eos=bool(ignore_eos),
            tool=tool,
            extra={"echo": echo},
        )

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def _usage(gen: Generation, comp: Completion) -> Dict[str, Any]:
        out = comp.completion_tokens
        return {
            "input_tokens": gen.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": gen.prompt_tokens + out,
        }

    def _response(
        self,
        gen: Generation,
        status: str,
        output: List[Dict[str, Any]],
        usage: Optional[Dict[str, Any]],
    ) -> Dict[str, Any]:
        echo = gen.extra["echo"]
        obj: Dict[str, Any] = {
            "id": ID_TOKEN,
            "object": "response",
            "created_at": CREATED_VALUE,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": echo["instructions"],
            "max_output_tokens": echo["max_output_tokens"],
            "max_tool_calls": None,
            "model": gen.model,
            "output": output,
            "parallel_tool_calls": echo["parallel_tool_calls"],
            "previous_response_id": echo["previous_response_id"],
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": echo["store"],
            "temperature": echo["temperature"],
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": echo["tool_choice"],
            "tools": echo["tools"],
            "top_logprobs": 0,
            "top_p": echo["top_p"],
            "truncation": echo["truncation"],
            "usage": usage,
            "user": echo["user"],
            "metadata": echo["metadata"],
        }
        if status != "in_progress":
            obj["completed_at"] = CREATED_VALUE
        return obj

    @staticmethod
    def _message(text: str, status: str) -> Dict[str, Any]:
        content = (
            [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
            if status != "in_progress"
            else []
        )
        return {
            "id": _MSG_ID,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    @staticmethod
    def _call(name: str, arguments: str, status: str) -> Dict[str, Any]:
        return {
            "id": _FC_ID,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": _CALL_ID,
            "name": name,
        }

    def _final_output(self, comp: Completion, status: str) -> List[Dict[str, Any]]:
        if comp.calls:
            return [self._call(c.name, c.arguments_json, "completed") for c in comp.calls[:1]]
        return [self._message(comp.text, status)]

    def build_full(self, gen: Generation, comp: Completion) -> FullPlan:
        status = "incomplete" if comp.truncated else "completed"
        obj = self._response(gen, status, self._final_output(comp, status), self._usage(gen, comp))
        return FullPlan(JSON_CT, dumps(obj), uses_suffix=True)

    def build_stream(self, gen: Generation, comp: Completion, per_chunk: int) -> StreamPlan:
        seq = 0

        def event(obj: Dict[str, Any]) -> str:
            nonlocal seq
            framed = {"type": obj.pop("type"), "sequence_number": seq, **obj}
            seq += 1
            return sse(dumps(framed), framed["type"])

        status = "incomplete" if comp.truncated else "completed"
        start = self._response(gen, "in_progress", [], None)
        lead = [
            event({"type": "response.created", "response": start}),
            event({"type": "response.in_progress", "response": start}),
        ]
        where = {"output_index": 0}
        if comp.calls:
            call = comp.calls[0]
            lead.append(
                event(
                    {
                        "type": "response.output_item.added",
                        **where,
                        "item": self._call(call.name, "", "in_progress"),
                    }
                )
            )
            pieces = group(call.tokens, per_chunk)
            body = [
                event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": _FC_ID,
                        **where,
                        "delta": piece,
                    }
                )
                for piece in pieces
            ]
            done_item = self._call(call.name, call.arguments_json, "completed")
            tail = [
                event(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": _FC_ID,
                        **where,
                        "name": call.name,
                        "arguments": call.arguments_json,
                    }
                ),
                event({"type": "response.output_item.done", **where, "item": done_item}),
            ]
        else:
            part = {"item_id": _MSG_ID, **where, "content_index": 0}
            lead.append(
                event(
                    {
                        "type": "response.output_item.added",
                        **where,
                        "item": self._message("", "in_progress"),
                    }
                )
            )
            lead.append(
                event(
                    {
                        "type": "response.content_part.added",
                        **part,
                        "part": {
                            "type": "output_text",
                            "annotations": [],
                            "logprobs": [],
                            "text": "",
                        },
                    }
                )
            )
            body = [
                event(
                    {
                        "type": "response.output_text.delta",
                        **part,
                        "delta": piece,
                        "logprobs": [],
                    }
                )
                for piece in group(comp.tokens, per_chunk)
            ]
            done_item = self._message(comp.text, status)
            tail = [
                event(
                    {
                        "type": "response.output_text.done",
                        **part,
                        "text": comp.text,
                        "logprobs": [],
                    }
                ),
                event(
                    {"type": "response.content_part.done", **part, "part": done_item["content"][0]}
                ),
                event({"type": "response.output_item.done", **where, "item": done_item}),
            ]
        final = self._response(gen, status, [done_item], self._usage(gen, comp))
        final_type = "response.incomplete" if comp.truncated else "response.completed"
        tail.append(event({"type": final_type, "response": final}))
        mid = max(0, len(body) // 2 - 1)
        broken_src = body[mid] if body else tail[0]
        name, _, payload = broken_src.partition("\ndata: ")
        broken = name + "\ndata: " + truncated_json(payload.rstrip("\n")) + "\n\n"
        return StreamPlan(SSE_CT, lead, body, tail, broken, mid, uses_suffix=True)
