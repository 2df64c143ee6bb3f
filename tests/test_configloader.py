"""One strict configuration loader for the runtime settings and the connector config."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastar_fast import configloader
from vastar_fast.connectors import config as connector_config
from vastar_fast.runtime import config as runtime_config


def test_one_error_class_for_both() -> None:
    assert runtime_config.ConfigError is configloader.ConfigError
    assert connector_config.ConfigError is configloader.ConfigError
    assert connector_config.resolve_env is configloader.resolve_env


def test_runtime_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rt.yaml"
    path.write_text(
        "limits:\n  credits_per_connection: 4\ntenants:\n  acme:\n    max_concurent: 3\n"
    )
    with pytest.raises(configloader.ConfigError) as info:
        runtime_config.load_settings(str(path))
    err = info.value
    assert str(err).startswith(f"{path}:5: tenants.acme.max_concurent: unknown key")
    assert err.line == 5 and err.key == "tenants.acme.max_concurent"


def test_range_errors_carry_the_line_too(tmp_path: Path) -> None:
    path = tmp_path / "rt.yaml"
    path.write_text("retry:\n  max_attempts: 0\n")
    with pytest.raises(configloader.ConfigError, match=r":2: retry.max_attempts: must be greater"):
        runtime_config.load_settings(str(path))


def test_runtime_values_resolve_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RT_TOKEN", "t" * 32)
    monkeypatch.setenv("RT_LIMIT", "7")
    path = tmp_path / "rt.yaml"
    path.write_text(
        "security:\n  token: ${RT_TOKEN}\n"
        "tenants:\n  a:\n    max_concurrent: ${RT_LIMIT}\n    ca_file: ${RT_CA:-}\n"
    )
    settings = runtime_config.load_settings(str(path))
    assert settings.security.token == "t" * 32
    assert settings.tenants["a"].max_concurrent == 7
    assert settings.tenants["a"].ca_file is None  # empty default: not set
    assert "t" * 32 not in repr(settings)  # secrets stay out of reprs (and logs)


def test_unset_variable_for_a_required_value_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rt.yaml"
    path.write_text("log_level: ${NO_SUCH_VAR_FOR_TEST}\n")
    with pytest.raises(configloader.ConfigError, match="NO_SUCH_VAR_FOR_TEST is not set"):
        runtime_config.load_settings(str(path))


def test_quoted_literal_is_not_coerced() -> None:
    with pytest.raises(configloader.ConfigError, match="expected an integer"):
        runtime_config.settings_from_mapping({"retry": {"max_attempts": "3"}})


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rt.yaml"
    path.write_text("limits:\n  credits_per_connection: [1,\n")
    with pytest.raises(configloader.ConfigError, match=r"malformed YAML \(line \d+"):
        runtime_config.load_settings(str(path))
