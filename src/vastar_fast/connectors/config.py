"""Configuration of the OpenAI stream connector: YAML, ``${VAR}`` resolution, validation.

The file has the shape the SDK guide and the TypeScript example use::

    openai:
      api_key: ${OPENAI_API_KEY}          # resolved from the environment
      base_url: "https://api.openai.com"
      model: "gpt-3.5-turbo"
      timeout_ms: 60000
    runtime:
      tenant_id: "openai-connector"
      workspace_id: "default"
      timeout_ms: 60000
      # socket_path: /tmp/vastar-connector-runtime.sock   (optional)
      # use_tcp: false / tcp_host: 127.0.0.1 / tcp_port: 5000   (optional)
    simulator:
      enabled: false                       # USE_SIMULATOR=true|false overrides it
      base_url: "http://localhost:4545"

Why the strictness: the released example read ``config["openai"]["api_key"]`` and
failed with a bare ``KeyError`` or ``TypeError`` for a typo or a missing section. Here
every problem raises :class:`ConfigError` whose text names the file, the line, the key
and what to do, and unknown keys inside the known sections are errors (a misspelt
``modle:`` must not silently fall back to a default). Sections this module does not know
(a user's own ``features:``) are left alone.

Any string value may use ``${VAR}`` (empty when unset) or ``${VAR:-default}`` (the
default when VAR is unset or empty), anywhere in the string.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..configloader import ConfigError, env_reference, load_yaml, parse_bool, resolve_env
from ..types import DEFAULT_SOCKET_PATH, RuntimeConfig

__all__ = [
    "ConfigError",
    "ConnectorConfig",
    "MissingAPIKeyError",
    "OpenAIConfig",
    "RuntimeSection",
    "SimulatorConfig",
    "config_from_mapping",
    "default_config",
    "load_config",
    "parse_bool",
    "resolve_env",
]

PathLike = Union[str, "os.PathLike[str]"]


class MissingAPIKeyError(ConfigError):
    """Real-API mode without an API key."""


@dataclass(frozen=True)
class OpenAIConfig:
    """The ``openai:`` section. ``api_key`` is never included in ``repr``."""

    api_key: str = field(default="", repr=False)
    base_url: str = "https://api.openai.com"
    model: str = "gpt-3.5-turbo"
    timeout_ms: int = 60000
    #: The environment variable named by ``api_key: ${VAR}``, for error messages.
    api_key_env: Optional[str] = None


@dataclass(frozen=True)
class RuntimeSection:
    """The ``runtime:`` section: who we are to the runtime and where it listens."""

    tenant_id: str = "openai-connector"
    workspace_id: str = "default"
    timeout_ms: int = 60000
    socket_path: Optional[str] = None
    use_tcp: bool = False
    tcp_host: str = "127.0.0.1"
    tcp_port: int = 5000

    def to_runtime_config(self) -> RuntimeConfig:
        """The SDK's RuntimeConfig (the default socket path when none is configured)."""
        return RuntimeConfig(
            tenant_id=self.tenant_id,
            workspace_id=self.workspace_id,
            timeout_ms=self.timeout_ms,
            socket_path=self.socket_path or DEFAULT_SOCKET_PATH,
            use_tcp=self.use_tcp,
            tcp_host=self.tcp_host,
            tcp_port=self.tcp_port,
        )


@dataclass(frozen=True)
class SimulatorConfig:
    """The ``simulator:`` section."""

    enabled: bool = False
    base_url: str = "http://localhost:4545"


@dataclass(frozen=True)
class ConnectorConfig:
    """The whole, validated configuration of :class:`OpenAIStreamConnector`."""

    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    #: Where it came from (a file path or ``"<dict>"``), for error messages.
    source: str = "<dict>"
    #: Line of each key path in the file (``"openai.model" -> 4``), when read from YAML.
    lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def use_simulator(self) -> bool:
        return self.simulator.enabled

    @property
    def base_url(self) -> str:
        """The upstream actually called: the simulator's URL or the OpenAI base URL."""
        url = self.simulator.base_url if self.simulator.enabled else self.openai.base_url
        return url.rstrip("/")

    @property
    def chat_completions_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def require_api_key(self) -> None:
        """Raise :class:`MissingAPIKeyError` in real-API mode when no key is set.

        The simulator needs no key, so simulator mode never raises.
        """
        if self.simulator.enabled or self.openai.api_key:
            return
        env = self.openai.api_key_env or "OPENAI_API_KEY"
        raise MissingAPIKeyError(
            f"openai.api_key is not set and the simulator is disabled (real OpenAI API mode): "
            f"set it with `export {env}=sk-...`, or use the simulator "
            "(simulator.enabled: true, or USE_SIMULATOR=true)",
            source=self.source,
            line=self.lines.get("openai.api_key", self.lines.get("openai")),
            key="openai.api_key",
        )

    def with_simulator(self, enabled: bool, base_url: Optional[str] = None) -> ConnectorConfig:
        """A copy with the simulator switched on/off (and its URL replaced when given)."""
        sim = replace(self.simulator, enabled=enabled)
        if base_url is not None:
            sim = replace(sim, base_url=base_url)
        return replace(self, simulator=sim)

    def with_runtime(self, **changes: Any) -> ConnectorConfig:
        """A copy with runtime fields replaced (``socket_path=...``, ``use_tcp=True``...)."""
        return replace(self, runtime=replace(self.runtime, **changes))


# --------------------------------------------------------------------------- helpers
# ConfigError, resolve_env and parse_bool are the shared loader's (configloader.py); they
# are re-exported here for this module's users.


class _Reader:
    """Validates one raw mapping; knows the source and the key lines for messages."""

    def __init__(self, source: str, lines: Mapping[str, int], environ: Mapping[str, str]):
        self.source = source
        self.lines = lines
        self.environ = environ

    def error(self, message: str, key: str, line_of: Optional[str] = None) -> ConfigError:
        line = self.lines.get(line_of or key)
        if line is None and "." in key:
            line = self.lines.get(key.rsplit(".", 1)[0])
        return ConfigError(message, source=self.source, line=line, key=key)

    def section(
        self, data: Mapping[str, Any], name: str, known: Tuple[str, ...], required: bool
    ) -> Dict[str, Any]:
        if name not in data or data[name] is None:
            if required:
                raise self.error(
                    f"the '{name}:' section is missing; add it (see config.example.yaml)", name
                )
            return {}
        raw = data[name]
        if not isinstance(raw, dict):
            raise self.error(
                f"'{name}' must be a mapping of keys (indented under '{name}:'), "
                f"got {type(raw).__name__} {raw!r}",
                name,
            )
        for key in raw:
            if str(key) not in known:
                raise self.error(
                    f"unknown key '{name}.{key}'; the '{name}:' section accepts "
                    + ", ".join(known),
                    f"{name}.{key}",
                )
        return raw

    def value(self, section: Mapping[str, Any], path: str) -> Tuple[Any, List[str]]:
        """The value with ``${VAR}`` resolved (strings only) and the unset variables."""
        raw = section.get(path.rsplit(".", 1)[1])
        if isinstance(raw, str):
            return resolve_env(raw, self.environ)
        return raw, []

    def string(
        self,
        section: Mapping[str, Any],
        path: str,
        default: Optional[str],
        *,
        allow_empty: bool = False,
    ) -> str:
        key = path.rsplit(".", 1)[1]
        parent = path.rsplit(".", 1)[0]
        if key not in section:
            if default is None:
                raise self.error(
                    f"'{path}' is missing: add '{key}:' under the '{parent}:' section", path
                )
            return default
        value, missing = self.value(section, path)
        if value is None:
            value = ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(f"'{path}' must be a string, got {value!r}", path)
        text = str(value).strip()
        if not text and not allow_empty:
            hint = f" (environment variable {', '.join(missing)} is not set)" if missing else ""
            raise self.error(f"'{path}' is empty{hint}; give it a value", path)
        return text

    def integer(self, section: Mapping[str, Any], path: str, default: int, lo: int, hi: int) -> int:
        key = path.rsplit(".", 1)[1]
        if key not in section:
            return default
        value, _ = self.value(section, path)
        number: Optional[int] = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
        if number is None or not lo <= number <= hi:
            raise self.error(
                f"'{path}' must be a whole number between {lo} and {hi}, got {value!r}", path
            )
        return number

    def boolean(self, section: Mapping[str, Any], path: str, default: bool) -> bool:
        key = path.rsplit(".", 1)[1]
        if key not in section:
            return default
        value, _ = self.value(section, path)
        try:
            return parse_bool(value, f"'{path}'")
        except ValueError as exc:
            raise self.error(str(exc), path) from None

    def url(self, section: Mapping[str, Any], path: str, default: Optional[str]) -> str:
        text = self.string(section, path, default)
        if not re.match(r"^https?://[^/\s]+", text):
            raise self.error(f"'{path}' must be an http:// or https:// URL, got {text!r}", path)
        return text.rstrip("/")


_OPENAI_KEYS = ("api_key", "base_url", "model", "timeout_ms")
_RUNTIME_KEYS = (
    "tenant_id",
    "workspace_id",
    "timeout_ms",
    "socket_path",
    "use_tcp",
    "tcp_host",
    "tcp_port",
)
_SIMULATOR_KEYS = ("enabled", "base_url")
_MAX_TIMEOUT_MS = 24 * 3600 * 1000


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "<dict>",
    lines: Optional[Mapping[str, int]] = None,
    environ: Mapping[str, str] = os.environ,
) -> ConnectorConfig:
    """Validate a parsed configuration mapping (as ``yaml.safe_load`` returns it).

    ``USE_SIMULATOR`` in ``environ`` overrides ``simulator.enabled``.
    """
    reader = _Reader(source, lines or {}, environ)
    if not isinstance(data, Mapping):
        raise ConfigError(
            "the configuration must be a mapping with 'openai:', 'runtime:' and "
            f"'simulator:' sections, got {type(data).__name__}",
            source=source,
            line=1 if lines is not None else None,
        )

    oa = reader.section(data, "openai", _OPENAI_KEYS, required=True)
    key_env = env_reference(oa.get("api_key"))
    openai = OpenAIConfig(
        api_key=reader.string(oa, "openai.api_key", "", allow_empty=True),
        base_url=reader.url(oa, "openai.base_url", None),
        model=reader.string(oa, "openai.model", None),
        timeout_ms=reader.integer(oa, "openai.timeout_ms", 60000, 1, _MAX_TIMEOUT_MS),
        api_key_env=key_env,
    )

    rt = reader.section(data, "runtime", _RUNTIME_KEYS, required=False)
    socket_path = reader.string(rt, "runtime.socket_path", "", allow_empty=True) or None
    runtime = RuntimeSection(
        tenant_id=reader.string(rt, "runtime.tenant_id", "openai-connector"),
        workspace_id=reader.string(rt, "runtime.workspace_id", "default", allow_empty=True),
        timeout_ms=reader.integer(rt, "runtime.timeout_ms", 60000, 1, _MAX_TIMEOUT_MS),
        socket_path=socket_path,
        use_tcp=reader.boolean(rt, "runtime.use_tcp", False),
        tcp_host=reader.string(rt, "runtime.tcp_host", "127.0.0.1"),
        tcp_port=reader.integer(rt, "runtime.tcp_port", 5000, 1, 65535),
    )

    sim = reader.section(data, "simulator", _SIMULATOR_KEYS, required=False)
    enabled = reader.boolean(sim, "simulator.enabled", False)
    override = environ.get("USE_SIMULATOR")
    if override is not None and override.strip():
        try:
            enabled = parse_bool(override, "the environment variable USE_SIMULATOR")
        except ValueError as exc:
            raise ConfigError(f"{exc} (or unset it)", key="USE_SIMULATOR") from None
    simulator = SimulatorConfig(
        enabled=enabled,
        base_url=reader.url(sim, "simulator.base_url", "http://localhost:4545"),
    )
    return ConnectorConfig(
        openai=openai,
        runtime=runtime,
        simulator=simulator,
        source=source,
        lines=dict(lines or {}),
    )


def load_config(
    path: PathLike = "config.yaml", environ: Mapping[str, str] = os.environ
) -> ConnectorConfig:
    """Read, resolve and validate a YAML configuration file.

    Raises :class:`ConfigError` for a missing or unreadable file, malformed YAML (with the
    line and column) and missing or invalid keys (with the key path and its line).
    """
    source = os.fspath(path)
    data, lines = load_yaml(
        source,
        "config file",
        "create it from the example (`cp config.example.yaml config.yaml`) or pass the path "
        "of an existing one",
    )
    if data is None:
        raise ConfigError(
            "the config file is empty; it needs at least an 'openai:' section "
            "(see config.example.yaml)",
            source=source,
        )
    return config_from_mapping(data, source=source, lines=lines, environ=environ)


def default_config(
    *,
    simulator_url: str = "http://localhost:4545",
    use_simulator: bool = True,
    environ: Mapping[str, str] = os.environ,
) -> ConnectorConfig:
    """The seed's example configuration, built without a file (used by ``vastar demo``).

    The API key comes from ``OPENAI_API_KEY``; ``USE_SIMULATOR`` still overrides the mode.
    """
    data = {
        "openai": {
            "api_key": "${OPENAI_API_KEY}",
            "base_url": "${OPENAI_BASE_URL:-https://api.openai.com}",
            "model": "${OPENAI_MODEL:-gpt-3.5-turbo}",
            "timeout_ms": 60000,
        },
        "runtime": {
            "tenant_id": "openai-connector",
            "workspace_id": "default",
            "timeout_ms": 60000,
        },
        "simulator": {"enabled": use_simulator, "base_url": simulator_url},
    }
    return config_from_mapping(data, source="<built-in config>", environ=environ)
