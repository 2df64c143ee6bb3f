"""mkdocs hooks: pages generated from the code, so the docs cannot drift from it.

A page asks for a generated block with a marker line; ``on_page_markdown`` replaces it:

* ``<!-- generated: runtime-config -->``: every runtime setting (YAML key path, type,
  default, description) from the dataclasses in ``vastar_fast.runtime.config``; the
  descriptions are the attribute docstrings there, else ``EXTRA_DOCS`` below. A setting
  with neither is a build warning, so ``mkdocs build --strict`` fails until it is
  documented.
* ``<!-- generated: runtime-cli -->``: the options of ``vastar runtime`` (its argparse
  parser).
* ``<!-- generated: runtime-metrics -->``: the Prometheus metrics the runtime registers.
* ``<!-- generated: bench-table -->``: the table of the run in ``docs/bench/bench.json``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import logging
import os
from typing import Any, Dict, List

log = logging.getLogger("mkdocs.hooks.vastar")

#: Descriptions of settings whose dataclass field has no docstring (yet).
EXTRA_DOCS = {
    "listen.socket": "Unix socket path to listen on (null: none). `--socket` wins over it.",
    "listen.tcp": "TCP `host:port` to listen on as well (null: none; port 0: a free "
    "port). `--tcp` wins over it.",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL. `--log-level` wins; without "
    "a config file the daemon logs at INFO.",
    "metrics_port": "Serve Prometheus metrics on 127.0.0.1:PORT (null: no metrics; 0: a "
    "free port, named in the ready file). Needs prometheus-client.",
    "http.keepalive_timeout_s": "How long an idle upstream keep-alive connection is kept.",
    "http.connect_timeout_s": "Time allowed to connect to an upstream (TCP and TLS).",
    "retry.base_delay_ms": "Delay before the first retry; doubled for each further one.",
    "retry.max_delay_ms": "The largest delay between two attempts.",
    "tenants.<id>.max_concurrent": "Requests of this tenant in flight at once, over every "
    "worker process; the excess is answered RATE_LIMITED.",
    "tenants.<id>.max_request_bytes": "The largest request body this tenant may send.",
    "tenants.<id>.max_response_bytes": "The largest upstream response body delivered to "
    "this tenant (at most 10 MiB less 64 KiB, to fit a released client's frame cap).",
}


def _attribute_docs(cls: type) -> Dict[str, str]:
    """``name: doc`` for the fields of a dataclass that have an attribute docstring."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: Dict[str, str] = {}
    for first, second in zip(body, body[1:]):
        if (
            isinstance(first, ast.AnnAssign)
            and isinstance(first.target, ast.Name)
            and isinstance(second, ast.Expr)
            and isinstance(second.value, ast.Constant)
            and isinstance(second.value.value, str)
        ):
            docs[first.target.id] = " ".join(second.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _yaml(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def runtime_config_table() -> str:
    from vastar_fast.runtime import config

    rows: List[List[str]] = []

    def add(path: str, kind: str, default: Any, doc: str) -> None:
        doc = doc or EXTRA_DOCS.get(path, "")
        if not doc:
            log.warning("runtime setting %s has no description: add an attribute docstring "
                        "in vastar_fast/runtime/config.py", path)  # fmt: skip
        kind = str(kind).replace("typing.", "")
        rows.append([f"`{path}`", f"`{kind}`", f"`{_yaml(default)}`", doc])

    top_docs = _attribute_docs(config.RuntimeSettings)
    sections = {"tenants", "quotas"}
    for f in dataclasses.fields(config.RuntimeSettings):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            sections.add(f.name)
            docs = _attribute_docs(type(default))
            for sub in dataclasses.fields(type(default)):
                add(f"{f.name}.{sub.name}", sub.type, _default(sub), docs.get(sub.name, ""))
        elif f.name not in sections:
            add(f.name, f.type, default, top_docs.get(f.name, ""))
    policy_docs = _attribute_docs(config.TenantPolicy)
    for f in dataclasses.fields(config.TenantPolicy):
        add(f"tenants.<id>.{f.name}", f.type, _default(f), policy_docs.get(f.name, ""))
    quota_docs = _attribute_docs(config.QuotaSettings)
    for f in dataclasses.fields(config.QuotaSettings):
        add(f"quotas.<name>.{f.name}", f.type, _default(f), quota_docs.get(f.name, ""))
    head = ["| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(head + ["| " + " | ".join(r) + " |" for r in rows])


def runtime_cli_table() -> str:
    from vastar_fast.runtime.__main__ import build_parser

    rows = ["| option | meaning |", "|---|---|"]
    for action in build_parser()._actions:
        if not action.option_strings or "--help" in action.option_strings:
            continue
        name = ", ".join(action.option_strings)
        if action.metavar:
            name += f" {action.metavar}"
        text = " ".join((action.help or "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {text} |")
    return "\n".join(rows)


def runtime_metrics_table() -> str:
    from vastar_fast.runtime.metrics import PrometheusMetrics

    metrics = PrometheusMetrics(None)  # records only; serves nothing
    rows = ["| metric | type | meaning |", "|---|---|---|"]
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        rows.append(f"| `{name}` | {family.type} | {family.documentation} |")
    return "\n".join(rows)


def bench_table(docs_dir: str) -> str:
    path = os.path.join(docs_dir, "bench", "bench.json")
    if not os.path.exists(path):
        return "*(no `docs/bench/bench.json` yet: run the command above)*"
    from vastar_fast.benchmarks import report

    doc = report.load(path)
    m = doc["machine"]
    lines = [
        f"Run of {str(doc['created'])[:10]}: `{doc['command']}` on {m['cpu_model']} "
        f"({m['usable_cpus']} usable CPUs), {m['os']}, Python {m['python']}.",
        "",
        *report.markdown_table(report.SUMMARY_HEADER, report.summary_rows(doc)),
    ]
    return "\n".join(lines)


GENERATORS = {
    "runtime-config": lambda config: runtime_config_table(),
    "runtime-cli": lambda config: runtime_cli_table(),
    "runtime-metrics": lambda config: runtime_metrics_table(),
    "bench-table": lambda config: bench_table(config["docs_dir"]),
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for name, generate in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate(config))
    return markdown
