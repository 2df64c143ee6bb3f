"""Config loading: ${VAR} resolution, USE_SIMULATOR, and error messages naming key and line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Dict

import pytest

from vastar_fast.connectors.config import (
    ConfigError,
    MissingAPIKeyError,
    config_from_mapping,
    default_config,
    load_config,
    resolve_env,
)
from vastar_fast.types import DEFAULT_SOCKET_PATH

SEED_CONFIG = """\
# OpenAI API Configuration
openai:
  api_key: ${OPENAI_API_KEY}    # Set via environment variable
  base_url: "https://api.openai.com"
  model: "gpt-3.5-turbo"
  timeout_ms: 60000

# Vastar Runtime Configuration
runtime:
  tenant_id: "openai-connector"
  workspace_id: "default"
  timeout_ms: 60000

# Simulator Configuration (for testing)
simulator:
  enabled: false                 # true = use simulator, false = use real API
  base_url: "http://localhost:4545"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_seed_config_resolves_the_key_from_the_environment(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG), environ={"OPENAI_API_KEY": "sk-abc"})
    assert cfg.openai.api_key == "sk-abc"
    assert cfg.openai.api_key_env == "OPENAI_API_KEY"
    assert cfg.openai.model == "gpt-3.5-turbo"
    assert cfg.openai.timeout_ms == 60000
    assert cfg.runtime.tenant_id == "openai-connector"
    assert cfg.runtime.workspace_id == "default"
    assert not cfg.use_simulator
    assert cfg.chat_completions_url == "https://api.openai.com/v1/chat/completions"
    rc = cfg.runtime.to_runtime_config()
    assert (rc.tenant_id, rc.workspace_id, rc.timeout_ms) == ("openai-connector", "default", 60000)
    assert rc.socket_path == DEFAULT_SOCKET_PATH and not rc.use_tcp


def test_the_key_never_appears_in_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG), environ={"OPENAI_API_KEY": "sk-secret-123"})
    assert "sk-secret-123" not in repr(cfg)


@pytest.mark.parametrize(
    "text, env, expected",
    [
        ("${A}", {"A": "x"}, ("x", [])),
        ("${A}", {}, ("", ["A"])),
        ("${A:-dflt}", {}, ("dflt", [])),
        ("${A:-dflt}", {"A": ""}, ("dflt", [])),
        ("${A:-dflt}", {"A": "set"}, ("set", [])),
        ("http://${H:-localhost}:${P:-4545}/x", {"P": "9"}, ("http://localhost:9/x", [])),
        ("plain $HOME {A}", {"HOME": "/h"}, ("plain $HOME {A}", [])),
    ],
)
def test_resolve_env(text: str, env: Dict[str, str], expected: tuple) -> None:
    assert resolve_env(text, env) == expected


def test_env_defaults_in_any_string_and_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        openai:
          api_key: ${MY_KEY:-sk-default}
          base_url: ${BASE:-http://127.0.0.1:9999}/
          model: ${MODEL:-gpt-4o-mini}
          timeout_ms: ${TMO:-1234}
        runtime:
          tenant_id: t1
          socket_path: ${SOCK:-/tmp/x.sock}
          use_tcp: ${USE_TCP:-false}
          tcp_port: ${PORT:-6000}
        simulator:
          enabled: ${SIM:-true}
          base_url: http://localhost:4545
        """,
    )
    cfg = load_config(path, environ={"BASE": "http://example.test", "PORT": "7001"})
    assert cfg.openai.api_key == "sk-default"
    assert cfg.openai.base_url == "http://example.test"
    assert cfg.openai.model == "gpt-4o-mini"
    assert cfg.openai.timeout_ms == 1234
    assert cfg.runtime.socket_path == "/tmp/x.sock"
    assert cfg.runtime.use_tcp is False
    assert cfg.runtime.tcp_port == 7001
    assert cfg.use_simulator is True
    assert cfg.base_url == "http://localhost:4545"


@pytest.mark.parametrize(
    "value, expected", [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False)]
)
def test_use_simulator_overrides_the_file(tmp_path: Path, value: str, expected: bool) -> None:
    text = SEED_CONFIG.replace(
        "enabled: false", "enabled: true" if not expected else "enabled: false"
    )
    cfg = load_config(write(tmp_path, text), environ={"USE_SIMULATOR": value})
    assert cfg.use_simulator is expected
    assert cfg.base_url == ("http://localhost:4545" if expected else "https://api.openai.com")


def test_bad_use_simulator_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="USE_SIMULATOR must be true or false, got 'maybe'"):
        load_config(write(tmp_path, SEED_CONFIG), environ={"USE_SIMULATOR": "maybe"})


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    text = str(info.value)
    assert "config file not found" in text and "nope.yaml" in text
    assert "cp config.example.yaml config.yaml" in text


def test_malformed_yaml_gives_the_line(tmp_path: Path) -> None:
    bad = SEED_CONFIG.replace('  model: "gpt-3.5-turbo"', '  model: "gpt-3.5-turbo\n   oops: [')
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "malformed YAML" in str(info.value)
    assert info.value.line is not None and info.value.line >= 5
    assert f"{path}:{info.value.line}:" in str(info.value)


def test_bad_indentation_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "openai:\n  model: x\n base_url: y\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.line == 3
    assert "line 3" in str(info.value)


def test_missing_key_is_named_with_its_section_line(tmp_path: Path) -> None:
    text = SEED_CONFIG.replace('  model: "gpt-3.5-turbo"\n', "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == "openai.model"
    assert info.value.line == 2  # the 'openai:' line
    assert "'openai.model' is missing" in str(info.value)
    assert ":2: " in str(info.value)


def test_missing_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'openai:' section is missing"):
        load_config(write(tmp_path, "runtime:\n  tenant_id: x\n"), environ={})


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, "# nothing\n"), environ={})


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    text = SEED_CONFIG.replace('  model: "gpt-3.5-turbo"', '  modle: "gpt-3.5-turbo"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert info.value.key == "openai.modle"
    assert info.value.line == 5
    assert "unknown key 'openai.modle'" in str(info.value)


def test_user_sections_are_left_alone(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG + "features:\n  anything: 1\n"), environ={})
    assert cfg.openai.model == "gpt-3.5-turbo"


@pytest.mark.parametrize(
    "old, new, key, line",
    [
        ("timeout_ms: 60000\n\n# Vastar", "timeout_ms: soon\n\n# Vastar", "openai.timeout_ms", 6),
        ('base_url: "https://api.openai.com"', "base_url: ftp://x", "openai.base_url", 4),
        ("enabled: false", "enabled: perhaps", "simulator.enabled", 16),
        ('tenant_id: "openai-connector"', "tenant_id: [1, 2]", "runtime.tenant_id", 10),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, old: str, new: str, key: str, line: int) -> None:
    assert old in SEED_CONFIG
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SEED_CONFIG.replace(old, new, 1)), environ={})
    assert info.value.key == key
    assert info.value.line == line
    assert f"'{key}'" in str(info.value)


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'openai' must be a mapping"):
        load_config(write(tmp_path, "openai: just-a-string\n"), environ={})


def test_empty_required_value_names_the_unset_variable() -> None:
    data = {"openai": {"base_url": "${NOPE_URL}", "model": "m"}}
    with pytest.raises(ConfigError, match="environment variable NOPE_URL is not set"):
        config_from_mapping(data, environ={})


def test_missing_key_in_real_mode_is_refused_with_the_variable_name(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG), environ={})
    with pytest.raises(MissingAPIKeyError) as info:
        cfg.require_api_key()
    text = str(info.value)
    assert "openai.api_key is not set" in text
    assert "export OPENAI_API_KEY=" in text
    assert "USE_SIMULATOR=true" in text
    assert info.value.line == 3


def test_simulator_mode_needs_no_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG), environ={"USE_SIMULATOR": "true"})
    cfg.require_api_key()  # does not raise
    assert cfg.openai.api_key == ""


def test_default_config_and_copies() -> None:
    cfg = default_config(simulator_url="http://127.0.0.1:1234", environ={})
    assert cfg.use_simulator and cfg.base_url == "http://127.0.0.1:1234"
    real = cfg.with_simulator(False)
    assert real.base_url == "https://api.openai.com"
    with pytest.raises(MissingAPIKeyError):
        real.require_api_key()
    tcp = cfg.with_runtime(use_tcp=True, tcp_port=7777).runtime.to_runtime_config()
    assert tcp.use_tcp and tcp.tcp_port == 7777
    env_cfg = default_config(
        environ={"OPENAI_BASE_URL": "http://127.0.0.1:9", "USE_SIMULATOR": "0"}
    )
    assert env_cfg.base_url == "http://127.0.0.1:9"
