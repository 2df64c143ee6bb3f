"""The compiled decoders under fuzzing: no crash, no hang, the same outcome as the pure
twin on every input (fuzz_decoders.py holds the targets and the engines).

* hypothesis, in this process: arbitrary bytes into every target;
* the seeded mutation engine (golden frames mutated, truncated, spliced; hostile
  KeyValue shapes; frame streams; SSE streams) in a subprocess, so a crash of the
  compiled code or a hang fails this test instead of killing the run;
* atheris (libFuzzer, coverage-guided) in a subprocess, where it is installed
  (``pip install '.[fuzz]'``: Linux x86_64, CPython 3.11-3.13).

Sizes: 200,000 mutation inputs and 50,000 atheris runs (about 300 a second here) with ``VASTAR_SUITES=full``,
6,000 and 3,000 in CI.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suites_report import optional_int, size
from vastar_fast.services import child_environment

from .conftest import COMPILED

HARNESS = Path(__file__).with_name("fuzz_decoders.py")
SEED = optional_int("VASTAR_FUZZ_SEED") or 1

pytestmark = pytest.mark.skipif(COMPILED is None, reason="the compiled twins are not built")


def run_harness(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True,
                              text=True, timeout=timeout, env=child_environment(),
                              cwd=str(tmp_path))  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzzer hung: no end within {timeout:g}s; output so far:\n"
                    f"{(exc.stdout or b'')[-3000:]!r}")  # fmt: skip
    if proc.returncode < 0:
        pytest.fail(f"the fuzzer crashed with signal {-proc.returncode}:\n{proc.stderr[-5000:]}")
    return proc


def last_json(text: str) -> Dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text[-3000:]
    return dict(json.loads(lines[-1]))


MUTATION_RUNS = optional_int("VASTAR_FUZZ_RUNS") or size(6_000, 200_000)
ATHERIS_RUNS = optional_int("VASTAR_ATHERIS_RUNS") or size(3_000, 50_000)


# pytest-timeout's 300 s default would end the full-size runs; the harness has its own
# bound (a hang fails with the output so far), so the test's bound sits above it.
@pytest.mark.timeout(180 + MUTATION_RUNS / 100)
def test_mutation_fuzzing_compiled_matches_pure(tmp_path: Path,
                                                figures: Callable[..., None]) -> None:  # fmt: skip
    runs = MUTATION_RUNS
    proc = run_harness(tmp_path, "--runs", str(runs), "--seed", str(SEED),
                       timeout=120 + runs / 100)  # fmt: skip
    report = last_json(proc.stdout)
    assert proc.returncode == 0 and "mismatch" not in report, report.get("mismatch", proc.stderr)
    assert report["inputs"] == runs
    assert all(n >= runs // len(report["per_target"]) for n in report["per_target"].values())
    figures("fuzz-decoders (mutation)", inputs=runs, seed=SEED, targets=len(report["per_target"]),
            slowest_ms=report["slowest_ms"], slowest_target=report["slowest_target"])  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install '.[fuzz]')")  # fmt: skip
@pytest.mark.timeout(180 + ATHERIS_RUNS / 50)
def test_atheris_fuzzing_compiled_matches_pure(tmp_path: Path,
                                               figures: Callable[..., None]) -> None:  # fmt: skip
    runs = ATHERIS_RUNS
    proc = run_harness(tmp_path, "--atheris", "--runs", str(runs), "--seed", str(SEED),
                       "--corpus", str(tmp_path / "corpus"), timeout=120 + runs / 50)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Uncaught Python exception" not in out and "Mismatch" not in out, out[-5000:]
    done = re.search(r"Done (\d+) runs in (\d+) second", out)
    assert done and int(done.group(1)) == runs, out[-3000:]
    cov = re.findall(r"cov: (\d+)", out)
    report = last_json(proc.stdout)
    figures("fuzz-decoders (atheris)", runs=runs, seed=SEED, seconds=int(done.group(2)),
            coverage=int(cov[-1]) if cov else None,
            per_target=report["per_target"])  # fmt: skip


if COMPILED is not None:  # the harness exits at import without the compiled twins
    from .fuzz_decoders import TARGETS, check


@settings(max_examples=size(300, 20_000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(target=st.integers(0, 11), data=st.binary(max_size=4096),
       cut=st.integers(0, 63))  # fmt: skip
def test_arbitrary_bytes_give_the_same_outcome_on_both_twins(target: int, data: bytes,
                                                             cut: int) -> None:  # fmt: skip
    check(target, data, cut)


def test_every_target_is_fuzzed() -> None:
    names: List[str] = [t[0] for t in TARGETS]
    assert len(names) == 12, names  # the hypothesis test draws target 0..11
    assert "ClientConnection.receive_data" in names and "SSEDecoder" in names
