"""Optional Prometheus metrics (``--metrics-port``; needs prometheus-client).

Without a port the daemon uses :class:`NullMetrics`, whose methods do nothing, so the
hot path pays one attribute lookup and call, not a label lookup per request. Each
:class:`PrometheusMetrics` has its own registry so several daemons can live in one
process (tests, the in-process RuntimeServer).
"""

from __future__ import annotations

from typing import Any, Optional, Set

from .breaker import STATE_VALUE

__all__ = ["Metrics", "NullMetrics", "PrometheusMetrics", "create_metrics", "serve_multiprocess"]

_ERROR_NAMES = ("success", "transient", "permanent", "rate_limited", "timeout", "invalid_request")


class Metrics:
    """The interface the server calls."""

    port: Optional[int] = None

    def observe(self, tenant: str, error_class: int, seconds: float) -> None:
        """One finished request."""

    def in_flight(self, delta: int) -> None:
        """Requests in flight on the daemon went up or down."""

    def breaker_state(self, host: str, state: str) -> None:
        """A host's breaker changed state."""

    def close(self) -> None:
        """Stop serving metrics."""

    # -- fleet quotas (runtime/quotas.py)
    def quota_admission(self, seconds: float) -> None:
        """A request that fitted its quota was admitted after ``seconds``."""

    def quota_wait(self, quota: str, seconds: float) -> None:
        """A request that did not fit at once was admitted after waiting ``seconds``."""

    def quota_decision(self, quota: str, decision: str) -> None:
        """admitted (by Redis), lease (from an allowance fetched ahead), local, open,
        refused or closed."""

    def quota_backend(self, up: bool) -> None:
        """Redis answers (or not)."""

    def quota_degraded(self, degraded: bool) -> None:
        """The quotas run on their on_backend_failure modes (or count in Redis)."""

    def quota_runtimes(self, live: int) -> None:
        """Live runtime worker processes, as the heartbeats count them."""


NullMetrics = Metrics


class PrometheusMetrics(Metrics):
    """The daemon's metrics, served on ``host:port``; with ``port=None`` (a worker
    process of ``--workers``, prometheus-client's multiprocess mode) they are only
    recorded, and the supervisor serves the sum of every worker's
    (:func:`serve_multiprocess`)."""

    def __init__(self, port: Optional[int], host: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.exposition import start_http_server

        self.registry = CollectorRegistry()
        self._requests = Counter(
            "vastar_runtime_requests",
            "Requests answered, by tenant and error class",
            ["tenant", "error_class"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "vastar_runtime_request_seconds",
            "Time from request frame to terminal response",
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "vastar_runtime_in_flight",
            "Requests in flight on the daemon",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._breaker = Gauge(
            "vastar_runtime_breaker_state",
            "Circuit breaker state per upstream host (0 closed, 1 half-open, 2 open)",
            ["host"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self._tenants: Set[str] = set()
        self._hosts: Set[str] = set()
        self._init_quota_metrics(Counter, Gauge, Histogram)
        self._server: Any = None
        self.port = None
        if port is not None:
            started: Any = start_http_server(port, addr=host, registry=self.registry)
            self._server = started[0] if isinstance(started, tuple) else None
            self.port = self._server.server_port if self._server is not None else port

    def observe(self, tenant: str, error_class: int, seconds: float) -> None:
        name = _ERROR_NAMES[error_class] if 0 <= error_class < 6 else str(error_class)
        self._requests.labels(_bounded(self._tenants, tenant), name).inc()
        self._latency.observe(seconds)

    def in_flight(self, delta: int) -> None:
        self._in_flight.inc(delta)

    def breaker_state(self, host: str, state: str) -> None:
        self._breaker.labels(_bounded(self._hosts, host)).set(STATE_VALUE.get(state, -1))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- fleet quotas (runtime/quotas.py)
    def _init_quota_metrics(self, Counter: Any, Gauge: Any, Histogram: Any) -> None:
        self._quota_admission = Histogram(
            "vastar_runtime_quota_admission_seconds",
            "Time a request that fitted its quota took to be admitted (the Redis round "
            "trip, or the local decision)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self._quota_wait = Histogram(
            "vastar_runtime_quota_wait_seconds",
            "Time a request that did not fit its quota at once waited for its turn",
            ["quota"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self._quota_decisions = Counter(
            "vastar_runtime_quota_decisions",
            "Quota decisions: admitted (counted in Redis), lease (from an allowance counted "
            "in Redis ahead), local (on this runtime's share), open (uncounted), refused, "
            "closed (refused: Redis unreachable)",
            ["quota", "decision"],
            registry=self.registry,
        )
        self._quota_backend = Gauge(  # labelled, so that it says nothing until quotas run
            "vastar_runtime_quota_backend_up",
            "1 when Redis (shared_state.redis_url) answers, 0 when it does not",
            ["backend"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._quota_degraded = Gauge(  # labelled, so that it says nothing until quotas run
            "vastar_runtime_quota_degraded",
            "1 while the quotas run on their on_backend_failure modes instead of counting in Redis",
            ["backend"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._quota_runtimes = Gauge(  # labelled, so that it says nothing until quotas run
            "vastar_runtime_quota_live_runtimes",
            "Live runtime worker processes of the fleet, counted by their heartbeats in Redis",
            ["backend"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def quota_admission(self, seconds: float) -> None:
        self._quota_admission.observe(seconds)

    def quota_wait(self, quota: str, seconds: float) -> None:
        self._quota_wait.labels(quota).observe(seconds)

    def quota_decision(self, quota: str, decision: str) -> None:
        self._quota_decisions.labels(quota, decision).inc()

    def quota_backend(self, up: bool) -> None:
        self._quota_backend.labels("redis").set(1 if up else 0)

    def quota_degraded(self, degraded: bool) -> None:
        self._quota_degraded.labels("redis").set(1 if degraded else 0)

    def quota_runtimes(self, live: int) -> None:
        self._quota_runtimes.labels("redis").set(live)


MAX_LABELS = 100
"""Distinct tenant (and host) label values per metric; later ones are counted as
``other``: the values come from clients, and every one is a new time series."""


def _bounded(seen: Set[str], value: str) -> str:
    if value in seen:
        return value
    if len(seen) >= MAX_LABELS:
        return "other"
    seen.add(value)
    return value


def create_metrics(port: Optional[int]) -> Metrics:
    return NullMetrics() if port is None else PrometheusMetrics(port)


def serve_multiprocess(port: int, host: str = "127.0.0.1") -> Any:
    """Serve the sum of every worker's metrics (``PROMETHEUS_MULTIPROC_DIR`` must have
    been set before prometheus-client was first imported); the HTTP server."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    started: Any = start_http_server(port, addr=host, registry=registry)
    return started[0] if isinstance(started, tuple) else None
