"""Embeddings: OpenAI ``POST /v1/embeddings`` and Ollama ``POST /api/embed`` (and the
older ``/api/embeddings``). Vectors come from :mod:`..vectors`: deterministic, unit
length, ``dimensions`` honoured."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple, Union

from ..answers import count_tokens
from ..vectors import embed, to_base64
from .base import JSON_CT, ApiError, FullPlan, StreamPlan, dumps, is_int, type_name
from .ollama import OllamaDialect
from .openai import OpenAIDialect

__all__ = ["OllamaEmbedDialect", "OpenAIEmbeddingsDialect"]

_OPENAI_DIMS = {"text-embedding-3-large": 3072}
_OPENAI_DEFAULT_DIMS = 1536
_OLLAMA_DIMS = {"mxbai-embed-large": 1024, "all-minilm": 384}
_OLLAMA_DEFAULT_DIMS = 768
_MAX_DIMS = 8192


def _dims(value: Any, default: int, bad: ApiError) -> int:
    if value is None:
        return default
    if not is_int(value) or not 1 <= value <= _MAX_DIMS:
        raise bad
    return int(value)


class OpenAIEmbeddingsDialect(OpenAIDialect):
    """``POST /v1/embeddings``: ``input`` as a string, strings, token ids or lists of them."""

    name = "openai-embeddings"
    uses_created = False

    @staticmethod
    def _texts(value: Any) -> Optional[List[Tuple[str, int]]]:
        """(text, prompt tokens) per input, or None when the shape is invalid."""
        if isinstance(value, str):
            return [(value, count_tokens(value))] if value else None
        if not isinstance(value, list) or not value:
            return None
        if all(is_int(v) for v in value):
            return [(" ".join(map(str, value)), len(value))]
        out: List[Tuple[str, int]] = []
        for item in value:
            if isinstance(item, str) and item:
                out.append((item, count_tokens(item)))
            elif isinstance(item, list) and item and all(is_int(v) for v in item):
                out.append((" ".join(map(str, item)), len(item)))
            else:
                return None
        return out

    def make_plan(
        self,
        data: Any,
        route: Mapping[str, Any],
        answer_tokens: Optional[int],
        seed: Optional[int],
        per_chunk: int,
    ) -> Union[StreamPlan, FullPlan]:
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid type for request body: expected an object.")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model", code=None)
        texts = self._texts(data.get("input"))
        if texts is None:
            raise ApiError(
                400,
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                param="input",
            )
        default = _OPENAI_DIMS.get(model, _OPENAI_DEFAULT_DIMS)
        dims = _dims(
            data.get("dimensions"),
            default,
            ApiError(
                400,
                f"Invalid 'dimensions': expected an integer from 1 to {_MAX_DIMS}, but got "
                f"{type_name(data.get('dimensions'))} {data.get('dimensions')!r}.",
                param="dimensions",
                code="invalid_value",
            ),
        )
        fmt = data.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(
                400,
                f"Invalid value for 'encoding_format': {fmt!r}; supported values are "
                "'float' and 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        items = []
        for index, (text, _) in enumerate(texts):
            vector = embed(text, dims)
            items.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": to_base64(vector) if fmt == "base64" else vector,
                }
            )
        tokens = sum(n for _, n in texts)
        body = {
            "object": "list",
            "data": items,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return FullPlan(JSON_CT, dumps(body), prompt_tokens=tokens)


class OllamaEmbedDialect(OllamaDialect):
    """``POST /api/embed`` (``input``: string or strings) and ``/api/embeddings`` (``prompt``)."""

    name = "ollama-embed"
    uses_time = False

    def make_plan(
        self,
        data: Any,
        route: Mapping[str, Any],
        answer_tokens: Optional[int],
        seed: Optional[int],
        per_chunk: int,
    ) -> Union[StreamPlan, FullPlan]:
        if not isinstance(data, dict):
            raise ApiError(
                400,
                f"json: cannot unmarshal {type_name(data)} into Go value of type api.EmbedRequest",
            )
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model is required")
        dims = _dims(
            data.get("dimensions"),
            _OLLAMA_DIMS.get(model.split(":")[0], _OLLAMA_DEFAULT_DIMS),
            ApiError(400, "dimensions must be a positive integer"),
        )
        if route.get("legacy"):
            prompt = data.get("prompt", "")
            if not isinstance(prompt, str):
                raise ApiError(400, "prompt must be a string")
            return FullPlan(JSON_CT, dumps({"embedding": embed(prompt, dims)}))
        raw = data.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(s, str) for s in inputs)
        ):
            raise ApiError(400, "invalid input type: input must be a string or an array of strings")
        tokens = sum(count_tokens(s) for s in inputs)
        body = {
            "model": model,
            "embeddings": [embed(s, dims) for s in inputs],
            "total_duration": 5_000_000 + 1_000_000 * tokens,
            "load_duration": 1_000_000,
            "prompt_eval_count": tokens,
        }
        return FullPlan(JSON_CT, dumps(body), prompt_tokens=tokens)
