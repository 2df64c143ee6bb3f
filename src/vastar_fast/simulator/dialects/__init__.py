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

The package holds one module per API (``openai`` chat completions, ``responses``,
``anthropic``, ``ollama``, ``cohere``, ``gemini``, ``embeddings``) and ``base``
with the shared types.
"""

from __future__ import annotations

from typing import Dict

from .anthropic import AnthropicDialect
from .base import (
    CREATED_TOKEN,
    ID_TOKEN,
    INVALID,
    NOT_FOUND,
    OVERLOADED,
    RATE_LIMITED,
    RATE_LIMITED_TOKENS,
    SERVER,
    TIME_TOKEN,
    ApiError,
    Completion,
    Dialect,
    FullPlan,
    Generation,
    RequestIds,
    StreamPlan,
    complete,
)
from .cohere import CohereV1Dialect, CohereV2Dialect
from .embeddings import OllamaEmbedDialect, OpenAIEmbeddingsDialect
from .gemini import GeminiDialect
from .ollama import OllamaDialect
from .openai import OpenAIDialect
from .responses import ResponsesDialect

__all__ = [
    "CREATED_TOKEN",
    "DIALECTS",
    "ID_TOKEN",
    "INVALID",
    "NOT_FOUND",
    "OVERLOADED",
    "RATE_LIMITED",
    "RATE_LIMITED_TOKENS",
    "SERVER",
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
    "OllamaEmbedDialect",
    "OpenAIDialect",
    "OpenAIEmbeddingsDialect",
    "RequestIds",
    "ResponsesDialect",
    "StreamPlan",
    "complete",
]

DIALECTS: Dict[str, Dialect] = {
    d.name: d
    for d in (
        OpenAIDialect(),
        AnthropicDialect(),
        OllamaDialect(),
        CohereV1Dialect(),
        CohereV2Dialect(),
        GeminiDialect(),
        ResponsesDialect(),
        OpenAIEmbeddingsDialect(),
        OllamaEmbedDialect(),
    )
}
