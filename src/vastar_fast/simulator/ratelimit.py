"""Request and token budgets per API key: token buckets and rate-limit headers.

Each API key (the bearer token, ``x-api-key``, ``api-key``, ``x-goog-api-key``
or ``?key=``; requests without one share a bucket) has two buckets that refill
continuously: ``rpm`` requests and ``tpm`` tokens per minute. A request costs
one request and its prompt plus completion tokens (exact: the simulator knows
the completion before it sends it). Without ``--rpm``/``--tpm`` the buckets
still run, with a nominal tier (:data:`NOMINAL_RPM`, :data:`NOMINAL_TPM`), so
the ``x-ratelimit-*`` headers stay truthful, but nothing is refused.

Keys are held in memory only, never logged.
"""

from __future__ import annotations

import math
import time
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

__all__ = ["NOMINAL_RPM", "NOMINAL_TPM", "Decision", "RateLimiter", "api_key_of", "duration"]

NOMINAL_RPM = 30_000
NOMINAL_TPM = 150_000_000
_MAX_KEYS = 10_000
_MS = tuple(f"{ms}ms" for ms in range(1000))


def api_key_of(headers: Mapping[str, str], query: Optional[Mapping[str, str]] = None) -> str:
    """The caller's API key from the headers, else ``query["key"]`` (empty: none sent)."""
    auth = headers.get("Authorization")
    if auth is not None:
        return auth[7:] if auth[:7].lower() == "bearer " else auth
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value is not None:
            return value
    return query.get("key", "") if query is not None else ""


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1.0:
        ms = math.ceil(seconds * 1000.0)
        return _MS[ms] if 0 <= ms < 1000 else "0ms"
    if seconds < 60.0:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.3g}s"


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0  # per second
        self.level = float(capacity)
        self.stamp = now

    def refill(self, now: float) -> None:
        level = self.level + (now - self.stamp) * self.rate
        self.level = level if level < self.capacity else self.capacity
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (inf: more than the capacity)."""
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.rate)

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate


class Decision(NamedTuple):
    """The outcome for one request: refused (by which budget), when to retry, and the
    bucket state for the headers."""

    refused: Optional[str]  # None, "requests" or "tokens"
    retry_after_s: float
    limit_requests: int
    remaining_requests: int
    reset_requests_s: float
    limit_tokens: int
    remaining_tokens: int
    reset_tokens_s: float


class RateLimiter:
    """Token buckets per API key; enforcing only the budgets that were configured."""

    def __init__(self, rpm: Optional[int] = None, tpm: Optional[int] = None) -> None:
        self.enforce_requests = rpm is not None
        self.enforce_tokens = tpm is not None
        self.rpm = rpm if rpm is not None else NOMINAL_RPM
        self.tpm = tpm if tpm is not None else NOMINAL_TPM
        self._buckets: Dict[str, Tuple[_Bucket, _Bucket]] = {}
        self.refused = 0

    def check(self, key: str, tokens: int, now: Optional[float] = None) -> Decision:
        """Charge one request of ``tokens`` tokens to ``key``, or refuse it."""
        now = time.monotonic() if now is None else now
        pair = self._buckets.get(key)
        if pair is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._buckets.clear()
            pair = (_Bucket(self.rpm, now), _Bucket(self.tpm, now))
            self._buckets[key] = pair
        reqs, toks = pair
        reqs.refill(now)
        toks.refill(now)
        refused: Optional[str] = None
        retry = 0.0
        if self.enforce_requests and reqs.level < 1.0:
            refused, retry = "requests", reqs.wait_for(1.0)
        elif self.enforce_tokens and toks.level < tokens:
            refused, retry = "tokens", toks.wait_for(float(tokens))
        if refused is None:
            level = reqs.level - 1.0
            reqs.level = level if level > 0.0 else 0.0
            level = toks.level - tokens
            toks.level = level if level > 0.0 else 0.0
        else:
            self.refused += 1
        return Decision(
            refused,
            retry,
            self.rpm,
            int(reqs.level),
            (reqs.capacity - reqs.level) / reqs.rate,
            self.tpm,
            int(toks.level),
            (toks.capacity - toks.level) / toks.rate,
        )
