"""AI endpoint simulator: an aiohttp server that speaks the OpenAI, Anthropic,
Ollama, Cohere and Gemini streaming wire formats, with deterministic answers,
realistic pacing and fault injection.

It shares no code with the rest of ``vastar_fast`` on purpose: to a connector it
must be just another upstream HTTP server.
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
