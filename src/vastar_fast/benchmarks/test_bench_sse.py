"""SSE benchmarks: compiled twin vs pure twin vs the released SDK's approach.

Run: PYTHONPATH=src python -m pytest bench/test_bench_sse.py --benchmark-only
Each benchmark carries extra_info {"bytes": N}; MB/s = bytes / median.
Ratios within a group (released / compiled, released / pure) are the claim.
"""

import json
import random
from typing import Any, Callable, Dict, List, Tuple

import pytest

from vastar_fast.sse import _scanner_py

from . import released_sse

try:
    from vastar_fast.sse import _scanner_c
except ImportError:  # pragma: no cover
    _scanner_c = None  # type: ignore[assignment]

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "token",
    "stream",
    "model",
    "answer",
    "\n\n",
    "**bold**",
    "`code`",
    "- item\n",
    '"quoted"',
    "café",
    "naïve",
    "über",
    "—",
    "“smart”",
    "日本語",
    "résumé",
    "tab\t",
    "back\\slash",
]


def build_stream(target: int = 1_000_000, seed: int = 20240901, emoji: bool = False) -> str:
    """A deterministic ~1 MB OpenAI chat.completion.chunk stream (real field set)."""
    rnd = random.Random(seed)
    words = [*_WORDS, "😀", "🚀"] if emoji else _WORDS
    head = {
        "id": "chatcmpl-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O",
        "object": "chat.completion.chunk",
        "created": 1726000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
    }

    def event(delta: Dict[str, Any], finish: Any = None) -> str:
        doc = dict(head)
        doc["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return "data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    parts = [event({"role": "assistant", "content": "", "refusal": None})]
    size = len(parts[0].encode())
    while size < target:
        word = rnd.choice(words)
        p = event({"content": (" " if rnd.random() < 0.7 else "") + word})
        parts.append(p)
        size += len(p.encode())
    parts.append(event({}, "stop"))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


STREAM = build_stream()
STREAM_EMOJI = build_stream(emoji=True)
# The same events, each with its own id: no two consecutive events share a
# template, so this measures the full scanners (and what trying costs).
STREAM_UNIQUE_IDS = "\n\n".join(
    piece.replace("chatcmpl-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O", f"chatcmpl-{i:031d}")
    for i, piece in enumerate(STREAM.split("\n\n"))
)
RAW = STREAM.encode()
EXPECTED = released_sse.parse_stream(STREAM)

TWINS: List[Tuple[str, Any]] = [("compiled", _scanner_c), ("pure", _scanner_py)]


def _twin(name: str) -> Any:
    mod = dict(TWINS)[name]
    if mod is None:
        pytest.skip("compiled twin not built")
    return mod


def _fresh(text: str) -> Callable[[], Tuple[Tuple[str], Dict[str, Any]]]:
    """Setup giving a new str object each round, so no per-object cache
    (e.g. a cached UTF-8 form) can make repeated rounds look cheaper."""

    def setup() -> Tuple[Tuple[str], Dict[str, Any]]:
        return ((text.encode().decode(),), {})

    return setup


@pytest.mark.benchmark(group="sse_parse_stream_1MB")
@pytest.mark.parametrize("impl", ["compiled", "pure", "released"])
def test_parse_stream(benchmark: Any, impl: str) -> None:
    f = released_sse.parse_stream if impl == "released" else _twin(impl).parse_stream
    benchmark.extra_info["bytes"] = len(RAW)
    out = benchmark.pedantic(f, setup=_fresh(STREAM), rounds=30 if impl == "compiled" else 10)
    assert out == EXPECTED


@pytest.mark.benchmark(group="sse_parse_stream_1MB_emoji")
@pytest.mark.parametrize("impl", ["compiled", "pure", "released"])
def test_parse_stream_emoji(benchmark: Any, impl: str) -> None:
    """Same, with astral characters: CPython stores the whole str as UCS-4."""
    f = released_sse.parse_stream if impl == "released" else _twin(impl).parse_stream
    benchmark.extra_info["bytes"] = len(STREAM_EMOJI.encode())
    out = benchmark.pedantic(f, setup=_fresh(STREAM_EMOJI), rounds=30 if impl == "compiled" else 10)
    assert out == released_sse.parse_stream(STREAM_EMOJI)


@pytest.mark.benchmark(group="sse_parse_stream_1MB_unique_ids")
@pytest.mark.parametrize("impl", ["compiled", "pure", "released"])
def test_parse_stream_unique_ids(benchmark: Any, impl: str) -> None:
    """Same, but no event is a template for the next (the id changes)."""
    f = released_sse.parse_stream if impl == "released" else _twin(impl).parse_stream
    benchmark.extra_info["bytes"] = len(STREAM_UNIQUE_IDS.encode())
    out = benchmark.pedantic(
        f, setup=_fresh(STREAM_UNIQUE_IDS), rounds=30 if impl == "compiled" else 10
    )
    assert out == EXPECTED


def _feed_all(mod: Any, raw: bytes, size: int) -> str:
    dec = mod.SSEDecoder()
    out: List[str] = []
    for i in range(0, len(raw), size):
        out += dec.feed_deltas(raw[i : i + size])
    out += dec.flush_deltas()
    return "".join(out)


def _naive_all(raw: bytes, size: int) -> str:
    naive = released_sse.NaiveIncremental()
    out: List[str] = []
    for i in range(0, len(raw), size):
        out += naive.feed(raw[i : i + size])
    out += naive.feed(b"\n\n")
    return "".join(out)


_PREFIX_1B = 16 * 1024
_PREFIX_4KB = 256 * 1024


def _cut(raw: bytes, n: int) -> bytes:
    """The first n bytes rounded down to a whole event."""
    return raw[: raw.rfind(b"\n\n", 0, n) + 2]


@pytest.mark.benchmark(group="sse_incremental_1B")
@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_incremental_1B(benchmark: Any, impl: str) -> None:
    mod = _twin(impl)
    benchmark.extra_info["bytes"] = len(RAW)
    out = benchmark.pedantic(_feed_all, args=(mod, RAW, 1), rounds=3 if impl == "compiled" else 1)
    assert out == EXPECTED


@pytest.mark.benchmark(group="sse_incremental_1B")
def test_incremental_1B_released_naive_resplit_16KB_prefix(benchmark: Any) -> None:
    """Naive re-split is quadratic: only a 16 KB prefix (MB/s uses its bytes)."""
    raw = _cut(RAW, _PREFIX_1B)
    benchmark.extra_info["bytes"] = len(raw)
    out = benchmark.pedantic(_naive_all, args=(raw, 1), rounds=1)
    assert out == released_sse.parse_stream(raw.decode())


@pytest.mark.benchmark(group="sse_incremental_4KB")
@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_incremental_4KB(benchmark: Any, impl: str) -> None:
    mod = _twin(impl)
    benchmark.extra_info["bytes"] = len(RAW)
    out = benchmark.pedantic(
        _feed_all, args=(mod, RAW, 4096), rounds=20 if impl == "compiled" else 5
    )
    assert out == EXPECTED


@pytest.mark.benchmark(group="sse_incremental_4KB")
def test_incremental_4KB_released_naive_resplit_256KB_prefix(benchmark: Any) -> None:
    """Naive re-split is quadratic: only a 256 KB prefix (MB/s uses its bytes)."""
    raw = _cut(RAW, _PREFIX_4KB)
    benchmark.extra_info["bytes"] = len(raw)
    out = benchmark.pedantic(_naive_all, args=(raw, 4096), rounds=2)
    assert out == released_sse.parse_stream(raw.decode())
