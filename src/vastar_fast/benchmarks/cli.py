"""``vastar bench``: run the benchmark suites, print the ratio table, write bench.json and
bench.png.

Works from an installed wheel (``pip install 'vastar-fast[all,bench]'``): the suites
ship in :mod:`vastar_fast.benchmarks`. Each suite runs in its own process (services in
theirs, through :mod:`vastar_fast.services`): the micro suites (codec, SSE, client; with
pytest-benchmark), the runtime and whole-stack round trips, the client's own CPU cost,
first SSE chunk forwarding, time to first token, tokens/s and the simulator's
throughput. With the released runtime and SDK (``--released-runtime`` /
``--released-sdk`` or ``$VASTAR_RELEASED_RUNTIME`` / ``$VASTAR_RELEASED_SDK``) they are
measured side by side with ours, each in its own process. ``--quick`` runs everything
briefly (figures to check the plumbing, not to quote).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from . import report
from .suites import RUNNERS, Options, Runner

#: Modules the command needs beyond the base install, and the extra that brings them.
NEEDS = {"rich": "bench", "matplotlib": "bench", "pytest_benchmark": "bench"}

README_BEGIN = "<!-- vastar-bench:begin -->"
README_END = "<!-- vastar-bench:end -->"

#: Kept for callers of the old module (``vastar_fast.bench_cli.ratio_table``).
ratio_table = report.ratio_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vastar bench",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Regenerate the README's figures and docs/bench/bench.png with: vastar bench "
        "--released-runtime PATH --released-sdk PATH --output docs/bench --update-readme "
        "README.md",
    )
    p.add_argument("--quick", action="store_true", help="a short run of every suite")
    p.add_argument(
        "--output",
        metavar="DIR",
        default="bench-results",
        help="where bench.json, bench.png and the suites' logs go (default: ./bench-results)",
    )
    p.add_argument(
        "--released-runtime",
        metavar="PATH",
        default=os.environ.get("VASTAR_RELEASED_RUNTIME") or None,
        help="the released runtime binary ($VASTAR_RELEASED_RUNTIME)",
    )
    p.add_argument(
        "--released-sdk",
        metavar="PATH",
        default=os.environ.get("VASTAR_RELEASED_SDK") or None,
        help="the directory holding the released vastar_connector_sdk package "
        "($VASTAR_RELEASED_SDK; it needs numpy and flatbuffers)",
    )
    p.add_argument(
        "--compare", metavar="OLD.json", help="also show what got faster or slower since that run"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        metavar="PERCENT",
        help="--compare: changes within this are 'same' (default: 10)",
    )
    p.add_argument(
        "--only",
        metavar="SUITES",
        help="comma-separated runners: " + ", ".join(r.name for r in RUNNERS),
    )
    p.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="micro suites: only benchmarks matching this pytest -k expression",
    )
    p.add_argument(
        "--update-readme",
        metavar="FILE",
        help="rewrite FILE's section between the vastar-bench markers with this "
        "run's table and chart",
    )
    p.add_argument(
        "--report",
        metavar="BENCH.json",
        help="run nothing: print the tables of a saved run (and --compare, "
        "--update-readme, a fresh chart with --output)",
    )
    p.add_argument(
        "--max-samples",
        type=int,
        default=report.MAX_SAMPLES,
        metavar="N",
        help="samples kept per result in bench.json, an evenly spaced subset "
        f"beyond that (default: {report.MAX_SAMPLES}; 0: all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _missing_modules() -> List[str]:
    import importlib.util

    return [m for m in NEEDS if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------- running
class Progress:
    """A rich progress bar on stderr (a line per finished suite when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True, highlight=False)
        self.live = enabled and self.console.is_terminal
        self.bar: Optional[Any] = None
        if self.live:
            self.bar = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def add(self, description: str, total: Optional[float]) -> Any:
        if self.bar is not None:
            return self.bar.add_task(description, total=total)
        return None

    def update(self, task: Any, **kw: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, **kw)

    def say(self, text: str) -> None:
        self.console.print(text, markup=False)


def _child_env() -> Dict[str, str]:
    from vastar_fast.services import child_environment

    env = child_environment()
    # numpy's OpenBLAS thread pool keeps the cores busy for a while after its import and
    # slows whatever is timed next; nothing measured here calls BLAS.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run_runner(runner: Runner, opts: Options, out_dir: str, progress: Progress) -> Dict[str, Any]:
    """Run one suite process; returns its ``suites`` entry (status, seconds, log) and,
    under ``data``, its parsed JSON output."""
    logs = os.path.join(out_dir, "logs")
    raw = os.path.join(out_dir, "raw")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(raw, exist_ok=True)
    json_path = os.path.join(raw, f"{runner.name}.json")
    log_path = os.path.join(logs, f"{runner.name}.log")
    if os.path.exists(json_path):
        os.unlink(json_path)
    entry: Dict[str, Any] = {"title": runner.title, "log": os.path.relpath(log_path, out_dir)}
    cmd = runner.command(opts, json_path)
    entry["command"] = shlex.join(cmd)
    env = _child_env()
    task = progress.add(runner.title, total=None)
    read_fd = write_fd = -1
    if runner.progress_fd:
        read_fd, write_fd = os.pipe()
        env["VASTAR_BENCH_PROGRESS_FD"] = str(write_fd)
    started = time.monotonic()
    reader: Optional[threading.Thread] = None
    with open(log_path, "wb") as log:
        log.write(f"$ {entry['command']}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(write_fd,) if write_fd >= 0 else (),
        )
        if write_fd >= 0:
            os.close(write_fd)
            reader = threading.Thread(target=_follow, args=(read_fd, progress, task), daemon=True)
            reader.start()
        try:
            rc = proc.wait(runner.timeout_s(opts))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if reader is not None:
        reader.join(5)
    entry["seconds"] = round(time.monotonic() - started, 1)
    progress.update(task, total=1, completed=1)
    if rc is None:
        entry["status"] = "failed"
        entry["reason"] = f"timed out after {runner.timeout_s(opts):g} s"
    elif rc not in (0,) or not os.path.exists(json_path):
        entry["status"] = "failed"
        entry["reason"] = f"exit status {rc}" + ("" if os.path.exists(json_path) else ", no JSON")
    else:
        with open(json_path, encoding="utf-8") as f:
            entry["data"] = json.load(f)
        entry["status"] = "ok"
    if entry["status"] != "ok":
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-20:])
        progress.say(f"{runner.name}: {entry['reason']}; the end of {log_path}:\n{tail}")
    else:
        progress.say(f"{runner.name}: done in {entry['seconds']:.0f} s")
    return entry


def _follow(fd: int, progress: Progress, task: Any) -> None:
    with os.fdopen(fd, "rb") as stream:
        done = 0
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "collected":
                progress.update(task, total=event["count"])
            elif event.get("event") == "done":
                done += 1
                progress.update(task, completed=done)


def run_all(
    opts: Options, out_dir: str, only: Optional[Sequence[str]], show: bool, command: str
) -> Dict[str, Any]:
    from .machine import machine_info, released_info

    doc: Dict[str, Any] = {
        "schema": report.SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "quick": opts.quick,
        "machine": machine_info(),
        "released": released_info(opts.released_runtime, opts.released_sdk),
        "suites": {},
        "results": [],
        "comparisons": [],
    }
    with Progress(show) as progress:
        for runner in RUNNERS:
            if only and runner.name not in only:
                continue
            reason = runner.missing(opts)
            if reason is not None:
                doc["suites"][runner.name] = {
                    "title": runner.title,
                    "status": "skipped",
                    "reason": reason,
                }
                progress.say(f"{runner.name}: skipped: {reason}")
                continue
            entry = run_runner(runner, opts, out_dir, progress)
            data = entry.pop("data", None)
            if data is not None:
                try:
                    results, comparisons = runner.convert(data, opts)
                except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
                    entry["status"] = "failed"
                    entry["reason"] = f"its output could not be read: {exc!r}"
                    progress.say(f"{runner.name}: {entry['reason']}")
                else:
                    doc["results"].extend(results)
                    doc["comparisons"].extend(comparisons)
                    if runner.name == "micro":
                        entry["ratio_table"] = report.ratio_table(data)
            doc["suites"][runner.name] = entry
    return doc


# --------------------------------------------------------------------------- output
def print_tables(doc: Dict[str, Any]) -> None:
    micro = doc["suites"].get("micro", {})
    if micro.get("ratio_table"):
        print(
            "\nMicro suites (medians; 'released' = the released SDK's algorithm, re-implemented):"
        )
        print("\n".join(micro["ratio_table"]))
    rows = report.comparison_rows(doc)
    if rows:
        print("\nOurs against each baseline (speedup > 1: ours is better; medians):")
        print("\n".join(report.text_table(report.COMPARISON_HEADER, rows)))
    others = [r for r in doc["results"] if r["suite"] in ("simulator", "first-chunk")]
    if others:
        print("\nFigures without a baseline:")
        table = [
            [r["suite"], r["case"], r["metric"], report.fmt_value(r["value"], r["unit"])]
            for r in others
        ]
        print("\n".join(report.text_table(["suite", "case", "metric", "median"], table, 1)))
    for name, entry in doc["suites"].items():
        if entry["status"] != "ok":
            print(f"{name}: {entry['status']}: {entry.get('reason', '')}")


def print_compare(old: Dict[str, Any], new: Dict[str, Any], threshold: float) -> None:
    rows, counts = report.compare_runs(old, new, threshold / 100)
    print(f"\nSince {old.get('created', '?')} ({old.get('command', '?')}):")
    if rows:
        print("\n".join(report.text_table(report.COMPARE_HEADER, rows)))
    print(", ".join(f"{n} {k}" for k, n in counts.items()) + f" (threshold {threshold:g}%)")


def readme_section(doc: Dict[str, Any], chart: Optional[str], readme: str) -> str:
    m = doc["machine"]
    date = str(doc["created"])[:10]
    lines = [
        README_BEGIN,
        f"Measured on {date} with `{doc['command']}` on {m['cpu_model']} "
        f"({m['usable_cpus']} usable CPUs), {m['os']}, Python {m['python']}"
        f"{' (compiled twins)' if m['twins'].get('accelerated') else ' (pure twins)'}. "
        "A shared, noisy development machine: medians, ratios within one run; rerun the "
        "command on yours.",
        "",
    ]
    if chart:
        rel = os.path.relpath(chart, os.path.dirname(os.path.abspath(readme)))
        lines += [f"![vastar bench ratios]({rel})", ""]
    # The headline rows: what an install with the compiled twins runs (the pure twin and
    # each SIMD path are in bench.json and on the docs' benchmarks page).
    headline = dict(
        doc, comparisons=[c for c in doc["comparisons"] if c["ours"] in ("compiled", "vastar_fast")]
    )
    lines += report.markdown_table(report.SUMMARY_HEADER, report.summary_rows(headline))
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(path: str, section: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} section to replace")
    with open(path, "w", encoding="utf-8") as f:
        f.write(pattern.sub(lambda _: section, text, count=1))


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = _missing_modules()
    if missing:
        print(
            f"vastar bench: needs {', '.join(missing)}, which is not installed; install "
            "the benchmark extra with: pip install 'vastar-fast[all,bench]'",
            file=sys.stderr,
        )
        return 2
    for path, what in (
        (args.released_runtime, "--released-runtime"),
        (args.released_sdk, "--released-sdk"),
        (args.compare, "--compare"),
        (args.report, "--report"),
    ):
        if path and not os.path.exists(path):
            parser.error(f"{what} {path}: no such file or directory")
    if args.released_sdk and not os.path.isdir(
        os.path.join(args.released_sdk, "vastar_connector_sdk")
    ):
        parser.error(f"--released-sdk {args.released_sdk}: no vastar_connector_sdk package there")
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or ()) - {r.name for r in RUNNERS})
    if unknown:
        parser.error(f"--only: unknown suite(s) {', '.join(unknown)}")
    try:
        old = report.load(args.compare) if args.compare else None
        out_dir = os.path.abspath(args.output)
        os.makedirs(out_dir, exist_ok=True)
        if args.report:
            doc = report.load(args.report)
        else:
            opts = Options(args.quick, args.released_runtime, args.released_sdk, args.keyword)
            doc = run_all(
                opts, out_dir, only, not args.no_progress, "vastar bench " + shlex.join(argv)
            )
            report.cap_samples(doc["results"], args.max_samples)
            with open(os.path.join(out_dir, "bench.json"), "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
        from .chart import render

        chart = render(doc, os.path.join(out_dir, "bench.png"))
        print_tables(doc)
        if old is not None:
            print_compare(old, doc, args.threshold)
        if args.update_readme:
            update_readme(args.update_readme, readme_section(doc, chart, args.update_readme))
            print(f"\nupdated {args.update_readme}")
    except ValueError as exc:
        print(f"vastar bench: {exc}", file=sys.stderr)
        return 2
    if not args.report:
        print(f"\nwrote {os.path.join(out_dir, 'bench.json')} and {chart}")
    failed = [n for n, e in doc["suites"].items() if e["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
