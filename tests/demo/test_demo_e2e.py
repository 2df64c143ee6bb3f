"""``vastar demo`` end to end, in a subprocess, on loopback; checks output and cleanup."""

from __future__ import annotations

import os
import re
import signal

import pytest

from .helpers import LiveDemo, pids_in, run_demo, socket_in, wait_gone

pytestmark = pytest.mark.timeout(180)


def section(text: str, start: str, end: str) -> str:
    assert start in text and end in text, text
    return text.split(start, 1)[1].split(end, 1)[0]


def test_demo_runs_the_three_examples_and_cleans_up() -> None:
    result = run_demo("--no-color")
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr)
    for heading in (
        "OpenAI Stream SSE Connector Demo",
        "Using RAI Simulator",
        "Connection successful!",
        "Example 1: Streaming Chat Completion",
        "Example 2: Non-Streaming Chat Completion",
        "Example 3: Sequential Requests",
        "All examples completed successfully!",
    ):
        assert heading in out
    # Example 1: the streamed answer, between "AI:" and the closing rule.
    streamed = section(out, "User: Explain quantum computing in simple terms.\nAI: \n", "\n─")
    assert "Quantum computing" in streamed and len(streamed) > 500
    length = int(re.search(r"Total response length: (\d+) characters", out).group(1))
    assert length == len(streamed)
    # The figures are true: the embedded simulator waits 150 ms before the first token and
    # 5 ms between tokens (the defaults), so the first token cannot come sooner and the
    # rate cannot exceed 200 tokens/s - a client or runtime that buffered the stream would
    # show a TTFT near the stream's end and a far higher "rate".
    ttft = float(re.search(r"Time to first token: ([\d.]+) ms", out).group(1))
    found = re.search(r"Throughput: ([\d.]+) tokens/s \((\d+) tokens in ([\d.]+) s\)", out)
    assert found, out
    rate, tokens, total_s = float(found.group(1)), int(found.group(2)), float(found.group(3))
    assert tokens == 335  # one delta per token of the simulator's answer
    assert 150 <= ttft < 5000
    assert ttft / 1000 < total_s - 1.0  # ~1.7 s of tokens still to come at the first one
    assert 0 < rate <= 1000 / 5 * 1.02
    # Printed rate = later tokens over the time after the first (rounding in the output).
    assert rate == pytest.approx((tokens - 1) / (total_s - ttft / 1000), rel=0.02)
    # Example 2 and 3.
    assert "User: What is the capital of France?\nAI: \nThe capital of France is Paris." in out
    for q, a in (
        ("What is TypeScript?", "TypeScript is"),
        ("What is Node.js?", "Node.js is"),
        ("What is async/await?", "Async/await is"),
    ):
        assert f"Q: {q}\nA: {a}" in out
    # Nothing left behind: the embedded services' processes and the socket directory.
    pids = pids_in(out)
    sock = socket_in(out)
    assert len(pids) == 2 and sock is not None
    assert wait_gone(pids) == []
    assert not os.path.exists(sock)
    assert not os.path.exists(os.path.dirname(sock))
    assert result.stderr == ""


def test_quiet_demo_prints_results_but_no_progress() -> None:
    result = run_demo("--quiet", "--no-color", "--ttft-ms", "20", "--token-delay-ms", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Starting an embedded" not in out and "pid" not in out
    assert "The capital of France is Paris." in out
    assert "Time to first token:" in out
    assert "Quantum computing is" in out


def test_missing_runtime_socket_fails_clearly(tmp_path) -> None:
    missing = str(tmp_path / "no-runtime.sock")
    result = run_demo("--runtime-socket", missing, "--no-color", timeout=60)
    assert result.returncode != 0
    assert "cannot connect to the Vastar runtime" in result.stderr
    assert f"vastar runtime --socket {missing}" in result.stderr
    assert "Example 1" not in result.stdout
    assert "Starting an embedded" not in result.stdout  # failed before starting anything


def test_real_without_api_key_refuses() -> None:
    result = run_demo("--real", "--no-color", timeout=60, OPENAI_API_KEY=None)
    assert result.returncode == 2
    assert "OPENAI_API_KEY is not set" in result.stderr
    assert "export OPENAI_API_KEY=sk-" in result.stderr
    assert "Example 1" not in result.stdout


def test_unreachable_simulator_says_how_to_start_it() -> None:
    # A port nothing listens on: bind-and-close gives one that was free a moment ago.
    from vastar_fast.services import free_port

    port = free_port()
    result = run_demo("--simulator-url", f"http://127.0.0.1:{port}", "--no-color", timeout=90)
    assert result.returncode == 1
    assert f"start it with `vastar simulator --port {port}`" in result.stderr
    pids = pids_in(result.stdout)
    assert len(pids) == 1  # only the runtime was embedded
    assert wait_gone(pids) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_mid_stream_stops_everything(sig: int, code: int) -> None:
    demo = LiveDemo("--no-color", "--token-delay-ms", "50")
    try:
        assert demo.wait_for("Quantum computing"), demo.stdout
        pids = pids_in(demo.stdout)
        sock = socket_in(demo.stdout)
        assert len(pids) == 2 and sock is not None
        demo.proc.send_signal(sig)
        assert demo.finish() == code, demo.err
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
    assert "stopped" in demo.err
    assert wait_gone(pids) == []
    assert not os.path.exists(os.path.dirname(sock))
    assert "All examples completed" not in demo.stdout
