"""Fuzz the compiled decoders against their pure twins, in one process.

Every input goes to both twins of one decoder and the outcomes must be identical: the
same value, or the same exception (type, message, attributes). A crash of the compiled
code (segfault, abort) ends this process with a signal, and a hang shows as a timeout:
run it as a subprocess (``tests/protocol/test_fuzz_decoders.py`` does) to see either.

Targets: the seven FlatBuffers decoders, the http request and response payload
decoders (JSON), ``FrameBuffer`` reassembling a byte stream fed in pieces, the client
core's receive path (``ClientConnection.receive_data`` with requests outstanding) and
the SSE decoder (events and OpenAI deltas).

Engines::

    python tests/protocol/fuzz_decoders.py --runs 1000000 --seed 1      # seeded mutation
    python tests/protocol/fuzz_decoders.py --atheris --runs 200000      # libFuzzer (atheris)

The mutation engine draws from :class:`fuzzing.Hostile` (golden frames mutated,
truncated, spliced; random bytes; hostile KeyValue shapes). The atheris engine feeds
libFuzzer's coverage-guided inputs (the first byte picks the target), with the pure
twins and this harness instrumented. Both print one JSON line: inputs per target, the
slowest input, and (exit status 1) the first mismatch with the input in hex.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: fuzzing.py

_ATHERIS = "--atheris" in sys.argv
if _ATHERIS:  # coverage of the pure twins and the input builders guides libFuzzer
    import atheris

    _instrumented: Any = atheris.instrument_imports(include=["vastar_fast", "fuzzing"])
else:
    import contextlib

    _instrumented = contextlib.nullcontext()
with _instrumented:
    from fuzzing import Hostile, http_payload_doc
    from vastar_fast.protocol import _client_py, _codec_py
    from vastar_fast.sse import _scanner_py

try:
    from vastar_fast.protocol import _codec_c  # type: ignore[attr-defined]
    from vastar_fast.sse import _scanner_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - reported by the caller
    sys.exit("the compiled twins are not built (python setup.py build_ext --inplace)")

Outcome = Tuple[str, Any]


def outcome(fn: Callable[..., Any], *args: Any) -> Outcome:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # parity: type, message and attributes
        return "err", (type(exc).__name__, str(exc), sorted(vars(exc).items()))


def _chunks(data: bytes, cut: int) -> List[bytes]:
    """``data`` in pieces of 1 .. cut+1 bytes (the split depends on the input)."""
    rng = random.Random(cut ^ len(data))
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, cut + 1)
        out.append(data[i : i + n])
        i += n
    return out


def frame_stream(codec: Any, data: bytes, cut: int) -> List[Outcome]:
    buf = codec.FrameBuffer()
    out: List[Outcome] = []
    for piece in _chunks(data, cut):
        buf.feed(piece)
        while True:
            got = outcome(buf.next_frame)
            if got == ("ok", None):
                break
            out.append(got)
            if got[0] == "err":
                return out
    return out


def client_stream(core: Any, data: bytes, cut: int) -> List[Any]:
    conn = core.ClientConnection(request_id_seed=1)
    for rid, stream in ((1, False), (2, True), (3, True), (0, False)):
        conn.send_http(rid, "t", None, None, 0, "GET", "http://h/", None, None, stream)
    out: List[Any] = []
    for piece in _chunks(data, cut):
        got = outcome(conn.receive_data, piece)
        if got[0] == "err":
            out.append(got)
            return out
        out.extend((type(e).__name__, tuple(e)) for e in got[1])
    out.append(("outstanding", sorted(conn.outstanding.items()), conn.credits, conn.closed))
    return out


def sse_stream(scanner: Any, data: bytes, cut: int) -> List[Any]:
    events, deltas = scanner.SSEDecoder(), scanner.SSEDecoder()
    out: List[Any] = []
    for piece in _chunks(data, cut):
        out.append(outcome(lambda p: [(e.event, e.data, e.id, e.retry)
                                      for e in events.feed(p)], piece))  # fmt: skip
        out.append(outcome(deltas.feed_deltas, piece))
    out.append(outcome(lambda: [(e.event, e.data, e.id, e.retry) for e in events.flush()]))
    out.append(outcome(deltas.flush_deltas))
    out.append(outcome(scanner.extract_delta, data))
    return out


BODY_DECODERS = ("decode_execute_request", "decode_execute_response", "decode_health_response",
                 "decode_credit_update", "decode_stream_start", "decode_stream_chunk",
                 "decode_cancel_request")  # fmt: skip
TARGETS: List[Tuple[str, Callable[[Any, bytes, int], Any], Tuple[Any, Any]]] = [
    *(
        (name, (lambda n: lambda m, d, c: outcome(getattr(m, n), d))(name), (_codec_py, _codec_c))
        for name in BODY_DECODERS
    ),
    (
        "decode_http_request_payload",
        lambda m, d, c: outcome(m.decode_http_request_payload, d),
        (_codec_py, _codec_c),
    ),
    (
        "decode_http_response_payload",
        lambda m, d, c: outcome(m.decode_http_response_payload, d),
        (_codec_py, _codec_c),
    ),
    ("FrameBuffer", frame_stream, (_codec_py, _codec_c)),
    ("ClientConnection.receive_data", client_stream, (_client_py, _codec_c)),
    ("SSEDecoder", sse_stream, (_scanner_py, _scanner_c)),
]


class Mismatch(AssertionError):
    pass


def check(target: int, data: bytes, cut: int = 7) -> None:
    """Run one input through both twins of ``TARGETS[target]``; raise Mismatch if they
    disagree."""
    name, run, (pure, compiled) = TARGETS[target]
    a, b = run(pure, data, cut), run(compiled, data, cut)
    if a != b:
        raise Mismatch(f"{name}: pure {a!r:.600} != compiled {b!r:.600}; input {data.hex()}")


# ---------------------------------------------------------------------- input
def mutation_input(gen: Hostile, target: int) -> bytes:
    """An input for ``target`` from the seeded mutation engine."""
    rng = gen.rng
    name = TARGETS[target][0]
    if name in BODY_DECODERS:
        return gen.body()
    if name.startswith("decode_http"):
        if rng.random() < 0.3:
            resp = _codec_py.encode_http_response_payload(
                rng.choice((200, 404, 599, 0)), {"a": "b", "\u00e9": "x"},
                rng.randbytes(rng.randint(0, 40)), rng.random() < 0.5)  # fmt: skip
            return gen.mutate(resp, rng.randint(0, 3))
        return http_payload_doc(rng)
    if name == "SSEDecoder":
        events = []
        for i in range(rng.randint(1, 6)):
            content = json.dumps({"choices": [{"delta": {"content": f"t\u00e9{i}\\"}}]})
            events.append(rng.choice(("data: ", "data:", "event: x\ndata: ", ": c\ndata: "))
                          + content + rng.choice(("\n\n", "\r\n\r\n", "\r\r", "\n")))  # fmt: skip
        events.append(rng.choice(("data: [DONE]\n\n", "", "id: 1\nretry: 9\n\n")))
        return gen.mutate("".join(events).encode(), rng.randint(0, 4))
    # byte streams of frames: golden and hostile frames, some mutated, some cut
    parts = [gen.item() if rng.random() < 0.5 else rng.choice(gen.golden)
             for _ in range(rng.randint(1, 5))]  # fmt: skip
    stream = b"".join(parts)
    if rng.random() < 0.5:
        stream = gen.mutate(stream, rng.randint(1, 3))
    return stream[: 1 << 20]


def run_mutation(runs: int, seed: int) -> Dict[str, Any]:
    gen = Hostile(seed, huge_every=0)
    counts = [0] * len(TARGETS)
    slowest = (0.0, "")
    for i in range(runs):
        target = i % len(TARGETS)
        data = mutation_input(gen, target)
        t0 = time.perf_counter()
        check(target, data, gen.rng.randrange(64))
        took = time.perf_counter() - t0
        if took > slowest[0]:
            slowest = (took, TARGETS[target][0])
        counts[target] += 1
    return {"engine": "mutate", "inputs": runs, "seed": seed,
            "per_target": {t[0]: n for t, n in zip(TARGETS, counts)},
            "slowest_ms": round(slowest[0] * 1000, 2), "slowest_target": slowest[1]}  # fmt: skip


def run_atheris(runs: int, seed: int, corpus: List[str]) -> None:
    counts = [0] * len(TARGETS)

    def one(data: bytes) -> None:
        if not data:
            return
        target = data[0] % len(TARGETS)
        cut = data[1] % 64 if len(data) > 1 else 0
        counts[target] += 1
        check(target, data[2:], cut)

    def report() -> None:  # libFuzzer ends the process itself: report as it goes
        if sum(counts) % 1000 == 0 or sum(counts) >= runs:
            print(json.dumps({"engine": "atheris", "inputs": sum(counts), "seed": seed,
                              "per_target": {t[0]: n for t, n in zip(TARGETS, counts)}}),
                  flush=True)  # fmt: skip

    def counted(data: bytes) -> None:
        one(data)
        report()

    args = [sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=65536", "-timeout=10",
            "-rss_limit_mb=4096", *corpus]  # fmt: skip
    atheris.Setup(args, counted)
    atheris.Fuzz()


def write_corpus(directory: str, seed: int) -> None:
    """Seed inputs for atheris: golden bodies and streams, one file per target."""
    os.makedirs(directory, exist_ok=True)
    gen = Hostile(seed, huge_every=0)
    for target in range(len(TARGETS)):
        for j in range(8):
            data = mutation_input(gen, target)[:60000]
            Path(directory, f"t{target}-{j}").write_bytes(struct.pack("BB", target, 7) + data)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--atheris", action="store_true", help="libFuzzer-driven (needs atheris)")
    p.add_argument("--corpus", default=None, help="atheris corpus directory (created)")
    args = p.parse_args()
    if args.atheris:
        corpus = args.corpus or os.path.join(os.environ.get("TMPDIR", "/tmp"), "vastar-fuzz")
        write_corpus(corpus, args.seed)
        sys.argv = sys.argv[:1]
        run_atheris(args.runs, args.seed, [corpus])
        return 0
    try:
        print(json.dumps(run_mutation(args.runs, args.seed)), flush=True)
    except Mismatch as exc:
        print(json.dumps({"engine": "mutate", "mismatch": str(exc)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
