"""The runtime daemon's settings: typed dataclasses, loaded from YAML with clear errors.

Every value has a default, so the daemon runs without a config file. A YAML file
overrides any subset; an unknown key, a wrong type or an out-of-range value raises
:class:`ConfigError` naming the offending key path (``tenants.acme.max_concurrent``),
because a typo in a policy file must not silently fall back to a permissive default.

Example (every key shown with its default unless noted)::

    listen:
      socket: /tmp/vastar-connector-runtime.sock   # null: no Unix socket
      tcp: null                                    # e.g. "127.0.0.1:5000"
    log_level: WARNING
    metrics_port: null                             # e.g. 9464 (needs prometheus-client)
    limits:
      credits_per_connection: 1024
      default_deadline_ms: 60000                   # used when deadline_at_ms is 0
      shutdown_grace_s: 10
    http:
      pool_limit: 1000
      per_host_limit: 256
      keepalive_timeout_s: 30
      connect_timeout_s: 10
    breaker:
      failure_threshold: 5
      reset_timeout_s: 30
    retry:
      max_attempts: 3
      base_delay_ms: 50
      max_delay_ms: 2000
    tenants:
      default:
        allowed_hosts: ["*"]
        max_concurrent: 1024
        max_request_bytes: 10000000
        max_response_bytes: 10000000
        tls_verify: true
        ca_file: null
      acme:
        allowed_hosts: ["api.openai.com", "*.example.com", "127.0.0.1:*"]
        max_concurrent: 64
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

__all__ = [
    "BreakerSettings",
    "ConfigError",
    "HTTPSettings",
    "LimitSettings",
    "ListenSettings",
    "RetrySettings",
    "RuntimeSettings",
    "TenantPolicy",
    "load_settings",
    "parse_tcp",
    "settings_from_mapping",
]

DEFAULT_TENANT = "default"

# The largest body that still fits the released clients' 10 MiB frame cap once wrapped in
# JSON and FlatBuffers for plain-ASCII text; the frame size is re-checked after encoding.
_RESPONSE_CAP = 10 * 1024 * 1024 - 64 * 1024


class ConfigError(ValueError):
    """A config file or option that cannot be used; the message names the key."""


@dataclass
class ListenSettings:
    """Where the daemon listens: a Unix socket path and/or a TCP ``host:port``."""

    socket: Optional[str] = None
    tcp: Optional[str] = None


@dataclass
class LimitSettings:
    credits_per_connection: int = 1024
    """Requests one connection may have in flight; the excess gets RATE_LIMITED at once."""
    default_deadline_ms: int = 60000
    """Deadline for requests whose deadline_at_ms is 0 ("none")."""
    shutdown_grace_s: float = 10.0
    """How long SIGTERM waits for in-flight requests before abandoning them."""


@dataclass
class HTTPSettings:
    pool_limit: int = 1000
    """Upstream connections open at once, all hosts together (0: unlimited)."""
    per_host_limit: int = 256
    """Upstream connections open at once to one host (0: unlimited)."""
    keepalive_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0


@dataclass
class BreakerSettings:
    failure_threshold: int = 5
    """Consecutive connection failures to one host that open its breaker."""
    reset_timeout_s: float = 30.0
    """How long an open breaker fails fast before letting one probe through."""


@dataclass
class RetrySettings:
    max_attempts: int = 3
    """Attempts in all (1: never retry)."""
    base_delay_ms: float = 50.0
    max_delay_ms: float = 2000.0


@dataclass
class TenantPolicy:
    """What one tenant may do. The ``default`` policy covers tenants not listed."""

    allowed_hosts: List[str] = field(default_factory=lambda: ["*"])
    """Glob patterns matched against the URL's host and against ``host:port``."""
    max_concurrent: int = 1024
    max_request_bytes: int = 10_000_000
    max_response_bytes: int = 10_000_000
    tls_verify: bool = True
    """Verify upstream TLS certificates; turn off only explicitly, per tenant."""
    ca_file: Optional[str] = None
    """PEM bundle of extra CAs to trust for this tenant's upstreams."""


@dataclass
class RuntimeSettings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    log_level: str = "WARNING"
    metrics_port: Optional[int] = None
    limits: LimitSettings = field(default_factory=LimitSettings)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    tenants: Dict[str, TenantPolicy] = field(
        default_factory=lambda: {DEFAULT_TENANT: TenantPolicy()}
    )

    def policy_for(self, tenant_id: str) -> TenantPolicy:
        """The tenant's policy, or the ``default`` one."""
        policy = self.tenants.get(tenant_id)
        return policy if policy is not None else self.tenants[DEFAULT_TENANT]

    def validate(self) -> None:
        """Check ranges and cross-field rules; raises ConfigError naming the key."""
        _positive("limits.credits_per_connection", self.limits.credits_per_connection)
        _positive("limits.default_deadline_ms", self.limits.default_deadline_ms)
        _non_negative("limits.shutdown_grace_s", self.limits.shutdown_grace_s)
        _non_negative("http.pool_limit", self.http.pool_limit)
        _non_negative("http.per_host_limit", self.http.per_host_limit)
        _positive("http.keepalive_timeout_s", self.http.keepalive_timeout_s)
        _positive("http.connect_timeout_s", self.http.connect_timeout_s)
        _positive("breaker.failure_threshold", self.breaker.failure_threshold)
        _positive("breaker.reset_timeout_s", self.breaker.reset_timeout_s)
        _positive("retry.max_attempts", self.retry.max_attempts)
        _non_negative("retry.base_delay_ms", self.retry.base_delay_ms)
        _non_negative("retry.max_delay_ms", self.retry.max_delay_ms)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"log_level: {self.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: {self.metrics_port} is not a port number")
        if self.listen.tcp is not None:
            parse_tcp(self.listen.tcp, "listen.tcp")
        if DEFAULT_TENANT not in self.tenants:
            self.tenants[DEFAULT_TENANT] = TenantPolicy()
        for name, policy in self.tenants.items():
            where = f"tenants.{name}"
            _positive(f"{where}.max_concurrent", policy.max_concurrent)
            _positive(f"{where}.max_request_bytes", policy.max_request_bytes)
            _positive(f"{where}.max_response_bytes", policy.max_response_bytes)
            if policy.max_response_bytes > _RESPONSE_CAP:
                raise ConfigError(
                    f"{where}.max_response_bytes: {policy.max_response_bytes} cannot fit a "
                    f"released client's 10 MiB frame; use at most {_RESPONSE_CAP}"
                )
            for i, pattern in enumerate(policy.allowed_hosts):
                if not isinstance(pattern, str) or not pattern:
                    raise ConfigError(f"{where}.allowed_hosts[{i}]: must be a non-empty string")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value}")


def _non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{key}: must not be negative, got {value}")


def parse_tcp(text: str, key: str = "--tcp") -> Tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` / ``PORT`` for loopback) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:5000)") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0-65535")
    return host, port


_T = TypeVar("_T")
_SECTIONS: Dict[str, type] = {
    "listen": ListenSettings,
    "limits": LimitSettings,
    "http": HTTPSettings,
    "breaker": BreakerSettings,
    "retry": RetrySettings,
}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check one scalar against its annotation (given as a string by the dataclass)."""
    optional = kind.startswith("Optional[")
    base = kind[len("Optional[") : -1] if optional else kind
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if base == "List[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return list(value)
    raise ConfigError(f"{key}: unsupported type {kind}")  # pragma: no cover


def _build(cls: Type[_T], data: Any, where: str) -> _T:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        f = fields.get(str(key))
        if f is None:
            raise ConfigError(
                f"{path}: unknown key; known keys here are {', '.join(sorted(fields))}"
            )
        kwargs[f.name] = _coerce(path, value, str(f.type))
    return cls(**kwargs)


def settings_from_mapping(data: Any) -> RuntimeSettings:
    """Build and validate settings from parsed YAML (a mapping, or None for defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("the config file must hold a mapping of keys at the top level")
    settings = RuntimeSettings()
    top = {"log_level": "str", "metrics_port": "Optional[int]"}
    for key, value in data.items():
        key = str(key)
        if key in _SECTIONS:
            setattr(settings, key, _build(_SECTIONS[key], value, key))
        elif key in top:
            setattr(settings, key, _coerce(key, value, top[key]))
        elif key == "tenants":
            if not isinstance(value, Mapping) or not value:
                raise ConfigError("tenants: expected a mapping of tenant id to policy")
            settings.tenants = {
                str(name): _build(TenantPolicy, policy, f"tenants.{name}")
                for name, policy in value.items()
            }
        else:
            known = sorted([*_SECTIONS, *top, "tenants"])
            raise ConfigError(f"{key}: unknown key; known top-level keys are {', '.join(known)}")
    settings.validate()
    return settings


def load_settings(path: Optional[str]) -> RuntimeSettings:
    """Settings from a YAML file (None: the defaults)."""
    if path is None:
        settings = RuntimeSettings()
        settings.validate()
        return settings
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - PyYAML is in the runtime extra
        raise ConfigError(
            f"--config {path}: reading YAML needs PyYAML; pip install 'vastar-fast[runtime]'"
        ) from None
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read the file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    try:
        return settings_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def level_number(name: str) -> int:
    """A logging level name -> its number (validated by RuntimeSettings.validate)."""
    return int(logging.getLevelName(name.upper()))
