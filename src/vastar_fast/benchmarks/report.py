"""``bench.json``: its shape, the tables printed from it, and the comparison of two runs.

A run is one JSON document::

    {
      "schema": "vastar-bench/1",
      "created": "2026-05-01T12:00:00+00:00", "command": "vastar bench --quick", "quick": true,
      "machine": {...},            # machine.machine_info(): CPU, OS, Python, packages, twins
      "released": {...},           # machine.released_info(): the released peers, if given
      "suites": {"codec": {"status": "ok", "seconds": 12.3, "log": "logs/micro.log"}, ...},
      "results": [Result, ...],    # every measured figure, with its samples
      "comparisons": [Comparison, ...],
    }

A *result* is one figure of one implementation: ``suite``, ``case``, ``implementation``
(see :data:`IMPLEMENTATIONS`), ``metric``, ``unit``, ``better`` ("lower" or "higher"),
``value`` (the median), ``samples`` (every measured value it is the median of) and
``extra``. A *comparison* puts ours beside a baseline: ``speedup`` is how many times
better ours is (above 1: ours is faster, cheaper or higher; for a time or a cost it is
baseline / ours), computed by the suite from paired runs where it has them.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

SCHEMA = "vastar-bench/1"

#: At most this many samples are kept per result (``vastar bench --max-samples``): a
#: micro benchmark can time 100,000 rounds. Beyond it an evenly spaced subset, in
#: measurement order, is kept and ``extra.samples_total`` says how many there were; the
#: result's ``value`` is always the median of all of them.
MAX_SAMPLES = 300

#: Who produced a figure. ``released`` is the real released runtime or SDK; the
#: ``released-approach`` rows are re-implementations of its algorithms (benchmarks/
#: released_*.py), kept because they also run where the released stack is absent.
IMPLEMENTATIONS = {
    "compiled": "vastar_fast, compiled twin",
    "pure": "vastar_fast, pure twin",
    "vastar_fast": "vastar_fast (the twins this install has)",
    "released": "the released runtime / SDK itself",
    "released-approach": "the released SDK's algorithm, re-implemented",
    "raw": "a raw pre-encoded loop (the floor)",
    "openai": "the official openai client, straight to the upstream",
}

RESULT_KEYS = ("suite", "case", "implementation", "metric", "unit", "better", "value", "samples")
COMPARISON_KEYS = ("suite", "case", "ours", "baseline", "metric", "speedup")


def result(
    suite: str,
    case: str,
    implementation: str,
    metric: str,
    unit: str,
    better: str,
    samples: Sequence[float],
    value: Optional[float] = None,
    **extra: Any,
) -> Dict[str, Any]:
    """One result record; ``value`` defaults to the median of ``samples``."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    data = [float(s) for s in samples]
    if value is None:
        if not data:
            raise ValueError(f"{suite}/{case}/{implementation}: no samples and no value")
        value = statistics.median(data)
    data = [float(f"{s:.6g}") for s in data]
    impl = implementation.split("-")[0] if implementation.startswith("compiled-") else None
    return {
        "suite": suite,
        "case": case,
        "implementation": implementation,
        "implementation_kind": impl or implementation,
        "metric": metric,
        "unit": unit,
        "better": better,
        "value": float(value),
        "samples": data,
        "extra": extra,
    }


def comparison(
    suite: str,
    case: str,
    ours: str,
    baseline: str,
    metric: str,
    speedup: float,
    per_run: Sequence[float] = (),
    note: str = "",
) -> Dict[str, Any]:
    """One comparison record (``speedup`` > 1: ours is better)."""
    return {
        "suite": suite,
        "case": case,
        "ours": ours,
        "baseline": baseline,
        "metric": metric,
        "speedup": float(speedup),
        "per_run": [float(r) for r in per_run],
        "note": note,
    }


def cap_samples(results: Iterable[Dict[str, Any]], limit: int = MAX_SAMPLES) -> None:
    """Keep at most ``limit`` samples per result (see :data:`MAX_SAMPLES`), in place."""
    for r in results:
        total = len(r["samples"])
        if limit > 0 and total > limit:
            step = total / limit
            r["samples"] = [r["samples"][int(i * step)] for i in range(limit)]
            r["extra"]["samples_total"] = total


def validate(doc: Mapping[str, Any]) -> List[str]:
    """Problems with a ``bench.json`` document's shape (empty: it is well formed)."""
    problems: List[str] = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("created", "command", "machine", "released", "suites", "results", "comparisons"):
        if key not in doc:
            problems.append(f"missing key {key!r}")
    machine = doc.get("machine") or {}
    for key in ("cpu_model", "cpu_count", "os", "python", "packages", "twins"):
        if key not in machine:
            problems.append(f"machine: missing {key!r}")
    for i, r in enumerate(doc.get("results") or []):
        missing = [k for k in RESULT_KEYS if k not in r]
        if missing:
            problems.append(f"results[{i}]: missing {missing}")
        elif r["implementation_kind"] not in IMPLEMENTATIONS:
            problems.append(f"results[{i}]: unknown implementation {r['implementation']!r}")
        elif not r["samples"]:
            problems.append(f"results[{i}]: no samples")
    for i, c in enumerate(doc.get("comparisons") or []):
        missing = [k for k in COMPARISON_KEYS if k not in c]
        if missing:
            problems.append(f"comparisons[{i}]: missing {missing}")
    return problems


# --------------------------------------------------------------------------- formatting
def fmt_value(value: float, unit: str) -> str:
    """A figure with a readable unit: seconds scaled to us/ms, rates with separators."""
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.2f} us"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit == "us":
        return f"{value:,.1f} us" if value < 1000 else f"{value / 1000:,.2f} ms"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def fmt_speedup(speedup: float) -> str:
    return f"{speedup:.1f}x" if speedup >= 10 else f"{speedup:.2f}x"


def _lookup(doc: Mapping[str, Any]) -> Dict[Tuple[str, str, str, str], Dict[str, Any]]:
    return {
        (r["suite"], r["case"], r["implementation"], r["metric"]): r
        for r in doc.get("results") or []
    }


def comparison_rows(doc: Mapping[str, Any]) -> List[List[str]]:
    """Rows of ``suite, case, metric, ours, baseline, ours' value, baseline's, speedup``."""
    results = _lookup(doc)
    rows = []
    for c in doc.get("comparisons") or []:
        mine = results.get((c["suite"], c["case"], c["ours"], c["metric"]))
        base = results.get((c["suite"], c["case"], c["baseline"], c["metric"]))
        rows.append(
            [
                c["suite"],
                c["case"],
                c["metric"],
                c["ours"],
                c["baseline"],
                fmt_value(mine["value"], mine["unit"]) if mine else "",
                fmt_value(base["value"], base["unit"]) if base else "",
                fmt_speedup(c["speedup"]),
            ]
        )
    return rows


COMPARISON_HEADER = ["suite", "case", "metric", "ours", "baseline", "ours", "baseline", "speedup"]


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: int = 3) -> List[str]:
    """Aligned text rows; the last ``numeric`` columns are right-aligned."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = set(range(len(header) - numeric, len(header)))
    out = []
    for row in [list(header), *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    rows = [list(map(str, r)) for r in rows]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
    return out


def summary_rows(doc: Mapping[str, Any]) -> List[List[str]]:
    """The README's rows: what, ours, baseline, speedup (one per comparison)."""
    results = _lookup(doc)
    rows = []
    for c in doc.get("comparisons") or []:
        mine = results.get((c["suite"], c["case"], c["ours"], c["metric"]))
        base = results.get((c["suite"], c["case"], c["baseline"], c["metric"]))
        what = f"{c['case']} ({c['metric']})"
        ours = f"{c['ours']}: {fmt_value(mine['value'], mine['unit'])}" if mine else c["ours"]
        theirs = (
            f"{c['baseline']}: {fmt_value(base['value'], base['unit'])}" if base else c["baseline"]
        )
        rows.append([c["suite"], what, ours, theirs, fmt_speedup(c["speedup"])])
    return rows


SUMMARY_HEADER = ["suite", "what", "ours", "baseline", "speedup"]


# --------------------------------------------------------------------------- two runs
def compare_runs(
    old: Mapping[str, Any], new: Mapping[str, Any], threshold: float = 0.10
) -> Tuple[List[List[str]], Dict[str, int]]:
    """Every result present in both runs: old and new value, the change, and whether it
    got faster / slower (beyond ``threshold``, a fraction) or stayed the same. Returns
    the rows (worst first) and the counts per verdict."""
    before = _lookup(old)
    rows: List[Tuple[float, List[str]]] = []
    counts = {"faster": 0, "slower": 0, "same": 0, "new": 0, "gone": 0}
    after = _lookup(new)
    for key, r in after.items():
        o = before.get(key)
        if o is None:
            counts["new"] += 1
            continue
        if o["value"] == 0 or r["value"] == 0:
            continue
        gain = o["value"] / r["value"] if r["better"] == "lower" else r["value"] / o["value"]
        if gain > 1 + threshold:
            verdict = "faster"
        elif gain < 1 / (1 + threshold):
            verdict = "slower"
        else:
            verdict = "same"
        counts[verdict] += 1
        suite, case, impl, metric = key
        rows.append(
            (
                gain,
                [
                    verdict,
                    suite,
                    case,
                    impl,
                    metric,
                    fmt_value(o["value"], o["unit"]),
                    fmt_value(r["value"], r["unit"]),
                    fmt_speedup(gain),
                ],
            )
        )
    counts["gone"] = sum(1 for key in before if key not in after)
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows], counts


COMPARE_HEADER = ["verdict", "suite", "case", "impl", "metric", "old", "new", "gain"]


def load(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        doc: Dict[str, Any] = json.load(f)
    problems = validate(doc)
    if problems:
        raise ValueError(f"{path} is not a vastar bench.json: " + "; ".join(problems[:5]))
    return doc


# --------------------------------------------------------------------------- pytest-benchmark
def ratio_table(data: Mapping[str, Any]) -> List[str]:
    """Rows of ``group  variant  median  MB/s  vs-released`` from pytest-benchmark JSON
    (the micro suites), with each client's own cost for groups that have a ``raw``
    floor."""
    groups: Dict[str, Dict[str, dict]] = {}
    for bench in data.get("benchmarks", []):
        name = bench["name"]
        variant = name[name.index("[") + 1 : -1] if "[" in name else name
        groups.setdefault(bench.get("group") or name, {})[variant] = bench
    rows = [f"{'group':<28} {'variant':<22} {'median':>12} {'MB/s':>9} {'vs released':>12}"]
    for group in sorted(groups):
        variants = groups[group]
        base = variants.get("released")
        for variant in sorted(variants, key=lambda v: (v != "compiled", v != "pure", v)):
            bench = variants[variant]
            median = bench["stats"]["median"]
            size = (bench.get("extra_info") or {}).get("bytes")
            mbps = f"{size / median / 1e6:9.1f}" if size else " " * 9
            ratio = f"{base['stats']['median'] / median:11.1f}x" if base else " " * 12
            rows.append(f"{group:<28} {variant:<22} {fmt_value(median, 's'):>12} {mbps} {ratio}")
        rows.extend(_own_cost_rows(group, variants))
    return rows


def _own_cost_rows(group: str, variants: Dict[str, dict]) -> List[str]:
    """For groups with a ``raw`` floor (the least any client can do): each client's own
    cost (its median minus raw's) and that cost as a fraction of the released one's."""
    raw, base = variants.get("raw"), variants.get("released")
    if raw is None or base is None:
        return []
    floor = raw["stats"]["median"]
    base_own = base["stats"]["median"] - floor
    if min(b["stats"]["median"] for b in variants.values()) < floor:
        # Wall-clock groups: scheduling noise can put a client under the raw loop, and a
        # negative "own cost" means nothing. Say so instead of printing a ratio.
        return [f"{group + ' own cost':<28} n/a: a client beat the raw floor in this run"]
    rows = []
    for variant in sorted(v for v in variants if v != "raw"):
        own = variants[variant]["stats"]["median"] - floor
        share = f"{own / base_own:11.3f}x" if base_own > 0 else " " * 12
        rows.append(
            f"{group + ' own cost':<28} {variant:<22} {fmt_value(own, 's'):>12} {'':9} {share}"
        )
    return rows
