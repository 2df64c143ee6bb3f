"""``python -m vastar_fast.runtime`` / ``vastar runtime``: the daemon's command line.

Prints one readiness line to stdout once listening (and writes ``--ready-file``), so a
parent process can wait for it instead of polling the socket. SIGTERM/SIGINT stop it
gracefully (a second signal abandons in-flight requests at once); exit status 0. With
``--workers N`` above 1, a supervisor runs N worker processes (``workers.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from ..types import DEFAULT_SOCKET_PATH, DEFAULT_TCP_PORT
from .config import (
    DEFAULT_SPIN_US,
    MAX_SPIN_US,
    ConfigError,
    RuntimeSettings,
    level_number,
    load_settings,
    parse_tcp,
)
from .embed import loop_factory

__all__ = ["build_parser", "main"]

_TRUE = ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vastar runtime",
        description="Vastar connector runtime daemon (wire-compatible with the released one).",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="Unix socket to listen on (default: $VASTAR_SOCKET_PATH or "
        f"{DEFAULT_SOCKET_PATH}, unless only TCP is asked for)",
    )
    p.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="also/instead listen on TCP (port 0: a free port); $VASTAR_USE_TCP=true with "
        f"$VASTAR_TCP_PORT (default {DEFAULT_TCP_PORT}) does the same on 127.0.0.1",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (policies, limits, ...)")
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default: the config's, else INFO); per-request "
        "lines are logged at DEBUG only, with secrets redacted",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT (needs prometheus-client)",
    )
    p.add_argument(
        "--ready-file",
        metavar="PATH",
        help="write this JSON file ({pid, socket, tcp_port, metrics_port}) once listening",
    )
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default event loop")
    p.add_argument(
        "--otel",
        action="store_true",
        help="record OpenTelemetry spans (one per request, one per upstream attempt) and "
        "export them as the OTEL_* variables say (OTLP/HTTP by default); needs the otel "
        "extra. Trace context is continued without it too",
    )
    p.add_argument(
        "--spin-us",
        type=int,
        metavar="US",
        help="microseconds the event loop keeps polling instead of sleeping after a "
        "request starts or ends, where the gaps after such events have been shorter, so "
        "a quick upstream answer or the client's next request finds it awake (only while "
        "at most one request is in flight, and not while the CPUs are contended); a polling "
        "worker uses up to a CPU (0: never; default: spin_us in the config, else "
        f"$VASTAR_RUNTIME_SPIN_US, else {DEFAULT_SPIN_US} with at least 2 usable CPUs and "
        "0 on one)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the listening sockets, each serving whole "
        "connections; tenant limits and breakers are shared by all (default: "
        "$VASTAR_RUNTIME_WORKERS, else one per two usable CPUs, at least 1)",
    )
    return p


def _listen(
    args: argparse.Namespace, settings: RuntimeSettings
) -> Tuple[Optional[str], Optional[Tuple[str, int]]]:
    socket_path = args.socket or settings.listen.socket
    tcp_text = args.tcp or settings.listen.tcp
    if tcp_text is None and os.environ.get("VASTAR_USE_TCP", "").lower() in _TRUE:
        tcp_text = "127.0.0.1:" + (os.environ.get("VASTAR_TCP_PORT") or str(DEFAULT_TCP_PORT))
    tcp = parse_tcp(tcp_text, "--tcp" if args.tcp else "listen.tcp") if tcp_text else None
    if socket_path is None and tcp is None:
        socket_path = os.environ.get("VASTAR_SOCKET_PATH") or DEFAULT_SOCKET_PATH
    return socket_path, tcp


def _whole_number(text: str, where: str, low: int, high: int, unit: str) -> int:
    """``text`` (from ``where``: an option or a variable) as an int in [low, high]."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{where} {text!r} is not a whole number of {unit}") from None
    if not low <= value <= high:
        raise ValueError(f"{where} {value} is out of range: use {low} to {high} {unit}")
    return value


def _worker_count(args: argparse.Namespace) -> int:
    """--workers, else $VASTAR_RUNTIME_WORKERS, else the measured default."""
    if args.workers is not None:
        value, where = str(args.workers), "--workers"
    elif os.environ.get("VASTAR_RUNTIME_WORKERS"):
        value, where = os.environ["VASTAR_RUNTIME_WORKERS"], "$VASTAR_RUNTIME_WORKERS"
    else:
        from .workers import default_workers

        return default_workers()
    return _whole_number(value, where, 1, 256, "workers")


def _spin_us(args: argparse.Namespace, settings: RuntimeSettings) -> int:
    """--spin-us, else spin_us in the config, else $VASTAR_RUNTIME_SPIN_US, else the
    measured default (workers.default_spin_us)."""
    if args.spin_us is not None:
        value, where = str(args.spin_us), "--spin-us"
    elif settings.spin_us is not None:
        return settings.spin_us  # validated with the file
    elif os.environ.get("VASTAR_RUNTIME_SPIN_US"):
        value, where = os.environ["VASTAR_RUNTIME_SPIN_US"], "$VASTAR_RUNTIME_SPIN_US"
    else:
        from .workers import default_spin_us

        return default_spin_us()
    return _whole_number(value, where, 0, MAX_SPIN_US, "microseconds")


def _setup_logging(level: str) -> None:
    from .redact import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number(level))


def _write_ready_file(path: str, info: Dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    os.replace(tmp, path)  # atomic: a watcher never sees a half-written file


async def _serve(args: argparse.Namespace, settings: RuntimeSettings) -> int:
    from .server import Runtime, SocketInUseError

    socket_path, tcp = _listen(args, settings)
    runtime = Runtime(settings, socket_path, tcp)
    try:
        await runtime.start()
    except (SocketInUseError, OSError) as exc:
        print(f"vastar runtime: cannot listen: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, runtime.request_stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    if args.ready_file:
        info = {
            "pid": os.getpid(),
            "socket": socket_path,
            "tcp_port": runtime.tcp_port,
            "metrics_port": runtime.metrics.port,
            "spin_us": settings.spin_us or 0,
        }
        _write_ready_file(args.ready_file, info)
    print(f"vastar runtime ready: {runtime.describe()} pid={os.getpid()}", flush=True)
    await runtime.serve_until_stopped()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.log_level:
            settings.log_level = args.log_level
        if args.metrics_port is not None:
            settings.metrics_port = args.metrics_port
        if args.otel:
            settings.tracing.otel = True
        settings.validate()
        if settings.tracing.otel:  # tracing.py: say what to install before starting
            from .tracing import check_otel_available

            check_otel_available()
        if not args.log_level and args.config is None:
            settings.log_level = "INFO"
    except ConfigError as exc:
        print(f"vastar runtime: bad configuration: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        workers = _worker_count(args)
        settings.spin_us = _spin_us(args, settings)
    except ValueError as exc:
        print(f"vastar runtime: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        from .workers import supervise

        socket_path, tcp = _listen(args, settings)
        return supervise(settings, workers, socket_path, tcp, loop_factory(not args.no_uvloop),
                         args.ready_file, _write_ready_file)  # fmt: skip
    loop = loop_factory(not args.no_uvloop)()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(args, settings))
    except ConfigError as exc:
        print(f"vastar runtime: bad configuration: {exc}", file=sys.stderr)
        return 2
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


if __name__ == "__main__":
    sys.exit(main())
