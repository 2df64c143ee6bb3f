"""What ``import vastar_fast`` costs, measured with ``python -X importtime``.

    python -m vastar_fast.benchmarks.import_time [--runs 15] [--released-sdk PATH] [--json FILE]

Every figure is the median of ``--runs`` fresh interpreters, the cases interleaved
round-robin so that a noisy machine slows them alike. A case's cost is the sum of the
cumulative times of the top-level imports its code makes (modules the interpreter
loads before running ``-c`` are left out), so it is exactly what ``-X importtime``
reports for the line ``vastar_fast`` when that is the only import. The cases:

- ``vastar_fast`` (compiled twins) and ``vastar_fast (pure twins)``
  (``VASTAR_FAST_NO_EXTENSIONS=1``): ``import vastar_fast``;
- ``stdlib floor``: ``import enum``, what a drop-in cannot do without at import
  (``ErrorClass`` and ``MessageType`` are IntEnums; enum brings functools and
  collections). The released SDK's public types are dataclasses with typing
  annotations and it parses JSON, but ours need neither ``dataclasses``, ``typing``
  nor ``json`` at import (``vastar_fast._records``; json on first use);
- ``vastar_fast over the floor``: ``vastar_fast``'s own line after the floor's imports,
  i.e. what we add on top of it;
- ``vastar_fast after dataclasses, typing, json``: ``vastar_fast``'s own line in a
  program that has already imported those (the released SDK's floor) and so pays them
  there, not in our line;
- ``released SDK`` (``--released-sdk`` or ``$VASTAR_RELEASED_SDK``):
  ``import vastar_connector_sdk`` with that directory on PYTHONPATH (it imports
  flatbuffers, and numpy through it when numpy is installed).

Bytecode: an installed wheel has its ``.pyc`` files (pip compiles them), so by default
every interpreter runs with ``PYTHONPYCACHEPREFIX`` set to a fresh temporary directory
and ``PYTHONDONTWRITEBYTECODE`` unset, and one warm-up run per case fills it: no source
tree is written to (the released SDK's stays untouched) and no case compiles source
while timed. ``--no-bytecode`` runs as a checkout with ``PYTHONDONTWRITEBYTECODE=1``
does: nothing is written, so a module is compiled from source in every run unless a
``__pycache__`` beside it already holds its ``.pyc`` (the stdlib's always does).

It also reports the median self time of each of our own modules and the other modules
``import vastar_fast`` loads beyond the floor, largest first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

FLOOR = "import enum"
# What the released SDK's types and JSON need; a program that imports these itself pays
# them there, whatever it imports next.
RELEASED_FLOOR = "import dataclasses, enum, typing, json"

# (self us, cumulative us, name, depth) for each line of -X importtime output
Row = Tuple[int, int, str, int]


def parse(stderr: str) -> List[Row]:
    rows: List[Row] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((int(self_us), int(cum_us), name.strip(), depth))
    return rows


def run(code: str, env: Optional[Dict[str, str]] = None) -> List[Row]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{code!r} failed: {proc.stderr[-2000:]}")
    return parse(proc.stderr)


def startup_modules(env: Optional[Dict[str, str]] = None) -> set:
    """Modules the interpreter imports before ``-c`` runs (site, encodings...)."""
    return {name for _, _, name, _ in run("pass", env)}


def cost_us(rows: List[Row], startup: set, after: Optional[str] = None) -> int:
    """Sum of the top-level cumulative times, startup imports left out; with ``after``,
    only the top-level lines from the one named ``after`` on."""
    if after is not None:
        names = [r[2] for r in rows]
        rows = rows[names.index(after) :] if after in names else []
    return sum(cum for _, cum, name, depth in rows if depth == 0 and name not in startup)


class Case:
    def __init__(self, label: str, code: str, env: Dict[str, str], after: Optional[str] = None):
        self.label, self.code, self.env, self.after = label, code, env, after
        self.startup = startup_modules(env)
        self.totals: List[int] = []
        self.selfs: Dict[str, List[int]] = {}

    def sample(self) -> None:
        rows = run(self.code, self.env)
        self.totals.append(cost_us(rows, self.startup, self.after))
        selfs: Dict[str, int] = {}  # a module can be listed twice (a parent's import)
        for self_us, _, name, _ in rows:
            if name not in self.startup:
                selfs[name] = selfs.get(name, 0) + self_us
        for name, self_us in selfs.items():
            self.selfs.setdefault(name, []).append(self_us)

    def summary(self) -> Dict[str, float]:
        ms = [t / 1000 for t in self.totals]
        return {
            "median_ms": round(statistics.median(ms), 2),
            "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2),
            "runs": len(ms),
        }


def measure(runs: int, released_sdk: Optional[str], bytecode: bool = True) -> Dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="vastar-pycache-") as prefix:
        return _measure(runs, released_sdk, prefix if bytecode else None)


def _measure(runs: int, released_sdk: Optional[str], prefix: Optional[str]) -> Dict[str, object]:
    base = dict(os.environ)
    for name in ("PYTHONPATH", "VASTAR_FAST_NO_EXTENSIONS", "PYTHONPYCACHEPREFIX"):
        base.pop(name, None)
    if prefix is None:
        base["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = prefix
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ours = dict(base, PYTHONPATH=here)  # this checkout's package, not another install
    cases = [
        Case("vastar_fast", "import vastar_fast", ours),
        Case(
            "vastar_fast (pure twins)",
            "import vastar_fast",
            dict(ours, VASTAR_FAST_NO_EXTENSIONS="1"),
        ),
        Case("stdlib floor", FLOOR, base),
        Case("vastar_fast over the floor", f"{FLOOR}; import vastar_fast", ours, "vastar_fast"),
        Case(
            "vastar_fast after dataclasses, typing, json",
            f"{RELEASED_FLOOR}; import vastar_fast",
            ours,
            "vastar_fast",
        ),
    ]
    if released_sdk:
        cases.append(
            Case("released SDK", "import vastar_connector_sdk", dict(base, PYTHONPATH=released_sdk))
        )
    if prefix is not None:
        for case in cases:  # warm-up: writes the bytecode cache
            run(case.code, case.env)
    for _ in range(runs):
        for case in cases:
            case.sample()

    main, floor = cases[0], cases[2]
    loaded = {name: statistics.median(v) / 1000 for name, v in main.selfs.items()}
    floor_names = set(floor.selfs)
    own = {n: round(t, 2) for n, t in loaded.items() if n.split(".")[0] == "vastar_fast"}
    beyond = {
        n: round(t, 2)
        for n, t in loaded.items()
        if n.split(".")[0] != "vastar_fast" and n not in floor_names
    }
    heavy = ("numpy", "flatbuffers", "asyncio")
    return {
        "python": sys.version.split()[0],
        "bytecode_cached": prefix is not None,
        "cases": {c.label: c.summary() for c in cases},
        "own_modules_self_ms": dict(sorted(own.items(), key=lambda kv: -kv[1])),
        "beyond_floor_self_ms": dict(sorted(beyond.items(), key=lambda kv: -kv[1])),
        "heavy_loaded": {m: any(n.split(".")[0] == m for n in loaded) for m in heavy},
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per case")
    parser.add_argument(
        "--released-sdk",
        default=os.environ.get("VASTAR_RELEASED_SDK"),
        help="directory holding the released vastar_connector_sdk package",
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="write no bytecode (modules without a .pyc beside them compile every run)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.released_sdk and not os.path.isdir(
        os.path.join(args.released_sdk, "vastar_connector_sdk")
    ):
        parser.error(f"--released-sdk {args.released_sdk}: no vastar_connector_sdk package there")

    out = measure(args.runs, args.released_sdk, bytecode=not args.no_bytecode)
    how = "bytecode cached" if out["bytecode_cached"] else "no bytecode written"
    print(f"python -X importtime, median of {args.runs} fresh interpreters (min-max), ms, {how}")
    for label, s in out["cases"].items():  # type: ignore[attr-defined]
        print(f"  {label:<44} {s['median_ms']:7.2f}  ({s['min_ms']:.2f}-{s['max_ms']:.2f})")
    print(f"  heavy modules loaded by import vastar_fast: {out['heavy_loaded']}")
    print("our modules, self ms:")
    for name, t in out["own_modules_self_ms"].items():  # type: ignore[attr-defined]
        print(f"  {t:6.2f}  {name}")
    print("other modules beyond the floor, self ms:")
    for name, t in out["beyond_floor_self_ms"].items():  # type: ignore[attr-defined]
        print(f"  {t:6.2f}  {name}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
