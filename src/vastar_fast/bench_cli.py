"""``vastar bench``: run the benchmark suite in ``bench/`` and print its ratio table.

The suite lives in the source tree (``bench/``), not in the installed package, so this
command runs from a checkout. ``--quick`` runs every benchmark once without timing
(what CI does so the suite cannot rot); otherwise pytest-benchmark measures and the
table compares each group's twins: compiled and pure against the released approach.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional


def _find_bench_dir(start: str) -> Optional[str]:
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, "bench")
        if os.path.isfile(os.path.join(candidate, "report.py")):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def ratio_table(data: dict) -> List[str]:
    """Rows of ``group  variant  median  ratio-vs-released`` from pytest-benchmark JSON."""
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
            rows.append(f"{group:<28} {variant:<22} {_fmt(median):>12} {mbps} {ratio}")
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
        rows.append(f"{group + ' own cost':<28} {variant:<22} {_fmt(own):>12} {'':9} {share}")
    return rows


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vastar bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="run each benchmark once, untimed")
    parser.add_argument(
        "-k", default=None, help="only benchmarks matching this pytest -k expression"
    )
    parser.add_argument("--json", default=None, help="also keep pytest-benchmark's JSON here")
    args = parser.parse_args(argv)
    bench_dir = _find_bench_dir(os.getcwd())
    if bench_dir is None:
        print(
            "vastar bench: no bench/ folder here; run it from a vastar-fast checkout",
            file=sys.stderr,
        )
        return 2
    cmd = [sys.executable, "-m", "pytest", bench_dir, "-q", "-p", "no:cacheprovider"]
    if args.k:
        cmd += ["-k", args.k]
    if args.quick:
        cmd += ["--benchmark-disable"]
        return subprocess.call(cmd)
    fd, json_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        rc = subprocess.call([*cmd, "--benchmark-only", f"--benchmark-json={json_path}"])
        if rc not in (0, 5):
            return rc
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(data, f)
    finally:
        os.unlink(json_path)
    print()
    print("\n".join(ratio_table(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
