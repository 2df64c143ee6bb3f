"""AI endpoint simulator: an aiohttp server that speaks the OpenAI (chat
completions, Responses, embeddings), Anthropic, Ollama, Cohere and Gemini wire
formats, with deterministic answers, tool calls, a seeded latency model, rate
limits, fault injection, and record/replay of a real endpoint.

It shares no code with the rest of ``vastar_fast`` on purpose: to a connector it
must be just another upstream HTTP server.

Routes: ``POST /v1/chat/completions``, ``/v1/responses`` and ``/v1/embeddings``
(OpenAI), ``POST /v1/messages`` (Anthropic), ``POST /api/chat``, ``/api/embed``
and ``/api/embeddings`` (Ollama), ``POST /v1/chat`` and ``/v2/chat`` (Cohere),
``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent[?alt=sse]`` (Gemini), ``GET /v1/models[/{id}]``,
``GET /health``.

Per request: ``"ignore_eos": true`` in the body pins the answer to
``max_tokens``; ``x-simulator-latency: ttft_ms=..,token_delay_ms=..`` overrides
the timing; ``x-simulator-fault: rate_limit | server_error | overloaded |
disconnect | stall | malformed | truncate[:N] | duplicate | latency_spike[:MS]``
injects a fault (or ``--fault-rate R --seed S`` at random). See docs/simulator.md.

Run it: ``vastar simulator --port 4545`` (or ``python -m vastar_fast.simulator``),
or in-process::

    with SimulatorServer(SimulatorSettings.fast()) as sim:
        OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test")
"""

from __future__ import annotations

from .answers import answer_for, tokenize
from .app import create_app
from .faults import FAULT_HEADER, FAULT_KINDS
from .server import SimulatorServer
from .settings import SimulatorSettings

__all__ = [
    "FAULT_HEADER",
    "FAULT_KINDS",
    "SimulatorServer",
    "SimulatorSettings",
    "answer_for",
    "create_app",
    "tokenize",
]
