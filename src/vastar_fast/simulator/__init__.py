"""AI endpoint simulator: an aiohttp server that speaks the OpenAI, Anthropic,
Ollama, Cohere and Gemini streaming wire formats, with deterministic answers,
realistic pacing and fault injection.

It shares no code with the rest of ``vastar_fast`` on purpose: to a connector it
must be just another upstream HTTP server.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages``
(Anthropic), ``POST /api/chat`` (Ollama), ``POST /v1/chat`` and ``/v2/chat``
(Cohere), ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent[?alt=sse]`` (Gemini), ``GET /v1/models[/{id}]``,
``GET /health``.

Faults: send ``x-simulator-fault: rate_limit | server_error | disconnect |
stall | malformed`` on a request, or start with ``--fault-rate R --seed S``.

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
