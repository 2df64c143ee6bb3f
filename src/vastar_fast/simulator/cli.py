"""Command line of the simulator: ``vastar simulator [options]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import List, Optional

from aiohttp import web

from vastar_fast._log import logger

from .app import create_app
from .faults import FAULT_KINDS, parse_kinds
from .server import new_event_loop
from .settings import SimulatorSettings

__all__ = ["build_parser", "main"]

log = logger("vastar_fast.simulator")  # the real one, with the package's NullHandler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vastar simulator",
        description=(
            "AI endpoint simulator: OpenAI (chat completions, Responses, embeddings), "
            "Anthropic, Ollama, Cohere and Gemini compatible endpoints with deterministic "
            "answers, tool calls, a latency model, rate limits, fault injection, and "
            "record/replay of a real endpoint."
        ),
        epilog=(
            "Per-request headers: x-simulator-fault: KIND[:N] (rate_limit, server_error, "
            "overloaded, disconnect, stall, malformed, truncate[:chunks], duplicate, "
            "latency_spike[:ms], none); x-simulator-latency: ttft_ms=..,token_delay_ms=..,"
            "ttft_std_ms=..,token_delay_std_ms=..,prefill_ms_per_token=... "
            'Request body: "ignore_eos": true with max_tokens gives exactly max_tokens tokens.'
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="bind address (default: loopback)")
    add("--port", type=int, default=4545, help="TCP port (default: 4545)")
    timing = parser.add_argument_group("latency model")
    timing.add_argument(
        "--ttft-ms", type=float, default=200.0, help="time to first token in ms (default: 200)"
    )
    timing.add_argument(
        "--ttft-std-ms", type=float, default=0.0, help="its standard deviation in ms (default: 0)"
    )
    timing.add_argument(
        "--token-delay-ms",
        type=float,
        default=20.0,
        help="delay between chunks in ms (default: 20)",
    )
    timing.add_argument(
        "--token-delay-std-ms",
        type=float,
        default=0.0,
        help="its standard deviation in ms (default: 0)",
    )
    timing.add_argument(
        "--prefill-ms-per-token",
        type=float,
        default=0.0,
        help="extra time to first token per prompt token in ms (default: 0)",
    )
    timing.add_argument(
        "--max-concurrency",
        type=int,
        default=0,
        help="sequences generated at once; more requests queue (default: 0, no cap)",
    )
    timing.add_argument(
        "--load-factor",
        type=float,
        default=1.0,
        help="latency multiplier when --max-concurrency sequences run, linear from 1 (default: 1)",
    )
    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--tokens-per-chunk", type=int, default=1, help="tokens per streamed chunk (default: 1)"
    )
    answers.add_argument(
        "--answer-tokens",
        type=int,
        default=None,
        help="length of every generated answer in tokens (default: each answer's own length)",
    )
    limits = parser.add_argument_group("rate limits (per API key, token buckets)")
    limits.add_argument("--rpm", type=int, default=None, help="requests per minute (default: off)")
    limits.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: off)")
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability of a random fault per generation request (default: 0)",
    )
    faults.add_argument(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help="comma-separated kinds random faults are drawn from (default: all)",
    )
    faults.add_argument(
        "--seed", type=int, default=None, help="seed of the fault, latency and filler generators"
    )
    faults.add_argument(
        "--fault-after-chunks",
        type=int,
        default=3,
        help="content chunks sent before disconnect/stall/truncate (default: 3)",
    )
    faults.add_argument(
        "--spike-ms", type=float, default=1000.0, help="length of a latency spike (default: 1000)"
    )
    faults.add_argument(
        "--stall-max-s", type=float, default=60.0, help="upper bound of a stall fault (default: 60)"
    )
    vcr = parser.add_argument_group("record and replay")
    vcr.add_argument("--record", metavar="DIR", default=None, help="record exchanges into DIR")
    vcr.add_argument("--upstream", metavar="URL", default=None, help="endpoint to record from")
    vcr.add_argument("--replay", metavar="DIR", default=None, help="serve the exchanges in DIR")
    vcr.add_argument(
        "--replay-speed",
        type=float,
        default=1.0,
        help="replay N times as fast as recorded; 0 sends without waiting (default: 1)",
    )
    add(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        type=str.lower,
        help="logging level (default: info)",
    )
    return parser


async def _serve(settings: SimulatorSettings, host: str, port: int) -> None:
    app = create_app(settings)  # inside the loop: its state holds asyncio primitives
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
    if settings.record_dir is not None:
        mode = f"recording {settings.upstream} into {settings.record_dir}"
    elif settings.replay_dir is not None:
        mode = f"replaying {settings.replay_dir} at speed {settings.replay_speed:g}"
    else:
        mode = (
            f"ttft {settings.ttft_ms:g} ms, token delay {settings.token_delay_ms:g} ms, "
            f"{settings.tokens_per_chunk} token(s)/chunk, fault rate {settings.fault_rate:g}"
        )
    print(f"vastar simulator listening on http://{host}:{bound[1]} ({mode})", flush=True)
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
            ttft_std_ms=args.ttft_std_ms,
            token_delay_ms=args.token_delay_ms,
            token_delay_std_ms=args.token_delay_std_ms,
            prefill_ms_per_token=args.prefill_ms_per_token,
            max_concurrency=args.max_concurrency,
            load_factor=args.load_factor,
            tokens_per_chunk=args.tokens_per_chunk,
            answer_tokens=args.answer_tokens,
            rpm=args.rpm,
            tpm=args.tpm,
            fault_rate=args.fault_rate,
            fault_kinds=parse_kinds(args.fault_kinds),
            seed=args.seed,
            fault_after_chunks=args.fault_after_chunks,
            spike_ms=args.spike_ms,
            stall_max_s=args.stall_max_s,
            record_dir=args.record,
            upstream=args.upstream,
            replay_dir=args.replay,
            replay_speed=args.replay_speed,
        )
    except ValueError as exc:
        print(f"vastar simulator: error: {exc}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(settings, args.host, args.port))
    except ValueError as exc:  # e.g. a replay directory that does not exist
        print(f"vastar simulator: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vastar simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        pass
    finally:
        loop.close()
    return 0
