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
    spin_us: null                                  # poll this long after a request event
    security:
      token: null                                  # e.g. "${VASTAR_RUNTIME_TOKEN}"
    limits:
      credits_per_connection: 1024
      default_deadline_ms: 60000                   # used when deadline_at_ms is 0
      shutdown_grace_s: 10
      max_connections: 1024
      idle_timeout_s: 300
      frame_timeout_s: 30
      max_request_headers: 256
      max_header_bytes: 65536
      max_frame_headers: 64
      max_unsent_bytes: 4194304
    http:
      pool_limit: 1000
      per_host_limit: 256
      keepalive_timeout_s: 30
      connect_timeout_s: 10
      follow_redirects: true
      max_redirects: 10
    breaker:
      failure_threshold: 5
      reset_timeout_s: 30
    retry:
      max_attempts: 3
      base_delay_ms: 50
      max_delay_ms: 2000
    tracing:
      otel: false                                  # spans via OTEL_* (needs the otel extra)
    tenants:
      default:
        allowed_hosts: ["*"]
        max_concurrent: 1024
        max_request_bytes: 10000000
        max_response_bytes: 10000000
        tls_verify: true
        ca_file: null
        allow_link_local: false
        token: null
      acme:
        allowed_hosts: ["api.openai.com", "*.example.com", "127.0.0.1:*"]
        max_concurrent: 64
    shared_state:                                  # only needed by quotas
      redis_url: null                              # e.g. "redis://127.0.0.1:6379/0"
    quotas: {}                                     # e.g. (docs/runtime/quotas.md):
      # openai:
      #   hosts: ["api.openai.com"]
      #   requests: 600
      #   tokens: 60000
      #   window_s: 60
      #   on_backend_failure: local_share
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..configloader import ConfigError, Source, build_dataclass, load_yaml

__all__ = [
    "DEFAULT_SPIN_US",
    "MAX_SPIN_US",
    "BreakerSettings",
    "ConfigError",
    "HTTPSettings",
    "LimitSettings",
    "ListenSettings",
    "QuotaSettings",
    "RetrySettings",
    "RuntimeSettings",
    "SecuritySettings",
    "SharedStateSettings",
    "TenantPolicy",
    "TracingSettings",
    "load_settings",
    "parse_tcp",
    "settings_from_mapping",
]

DEFAULT_TENANT = "default"

DEFAULT_SPIN_US = 300
"""The daemon's polling window (``spin_us``) on a machine with at least 2 usable CPUs:
longer than the gaps between one request's events on loopback (measured,
docs/decisions.md), short enough that an idle daemon sleeps almost at once."""
MAX_SPIN_US = 100_000

# The largest body that still fits the released clients' 10 MiB frame cap once wrapped in
# JSON and FlatBuffers for plain-ASCII text; the frame size is re-checked after encoding.
_RESPONSE_CAP = 10 * 1024 * 1024 - 64 * 1024


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
    max_connections: int = 1024
    """Client connections open at once; further ones get an error answer and are closed."""
    idle_timeout_s: float = 300.0
    """A client connection with nothing in flight and nothing received for this long is
    closed."""
    frame_timeout_s: float = 30.0
    """A frame begun but not finished within this long closes its connection."""
    max_request_headers: int = 256
    """HTTP headers a request may carry (the payload's ``headers``)."""
    max_header_bytes: int = 65536
    """Bytes of HTTP header names and values a request may carry."""
    max_frame_headers: int = 64
    """Entries of an ExecuteRequest's KeyValue list (extensions, token)."""
    max_unsent_bytes: int = 4 * 1024 * 1024
    """Answers waiting to be sent to one client: above this, the runtime stops reading
    that client's requests (and its streamed upstreams) until it catches up."""


@dataclass
class HTTPSettings:
    pool_limit: int = 1000
    """Upstream connections open at once, all hosts together (0: unlimited)."""
    per_host_limit: int = 256
    """Upstream connections open at once to one host (0: unlimited)."""
    keepalive_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    follow_redirects: bool = True
    """Follow 3xx redirects, each hop checked against the tenant's policy; credentials
    are not sent across origins. False: the 3xx answer goes back to the client."""
    max_redirects: int = 10
    """Redirect hops followed for one request; the next one fails PERMANENT."""


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
class SecuritySettings:
    token: Optional[str] = field(default=None, repr=False)
    """When set, every request must carry it (ExecuteRequest KeyValue ``vastar-token``);
    also what allows ``listen.tcp`` beyond loopback."""


@dataclass
class TracingSettings:
    otel: bool = False
    """Record OpenTelemetry spans (one per request, one per upstream attempt) and export
    them as the ``OTEL_*`` environment variables say (OTLP by default); needs the
    ``otel`` extra. The same as ``--otel``. Trace context is continued either way."""


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
    """PEM bundle of extra CAs to trust for this tenant's upstreams (beside the system's)."""
    allow_link_local: bool = False
    """Allow upstream addresses in 169.254.0.0/16 and fe80::/10 (cloud metadata
    services live there); denied unless a tenant says so."""
    token: Optional[str] = field(default=None, repr=False)
    """When set, requests claiming this tenant must carry it (``vastar-token``): the
    tenant id is then proven, not just asserted."""


# ---------------------------------------------------------------- fleet quotas
BACKEND_FAILURE_MODES = ("local_share", "open", "closed")


@dataclass
class SharedStateSettings:
    """Where runtimes share state with each other (today: the counters of ``quotas``)."""

    redis_url: Optional[str] = field(default=None, repr=False)
    """The Redis server every runtime of the fleet uses: ``redis://[:password@]host:port/db``,
    ``rediss://...`` (TLS) or ``unix:///path/to/redis.sock[?db=N]``. Needed when
    ``quotas`` is set. The runtime has its own Redis client; the ``redis`` extra
    (``pip install 'vastar-fast[redis]'``) adds hiredis, which parses its replies faster."""
    key_prefix: str = "vastar:"
    """Prefix of every Redis key the runtimes use; fleets sharing one Redis database for
    different purposes (or different fleets) need different prefixes."""
    timeout_ms: float = 100.0
    """How long one Redis call may take; a slower one counts as a failure and the request
    is decided by its quota's ``on_backend_failure``."""
    breaker_failures: int = 3
    """Consecutive failed Redis calls that stop the runtime from calling Redis (every
    quota runs on its ``on_backend_failure`` mode) until a probe succeeds."""
    retry_s: float = 1.0
    """How often a runtime that stopped calling Redis probes it again."""
    heartbeat_s: float = 1.0
    """How often each runtime worker process tells Redis it is alive (and refreshes its
    copy of the fleet's counters); one silent for three heartbeats counts as gone."""
    assumed_runtimes: int = 1
    """How many live runtime workers ``local_share`` divides a quota by when this one has
    not counted them yet (Redis unreachable since it started)."""


@dataclass
class QuotaSettings:
    """A provider's limit shared by every runtime of the fleet (docs/runtime/quotas.md)."""

    hosts: List[str] = field(default_factory=list)
    """Glob patterns matched against the upstream host and ``host:port``, as in
    ``tenants.<id>.allowed_hosts``; the first quota (in file order) that matches a request
    applies to it."""
    api_keys: List[str] = field(default_factory=list)
    """When not empty, the quota applies only to requests whose API key (``Authorization:
    Bearer``, ``x-api-key``, ``api-key``, ``x-goog-api-key`` or ``?key=``) has one of these
    SHA-256 hex digests (``printf %s "$KEY" | sha256sum``); the raw key is never
    configured, stored or logged."""
    per_key: bool = False
    """Count each API key (by its hash) separately, each with the whole budget (what
    providers do for keys of different organizations); false: one budget for all."""
    requests: Optional[int] = None
    """Requests per window (null: not limited)."""
    tokens: Optional[int] = None
    """Tokens per window, prompt plus completion (null: not limited)."""
    window_s: float = 60.0
    """The window: in any ``window_s`` seconds the fleet sends at most ``requests``
    requests and ``tokens`` tokens."""
    bucket_ms: Optional[float] = None
    """The counters' resolution (null: a hundredth of the window); a charge lasts between
    ``window_s`` + ``guard_ms`` and that plus one bucket."""
    guard_ms: float = 100.0
    """Added to the window before a charge expires, to cover how much later than its
    admission a request reaches the provider. A runtime admitting often while the fleet
    is far from the limits fetches allowances ahead (leases) and uses each for at most
    half of it (0: no leases, one Redis round trip per request)."""
    prompt_bytes_per_token: float = 1.0
    """The token estimate reserved before the answer is the request body's bytes divided
    by this, plus ``max_tokens``; 1 can never be too low (a token is at least one byte),
    about 4 fits English text but may reserve too little for other text."""
    default_max_tokens: int = 4096
    """Completion tokens reserved for a JSON request that names no limit (``max_tokens``,
    ``max_completion_tokens``, ``max_output_tokens``, ...; embeddings reserve none)."""
    on_backend_failure: str = "local_share"
    """When Redis cannot be reached: ``local_share`` (each runtime keeps to its share:
    the limits divided by the live runtime workers, counted by their heartbeats),
    ``open`` (requests go uncounted) or ``closed`` (requests end RATE_LIMITED)."""


@dataclass
class RuntimeSettings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    log_level: str = "WARNING"
    metrics_port: Optional[int] = None
    spin_us: Optional[int] = None
    """Microseconds the event loop keeps polling, instead of sleeping, after a request
    starts or ends, where the gaps after such events have been shorter than that (0:
    never; at most 100000). null: `vastar runtime` polls for 300 us when it has at least
    2 usable CPUs and never on one; an embedded `RuntimeServer` never. `--spin-us` wins
    over it. A polling worker uses up to a CPU (docs/runtime/operations.md)."""
    limits: LimitSettings = field(default_factory=LimitSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    tenants: Dict[str, TenantPolicy] = field(
        default_factory=lambda: {DEFAULT_TENANT: TenantPolicy()}
    )
    shared_state: SharedStateSettings = field(default_factory=SharedStateSettings)
    quotas: Dict[str, QuotaSettings] = field(default_factory=dict)
    """Fleet-wide provider quotas by name, counted in ``shared_state``'s Redis; empty: no
    quotas (and Redis is never used)."""

    def policy_for(self, tenant_id: str) -> TenantPolicy:
        """The tenant's policy, or the ``default`` one."""
        policy = self.tenants.get(tenant_id)
        return policy if policy is not None else self.tenants[DEFAULT_TENANT]

    def validate(self, source: Optional[Source] = None) -> None:
        """Check ranges and cross-field rules; raises ConfigError naming the key (and its
        line when the settings came from a file)."""
        src = source if source is not None else Source("<settings>")

        def positive(key: str, value: float) -> None:
            if value <= 0:
                raise src.error(key, f"must be greater than 0, got {value}")

        def non_negative(key: str, value: float) -> None:
            if value < 0:
                raise src.error(key, f"must not be negative, got {value}")

        limits, http = self.limits, self.http
        positive("limits.credits_per_connection", limits.credits_per_connection)
        positive("limits.default_deadline_ms", limits.default_deadline_ms)
        non_negative("limits.shutdown_grace_s", limits.shutdown_grace_s)
        positive("limits.max_connections", limits.max_connections)
        positive("limits.idle_timeout_s", limits.idle_timeout_s)
        positive("limits.frame_timeout_s", limits.frame_timeout_s)
        positive("limits.max_request_headers", limits.max_request_headers)
        positive("limits.max_header_bytes", limits.max_header_bytes)
        positive("limits.max_frame_headers", limits.max_frame_headers)
        positive("limits.max_unsent_bytes", limits.max_unsent_bytes)
        non_negative("http.pool_limit", http.pool_limit)
        non_negative("http.per_host_limit", http.per_host_limit)
        positive("http.keepalive_timeout_s", http.keepalive_timeout_s)
        positive("http.connect_timeout_s", http.connect_timeout_s)
        non_negative("http.max_redirects", http.max_redirects)
        positive("breaker.failure_threshold", self.breaker.failure_threshold)
        positive("breaker.reset_timeout_s", self.breaker.reset_timeout_s)
        positive("retry.max_attempts", self.retry.max_attempts)
        non_negative("retry.base_delay_ms", self.retry.base_delay_ms)
        non_negative("retry.max_delay_ms", self.retry.max_delay_ms)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise src.error(
                "log_level",
                f"{self.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise src.error("metrics_port", f"{self.metrics_port} is not a port number")
        if self.spin_us is not None and not 0 <= self.spin_us <= MAX_SPIN_US:
            raise src.error(
                "spin_us", f"must be 0 to {MAX_SPIN_US} microseconds, got {self.spin_us}"
            )
        if self.security.token is not None and len(self.security.token) < 16:
            raise src.error("security.token", "is shorter than 16 characters; use a long random "
                            "secret (e.g. `openssl rand -hex 32`)")  # fmt: skip
        if self.listen.tcp is not None:
            parse_tcp(self.listen.tcp, "listen.tcp")
        if DEFAULT_TENANT not in self.tenants:
            self.tenants[DEFAULT_TENANT] = TenantPolicy()
        for name, policy in self.tenants.items():
            where = f"tenants.{name}"
            positive(f"{where}.max_concurrent", policy.max_concurrent)
            positive(f"{where}.max_request_bytes", policy.max_request_bytes)
            positive(f"{where}.max_response_bytes", policy.max_response_bytes)
            if policy.max_response_bytes > _RESPONSE_CAP:
                raise src.error(
                    f"{where}.max_response_bytes",
                    f"{policy.max_response_bytes} cannot fit a released client's 10 MiB frame; "
                    f"use at most {_RESPONSE_CAP}",
                )
            if policy.token is not None and len(policy.token) < 16:
                raise src.error(f"{where}.token", "is shorter than 16 characters; use a long "
                                "random secret")  # fmt: skip
            for i, pattern in enumerate(policy.allowed_hosts):
                if not isinstance(pattern, str) or not pattern:
                    raise src.error(f"{where}.allowed_hosts[{i}]", "must be a non-empty string")
        self._validate_quotas(src)

    def _validate_quotas(self, src: Source) -> None:
        shared = self.shared_state
        for key in ("timeout_ms", "retry_s", "heartbeat_s"):
            if getattr(shared, key) <= 0:
                raise src.error(f"shared_state.{key}",
                                f"must be greater than 0, got {getattr(shared, key)}")  # fmt: skip
        for key in ("breaker_failures", "assumed_runtimes"):
            if getattr(shared, key) < 1:
                raise src.error(f"shared_state.{key}", f"must be at least 1, got "
                                f"{getattr(shared, key)}")  # fmt: skip
        if shared.redis_url is not None:
            scheme = shared.redis_url.partition("://")[0].lower()
            if scheme not in ("redis", "rediss", "unix") or "://" not in shared.redis_url:
                raise src.error("shared_state.redis_url", "must be redis://host:port/db, "
                                "rediss://host:port/db or unix:///path/to/redis.sock")  # fmt: skip
        if not self.quotas:
            return
        if not shared.redis_url:
            raise src.error("quotas", "quotas are counted in Redis: set shared_state.redis_url "
                            '(e.g. "redis://127.0.0.1:6379/0")')  # fmt: skip
        for name, quota in self.quotas.items():
            where = f"quotas.{name}"
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise src.error(where, "a quota name may hold letters, digits, '-', '_' and "
                                "'.' only")  # fmt: skip
            if not quota.hosts:
                raise src.error(f"{where}.hosts", "must name at least one host pattern "
                                '(e.g. ["api.openai.com"])')  # fmt: skip
            for i, pattern in enumerate(quota.hosts):
                if not pattern:
                    raise src.error(f"{where}.hosts[{i}]", "must be a non-empty string")
            for i, digest in enumerate(quota.api_keys):
                if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                    raise src.error(f"{where}.api_keys[{i}]", "must be the SHA-256 hex digest "
                                    "of an API key (64 hex digits: printf %s \"$KEY\" | "
                                    "sha256sum), never the key itself")  # fmt: skip
            if quota.requests is None and quota.tokens is None:
                raise src.error(where, "limits nothing: set requests and/or tokens")
            for key in ("requests", "tokens"):
                value = getattr(quota, key)
                if value is not None and value < 1:
                    raise src.error(f"{where}.{key}", f"must be at least 1, got {value}")
            if quota.window_s <= 0:
                raise src.error(f"{where}.window_s", f"must be greater than 0, got "
                                f"{quota.window_s}")  # fmt: skip
            if quota.bucket_ms is not None and not (
                1 <= quota.bucket_ms <= quota.window_s * 1000 / 2
            ):
                raise src.error(f"{where}.bucket_ms", f"must be between 1 and half the window "
                                f"({quota.window_s * 500:g}), got {quota.bucket_ms}")  # fmt: skip
            if quota.guard_ms < 0:
                raise src.error(f"{where}.guard_ms", f"must not be negative, got "
                                f"{quota.guard_ms}")  # fmt: skip
            if quota.prompt_bytes_per_token <= 0:
                raise src.error(f"{where}.prompt_bytes_per_token", "must be greater than 0, "
                                f"got {quota.prompt_bytes_per_token}")  # fmt: skip
            if quota.default_max_tokens < 0:
                raise src.error(f"{where}.default_max_tokens", "must not be negative, got "
                                f"{quota.default_max_tokens}")  # fmt: skip
            if quota.on_backend_failure not in BACKEND_FAILURE_MODES:
                raise src.error(f"{where}.on_backend_failure",
                                f"{quota.on_backend_failure!r} is not one of "
                                f"{', '.join(BACKEND_FAILURE_MODES)}")  # fmt: skip

    @property
    def tokens_required(self) -> bool:
        """Whether any token is configured (the runtime's, or a tenant's)."""
        return self.security.token is not None or any(
            p.token is not None for p in self.tenants.values()
        )


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


_SECTIONS: Dict[str, type] = {
    "listen": ListenSettings,
    "limits": LimitSettings,
    "security": SecuritySettings,
    "http": HTTPSettings,
    "breaker": BreakerSettings,
    "retry": RetrySettings,
    "shared_state": SharedStateSettings,
    "tracing": TracingSettings,
}


def settings_from_mapping(data: Any, source: Optional[Source] = None) -> RuntimeSettings:
    """Build and validate settings from parsed YAML (a mapping, or None for defaults)."""
    src = source if source is not None else Source("<dict>")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise src.error("", "the config file must hold a mapping of keys at the top level")
    settings = RuntimeSettings()
    top = {"log_level": str, "metrics_port": Optional[int], "spin_us": Optional[int]}
    for key, value in data.items():
        key = str(key)
        if key in _SECTIONS:
            setattr(settings, key, build_dataclass(_SECTIONS[key], value, key, src))
        elif key in top:
            holder = build_dataclass(_Top, {key: value}, "", src)
            setattr(settings, key, getattr(holder, key))
        elif key == "quotas":
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise src.error("quotas", "expected a mapping of quota name to its limits")
            settings.quotas = {
                str(name): build_dataclass(QuotaSettings, quota, f"quotas.{name}", src)
                for name, quota in value.items()
            }
        elif key == "tenants":
            if not isinstance(value, Mapping) or not value:
                raise src.error("tenants", "expected a mapping of tenant id to policy")
            settings.tenants = {
                str(name): build_dataclass(TenantPolicy, policy, f"tenants.{name}", src)
                for name, policy in value.items()
            }
        else:
            known = sorted([*_SECTIONS, *top, "tenants", "quotas"])
            raise src.error(key, f"unknown key; known top-level keys are {', '.join(known)}")
    settings.validate(src)
    return settings


@dataclass
class _Top:
    log_level: str = "WARNING"
    metrics_port: Optional[int] = None
    spin_us: Optional[int] = None


def load_settings(path: Optional[str]) -> RuntimeSettings:
    """Settings from a YAML file (None: the defaults)."""
    if path is None:
        settings = RuntimeSettings()
        settings.validate()
        return settings
    data, lines = load_yaml(path, "runtime config file")
    return settings_from_mapping(data, Source(path, lines))


def level_number(name: str) -> int:
    """A logging level name -> its number (validated by RuntimeSettings.validate)."""
    return int(logging.getLevelName(name.upper()))
