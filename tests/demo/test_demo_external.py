"""``vastar demo`` against services it did not start: it uses them and leaves them running."""

from __future__ import annotations

import pytest

from vastar_fast.services import EmbeddedServices

from .helpers import pids_in, run_demo

pytestmark = pytest.mark.timeout(180)


def test_demo_uses_a_running_simulator_and_runtime_and_leaves_them_alone() -> None:
    with EmbeddedServices(ttft_ms=10, token_delay_ms=0) as svc:
        assert svc.runtime_socket and svc.simulator_url
        result = run_demo(
            "--runtime-socket",
            svc.runtime_socket,
            "--simulator-url",
            svc.simulator_url,
            "--no-color",
        )
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert f"Base URL: {svc.simulator_url}" in result.stdout
        assert "Starting an embedded" not in result.stdout
        assert pids_in(result.stdout) == []
        assert "The capital of France is Paris." in result.stdout
        # still usable after the demo ended
        assert svc.simulator is not None and svc.simulator.alive()
        assert svc.runtime is not None and svc.runtime.alive()
        again = run_demo(
            "--runtime-socket", svc.runtime_socket, "--simulator-url", svc.simulator_url, "--quiet"
        )
        assert again.returncode == 0, again.stderr


def test_demo_with_a_config_file_in_real_mode_reaches_base_url(tmp_path) -> None:
    """Real-API mode pointed at the local simulator through OPENAI_BASE_URL: no internet."""
    with EmbeddedServices(ttft_ms=0, token_delay_ms=0, runtime=False) as svc:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            "openai:\n"
            "  api_key: ${OPENAI_API_KEY}\n"
            "  base_url: ${OPENAI_BASE_URL:-https://api.openai.com}\n"
            "  model: gpt-4o-mini\n"
            "simulator:\n"
            "  enabled: true\n"
            "  base_url: http://127.0.0.1:1\n"
        )
        result = run_demo(
            "--config",
            str(cfg),
            "--no-color",
            OPENAI_API_KEY="sk-local-test",
            OPENAI_BASE_URL=svc.simulator_url,
            USE_SIMULATOR="false",
        )
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "Using OpenAI API (model gpt-4o-mini)" in result.stdout
        assert f"Base URL: {svc.simulator_url}" in result.stdout
        assert "sk-local-test" not in result.stdout + result.stderr
        assert len(pids_in(result.stdout)) == 1  # the embedded runtime only


def test_demo_with_a_missing_config_file() -> None:
    result = run_demo("--config", "/nonexistent/config.yaml", "--no-color", timeout=60)
    assert result.returncode == 2
    assert "config file not found: /nonexistent/config.yaml" in result.stderr
