"""The suites ``vastar bench`` runs, each in its own process, and how their output
becomes ``bench.json`` results and comparisons (see :mod:`.report` for the shape).

=================  ==========================================================  ==========
runner             measures                                                    needs
=================  ==========================================================  ==========
``micro``          pytest-benchmark suites: codec, SSE, client (in process)    pytest-benchmark
``stack``          runtime round trips, the whole stack, the client's own      nginx
                   CPU cost via the released runtime, first SSE chunk
``streaming``      time to first token, tokens/s (runtime + client)            openai
``simulator``      the simulator's requests/s and streams/s                    aiohttp
``sdk-decode``     the 35 KB decode against the released SDK's own code        --released-sdk
=================  ==========================================================  ==========
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .report import comparison, result

HERE = os.path.dirname(os.path.abspath(__file__))
Records = Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]


@dataclass
class Options:
    quick: bool = False
    released_runtime: Optional[str] = None
    released_sdk: Optional[str] = None
    keyword: Optional[str] = None


@dataclass
class Runner:
    """One suite process: its command line (writing JSON to ``json_path``), what it needs
    (None: it can run; else the reason it is skipped) and its converter."""

    name: str
    title: str
    command: Callable[[Options, str], List[str]]
    convert: Callable[[Dict[str, Any], Options], Records]
    missing: Callable[[Options], Optional[str]] = lambda opts: None
    timeout_s: Callable[[Options], float] = lambda opts: 1800.0 if not opts.quick else 600.0
    progress_fd: bool = False
    suites: List[str] = field(default_factory=list)


def _module(name: str) -> List[str]:
    return [sys.executable, "-m", f"vastar_fast.benchmarks.{name}"]


def _released_args(opts: Options) -> List[str]:
    args: List[str] = []
    if opts.released_runtime:
        args += ["--released-runtime", opts.released_runtime]
    if opts.released_sdk:
        args += ["--released-sdk", opts.released_sdk]
    return args


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- micro
MICRO_FILES = {
    "test_bench_codec.py": "codec",
    "test_bench_sse.py": "sse",
    "test_bench_client.py": "client",
}


def micro_command(opts: Options, json_path: str) -> List[str]:
    ini = os.path.join(os.path.dirname(json_path), "pytest-bench.ini")
    with open(ini, "w", encoding="utf-8") as f:  # ignore any project's pytest settings
        f.write("[pytest]\naddopts =\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(os.path.join(HERE, f) for f in MICRO_FILES),
        "-c",
        ini,
        "--rootdir",
        HERE,
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "vastar_fast.benchmarks._progress",
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        "--benchmark-sort=name",
    ]
    if opts.quick:  # a few rounds each: figures to check the plumbing, not to quote
        cmd += ["--benchmark-max-time=0.05", "--benchmark-min-rounds=3", "--benchmark-warmup=off"]
    if opts.keyword:
        cmd += ["-k", opts.keyword]
    return cmd


def _micro_variant(bench: Dict[str, Any]) -> str:
    name = bench["name"]
    variant = name[name.index("[") + 1 : -1] if "[" in name else name
    if variant == "released" or (variant == name and "released" in name):
        return "released-approach"
    return variant


def micro_convert(data: Dict[str, Any], opts: Options) -> Records:
    results: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    groups: Dict[Tuple[str, str], Dict[str, Dict[str, Any]]] = {}
    for bench in data.get("benchmarks", []):
        path = bench.get("fullname", "").split("::")[0]
        suite = MICRO_FILES.get(os.path.basename(path), "micro")
        group = bench.get("group") or bench["name"]
        impl = _micro_variant(bench)
        stats = bench["stats"]
        samples = stats.get("data") or [stats["median"]]
        extra = dict(bench.get("extra_info") or {})
        extra.update(test=bench["name"], rounds=stats.get("rounds"))
        results.append(
            result(
                suite, group, impl, "time per call", "s", "lower", samples, stats["median"], **extra
            )
        )
        size = extra.get("bytes")
        if size:
            results.append(
                result(
                    suite,
                    group,
                    impl,
                    "throughput",
                    "MB/s",
                    "higher",
                    [size / s / 1e6 for s in samples if s > 0],
                    size / stats["median"] / 1e6,
                    bytes=size,
                )
            )
        groups.setdefault((suite, group), {})[impl] = bench
    for (suite, group), variants in groups.items():
        base = variants.get("released-approach")
        if base is None:
            continue
        raw = variants.get("raw")
        base_med = base["stats"]["median"]
        base_size = (base.get("extra_info") or {}).get("bytes")
        for impl, bench in variants.items():
            if impl in ("released-approach", "raw"):
                continue
            med = bench["stats"]["median"]
            size = (bench.get("extra_info") or {}).get("bytes")
            if "[" not in base["name"] and size and base_size:  # a shorter input: by MB/s
                speed = (size / med) / (base_size / base_med)
                comparisons.append(
                    comparison(suite, group, impl, "released-approach", "throughput", speed)
                )
            else:
                comparisons.append(
                    comparison(
                        suite, group, impl, "released-approach", "time per call", base_med / med
                    )
                )
        if raw is not None:
            floor = raw["stats"]["median"]
            own = {k: b["stats"]["median"] - floor for k, b in variants.items() if k != "raw"}
            if all(v > 0 for v in own.values()):
                for impl, cost in own.items():
                    results.append(
                        result(
                            suite,
                            group,
                            impl,
                            "own cost per call",
                            "s",
                            "lower",
                            [cost],
                            derived="median minus the raw loop's median",
                        )
                    )
                for impl, cost in own.items():
                    if impl != "released-approach":
                        comparisons.append(
                            comparison(
                                suite,
                                group,
                                impl,
                                "released-approach",
                                "own cost per call",
                                own["released-approach"] / cost,
                                note=f"cost ratio {cost / own['released-approach']:.3f}x",
                            )
                        )
    return results, comparisons


# --------------------------------------------------------------------------- stack
def nginx_missing(opts: Options) -> Optional[str]:
    if shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK):
        return None
    return "nginx is not installed (the loopback upstream; e.g. apt-get install nginx-light)"


def stack_command(opts: Options, json_path: str) -> List[str]:
    return [
        *_module("stack_bench"),
        "--json",
        json_path,
        "--quiet",
        *_released_args(opts),
        *(["--quick"] if opts.quick else []),
    ]


STACK_LABELS = {
    "vastar runtime": "vastar_fast",
    "released runtime": "released",
    "vastar_fast + vastar runtime": "vastar_fast",
    "released SDK + released runtime": "released",
    "raw": "raw",
    "vastar_fast": "vastar_fast",
    "released": "released",
}
STACK_METRICS = (  # key in stack_bench's figures, metric, unit, better
    ("req_per_s", "requests/s", "req/s", "higher"),
    ("median_us", "median latency", "us", "lower"),
    ("daemon_cpu_us", "runtime CPU per request", "us", "lower"),
    ("client_cpu_us", "client CPU per request", "us", "lower"),
)


def stack_convert(data: Dict[str, Any], opts: Options) -> Records:
    results: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    for name, section in data.get("sections", {}).items():
        prefix, _, case = name.partition(": ")
        if "first_chunk" in section:
            fc = section["first_chunk"]
            results.append(
                result(
                    "first-chunk",
                    case,
                    "vastar_fast",
                    "first SSE chunk forwarded",
                    "us",
                    "lower",
                    fc.get("samples_us") or [fc["median_us"]],
                    fc["median_us"],
                    p99_us=fc["p99_us"],
                    max_us=fc["max_us"],
                    rounds=fc["rounds"],
                )
            )
            continue
        if "floor" in section:  # the round trip's two legs with no runtime work in them
            fl = section["floor"]
            for leg, what in (("http_us", "bare keep-alive GET to nginx"),
                              ("ipc_us", "Unix socket ping-pong"),
                              ("sum_us", "both legs")):  # fmt: skip
                results.append(result("floor", what, "raw", "median latency", "us", "lower",
                                      [fl[leg]]))  # fmt: skip
            continue
        suite = "client-via-runtime" if prefix.startswith("client") else prefix
        labels = {
            label: STACK_LABELS[label] for label in section["median"] if label in STACK_LABELS
        }
        for label, impl in labels.items():
            runs = section["samples"][label]
            for key, metric, unit, better in STACK_METRICS:
                if suite == "client-via-runtime" and key in ("req_per_s", "daemon_cpu_us"):
                    continue  # one runtime for all three: only the clients differ
                results.append(
                    result(
                        suite, case, impl, metric, unit, better, [r[key] for r in runs], label=label
                    )
                )
        if suite == "client-via-runtime" and "raw" in labels.values():
            raw_runs = section["samples"]["raw"]
            for label, impl in labels.items():
                if impl == "raw":
                    continue
                own = [
                    r["client_cpu_us"] - w["client_cpu_us"]
                    for r, w in zip(section["samples"][label], raw_runs)
                ]
                results.append(
                    result(
                        suite,
                        case,
                        impl,
                        "own CPU per round trip",
                        "us",
                        "lower",
                        own,
                        section["own_cost_us"][label],
                        derived="client CPU minus the raw loop's",
                    )
                )
            if "own_cost_ratio" in section:
                ratio = section["own_cost_ratio"]
                comparisons.append(
                    comparison(
                        suite,
                        case,
                        "vastar_fast",
                        "released",
                        "own CPU per round trip",
                        1 / ratio,
                        [1 / r for r in section["own_cost_ratio_per_run"]],
                        note=f"cost ratio {ratio:.3f}x",
                    )
                )
        # Alternated ratios against the last contender: req/s, or for the paced cases
        # (the client sets the rate) the daemons' CPU per request, a cost.
        for key, metric in (("ratio_req_per_s", "requests/s"),
                            ("ratio_daemon_cpu", "runtime CPU per request")):  # fmt: skip
            cost = key == "ratio_daemon_cpu"
            for label, ratio in section.get(key, {}).items():
                base = section["ratio_base"]
                if label not in labels or base not in labels or ratio <= 0:
                    continue
                per_run = section[f"{key}_per_run"][label]
                pair = (suite, case, labels[label], labels[base])
                if cost:
                    comparisons.append(comparison(*pair, metric, 1 / ratio,
                                                  [1 / r for r in per_run],
                                                  note=f"cost ratio {ratio:.2f}x"))  # fmt: skip
                    continue
                comparisons.append(comparison(*pair, metric, ratio, per_run))
                med = section["median"]
                if suite == "runtime" and med[label]["daemon_cpu_us"] > 0:
                    cpu = med[base]["daemon_cpu_us"] / med[label]["daemon_cpu_us"]
                    comparisons.append(comparison(*pair, "runtime CPU per request", cpu))
    return results, comparisons


# --------------------------------------------------------------------------- streaming
def streaming_command(opts: Options, json_path: str) -> List[str]:
    return [*_module("streaming_bench"), "--json", json_path, *(["--quick"] if opts.quick else [])]


def streaming_missing(opts: Options) -> Optional[str]:
    for module, why in (
        ("openai", "the official client it compares with"),
        ("aiohttp", "the runtime and simulator"),
    ):
        if not _has(module):
            return f"{module} is not installed ({why}): pip install 'vastar-fast[all,bench]'"
    return None


STREAMING_LABELS = {
    "vastar_fast": "vastar_fast",
    "released approach": "released-approach",
    "openai direct": "openai",
    "vastar_fast (runtime+client)": "vastar_fast",
}


def streaming_convert(data: Dict[str, Any], opts: Options) -> Records:
    results: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    case = "10 tokens at 100 ms per token"
    medians: Dict[str, float] = {}
    for name, samples in data["samples"]["ttft"].items():
        impl = STREAMING_LABELS[name]
        values = [s["ttft"] * 1000 for s in samples if s["ttft"] is not None]
        if values:
            results.append(
                result("ttft", case, impl, "time to first token", "ms", "lower", values, label=name)
            )
            medians[impl] = statistics.median(values)
    for base in ("released-approach", "openai"):
        if base in medians and "vastar_fast" in medians:
            comparisons.append(
                comparison(
                    "ttft",
                    case,
                    "vastar_fast",
                    base,
                    "time to first token",
                    medians[base] / medians["vastar_fast"],
                )
            )
    for scenario, tp in data["samples"]["throughput"].items():
        case = f"335-token answer, simulator {scenario}"
        for name, samples in tp["samples"].items():
            rates = [s["tokens"] / s["seconds"] for s in samples if s["seconds"] > 0]
            results.append(
                result(
                    "tokens-per-s",
                    case,
                    STREAMING_LABELS[name],
                    "tokens/s",
                    "tokens/s",
                    "higher",
                    rates,
                    label=name,
                )
            )
        summary = data["tokens_per_s"][scenario]
        ours, theirs = tp["samples"].values()
        paired = [b["seconds"] / a["seconds"] for a, b in zip(ours, theirs)]
        comparisons.append(
            comparison(
                "tokens-per-s",
                case,
                "vastar_fast",
                "openai",
                "tokens/s",
                summary["ratio"]["median_paired"],
                paired,
                note="median of paired samples",
            )
        )
    return results, comparisons


# --------------------------------------------------------------------------- simulator
def simulator_command(opts: Options, json_path: str) -> List[str]:
    timing = ["--duration", "1", "--repeat", "1"] if opts.quick else ["--duration", "3"]
    return [*_module("simulator_load"), *timing, "--features", "--json", json_path]


def simulator_missing(opts: Options) -> Optional[str]:
    if not _has("aiohttp"):
        return "aiohttp is not installed (the simulator): pip install 'vastar-fast[all,bench]'"
    return None


def simulator_convert(data: Dict[str, Any], opts: Options) -> Records:
    results = [
        result(
            "simulator",
            f"{r['scenario']}, {r['client']} client",
            "vastar_fast",
            "requests/s",
            "req/s",
            "higher",
            r["samples_per_s"],
            r["median_per_s"],
            errors=r["errors"],
            concurrency=data["concurrency"],
        )
        for r in data["results"]
    ]
    return results, []


# --------------------------------------------------------------------------- sdk decode
def sdk_decode_command(opts: Options, json_path: str) -> List[str]:
    assert opts.released_sdk
    return [
        *_module("released_sdk_decode"),
        "--released-sdk",
        opts.released_sdk,
        "--json",
        json_path,
        *(["--quick"] if opts.quick else []),
    ]


def sdk_decode_missing(opts: Options) -> Optional[str]:
    if not opts.released_sdk:
        return "no released SDK given (--released-sdk or $VASTAR_RELEASED_SDK)"
    if not _has("numpy"):
        return "numpy is not installed (the released SDK needs it): pip install numpy"
    return None


def sdk_decode_convert(data: Dict[str, Any], opts: Options) -> Records:
    case = f"decode a 35 KB SSE response ({data['frame_bytes']:,} byte frame)"
    rel = data["released"]
    results = [
        result(
            "sdk-decode",
            case,
            "released",
            "time per call",
            "s",
            "lower",
            rel.get("samples_s") or [rel["median_s"]],
            rel["median_s"],
            python=rel.get("python"),
            numpy=rel.get("numpy"),
        )
    ]
    comparisons = []
    for name, v in data["variants"].items():
        results.append(
            result(
                "sdk-decode",
                case,
                name,
                "time per call",
                "s",
                "lower",
                v["samples_s"],
                v["median_s"],
            )
        )
        comparisons.append(
            comparison(
                "sdk-decode",
                case,
                name,
                "released",
                "time per call",
                rel["median_s"] / v["median_s"],
            )
        )
    return results, comparisons


RUNNERS = [
    Runner(
        "micro",
        "micro suites (codec, SSE, client)",
        micro_command,
        micro_convert,
        lambda o: (
            None
            if _has("pytest_benchmark")
            else "pytest-benchmark is not installed: pip install 'vastar-fast[bench]'"
        ),
        progress_fd=True,
        suites=["codec", "sse", "client"],
    ),
    Runner(
        "stack",
        "runtime and whole stack (vs the released one)",
        stack_command,
        stack_convert,
        nginx_missing,
        suites=["runtime", "stack", "client-via-runtime", "first-chunk"],
    ),
    Runner(
        "streaming",
        "time to first token, tokens/s",
        streaming_command,
        streaming_convert,
        streaming_missing,
        suites=["ttft", "tokens-per-s"],
    ),
    Runner(
        "simulator",
        "simulator throughput",
        simulator_command,
        simulator_convert,
        simulator_missing,
        suites=["simulator"],
    ),
    Runner(
        "sdk-decode",
        "35 KB decode vs the released SDK's code",
        sdk_decode_command,
        sdk_decode_convert,
        sdk_decode_missing,
        suites=["sdk-decode"],
    ),
]
