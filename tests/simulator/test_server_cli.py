"""SimulatorServer lifecycle, logging hygiene and the command line entry point."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import vastar_fast
from vastar_fast.simulator import FAULT_HEADER, SimulatorServer, SimulatorSettings
from vastar_fast.simulator.__main__ import main

from .helpers import post, request

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])  # the vastar_fast under test


def test_start_stop_and_base_url() -> None:
    server = SimulatorServer(SimulatorSettings.fast())
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    try:
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        status, _, _ = request(server, "GET", "/health")
        assert status == 200
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1.0).close()


def test_stop_releases_a_stalled_stream() -> None:
    """A stall fault must not keep the server from shutting down."""
    server = SimulatorServer(SimulatorSettings.fast(stall_max_s=60.0), shutdown_timeout=30.0)
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30.0)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ),
        headers={FAULT_HEADER: "stall"},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline()  # first frame arrived; the server is now stalling
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(60.0)
    assert not stopper.is_alive()
    # The stalled response was cut off (no [DONE]) rather than completed.
    rest = b""
    try:
        rest = resp.read()
    except (http.client.IncompleteRead, OSError) as exc:
        rest = getattr(exc, "partial", b"")
    assert b"[DONE]" not in rest
    conn.close()


def test_same_seed_same_app_behaviour_with_port_in_use() -> None:
    with SimulatorServer(SimulatorSettings.fast()) as a:
        clash = SimulatorServer(SimulatorSettings.fast(), port=a.port)
        with pytest.raises(RuntimeError):
            clash.start()


def test_credentials_are_never_logged(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-very-secret-token-123"
    post(
        sim,
        "/v1/chat/completions",
        {"model": "m"},  # invalid: logged at debug
        headers={"Authorization": f"Bearer {secret}", "x-api-key": secret},
    )
    post(
        sim,
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {secret}", FAULT_HEADER: "rate_limit"},
    )
    assert any("rate_limit" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text


def test_main_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fault-rate", "2", "--port", "0"]) == 2
    assert "fault_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--no-such-option"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_python_dash_m_runs_and_stops_on_sigterm() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastar_fast.simulator",
            "--port",
            str(port),
            "--ttft-ms",
            "0",
            "--token-delay-ms",
            "0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # startup line, printed once bound
        assert f"http://127.0.0.1:{port}" in line
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                }
            ),
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(conn.getresponse().read())
        conn.close()
        assert data["choices"][0]["message"]["content"] == "The capital of France is Paris."
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--load-factor", "2"], "max_concurrency"),
        (["--fault-kinds", "truncate,bogus"], "bogus"),
        (["--record", "/tmp/x"], "upstream"),
        (["--answer-tokens", "0"], "answer_tokens"),
        (["--rpm", "0"], "rpm"),
        (["--ttft-std-ms", "-1"], "ttft_std_ms"),
    ],
)
def test_main_rejects_inconsistent_new_options(
    argv: list, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--port", "0"]) == 2
    assert message in capsys.readouterr().err


def test_main_rejects_a_missing_replay_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--replay", str(tmp_path / "none"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_documents_options_and_headers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for word in (
        "--answer-tokens", "--ttft-std-ms", "--prefill-ms-per-token", "--max-concurrency",
        "--load-factor", "--rpm", "--tpm", "--fault-kinds", "--record", "--upstream",
        "--replay", "--replay-speed", "x-simulator-latency", "x-simulator-fault",
        "truncate", "ignore_eos",
    ):  # fmt: skip
        assert word in out, word
