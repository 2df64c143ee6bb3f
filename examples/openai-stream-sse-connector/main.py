#!/usr/bin/env python3
"""OpenAI Stream SSE Connector demo (Python port of the TypeScript example).

Runs three examples through the Vastar runtime: a streaming chat completion (tokens
printed as they arrive), a non-streaming one, and sequential requests.

    vastar runtime &                      # the Vastar connector runtime
    vastar simulator --port 4545 &        # the AI endpoint simulator (no API key needed)
    python main.py                        # uses config.yaml, else config.example.yaml

    python main.py --openai               # real OpenAI API (export OPENAI_API_KEY=sk-...)
    USE_SIMULATOR=false python main.py    # the same, via the environment

``vastar demo`` does all of this in one command, starting and stopping the services.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from vastar_fast import ConnectorException
from vastar_fast.connectors.config import ConfigError
from vastar_fast.connectors.openai import OpenAIConnectorError, OpenAIStreamConnector

HERE = Path(__file__).resolve().parent
RULE = "─" * 61
BANNER = "═" * 61


def default_config_path() -> Path:
    """config.yaml when you made one, else the shipped example."""
    own = HERE / "config.yaml"
    return own if own.exists() else HERE / "config.example.yaml"


def print_token(token: str) -> None:
    sys.stdout.write(token)
    sys.stdout.flush()


def run(connector: OpenAIStreamConnector) -> None:
    # Example 1: streaming, each token printed as soon as it arrives.
    print("Example 1: Streaming Chat Completion")
    print(RULE)
    question = "Explain quantum computing in simple terms."
    print(f"User: {question}")
    print("AI: ")
    response = connector.streaming_chat_completion(question, on_token=print_token)
    print()
    print(RULE)
    print(f"📊 Total response length: {len(response)} characters")
    stats = connector.last_stream_stats
    if stats is not None and stats.ttft_s is not None:
        print(f"⏱️  Time to first token: {stats.ttft_s * 1000:.0f} ms")
    print()

    # Example 2: non-streaming.
    print("Example 2: Non-Streaming Chat Completion")
    print(RULE)
    question = "What is the capital of France?"
    print(f"User: {question}")
    print("AI: ")
    print(connector.chat_completion(question))
    print()

    # Example 3: sequential requests over the same runtime connection.
    print("Example 3: Sequential Requests")
    print(RULE)
    for question in ("What is TypeScript?", "What is Node.js?", "What is async/await?"):
        answer = connector.chat_completion(question)
        short = answer if len(answer) <= 60 else answer[:60].rsplit(" ", 1)[0] + "..."
        print(f"Q: {question}")
        print(f"A: {short}")
        print()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="OpenAI Stream SSE Connector demo")
    parser.add_argument("--config", type=Path, default=None, help="config file (YAML)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--simulator", action="store_true", help="force simulator mode")
    mode.add_argument("--openai", action="store_true", help="force the real OpenAI API")
    args = parser.parse_args(argv)
    if args.simulator or args.openai:
        os.environ["USE_SIMULATOR"] = "true" if args.simulator else "false"

    print("🚀 OpenAI Stream SSE Connector Demo")
    print(BANNER)
    print()
    try:
        connector = OpenAIStreamConnector(args.config or default_config_path())
    except ConfigError as err:
        print(f"❌ Configuration error: {err}", file=sys.stderr)
        return 2

    if connector.use_simulator:
        print("🎭 Using RAI Simulator")
    else:
        print("🌐 Using OpenAI API")
    print(f"🔗 Base URL: {connector.base_url}")
    print()

    try:
        with connector:  # connects to the runtime, closes on exit
            print("🔌 Testing connection...")
            print(f"   URL: {connector.url}")
            connector.test_connection()
            print("✅ Connection successful!")
            print()
            run(connector)
    except ConnectorException as err:
        print(file=sys.stderr)
        print(
            "❌ Connector Error: "
            f"requestId={err.request_id} errorClass={err.get_error_class_name()}\n"
            f"   {err.message}",
            file=sys.stderr,
        )
        return 1
    except OpenAIConnectorError as err:
        print(f"\n❌ API Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130

    print(BANNER)
    print("✅ All examples completed successfully!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
