"""Deterministic answers and token-like chunking for the AI endpoint simulator.

Why deterministic: tests (and people comparing two runs of a connector) must be
able to predict the exact text a prompt produces, so nothing here depends on
time, process state or global randomness. A small knowledge base covers the
prompts used by the project's examples; anything else gets filler text seeded
from a hash of the prompt.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

__all__ = [
    "answer_for",
    "answer_tokens",
    "count_tokens",
    "tokenize",
    "truncate_tokens",
]

# Words keep their leading whitespace (like BPE tokens " Paris"), punctuation is
# its own token, and a trailing whitespace run is a token too, so that
# "".join(tokenize(text)) == text always holds.
_TOKEN_RE = re.compile(r"\s*\w+(?:'\w+)?|\s*[^\w\s]|\s+")


def tokenize(text: str) -> List[str]:
    """Split text into token-like pieces whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Return the simulated token count of ``text`` (used for usage fields)."""
    return len(_TOKEN_RE.findall(text))


def truncate_tokens(tokens: Sequence[str], max_tokens: int | None) -> Tuple[List[str], bool]:
    """Cut ``tokens`` to ``max_tokens``; return (tokens, was_cut).

    ``was_cut`` drives finish_reason "length" / stop_reason "max_tokens".
    """
    if max_tokens is None or max_tokens >= len(tokens):
        return list(tokens), False
    return list(tokens[: max(0, max_tokens)]), True


_PARIS = "The capital of France is Paris."

_PYTHON = (
    "Python is a high-level, general-purpose programming language created by Guido van "
    "Rossum and first released in 1991. Its design emphasises readability: indentation is "
    "part of the syntax, and the standard library is large enough that many tasks need no "
    "third-party packages. Python is dynamically typed but supports optional type hints, "
    "which tools such as mypy check ahead of time. It is widely used for web back ends, "
    "data analysis, machine learning, automation and scripting, and its package index "
    "(PyPI) hosts hundreds of thousands of libraries."
)

_TYPESCRIPT = (
    "TypeScript is a programming language developed by Microsoft that adds static types "
    "to JavaScript. It is a superset of JavaScript, so every valid JavaScript program is "
    "also valid TypeScript. The compiler checks types at build time and then emits plain "
    "JavaScript that runs in any browser or in Node.js. Types catch whole classes of bugs "
    "early, make refactoring safer and power editor features such as autocompletion and "
    "inline documentation, which is why TypeScript is popular for large front-end and "
    "back-end code bases."
)

_NODE = (
    "Node.js is a JavaScript runtime built on Google's V8 engine that lets you run "
    "JavaScript outside the browser. It uses an event-driven, non-blocking I/O model: a "
    "single thread runs an event loop, and slow operations such as network or disk access "
    "are handed to the operating system or a small thread pool, with callbacks or promises "
    "resuming the work when results are ready. This makes Node.js efficient for servers "
    "that handle many concurrent connections, and npm, its package manager, offers a huge "
    "ecosystem of modules."
)

_ASYNC = (
    "Async/await is syntax for writing asynchronous code that reads like sequential code. "
    "A function declared async returns a promise (in JavaScript) or a coroutine (in "
    "Python). Inside it, await pauses that function until the awaited operation finishes, "
    "while the event loop keeps running other tasks. Errors surface as ordinary exceptions "
    "that you can catch with try/except or try/catch. The result is code that handles many "
    "concurrent I/O operations without threads and without deeply nested callbacks."
)

_QUANTUM = (
    "Quantum computing is a way of processing information that uses the rules of quantum "
    "physics instead of the rules of everyday electronics. A normal computer stores "
    "everything as bits, and each bit is either 0 or 1, like a light switch that is off or "
    "on. A quantum computer uses qubits. Thanks to a property called superposition, a "
    "qubit can be in a blend of 0 and 1 at the same time, a bit like a spinning coin that "
    "is neither heads nor tails until it lands.\n\n"
    "The second key idea is entanglement. When qubits are entangled, their states are "
    "linked, so measuring one tells you something about the others, no matter how far "
    "apart they are. By combining superposition and entanglement, a quantum computer can "
    "represent a huge number of possible states at once. Quantum algorithms are carefully "
    "designed so that the wrong answers cancel each other out, through a process called "
    "interference, while the right answers reinforce each other.\n\n"
    "This does not make quantum computers faster at everything. For browsing the web, "
    "writing documents or playing games, your laptop will stay better. But for certain "
    "problems, such as simulating molecules for new medicines and materials, optimising "
    "complex systems, or factoring very large numbers, quantum computers could one day "
    "solve in minutes what would take classical computers thousands of years.\n\n"
    "Today's machines are still small and fragile. Qubits lose their quantum behaviour "
    "when they are disturbed by heat, vibration or stray signals, a problem called "
    "decoherence, so they are often kept colder than outer space. Researchers are working "
    "on error correction and on building larger, more stable processors. In simple terms, "
    "quantum computing is a new kind of computing that explores many possibilities at "
    "once and uses clever interference to find answers that ordinary computers struggle "
    "to reach."
)

_HELLO = "Hello! I am a simulated assistant. How can I help you today?"

# Order matters: the first entry whose keywords all appear wins, so the more
# specific topics come before the broad ones ("async in Python" -> async).
_KNOWLEDGE: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("capital", "france"), _PARIS),
    (("paris",), _PARIS),
    (("quantum",), _QUANTUM),
    (("async",), _ASYNC),
    (("await",), _ASYNC),
    (("typescript",), _TYPESCRIPT),
    (("node.js",), _NODE),
    (("nodejs",), _NODE),
    (("node",), _NODE),
    (("python",), _PYTHON),
    (("hello",), _HELLO),
)

_OPENERS = (
    "Here is a concise overview.",
    "That is a good question.",
    "Let me walk through it step by step.",
    "In short, it depends on the context, but the main points are clear.",
    "There are a few things worth knowing.",
)

_SENTENCES = (
    "The key idea is to break the problem into smaller parts that are easy to reason about.",
    "Most practical systems balance simplicity, performance and reliability.",
    "Start with a small working example and then extend it gradually.",
    "Measuring before optimising usually saves a lot of time.",
    "Clear interfaces make components easier to test and to replace.",
    "Documentation and examples help other people adopt the approach quickly.",
    "Edge cases, such as empty inputs or network failures, deserve explicit handling.",
    "Automated tests catch regressions early and make refactoring safer.",
    "Caching can help, but only when the data changes less often than it is read.",
    "Streaming results as they are produced improves the perceived latency.",
    "Logging the right events makes production issues much easier to diagnose.",
    "Timeouts and retries keep a slow dependency from taking the whole system down.",
    "Security should be considered from the start rather than added at the end.",
    "Simple designs tend to survive longer than clever ones.",
    "Trade-offs are unavoidable, so it helps to write down why a choice was made.",
    "Concrete numbers are more convincing than general claims.",
)

_CLOSERS = (
    "I hope this helps.",
    "Let me know if you would like more detail on any part.",
    "Feel free to ask a follow-up question.",
    "That covers the essentials.",
)


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def _generated(prompt: str) -> str:
    """Filler text seeded from the prompt hash: stable across runs and processes."""
    digest = hashlib.sha256(_normalise(prompt).encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    parts = [rng.choice(_OPENERS)]
    parts.extend(rng.sample(_SENTENCES, rng.randint(3, 5)))
    parts.append(rng.choice(_CLOSERS))
    return " ".join(parts)


@lru_cache(maxsize=1024)
def answer_for(prompt: str) -> str:
    """Return the deterministic answer text for a user prompt.

    Same prompt (ignoring case and whitespace differences) -> same text.
    """
    norm = _normalise(prompt)
    for keywords, text in _KNOWLEDGE:
        if all(k in norm for k in keywords):
            return text
    return _generated(prompt)


@lru_cache(maxsize=256)
def _answer_tokens(prompt: str, length: int, seed: Optional[int]) -> Tuple[str, ...]:
    tokens = tokenize(answer_for(prompt))
    if len(tokens) < length:
        # Continue with filler sentences drawn from (prompt, seed): a benchmark gets
        # answers of any size, and the same prompt and seed give the same text.
        rng = random.Random(f"{_normalise(prompt)}\x1f{seed}")
        while len(tokens) < length:
            sep = "\n\n" if rng.random() < 0.15 else " "
            tokens.extend(tokenize(sep + rng.choice(_SENTENCES)))
    return tuple(tokens[:length])


def answer_tokens(
    prompt: str, length: Optional[int] = None, seed: Optional[int] = None
) -> List[str]:
    """Tokens of the answer to ``prompt``; exactly ``length`` of them when given.

    Without ``length`` this is ``tokenize(answer_for(prompt))``. With it, the
    answer is cut, or continued with deterministic filler, to that many tokens.
    """
    if length is None:
        return tokenize(answer_for(prompt))
    return list(_answer_tokens(prompt, max(0, length), seed))
