"""OpenAIStreamConnector through a real runtime to the simulator (subprocesses, loopback)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, List

import pytest

from vastar_fast import ConnectorException, ErrorClass
from vastar_fast.connectors.config import ConfigError, MissingAPIKeyError
from vastar_fast.connectors.openai import OpenAIConnectorError, OpenAIStreamConnector
from vastar_fast.services import EmbeddedServices, free_port

pytestmark = pytest.mark.timeout(120)

TOKEN_DELAY_MS = 100
PARIS = "The capital of France is Paris."


@pytest.fixture(scope="module")
def services() -> Iterator[EmbeddedServices]:
    # A visible token delay, so "arrives incrementally" is distinguishable from "buffered".
    with EmbeddedServices(ttft_ms=50, token_delay_ms=TOKEN_DELAY_MS) as svc:
        yield svc


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("USE_SIMULATOR", "OPENAI_API_KEY", "OPENAI_BASE_URL", "VASTAR_SOCKET_PATH"):
        monkeypatch.delenv(name, raising=False)


def write_config(
    tmp_path: Path,
    *,
    socket: str,
    simulator_enabled: bool,
    simulator_url: str,
    base_url: str = "${OPENAI_BASE_URL:-https://api.openai.com}",
    api_key: str = "${OPENAI_API_KEY}",
) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
openai:
  api_key: {api_key}
  base_url: "{base_url}"
  model: "gpt-3.5-turbo"
  timeout_ms: 30000

runtime:
  tenant_id: "openai-connector"
  workspace_id: "default"
  timeout_ms: 30000
  socket_path: "{socket}"

simulator:
  enabled: {"true" if simulator_enabled else "false"}
  base_url: "{simulator_url}"
""",
        encoding="utf-8",
    )
    return path


def sim_config(tmp_path: Path, svc: EmbeddedServices) -> Path:
    assert svc.runtime_socket and svc.simulator_url
    return write_config(
        tmp_path,
        socket=svc.runtime_socket,
        simulator_enabled=True,
        simulator_url=svc.simulator_url,
    )


def test_streaming_deltas_arrive_before_the_stream_ends(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    stamps: List[float] = []
    tokens: List[str] = []

    def on_token(token: str) -> None:
        stamps.append(time.monotonic())
        tokens.append(token)

    with OpenAIStreamConnector(sim_config(tmp_path, services), on_token=on_token) as conn:
        assert conn.use_simulator and conn.base_url == services.simulator_url
        text = conn.streaming_chat_completion("What is the capital of France?")
        done = time.monotonic()
    assert text == PARIS
    assert "".join(tokens) == PARIS and len(tokens) == 7
    # Seven tokens 100 ms apart: the first reaches us ~600 ms before the end. A runtime or
    # client that buffered the stream would deliver all of them at the very end.
    assert done - stamps[0] > 0.3
    assert stamps[-1] - stamps[0] > 0.3
    stats = conn.last_stream_stats
    assert stats is not None and stats.tokens == 7 and stats.ttft_s is not None
    assert stats.ttft_s < stats.total_s - 0.3


def test_stream_chat_yields_and_early_close_keeps_the_connection_usable(
    tmp_path: Path, services: EmbeddedServices
) -> None:
    with OpenAIStreamConnector(sim_config(tmp_path, services)) as conn:
        it = conn.stream_chat("Explain quantum computing in simple terms.")
        first = next(it)
        assert first == "Quantum"
        it.close()  # cancels the long answer at the runtime
        assert conn.chat_completion("What is the capital of France?") == PARIS


def test_non_streaming_and_connection_test(tmp_path: Path, services: EmbeddedServices) -> None:
    with OpenAIStreamConnector(sim_config(tmp_path, services)) as conn:
        assert conn.test_connection() is True
        assert conn.chat_completion("What is the capital of France?") == PARIS
        assert conn.chat_completion("What is the capital of France?") == PARIS  # same connection


def test_real_mode_calls_base_url_from_the_environment(
    tmp_path: Path, services: EmbeddedServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert services.runtime_socket and services.simulator_url
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    monkeypatch.setenv("OPENAI_BASE_URL", services.simulator_url)
    path = write_config(
        tmp_path,
        socket=services.runtime_socket,
        simulator_enabled=False,
        simulator_url="http://127.0.0.1:1",  # would fail if it were used
    )
    with OpenAIStreamConnector(path) as conn:
        assert not conn.use_simulator and conn.base_url == services.simulator_url
        assert conn.chat_completion("What is the capital of France?") == PARIS
        assert conn.streaming_chat_completion("What is the capital of France?") == PARIS


@pytest.mark.parametrize("override, expect_sim", [("true", True), ("false", False)])
def test_use_simulator_override(
    tmp_path: Path,
    services: EmbeddedServices,
    monkeypatch: pytest.MonkeyPatch,
    override: str,
    expect_sim: bool,
) -> None:
    assert services.runtime_socket and services.simulator_url
    monkeypatch.setenv("USE_SIMULATOR", override)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    # Only the side selected by the override points at the live simulator.
    dead = f"http://127.0.0.1:{free_port()}"
    path = write_config(
        tmp_path,
        socket=services.runtime_socket,
        simulator_enabled=not expect_sim,
        simulator_url=services.simulator_url if expect_sim else dead,
        base_url=dead if expect_sim else services.simulator_url,
    )
    with OpenAIStreamConnector(path) as conn:
        assert conn.use_simulator is expect_sim
        assert conn.chat_completion("What is the capital of France?") == PARIS


def test_missing_key_in_real_mode(tmp_path: Path, services: EmbeddedServices) -> None:
    assert services.runtime_socket and services.simulator_url
    path = write_config(
        tmp_path,
        socket=services.runtime_socket,
        simulator_enabled=False,
        simulator_url=services.simulator_url,
    )
    with pytest.raises(MissingAPIKeyError) as info:
        OpenAIStreamConnector(path)
    assert "export OPENAI_API_KEY=sk-" in str(info.value)
    assert f"{path}:2:" in str(info.value)  # the api_key line


def test_runtime_not_running(tmp_path: Path, services: EmbeddedServices) -> None:
    assert services.simulator_url
    missing = str(tmp_path / "nothing.sock")
    path = write_config(
        tmp_path, socket=missing, simulator_enabled=True, simulator_url=services.simulator_url
    )
    conn = OpenAIStreamConnector(path)
    with pytest.raises(ConnectorException) as info:
        conn.connect()
    err = info.value
    assert err.error_class == ErrorClass.TRANSIENT
    assert f"vastar runtime --socket {missing}" in err.message
    assert "must be running first" in err.message
    # The same hint when the first request connects implicitly.
    with pytest.raises(ConnectorException, match="needs a running Vastar runtime"):
        conn.chat_completion("hi")


def test_simulator_not_answering(tmp_path: Path, services: EmbeddedServices) -> None:
    assert services.runtime_socket
    port = free_port()
    path = write_config(
        tmp_path,
        socket=services.runtime_socket,
        simulator_enabled=True,
        simulator_url=f"http://127.0.0.1:{port}",
    )
    with OpenAIStreamConnector(path) as conn:
        for call in (conn.chat_completion, conn.streaming_chat_completion):
            with pytest.raises(ConnectorException) as info:
                call("hi")
            assert info.value.error_class == ErrorClass.TRANSIENT
            assert f"start it with `vastar simulator --port {port}`" in info.value.message


def test_http_error_from_the_upstream(tmp_path: Path, services: EmbeddedServices) -> None:
    assert services.runtime_socket and services.simulator_url
    path = write_config(
        tmp_path,
        socket=services.runtime_socket,
        simulator_enabled=True,
        simulator_url=services.simulator_url + "/no/such/prefix",
    )
    with OpenAIStreamConnector(path) as conn:
        for call in (conn.chat_completion, conn.streaming_chat_completion):
            with pytest.raises(OpenAIConnectorError) as info:
                call("hi")
            assert info.value.status_code == 404
            assert "HTTP 404" in str(info.value)


def test_config_errors_surface_from_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        OpenAIStreamConnector(str(tmp_path / "config.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("openai:\n  model: x\n  base_url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        OpenAIStreamConnector(str(bad))
    assert "malformed YAML" in str(info.value) and info.value.line is not None
    nokey = tmp_path / "nokey.yaml"
    nokey.write_text("openai:\n  api_key: x\n  base_url: http://localhost:1\n")
    with pytest.raises(ConfigError, match=r"'openai\.model' is missing") as info2:
        OpenAIStreamConnector(str(nokey))
    assert info2.value.line == 1
