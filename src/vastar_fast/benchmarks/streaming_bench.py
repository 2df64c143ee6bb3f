"""Streaming benchmark: time to first token and tokens/s through the runtime.

    python -m vastar_fast.benchmarks.streaming_bench [--runs N] [--throughput-runs N]
        [--streams-per-sample K] [--quick] [--json FILE]

Two measurements, each the median of several runs, printed as a small table:

1. **Time to first token** for a 10-token answer paced at 100 ms per token (simulator
   ``--ttft-ms 100 --token-delay-ms 100 --tokens-per-chunk 1``), from sending the request
   to holding the first delta text:
   - ``vastar_fast``: ``RuntimeClient.stream_http(...).iter_deltas()`` through the
     vastar-fast runtime (streaming extension; goal: under 110 ms);
   - ``released approach``: the released client's algorithm (``released_client.py``:
     ``execute_http`` with ``stream: true``, then ``SSEParser.parse_stream`` on the body)
     through the same runtime, which - like the released runtime - buffers the answer for
     a client that did not opt in, so the first token is usable only at the end (~1,000 ms);
   - ``openai direct``: the official ``openai`` client straight to the simulator (no
     runtime): the floor.
2. **Tokens/s** for the simulator's longest built-in answer (335 tokens, one per SSE
   event) at zero delay: ``stream_http().iter_deltas()`` through runtime and client vs the
   official ``openai`` client reading the same stream directly from the simulator
   (goal: at least 3x). One sample is ``--streams-per-sample`` streams read back to back
   (default 3, i.e. 1,005 tokens), so a sample is long enough to time; tokens/s is the
   sample's tokens over its wall time. Both variants use the same simulator process, the
   same request body (same prompt, no ``max_tokens``), reuse one connection across runs
   (runtime client: one Unix socket, the runtime's pooled keep-alive upstream; openai: its
   httpx pool), and are interleaved sample by sample; the ratio is computed within this
   one run, both as ratio of medians and as median of the per-pair ratios.

Honesty checks: every variant must have produced the same text (and the same token count
for tokens/s); a mismatch is reported and the exit status is 1. The number of pieces the
runtime delivered the long stream in is printed too (the zero-delay simulator writes the
whole stream at once, so the runtime may forward it in few pieces).

Services are subprocesses started by :class:`vastar_fast.services.EmbeddedServices`
and stopped at the end. Nothing is asserted; the numbers are printed (and saved with
``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig, SSEParser
from vastar_fast.services import EmbeddedServices

LONG_PROMPT = "Explain quantum computing in simple terms."
MODEL = "gpt-3.5-turbo"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


def _body(prompt: str, max_tokens: Optional[int] = None) -> bytes:
    payload: Dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return json.dumps(payload).encode()


# --------------------------------------------------------------------------- TTFT


def ttft_vastar(client: RuntimeClient, url: str, body: bytes) -> Dict[str, Any]:
    """Request -> first delta via the streaming extension; reads the rest too."""
    t0 = time.perf_counter()
    first: Optional[float] = None
    parts: List[str] = []
    with client.stream_http(HTTPRequest("POST", url, HEADERS, body)) as stream:
        for delta in stream.iter_deltas():
            if first is None and delta:
                first = time.perf_counter() - t0
            parts.append(delta)
    return {"ttft": first, "total": time.perf_counter() - t0, "text": "".join(parts)}


def ttft_released(path: str, url: str, body: bytes) -> Dict[str, Any]:
    """The released algorithm: buffered execute_http, then SSEParser on the whole body."""
    from vastar_fast.benchmarks.released_client import ReleasedStyleClient

    client = ReleasedStyleClient(path)
    try:
        t0 = time.perf_counter()
        response = client.execute_http("POST", url, HEADERS, body)
        raw = response["body"]
        text = SSEParser.parse_stream(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        first = time.perf_counter() - t0  # the first token is usable only now
    finally:
        client.close()
    return {"ttft": first, "total": first, "text": text}


def ttft_openai(openai_client: Any, max_tokens: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    first: Optional[float] = None
    parts: List[str] = []
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": LONG_PROMPT}],
        stream=True,
        max_tokens=max_tokens,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(chunk.choices[0].delta.content)
    return {"ttft": first, "total": time.perf_counter() - t0, "text": "".join(parts)}


# --------------------------------------------------------------------------- tokens/s


def stream_vastar(client: RuntimeClient, url: str, body: bytes) -> List[str]:
    with client.stream_http(HTTPRequest("POST", url, HEADERS, body)) as stream:
        return list(stream.iter_deltas())


def stream_openai(openai_client: Any) -> List[str]:
    out: List[str] = []
    for chunk in openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": LONG_PROMPT}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            out.append(chunk.choices[0].delta.content)
    return out


def _timed(fn: Callable[[], List[str]], streams: int) -> Dict[str, Any]:
    """``streams`` streams back to back; tokens counted over all of them."""
    texts: List[str] = []
    count = 0
    t0 = time.perf_counter()
    for _ in range(streams):
        tokens = fn()
        count += len(tokens)
        texts.append("".join(tokens))
    elapsed = time.perf_counter() - t0
    same = all(t == texts[0] for t in texts)
    return {"seconds": elapsed, "tokens": count, "streams": streams, "text": texts[0], "same": same}


def stream_pieces(client: RuntimeClient, url: str, body: bytes) -> Dict[str, int]:
    """How the runtime delivered one long stream: pieces and bytes (diagnostic, untimed)."""
    pieces = size = 0
    with client.stream_http(HTTPRequest("POST", url, HEADERS, body)) as stream:
        for chunk in stream:
            pieces += 1
            size += len(chunk)
    return {"pieces": pieces, "bytes": size}


def _openai_client(base_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=base_url + "/v1", api_key="sk-bench", max_retries=0, timeout=60)


# --------------------------------------------------------------------------- driver


#: Tokens/s scenarios: (name, simulator token delay in ms). At exactly 0 the simulator
#: writes the whole stream at once (Content-Length body); at 0.001 ms it writes each SSE
#: event separately (sleeping ~1 us between them), so the runtime forwards a chunked
#: stream piece by piece, as with a real model, only much faster.
SCENARIOS = (("single write", 0.0), ("per-event writes", 0.001))
OURS = "vastar_fast (runtime+client)"
THEIRS = "openai direct"


def measure_throughput(
    client: RuntimeClient, simulator_url: str, samples: int, streams_per_sample: int
) -> Dict[str, Any]:
    """Interleaved samples of both variants against one simulator, same request."""
    url = simulator_url + "/v1/chat/completions"
    body = _body(LONG_PROMPT)
    oa = _openai_client(simulator_url)
    try:
        stream_vastar(client, url, body)  # warm-up: connections, caches
        stream_openai(oa)
        pieces = stream_pieces(client, url, body)
        ours: List[Dict[str, Any]] = []
        theirs: List[Dict[str, Any]] = []
        for i in range(samples):  # interleaved, so drift hits both alike
            pair = [
                (ours, lambda: stream_vastar(client, url, body)),
                (theirs, lambda: stream_openai(oa)),
            ]
            if i % 2:  # alternate which goes first
                pair.reverse()
            for out, fn in pair:
                out.append(_timed(fn, streams_per_sample))
    finally:
        oa.close()
    return {"samples": {OURS: ours, THEIRS: theirs}, "pieces": pieces}


def run(
    runs: int,
    throughput_runs: int,
    streams_per_sample: int = 3,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Start the services, measure, stop them; returns every sample and the medians."""
    results: Dict[str, Any] = {"ttft": {}, "throughput": {}}
    paced = EmbeddedServices(ttft_ms=100, token_delay_ms=100, tokens_per_chunk=1)
    sims = {
        name: EmbeddedServices(runtime=False, ttft_ms=0, token_delay_ms=delay, tokens_per_chunk=1)
        for name, delay in SCENARIOS
    }
    with contextlib.ExitStack() as stack:
        for svc in (paced, *sims.values()):
            stack.enter_context(svc)
        assert paced.runtime_socket and paced.simulator_url
        config = RuntimeConfig(tenant_id="bench", socket_path=paced.runtime_socket)
        paced_url = paced.simulator_url + "/v1/chat/completions"
        ten = _body(LONG_PROMPT, max_tokens=10)
        with RuntimeClient(config) as client:
            paced_openai = _openai_client(paced.simulator_url)
            try:
                # warm-up: connections, imports, caches
                ttft_vastar(client, paced_url, ten)
                ttft_openai(paced_openai, 10)

                log(f"TTFT: 10 tokens at 100 ms/token, {runs} runs per variant ...")
                results["ttft"]["vastar_fast"] = [
                    ttft_vastar(client, paced_url, ten) for _ in range(runs)
                ]
                results["ttft"]["released approach"] = [
                    ttft_released(paced.runtime_socket, paced_url, ten) for _ in range(runs)
                ]
                results["ttft"]["openai direct"] = [
                    ttft_openai(paced_openai, 10) for _ in range(runs)
                ]
            finally:
                paced_openai.close()

            for name, svc in sims.items():
                assert svc.simulator_url
                log(
                    f"Tokens/s ({name}): 335-token answer, {throughput_runs} samples of "
                    f"{streams_per_sample} streams per variant ..."
                )
                results["throughput"][name] = measure_throughput(
                    client, svc.simulator_url, throughput_runs, streams_per_sample
                )
                results["throughput"][name]["token_delay_ms"] = svc.token_delay_ms
    return summarise(results)


def check(results: Dict[str, Any]) -> List[str]:
    """Every variant saw the same answer; returns the problems found (empty: honest)."""
    problems: List[str] = []
    ttft_texts = {s["text"] for samples in results["ttft"].values() for s in samples}
    if len(ttft_texts) != 1:
        problems.append(f"TTFT variants read different texts: {sorted(ttft_texts)!r}")
    for name, samples in results["ttft"].items():
        if any(s["ttft"] is None for s in samples):
            problems.append(f"TTFT {name}: a run saw no token")
    all_texts = set()
    for scenario, data in results["throughput"].items():
        tp = data["samples"]
        texts = {s["text"] for samples in tp.values() for s in samples}
        counts = {s["tokens"] for samples in tp.values() for s in samples}
        all_texts |= texts
        if len(texts) != 1 or len(counts) != 1:
            problems.append(
                f"tokens/s ({scenario}): variants differ: {len(texts)} texts, counts {counts}"
            )
        if not all(s["same"] for samples in tp.values() for s in samples):
            problems.append(f"tokens/s ({scenario}): the streams of one sample differ")
    if len(all_texts) > 1:
        problems.append("tokens/s: the scenarios streamed different answers")
    return problems


def summarise(results: Dict[str, Any]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {"ttft_ms": {}, "tokens_per_s": {}, "samples": results}
    summary["problems"] = check(results)
    for name, samples in results["ttft"].items():
        values = [s["ttft"] for s in samples if s["ttft"] is not None]
        summary["ttft_ms"][name] = {
            "median": statistics.median(values) * 1000 if values else None,
            "min": min(values) * 1000 if values else None,
            "total_median": statistics.median(s["total"] for s in samples) * 1000,
            "runs": len(samples),
            "text": samples[0]["text"] if samples else "",
        }
    for scenario, data in results["throughput"].items():
        out: Dict[str, Any] = {
            "variants": {},
            "pieces": data["pieces"],
            "token_delay_ms": data.get("token_delay_ms"),
        }
        for name, samples in data["samples"].items():
            rates = [s["tokens"] / s["seconds"] for s in samples if s["seconds"] > 0]
            out["variants"][name] = {
                "median": statistics.median(rates) if rates else None,
                "median_ms_per_stream": statistics.median(
                    s["seconds"] / s["streams"] for s in samples
                )
                * 1000,
                "tokens_per_sample": samples[0]["tokens"] if samples else 0,
                "runs": len(samples),
            }
        ours, theirs = data["samples"][OURS], data["samples"][THEIRS]
        paired = [b["seconds"] / a["seconds"] for a, b in zip(ours, theirs)]
        out["ratio"] = {
            "of_medians": out["variants"][OURS]["median"] / out["variants"][THEIRS]["median"],
            "median_paired": statistics.median(paired),
            "min_paired": min(paired),
        }
        summary["tokens_per_s"][scenario] = out
    return summary


def table(summary: Dict[str, Any]) -> List[str]:
    rows = ["", "Time to first token (10 tokens, 100 ms per token; goal < 110 ms)"]
    rows.append(f"  {'variant':<30} {'median':>10} {'min':>10} {'stream end':>11}")
    for name, s in summary["ttft_ms"].items():
        med = f"{s['median']:.1f} ms" if s["median"] is not None else "n/a"
        low = f"{s['min']:.1f} ms" if s["min"] is not None else "n/a"
        rows.append(f"  {name:<30} {med:>10} {low:>10} {s['total_median']:>8.1f} ms")
    for scenario, out in summary["tokens_per_s"].items():
        variants = out["variants"]
        per_sample = next(iter(variants.values()))["tokens_per_sample"]
        rows.append("")
        rows.append(
            f"Tokens/s, simulator {scenario} (token delay {out['token_delay_ms']:g} ms, "
            f"335-token answer, one SSE event per token, {per_sample} tokens per sample; "
            "goal >= 3x)"
        )
        rows.append(f"  {'variant':<30} {'tokens/s':>10} {'per stream':>11} {'ratio':>7}")
        base = variants[THEIRS]["median"]
        for name, s in variants.items():
            ratio = f"{s['median'] / base:.1f}x" if base and s["median"] else ""
            rows.append(
                f"  {name:<30} {s['median']:>10,.0f} {s['median_ms_per_stream']:>8.2f} ms "
                f"{ratio:>7}"
            )
        r = out["ratio"]
        rows.append(
            f"  ratio: {r['of_medians']:.1f}x of medians, {r['median_paired']:.1f}x median "
            f"of pairs, {r['min_paired']:.1f}x worst pair"
        )
        p = out["pieces"]
        rows.append(
            f"  the runtime delivered one stream ({p['bytes']:,} bytes) to the client in "
            f"{p['pieces']} piece(s)"
        )
    rows.append("")
    if summary["problems"]:
        rows.extend(f"PROBLEM: {p}" for p in summary["problems"])
    else:
        rows.append("Checked: every variant read the same text and token count.")
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="TTFT runs per variant")
    parser.add_argument("--throughput-runs", type=int, default=100, help="samples per variant")
    parser.add_argument(
        "--streams-per-sample", type=int, default=3, help="streams read back to back per sample"
    )
    parser.add_argument("--quick", action="store_true", help="3 TTFT runs, 10 samples")
    parser.add_argument("--json", default=None, help="save the summary and samples here")
    args = parser.parse_args(argv)
    runs, tp_runs = (3, 10) if args.quick else (args.runs, args.throughput_runs)
    summary = run(runs, tp_runs, args.streams_per_sample, log=lambda m: print(m, file=sys.stderr))
    print("\n".join(table(summary)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
