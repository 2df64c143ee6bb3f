"""``vastar demo``: the OpenAI Stream SSE connector demo, runnable on a fresh machine.

It reproduces the TypeScript example's three examples (streaming, non-streaming,
sequential requests) with :class:`~vastar_fast.connectors.openai.OpenAIStreamConnector`.
With nothing running it starts an embedded simulator and runtime (subprocesses on a
temporary Unix socket and a free port) and stops them again on exit, on error and on
Ctrl-C. ``--runtime-socket`` / ``--runtime-tcp`` / ``--simulator-url`` use services that
are already running; ``--real`` talks to the OpenAI API (needs ``OPENAI_API_KEY``).

This is a command line program, so it prints; the library modules it uses only log.
``rich`` is used for colour when it is installed and stdout is a terminal; otherwise the
output is plain text (and plain ASCII when stdout cannot encode the symbols).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Iterator, List, Optional, TextIO, Tuple

from .client.sync import RuntimeClient
from .connectors.config import ConfigError, ConnectorConfig, default_config, load_config
from .connectors.openai import OpenAIConnectorError, OpenAIStreamConnector
from .errors import ConnectorException
from .services import ENDPOINT_VARS, EmbeddedServices, ServiceError, Terminated, signals_raise

__all__ = ["EXAMPLES", "build_parser", "main"]

STREAMING_PROMPT = "Explain quantum computing in simple terms."
NON_STREAMING_PROMPT = "What is the capital of France?"
SEQUENTIAL_PROMPTS = ("What is TypeScript?", "What is Node.js?", "What is async/await?")
EXAMPLES = (STREAMING_PROMPT, NON_STREAMING_PROMPT, *SEQUENTIAL_PROMPTS)

_WIDTH = 61

# Symbols and their ASCII stand-ins for terminals that cannot encode them.
_SYMBOLS = {
    "rocket": ("🚀", "*"),
    "sim": ("🎭", "*"),
    "api": ("🌐", "*"),
    "link": ("🔗", "-"),
    "plug": ("🔌", "-"),
    "ok": ("✅", "[ok]"),
    "fail": ("❌", "[error]"),
    "chart": ("📊", "-"),
    "clock": ("⏱️ ", "-"),
    "bolt": ("⚡", "-"),
    "gear": ("⚙️ ", "-"),
    "broom": ("🧹", "-"),
    "heavy": ("═", "="),
    "light": ("─", "-"),
}


class Output:
    """Where the demo writes: plain text, or rich colour on a terminal."""

    def __init__(self, stream: TextIO, *, color: bool, quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self.mid_line = False
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "".join(s for s, _ in _SYMBOLS.values()).encode(encoding)
            self.fancy = True
        except (UnicodeEncodeError, LookupError):
            self.fancy = False
        self._rich: Any = None
        if color:
            try:
                from rich.console import Console

                self._rich = Console(file=stream, highlight=False, soft_wrap=True)
            except ImportError:
                self._rich = None

    def sym(self, name: str) -> str:
        fancy, plain = _SYMBOLS[name]
        return fancy if self.fancy else plain

    def line(self, text: str = "", style: Optional[str] = None) -> None:
        self.mid_line = False
        if self._rich is not None:
            self._rich.print(text, style=style, markup=False, emoji=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def info(self, text: str = "", style: Optional[str] = None) -> None:
        """A progress line, left out with ``--quiet``."""
        if not self.quiet:
            self.line(text, style)

    def rule(self, kind: str = "light") -> None:
        self.line(self.sym(kind) * _WIDTH, "dim")

    def token(self, text: str) -> None:
        """Write a token as it arrives, with no line break, visible at once."""
        if text:
            self.stream.write(text)
            self.stream.flush()
            self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        """Finish a line of streamed tokens (after an interruption, say)."""
        if self.mid_line:
            self.token("\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vastar demo",
        description=(
            "Run the OpenAI Stream SSE connector demo: streaming, non-streaming and "
            "sequential chat completions through the Vastar runtime. With no options it "
            "starts an embedded simulator and runtime and stops them when done."
        ),
    )
    rt = p.add_mutually_exclusive_group()
    rt.add_argument(
        "--runtime-socket", metavar="PATH", help="use the runtime already listening on PATH"
    )
    rt.add_argument(
        "--runtime-tcp",
        metavar="HOST:PORT",
        type=_parse_tcp,
        help="use the runtime already listening on TCP",
    )
    up = p.add_mutually_exclusive_group()
    up.add_argument(
        "--simulator-url",
        metavar="URL",
        help="use a running simulator (e.g. http://localhost:4545)",
    )
    up.add_argument(
        "--real",
        action="store_true",
        help="call the real OpenAI API (needs OPENAI_API_KEY; costs a few tokens)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="connector config YAML (see examples/openai-stream-sse-connector); its "
        "simulator URL and runtime endpoint are used as given",
    )
    p.add_argument(
        "--ttft-ms",
        type=float,
        default=150.0,
        help="embedded simulator: time to first token in ms (default: 150)",
    )
    p.add_argument(
        "--token-delay-ms",
        type=float,
        default=5.0,
        help="embedded simulator: delay between tokens in ms (default: 5, a fast hosted "
        "model; 20 looks like a slower one but makes the demo take ~15 s)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for the embedded services to start (default: 20)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only the examples and their results (no live tokens, no progress lines)",
    )
    p.add_argument("--no-color", action="store_true", help="plain text output, no colour")
    return p


def _parse_tcp(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` for ``--runtime-tcp`` (argparse reports the error and exits 2)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, e.g. 127.0.0.1:5000, got {text!r}")
    return host, int(port_text)


def _short(text: str, limit: int = 72) -> str:
    """The first ``limit`` characters cut at a word, like the seed's ``A: ...`` lines."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",.;:")
    return cut + "..."


@contextlib.contextmanager
def _without_endpoint_overrides(active: bool) -> Iterator[None]:
    """Hide VASTAR_SOCKET_PATH & co. while the demo's own runtime choice must win."""
    saved = {k: os.environ.pop(k) for k in ENDPOINT_VARS if active and k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Demo:
    """One run of the demo: resolves the config, starts what is missing, runs examples."""

    def __init__(self, args: argparse.Namespace, out: Output, err: Output) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.services: Optional[EmbeddedServices] = None

    # ------------------------------------------------------------------ setup
    def resolve_config(self) -> Tuple[ConnectorConfig, bool, bool]:
        """The config, and whether to embed a simulator / a runtime."""
        args = self.args
        if args.config:
            config = load_config(args.config)
        else:
            config = default_config()
        if args.real:
            config = config.with_simulator(False)
        elif args.simulator_url:
            url = args.simulator_url.rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"--simulator-url must be an http(s) URL, got {url!r}")
            config = config.with_simulator(True, url)
        config.require_api_key()
        embed_simulator = config.use_simulator and not args.simulator_url and not args.config
        if args.runtime_socket:
            config = config.with_runtime(socket_path=args.runtime_socket, use_tcp=False)
            embed_runtime = False
        elif args.runtime_tcp:
            host, port = args.runtime_tcp
            config = config.with_runtime(use_tcp=True, tcp_host=host, tcp_port=port)
            embed_runtime = False
        else:
            configured = args.config and (config.runtime.socket_path or config.runtime.use_tcp)
            embed_runtime = not configured
        return config, embed_simulator, embed_runtime

    def start_services(self, simulator: bool, runtime: bool) -> None:
        if not (simulator or runtime):
            return
        out = self.out
        what = " and ".join(n for n, on in (("simulator", simulator), ("runtime", runtime)) if on)
        out.info(f"{out.sym('gear')} Starting an embedded {what}...", "dim")
        started = time.perf_counter()
        self.services = EmbeddedServices(
            simulator=simulator,
            runtime=runtime,
            ttft_ms=self.args.ttft_ms,
            token_delay_ms=self.args.token_delay_ms,
            startup_timeout_s=self.args.startup_timeout,
        )
        self.services.start()
        svc = self.services
        if svc.simulator is not None:
            out.info(
                f"   Simulator: {svc.simulator_url} (pid {svc.simulator.pid}; time to first "
                f"token {self.args.ttft_ms:g} ms, {self.args.token_delay_ms:g} ms per token)",
                "dim",
            )
        if svc.runtime is not None:
            out.info(
                f"   Runtime:   unix socket {svc.runtime_socket} (pid {svc.runtime.pid})", "dim"
            )
        out.info(f"   Ready in {time.perf_counter() - started:.2f} s", "dim")
        out.info()

    def stop_services(self) -> None:
        if self.services is not None and self.services.pids:
            self.services.stop()
            self.out.info(f"{self.out.sym('broom')} Stopped the embedded services.", "dim")
        elif self.services is not None:
            self.services.stop()

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        out = self.out
        config, embed_simulator, embed_runtime = self.resolve_config()
        out.line(f"{out.sym('rocket')} OpenAI Stream SSE Connector Demo", "bold")
        out.rule("heavy")
        out.line()
        client: Optional[RuntimeClient] = None
        try:
            if not embed_runtime:
                # An external runtime is checked first, so a wrong --runtime-socket fails
                # fast, before anything is started.
                client = RuntimeClient(config.runtime.to_runtime_config())
                OpenAIStreamConnector(config, client=client).connect()
            self.start_services(embed_simulator, embed_runtime)
            svc = self.services
            if svc is not None and svc.simulator_url:
                config = config.with_simulator(True, svc.simulator_url)
            if svc is not None and svc.runtime_socket:
                config = config.with_runtime(socket_path=svc.runtime_socket, use_tcp=False)
            if client is None:
                client = RuntimeClient(config.runtime.to_runtime_config())
            connector = OpenAIStreamConnector(config, client=client)
            connector.connect()
            self.examples(connector)
        finally:
            if client is not None:
                client.close()
            self.stop_services()
        return 0

    def examples(self, connector: OpenAIStreamConnector) -> None:
        out = self.out
        if connector.use_simulator:
            out.line(f"{out.sym('sim')} Using RAI Simulator")
        else:
            out.line(f"{out.sym('api')} Using OpenAI API (model {connector.model})")
        out.line(f"{out.sym('link')} Base URL: {connector.base_url}")
        out.line()
        out.line(f"{out.sym('plug')} Testing connection...")
        out.info(f"   URL: {connector.url}")
        connector.test_connection()
        out.line(f"{out.sym('ok')} Connection successful!", "green")
        out.line()

        # Example 1: streaming, tokens printed as they arrive.
        out.line("Example 1: Streaming Chat Completion", "bold cyan")
        out.rule()
        out.line(f"User: {STREAMING_PROMPT}")
        out.line("AI: ", "bold")
        live = not out.quiet
        text = connector.streaming_chat_completion(
            STREAMING_PROMPT, on_token=out.token if live else None
        )
        if live:
            out.end_line()
        else:
            out.line(text)
        out.rule()
        stats = connector.last_stream_stats
        out.line(f"{out.sym('chart')} Total response length: {len(text)} characters")
        if stats is not None and stats.ttft_s is not None:
            out.line(f"{out.sym('clock')} Time to first token: {stats.ttft_s * 1000:.1f} ms")
            rate = stats.tokens_per_s
            rate_text = f"{rate:.1f} tokens/s" if rate is not None else "n/a tokens/s"
            out.line(
                f"{out.sym('bolt')} Throughput: {rate_text} "
                f"({stats.tokens} tokens in {stats.total_s:.2f} s)"
            )
        if not text:
            raise OpenAIConnectorError("the streaming example returned no text")
        out.line()

        # Example 2: non-streaming.
        out.line("Example 2: Non-Streaming Chat Completion", "bold cyan")
        out.rule()
        out.line(f"User: {NON_STREAMING_PROMPT}")
        out.line("AI: ", "bold")
        out.line(connector.chat_completion(NON_STREAMING_PROMPT))
        out.line()

        # Example 3: sequential requests on the same connection.
        out.line("Example 3: Sequential Requests", "bold cyan")
        out.rule()
        for question in SEQUENTIAL_PROMPTS:
            out.line(f"Q: {question}")
            out.line(f"A: {_short(connector.chat_completion(question))}")
            out.line()
        out.rule("heavy")
        out.line(f"{out.sym('ok')} All examples completed successfully!", "bold green")


def _report(err: Output, exc: BaseException) -> int:
    """Print an error the user can act on; return the exit status."""
    fail = err.sym("fail")
    if isinstance(exc, ConfigError):
        err.line(f"{fail} Configuration error: {exc}", "bold red")
        return 2
    if isinstance(exc, ConnectorException):
        err.line(
            f"{fail} Connector error ({exc.get_error_class_name()}): {exc.message}", "bold red"
        )
        return 1
    if isinstance(exc, OpenAIConnectorError):
        err.line(f"{fail} API error: {exc}", "bold red")
        return 1
    if isinstance(exc, ServiceError):
        err.line(f"{fail} Could not start the embedded services: {exc}", "bold red")
        return 1
    err.line(f"{fail} Error: {exc}", "bold red")
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; 0 on success, 1 on a runtime/API error, 2 on bad options or config,
    130 on Ctrl-C, 143 on SIGTERM. Embedded services are stopped in every case."""
    args = build_parser().parse_args(argv)
    color = not args.no_color and "NO_COLOR" not in os.environ
    out = Output(sys.stdout, color=color and sys.stdout.isatty(), quiet=args.quiet)
    err = Output(sys.stderr, color=color and sys.stderr.isatty(), quiet=False)
    if args.real and not args.config and not os.environ.get("OPENAI_API_KEY"):
        err.line(
            f"{err.sym('fail')} --real calls the OpenAI API and needs a key, but OPENAI_API_KEY "
            "is not set: `export OPENAI_API_KEY=sk-...`, or run without --real to use the "
            "embedded simulator.",
            "bold red",
        )
        return 2
    demo = Demo(args, out, err)
    own_endpoint = not args.config or bool(args.runtime_socket or args.runtime_tcp)
    try:
        with signals_raise(), _without_endpoint_overrides(own_endpoint):
            return demo.run()
    except KeyboardInterrupt:
        out.end_line()
        err.line("Interrupted; the embedded services were stopped.")
        return 130
    except Terminated as exc:
        err.line("Terminated; the embedded services were stopped.")
        return 128 + exc.signum
    except (ConfigError, ConnectorException, OpenAIConnectorError, ServiceError) as exc:
        out.end_line()
        return _report(err, exc)
