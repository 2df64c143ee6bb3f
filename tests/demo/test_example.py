"""examples/openai-stream-sse-connector: its config parses, its main.py runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vastar_fast.connectors.config import load_config
from vastar_fast.services import EmbeddedServices

from .helpers import demo_env

pytestmark = pytest.mark.timeout(120)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai-stream-sse-connector"


def test_example_config_is_valid_and_uses_the_simulator() -> None:
    cfg = load_config(EXAMPLE / "config.example.yaml", environ={})
    assert cfg.use_simulator
    assert cfg.chat_completions_url == "http://localhost:4545/v1/chat/completions"
    assert cfg.openai.api_key_env == "OPENAI_API_KEY"
    assert cfg.runtime.tenant_id == "openai-connector"
    real = load_config(EXAMPLE / "config.example.yaml", environ={"USE_SIMULATOR": "false"})
    assert real.chat_completions_url == "https://api.openai.com/v1/chat/completions"


def test_example_main_runs_the_three_examples(tmp_path: Path) -> None:
    with EmbeddedServices(ttft_ms=10, token_delay_ms=0) as svc:
        assert svc.runtime_socket and svc.simulator_url
        text = (EXAMPLE / "config.example.yaml").read_text(encoding="utf-8")
        text = text.replace("http://localhost:4545", svc.simulator_url)
        text = text.replace(
            '# socket_path: "/tmp/vastar-connector-runtime.sock"',
            f'socket_path: "{svc.runtime_socket}"  #',
        )
        cfg = tmp_path / "config.yaml"
        cfg.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(EXAMPLE / "main.py"), "--config", str(cfg)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=demo_env(),
            timeout=90,
        )
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert "Using RAI Simulator" in out and f"Base URL: {svc.simulator_url}" in out
    assert "Connection successful!" in out
    assert "Example 1: Streaming Chat Completion" in out and "Quantum computing is" in out
    assert "User: What is the capital of France?\nAI: \nThe capital of France is Paris." in out
    assert "Q: What is async/await?\nA: Async/await is" in out
    assert "All examples completed successfully!" in out


def test_example_main_without_a_runtime_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    text = (EXAMPLE / "config.example.yaml").read_text(encoding="utf-8")
    missing = tmp_path / "none.sock"
    cfg.write_text(
        text.replace(
            '# socket_path: "/tmp/vastar-connector-runtime.sock"', f'socket_path: "{missing}"  #'
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "main.py"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=demo_env(),
        timeout=60,
    )
    assert result.returncode == 1
    assert "errorClass=TRANSIENT" in result.stderr
    assert f"vastar runtime --socket {missing}" in result.stderr


def test_readme_shows_the_seed_sections() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    for heading in (
        "## 📊 Example Output",
        "Example 1: Streaming Chat Completion",
        "Example 2: Non-Streaming Chat Completion",
        "Example 3: Sequential Requests",
        "USE_SIMULATOR=true",
        "api_key: ${OPENAI_API_KEY}",
        "All examples completed successfully!",
    ):
        assert heading in readme
    assert os.path.exists(EXAMPLE / "main.py")
