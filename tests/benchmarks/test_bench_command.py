"""``vastar bench``: bench.json's shape, the chart, the released rows, --compare, the README.

The end-to-end tests run the real command in a subprocess on a small selection of the
suites (a few seconds each); ``.ci/run`` runs the whole ``--quick`` suite from a wheel
installed in a fresh venv, with the real released peers when they are beside the
checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from vastar_fast.benchmarks import report, suites
from vastar_fast.benchmarks.cli import README_BEGIN, README_END, readme_section, update_readme

DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.timeout(300)


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("VASTAR_RELEASED_RUNTIME", "VASTAR_RELEASED_SDK"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "vastar_fast.cli", "bench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=280,
    )


def read(out: Path) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads((out / "bench.json").read_text())
    return doc


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """One quick run of two micro benchmark groups and the simulator suite."""
    tmp = tmp_path_factory.mktemp("bench")
    proc = bench(tmp, "--quick", "--only", "micro,simulator", "-k",
                 "decode_small_response or test_round_trip", "--output", str(tmp / "out"),
                 "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"dir": tmp / "out", "doc": read(tmp / "out"), "stdout": proc.stdout}


def test_bench_json_has_the_machine_and_every_result_with_samples(micro_run: Dict) -> None:
    doc = micro_run["doc"]
    assert report.validate(doc) == []
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["python"]
    assert machine["packages"]["vastar-fast"] and "accelerated" in machine["twins"]
    assert doc["quick"] is True and doc["command"].startswith("vastar bench --quick")
    assert doc["released"] == {"runtime": None, "sdk": None}
    assert doc["suites"]["micro"]["status"] == "ok"
    assert doc["suites"]["simulator"]["status"] == "ok"
    assert "stack" not in doc["suites"]  # not asked for (--only)
    decode = [r for r in doc["results"] if r["case"] == "decode_small_response"]
    assert {r["implementation"] for r in decode} == {"compiled", "pure", "released-approach"} - (
        set() if machine["twins"]["accelerated"] else {"compiled"}
    )
    for r in doc["results"]:
        assert r["samples"] and all(isinstance(s, float) for s in r["samples"])
        assert r["value"] > 0
    sim = [r for r in doc["results"] if r["suite"] == "simulator"]
    assert sim and all(r["metric"] == "requests/s" and r["better"] == "higher" for r in sim)


def test_micro_comparisons_are_against_the_re_implementation(micro_run: Dict) -> None:
    doc = micro_run["doc"]
    comps = doc["comparisons"]
    assert comps and {c["baseline"] for c in comps} == {"released-approach"}
    by_key = {(r["case"], r["implementation"], r["metric"]): r["value"] for r in doc["results"]}
    for c in comps:
        if c["metric"] == "time per call":
            ours = by_key[(c["case"], c["ours"], "time per call")]
            base = by_key[(c["case"], "released-approach", "time per call")]
            assert c["speedup"] == pytest.approx(base / ours)
    # the round trip has a raw floor: the own cost is reported too
    assert any(c["metric"] == "own cost per call" for c in comps) or "n/a" in str(
        doc["suites"]["micro"].get("ratio_table")
    )
    assert "Ours against each baseline" in micro_run["stdout"]


def test_the_chart_is_written(micro_run: Dict) -> None:
    png = micro_run["dir"] / "bench.png"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def _fake_released_sdk(root: Path) -> Path:
    """A stand-in for the released SDK's package: its ``RuntimeClient._process_frame``
    decodes a response frame (here with vastar_fast's codec)."""
    pkg = root / "sdk" / "vastar_connector_sdk"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0.0.test"\n')
    (pkg / "runtime_client.py").write_text(
        "from types import SimpleNamespace\n"
        "from vastar_fast.protocol import codec\n"
        "class RuntimeClient:\n"
        "    def _process_frame(self, frame):\n"
        "        r = codec.decode_execute_response(frame[1:])\n"
        "        p = codec.decode_http_response_payload(r.payload)\n"
        "        return SimpleNamespace(status_code=p.status_code, headers=dict(p.headers),\n"
        "                               body=p.body)\n"
    )
    return root / "sdk"


def test_the_released_sdk_adds_released_rows(tmp_path: Path) -> None:
    sdk = _fake_released_sdk(tmp_path)
    out = tmp_path / "out"
    proc = bench(tmp_path, "--quick", "--only", "sdk-decode", "--released-sdk", str(sdk),
                 "--output", str(out), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = read(out)
    assert report.validate(doc) == []
    assert doc["released"]["sdk"]["version"] == "0.0.test"
    released = [r for r in doc["results"] if r["implementation"] == "released"]
    assert len(released) == 1 and released[0]["suite"] == "sdk-decode"
    comps = doc["comparisons"]
    assert comps and all(c["baseline"] == "released" for c in comps)
    assert {c["ours"] for c in comps} >= {"pure"}
    assert "released" in proc.stdout and "sdk-decode" in proc.stdout


def test_without_the_released_sdk_its_suite_is_skipped_with_the_reason(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--quick", "--only", "sdk-decode", "--output", str(tmp_path / "o"),
                 "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    entry = read(tmp_path / "o")["suites"]["sdk-decode"]
    assert entry["status"] == "skipped" and "--released-sdk" in entry["reason"]


def test_bad_paths_and_suites_are_refused(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--released-runtime", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = bench(tmp_path, "--only", "nonsense")
    assert proc.returncode == 2 and "unknown suite" in proc.stderr


def test_released_runtime_output_becomes_released_rows() -> None:
    """The stack suite's output of a real run against the released runtime and SDK (a
    --quick run, recorded in data/): each section gains released rows and ratios."""
    data = json.loads((DATA / "stack_quick_released.json").read_text())
    results, comps = suites.stack_convert(data, suites.Options(quick=True))
    impls = {(r["suite"], r["implementation"]) for r in results}
    assert {("runtime", "released"), ("stack", "released"),
            ("client-via-runtime", "released")} <= impls  # fmt: skip
    own = [c for c in comps if c["suite"] == "client-via-runtime"]
    assert len(own) == 2 and all(c["baseline"] == "released" for c in own)
    section = data["sections"]["client own cost via released runtime: 13 B"]
    first = next(c for c in own if c["case"] == "13 B")
    assert first["speedup"] == pytest.approx(1 / section["own_cost_ratio"])
    stack = [c for c in comps if c["suite"] == "stack"]
    assert len(stack) == 3 and all(c["metric"] == "requests/s" for c in stack)
    fc = [r for r in results if r["suite"] == "first-chunk"]
    assert len(fc) == 1 and len(fc[0]["samples"]) == fc[0]["extra"]["rounds"]
    doc = _doc(results, comps)
    assert report.validate(doc) == []


def _doc(results: List[Dict[str, Any]], comps: List[Dict[str, Any]]) -> Dict[str, Any]:
    from vastar_fast.benchmarks.machine import machine_info

    return {"schema": report.SCHEMA, "created": "2026-01-01T00:00:00+00:00",
            "command": "vastar bench", "quick": True, "machine": machine_info(),
            "released": {"runtime": None, "sdk": None}, "suites": {},
            "results": results, "comparisons": comps}  # fmt: skip


def test_compare_says_what_got_faster_and_slower(tmp_path: Path) -> None:
    def doc(encode: float, rate: float) -> Dict[str, Any]:
        return _doc(
            [report.result("codec", "encode", "compiled", "time per call", "s", "lower",
                           [encode]),
             report.result("sim", "plain", "vastar_fast", "requests/s", "req/s", "higher",
                           [rate]),
             report.result("sse", "parse", "pure", "time per call", "s", "lower", [1.0])],
            [],
        )  # fmt: skip

    rows, counts = report.compare_runs(doc(2e-6, 1000), doc(1e-6, 800), threshold=0.10)
    verdicts = {(r[1], r[0]) for r in rows}
    assert verdicts == {("codec", "faster"), ("sim", "slower"), ("sse", "same")}
    assert counts["faster"] == 1 and counts["slower"] == 1 and counts["same"] == 1
    assert rows[0][1] == "sim"  # worst first
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc(2e-6, 1000)))
    new = tmp_path / "new.json"
    new.write_text(json.dumps(doc(1e-6, 800)))
    proc = bench(tmp_path, "--report", str(new), "--compare", str(old), "--output",
                 str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "faster" in proc.stdout and "slower" in proc.stdout
    assert (tmp_path / "o" / "bench.png").read_bytes()[:8] == PNG_MAGIC


def test_validate_names_what_is_missing() -> None:
    good = _doc([report.result("a", "b", "pure", "m", "s", "lower", [1.0])], [])
    assert report.validate(good) == []
    bad = dict(good, results=[{"suite": "a"}])
    assert any("missing" in p for p in report.validate(bad))
    unknown = _doc([report.result("a", "b", "mystery", "m", "s", "lower", [1.0])], [])
    assert any("unknown implementation" in p for p in report.validate(unknown))
    with pytest.raises(ValueError):
        report.result("a", "b", "pure", "m", "s", "sideways", [1.0])


def test_readme_section_is_replaced_between_the_markers(tmp_path: Path) -> None:
    results = [report.result("codec", "encode", "compiled", "time per call", "s", "lower",
                             [1e-6]),
               report.result("codec", "encode", "released-approach", "time per call", "s",
                             "lower", [3e-5])]  # fmt: skip
    doc = _doc(results, [report.comparison("codec", "encode", "compiled",
                                           "released-approach", "time per call", 30.0)])  # fmt: skip
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n")
    # the chart is drawn in the command's own process (matplotlib imports `packaging`,
    # which tests/packaging shadows inside this test process)
    proc = bench(tmp_path, "--report", str(saved), "--output", str(tmp_path / "docs"),
                 "--update-readme", str(readme))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n")
    assert text.endswith(f"{README_END}\nafter\n")
    assert "![vastar bench ratios](docs/bench.png)" in text
    assert "| codec | encode (time per call) | compiled: 1.00 us |" in text
    assert "30.0x" in text and "`vastar bench`" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- vastar-bench:begin -->"):
        update_readme(str(readme), readme_section(doc, None, str(readme)))


def test_samples_are_capped_evenly_and_the_total_is_recorded() -> None:
    r = report.result("codec", "x", "pure", "time per call", "s", "lower",
                      [float(i) for i in range(1000)])  # fmt: skip
    assert r["value"] == pytest.approx(499.5)
    report.cap_samples([r], 100)
    assert r["samples"] == [float(i) for i in range(0, 1000, 10)]
    assert r["extra"]["samples_total"] == 1000 and r["value"] == pytest.approx(499.5)
    few = report.result("codec", "x", "pure", "time per call", "s", "lower", [1.0, 2.0])
    report.cap_samples([few], 100)
    assert few["samples"] == [1.0, 2.0] and "samples_total" not in few["extra"]


def test_paced_section_compares_runtime_cpu_not_rates() -> None:
    """stack_bench's paced section (a real --quick run against the released runtime,
    recorded in data/): the client sets the rate, so the comparison is the daemons' CPU
    per request, ours against the released runtime's; the --spin-us 0 row is ours too
    but not compared."""
    data = json.loads((DATA / "stack_quick_paced.json").read_text())
    results, comps = suites.stack_convert(data, suites.Options(quick=True))
    paced = [c for c in comps if c["suite"] == "paced"]
    assert len(paced) == 2 and {c["metric"] for c in paced} == {"runtime CPU per request"}
    for c in paced:
        section = data["sections"][f"paced: {c['case']}"]
        ratio = section["ratio_daemon_cpu"]["vastar runtime"]
        assert (c["ours"], c["baseline"]) == ("vastar_fast", "released")
        assert c["speedup"] == pytest.approx(1 / ratio)
        med = section["median"]
        assert ratio == pytest.approx(
            med["vastar runtime"]["daemon_cpu_us"] / med["released runtime"]["daemon_cpu_us"]
        )  # one run: the median of one ratio is the ratio of the medians
    assert not [c for c in paced if c["metric"] == "requests/s"]
    assert report.validate(_doc(results, comps)) == []


def test_floor_section_becomes_floor_rows() -> None:
    """stack_bench's floor section (the round trip's two legs with no runtime work)
    becomes three raw rows, and the document stays valid."""
    data = json.loads((DATA / "stack_quick_released.json").read_text())
    data["sections"]["floor: a sequential round trip with no runtime work"] = {
        "floor": {"http_us": 32.0, "ipc_us": 36.5, "sum_us": 68.5}
    }
    results, comps = suites.stack_convert(data, suites.Options(quick=True))
    floor = {r["case"]: r["value"] for r in results if r["suite"] == "floor"}
    assert floor == {"bare keep-alive GET to nginx": 32.0, "Unix socket ping-pong": 36.5,
                     "both legs": 68.5}  # fmt: skip
    assert report.validate(_doc(results, comps)) == []


def test_floor_measures_both_legs() -> None:
    """floor() against a loopback HTTP/1.1 server answering like the bench's nginx."""
    import socket
    import threading

    from vastar_fast.benchmarks import stack_bench

    listener = socket.create_server(("127.0.0.1", 0))
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n" + stack_bench.SMALL
    served = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                served.append(data)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        legs = stack_bench.floor(listener.getsockname()[1], 50)
    finally:
        listener.close()
    thread.join(10)
    assert len(served) == 50 + 50  # warm-up and measured GETs, one answer each
    assert legs["http_us"] > 0 and legs["ipc_us"] > 0
    assert legs["sum_us"] == pytest.approx(legs["http_us"] + legs["ipc_us"])
