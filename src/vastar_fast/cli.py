"""The ``vastar`` command: runtime | simulator | demo | bench.

Each subcommand lives with its concern and is imported only when used, so
``vastar simulator`` does not load the runtime and the SDK import stays light.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional

USAGE = """usage: vastar <command> [options]

commands:
  runtime     run the connector runtime daemon (Unix socket / TCP)
  simulator   run the OpenAI/Anthropic/Ollama/Cohere/Gemini endpoint simulator
  demo        start a simulator and a runtime, then run the OpenAI stream connector demo
  bench       run the benchmark suites; print the ratio table, write bench.json/.png

`vastar <command> --help` describes each command's options.
"""


def _runtime(argv: List[str]) -> int:
    from .runtime.__main__ import main

    return main(argv)


def _simulator(argv: List[str]) -> int:
    from .simulator.__main__ import main

    return main(argv)


def _demo(argv: List[str]) -> int:
    from .demo import main

    return main(argv)


def _bench(argv: List[str]) -> int:
    from .benchmarks.cli import main

    return main(argv)


COMMANDS: Dict[str, Callable[[List[str]], int]] = {
    "runtime": _runtime,
    "simulator": _simulator,
    "demo": _demo,
    "bench": _bench,
}


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        from . import __version__

        print(f"vastar-fast {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"vastar: unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return int(command(args[1:]) or 0)
    except ModuleNotFoundError as exc:
        if exc.name in ("aiohttp", "yaml", "prometheus_client"):
            print(
                f"vastar {args[0]}: needs {exc.name}, which is not installed; "
                "install the full package with: pip install 'vastar-fast[all]'",
                file=sys.stderr,
            )
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
