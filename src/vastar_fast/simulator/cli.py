"""Command line of the simulator: ``vastar simulator [options]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import List, Optional

from aiohttp import web

from .app import create_app
from .server import new_event_loop
from .settings import SimulatorSettings

__all__ = ["build_parser", "main"]

log = logging.getLogger("vastar_fast.simulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vastar simulator",
        description=(
            "AI endpoint simulator: OpenAI, Anthropic, Ollama, Cohere and Gemini "
            "compatible streaming endpoints with deterministic answers and fault injection."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=4545, help="TCP port (default: 4545)")
    parser.add_argument(
        "--ttft-ms", type=float, default=200.0, help="time to first token in ms (default: 200)"
    )
    parser.add_argument(
        "--token-delay-ms",
        type=float,
        default=20.0,
        help="delay between chunks in ms (default: 20)",
    )
    parser.add_argument(
        "--tokens-per-chunk", type=int, default=1, help="tokens per streamed chunk (default: 1)"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability of a random fault per generation request (default: 0)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument(
        "--stall-max-s", type=float, default=60.0, help="upper bound of a stall fault (default: 60)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        type=str.lower,
        help="logging level (default: info)",
    )
    return parser


async def _serve(settings: SimulatorSettings, host: str, port: int) -> None:
    app = create_app(settings)
    access_log = logging.getLogger("aiohttp.access") if log.isEnabledFor(logging.DEBUG) else None
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    print(
        f"vastar simulator listening on http://{host}:{bound[1]} "
        f"(ttft {settings.ttft_ms:g} ms, token delay {settings.token_delay_ms:g} ms, "
        f"{settings.tokens_per_chunk} token(s)/chunk, fault rate {settings.fault_rate:g})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (without the program name), run the server until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = SimulatorSettings(
            ttft_ms=args.ttft_ms,
            token_delay_ms=args.token_delay_ms,
            tokens_per_chunk=args.tokens_per_chunk,
            fault_rate=args.fault_rate,
            seed=args.seed,
            stall_max_s=args.stall_max_s,
        )
    except ValueError as exc:
        print(f"vastar simulator: error: {exc}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(settings, args.host, args.port))
    except OSError as exc:
        print(f"vastar simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        pass
    finally:
        loop.close()
    return 0
