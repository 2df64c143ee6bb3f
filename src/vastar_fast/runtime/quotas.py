"""Fleet-wide provider quotas: many runtimes, one API key's limits, counted in Redis.

A quota (``quotas.<name>`` in the runtime config) limits the requests and the tokens
that every runtime of the fleet together sends to some hosts (and optionally per API
key) in any window of ``window_s`` seconds. Docs: ``docs/runtime/quotas.md``.

How a request goes (the pipeline calls a :class:`Ticket`, made once per target):

1. **Admission**, before every upstream attempt (retries and redirects included): one
   Lua script on Redis charges one request and the token estimate (the body's bytes /
   ``prompt_bytes_per_token`` plus ``max_tokens``) if both fit, with the time taken from
   Redis (``TIME``), so the hosts' clocks do not matter. The counters are buckets of
   ``bucket_ms`` in one Redis hash per quota (and key): a charge counts for between
   ``window_s + guard_ms`` and one bucket more, so no ``window_s`` interval of arrivals
   ever holds more than the limits.
   **Leases**: a worker that admits a quota's requests often while the fleet is far
   from the limits charges an allowance ahead (about what it admits in half the guard)
   and admits from it without a round trip; a lease is used for at most ``guard_ms / 2``
   (so its requests still reach the provider within the guard of the charge) and what
   it did not use goes back when it ends.
2. **Waiting**: a request that does not fit learns from the script when it will, and
   waits for its turn in a FIFO queue of its worker (the in-process cache: while a quota
   is known to be full, nobody else of that worker asks Redis) if its deadline allows,
   else ends RATE_LIMITED with a message naming the quota and when it frees up.
3. **Reconciliation**, when the answer ends: the ``usage`` of the answer (JSON, or the
   last SSE events of a stream: OpenAI's ``stream_options.include_usage`` chunk,
   Anthropic's ``message_start`` / ``message_delta``, Gemini's ``usageMetadata``, Ollama's
   counts) replaces the estimate, so unused tokens return to the fleet (after the answer
   went out; the change rides with the next admission, or goes within
   ``SETTLE_DELAY_S``). An error answer
   costs its request and no tokens; a failed connection costs nothing; a request cut
   short keeps its estimate. A provider 429 with ``retry-after`` blocks the quota for
   the whole fleet that long; ``x-ratelimit-remaining-*`` (and Anthropic's
   ``anthropic-ratelimit-*-remaining``) can only lower what the fleet thinks is left.

When Redis fails: every call has a deadline (``shared_state.timeout_ms``) and
``breaker_failures`` failures in a row stop the calls (degraded mode) until a heartbeat
probe answers. Each quota then runs on its ``on_backend_failure``: ``open`` lets requests
through, ``closed`` refuses them, ``local_share`` admits this worker's share: (the limit
less what the fleet had spent, by this worker's last copy of the counters) divided by
the live worker processes that heartbeat in Redis, less what this worker admitted
since -- and at most the limit divided by the live workers, counting what this worker
admitted in the window through Redis too (its copy may lag the others' last
admissions). Back in Redis, each worker adds what it admitted alone (and every worker
that sees Redis lost its data restores its copy of the counters as lower bounds),
keeps to its share -- asking Redis too -- for ``retry_s + heartbeat_s`` more, so that
every live worker has merged, and then counts in Redis alone again.

The live count is of worker processes (each ``--workers`` process is one member: it has
its own Redis connection and its own share), from a heartbeat every ``heartbeat_s``.
"""

from __future__ import annotations

import asyncio
import bisect
import email.utils
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import socket
import time
from typing import Any, Dict, List, Optional, Pattern, Sequence, Tuple

from vastar_fast.types import ErrorClass

from .config import QuotaSettings, RuntimeSettings
from .metrics import Metrics
from .redisclient import BackendError, RedisBackend, cancel_and_wait

__all__ = [
    "QuotaService",
    "Ticket",
    "api_key_digest",
    "estimate_tokens",
    "parse_duration",
    "usage_tokens",
]

log = logging.getLogger("vastar_fast.runtime.quotas")

RATE_LIMITED = int(ErrorClass.RATE_LIMITED)

# ---------------------------------------------------------------- the Lua scripts
# One hash per quota (and API key): lo (oldest bucket still counted), R and T (requests
# and tokens of the counted buckets), r<i> / t<i> (bucket i: [i*g, (i+1)*g) us of Redis
# time), blk (us until which a provider 429 blocks the quota). A bucket i counts while
# (i+1)*g > now - span, span = window + guard. Times are Redis's (TIME), in microseconds.

_COMMON = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- Drop the buckets older than `first`; returns lo, R, T, blk.
local function expire(key, first, nb)
  local st = redis.call('HMGET', key, 'lo', 'R', 'T', 'blk')
  local lo = tonumber(st[1])
  local R = tonumber(st[2]) or 0
  local T = tonumber(st[3]) or 0
  local blk = tonumber(st[4]) or 0
  if lo == nil then
    redis.call('HSET', key, 'lo', first, 'R', 0, 'T', 0)
    return first, 0, 0, blk
  end
  if lo >= first then return lo, R, T, blk end
  if first - lo > nb then
    redis.call('DEL', key)
    if blk > 0 then redis.call('HSET', key, 'blk', blk) end
    redis.call('HSET', key, 'lo', first, 'R', 0, 'T', 0)
    return first, 0, 0, blk
  end
  for i = lo, first - 1 do
    local v = redis.call('HMGET', key, 'r' .. i, 't' .. i)
    if v[1] or v[2] then
      R = R - (tonumber(v[1]) or 0)
      T = T - (tonumber(v[2]) or 0)
      redis.call('HDEL', key, 'r' .. i, 't' .. i)
    end
  end
  if R < 0 then R = 0 end
  if T < 0 then T = 0 end
  redis.call('HSET', key, 'lo', first, 'R', R, 'T', T)
  return first, R, T, blk
end
local key = KEYS[1]
local g = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local now = now_us()
local cur = math.floor(now / g)
local first = math.floor((now - span) / g)
local lo, R, T, blk = expire(key, first, nb)
-- Add dr, dt to bucket idx, neither count going below zero; returns what was added.
local function bump(idx, dr, dt)
  local v = redis.call('HMGET', key, 'r' .. idx, 't' .. idx)
  local r0, t0 = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if dr < -r0 then dr = -r0 end
  if dt < -t0 then dt = -t0 end
  if dr ~= 0 then redis.call('HINCRBY', key, 'r' .. idx, dr) end
  if dt ~= 0 then redis.call('HINCRBY', key, 't' .. idx, dt) end
  return dr, dt
end
-- Add the triples bucket, delta_r, delta_t of ARGV[k..] to counted buckets (never below
-- zero); returns the new R, T (and stores them).
local function settle(k)
  local r, t = R, T
  for j = k, #ARGV, 3 do
    local idx = tonumber(ARGV[j])
    if idx >= lo and idx <= cur then
      local dr, dt = bump(idx, tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]))
      r = r + dr
      t = t + dt
    end
  end
  redis.call('HSET', key, 'R', r, 'T', t)
  return r, t
end
"""

ADMIT_LUA = (
    _COMMON
    + """
-- ARGV[5..8]: limit_r, limit_t (-1: none), cost_r, cost_t; ARGV[9..]: triples bucket,
-- delta_r, delta_t of earlier charges to settle first (the reconciliations this worker
-- had not sent yet: they ride along instead of costing a round trip each).
-- -> {admitted, wait_us, R, T, bucket, now, why (0 ok, 1 requests, 2 tokens, 3 blocked)}
local lr, lt = tonumber(ARGV[5]), tonumber(ARGV[6])
local cr, ct = tonumber(ARGV[7]), tonumber(ARGV[8])
if #ARGV > 8 then R, T = settle(9) end
if blk > now then return {0, blk - now, R, T, cur, now, 3} end
local over_r = lr >= 0 and R + cr > lr
local over_t = lt >= 0 and T + ct > lt
if not over_r and not over_t then
  if cr ~= 0 then redis.call('HINCRBY', key, 'r' .. cur, cr) end
  if ct ~= 0 then redis.call('HINCRBY', key, 't' .. cur, ct) end
  R = R + cr
  T = T + ct
  redis.call('HSET', key, 'R', R, 'T', T)
  redis.call('PEXPIRE', key, ttl)
  return {1, 0, R, T, cur, now, 0}
end
local need_r, need_t = 0, 0
if over_r then need_r = R + cr - lr end
if over_t then need_t = T + ct - lt end
local fr, ft = 0, 0
local wait = span
for j = lo, cur do
  local v = redis.call('HMGET', key, 'r' .. j, 't' .. j)
  fr = fr + (tonumber(v[1]) or 0)
  ft = ft + (tonumber(v[2]) or 0)
  if fr >= need_r and ft >= need_t then
    wait = (j + 1) * g + span - now
    break
  end
end
if wait < 1 then wait = 1 end
local why = 2
if over_r then why = 1 end
return {0, wait, R, T, cur, now, why}
"""
)

SETTLE_LUA = (
    _COMMON
    + """
-- ARGV[5..]: triples bucket, delta_r, delta_t (a bucket no longer counted is left alone).
R, T = settle(5)
redis.call('PEXPIRE', key, ttl)
return {R, T}
"""
)

BLOCK_LUA = (
    _COMMON
    + """
-- ARGV[5]: block for this many us (never shortens a longer block). -> us blocked
local til = now + tonumber(ARGV[5])
if til > blk then
  redis.call('HSET', key, 'blk', til)
  blk = til
end
local left = math.floor((blk - now) / 1000) + 1000
if redis.call('PTTL', key) < left then redis.call('PEXPIRE', key, math.max(left, ttl)) end
return blk - now
"""
)

LOWER_LUA = (
    _COMMON
    + """
-- ARGV[5..10]: limit_r, limit_t, remaining_r, remaining_t (-1: unknown),
-- reset_r_us, reset_t_us: charge the difference when the provider says less is left.
local lr, lt = tonumber(ARGV[5]), tonumber(ARGV[6])
local rr, rt = tonumber(ARGV[7]), tonumber(ARGV[8])
local function phantom(kind, add, reset)
  local idx = math.floor((now + reset - span) / g)
  if idx < lo then return 0 end
  if idx > cur then idx = cur end
  redis.call('HINCRBY', key, kind .. idx, add)
  return add
end
if lr >= 0 and rr >= 0 and rr < lr - R then
  R = R + phantom('r', lr - R - rr, tonumber(ARGV[9]))
end
if lt >= 0 and rt >= 0 and rt < lt - T then
  T = T + phantom('t', lt - T - rt, tonumber(ARGV[10]))
end
redis.call('HSET', key, 'R', R, 'T', T)
redis.call('PEXPIRE', key, ttl)
return {R, T}
"""
)

SNAPSHOT_LUA = (
    _COMMON
    + """
-- -> {now, lo, cur, blk, R, T, i1, r1, t1, i2, r2, t2, ...}
local out = {now, lo, cur, blk, R, T}
for j = lo, cur do
  local v = redis.call('HMGET', key, 'r' .. j, 't' .. j)
  if v[1] or v[2] then
    out[#out + 1] = j
    out[#out + 1] = tonumber(v[1]) or 0
    out[#out + 1] = tonumber(v[2]) or 0
  end
end
return out
"""
)

MERGE_LUA = (
    _COMMON
    + """
-- ARGV[5]: n; ARGV[6..5+n]: triples bucket, requests, tokens that a bucket holds at
-- least (a worker's last copy of the fleet's counters, restoring a Redis that lost
-- them: every worker's copy may lack some, none counts any twice, so the largest
-- wins); ARGV[6+n..]: triples to add (admitted without Redis).
local n = tonumber(ARGV[5])
for k = 6, 5 + n, 3 do
  local idx = tonumber(ARGV[k])
  if idx >= lo and idx <= cur then
    local v = redis.call('HMGET', key, 'r' .. idx, 't' .. idx)
    local r0, t0 = tonumber(v[1]) or 0, tonumber(v[2]) or 0
    local dr, dt = tonumber(ARGV[k + 1]) - r0, tonumber(ARGV[k + 2]) - t0
    if dr > 0 then
      redis.call('HINCRBY', key, 'r' .. idx, dr)
      R = R + dr
    end
    if dt > 0 then
      redis.call('HINCRBY', key, 't' .. idx, dt)
      T = T + dt
    end
  end
end
for k = 6 + n, #ARGV, 3 do
  local idx = tonumber(ARGV[k])
  local dr, dt = tonumber(ARGV[k + 1]), tonumber(ARGV[k + 2])
  if idx >= lo then
    if idx > cur then idx = cur end
    dr, dt = bump(idx, dr, dt)
    R = R + dr
    T = T + dt
  end
end
redis.call('HSET', key, 'R', R, 'T', T)
redis.call('PEXPIRE', key, ttl)
return {R, T}
"""
)

BEAT_LUA = """
-- KEYS: members (zset), epoch. ARGV: member, liveness us, epoch candidate, epoch ttl ms.
-- -> {now, live members, epoch, created}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - live)
local n = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.floor(live / 1000) * 2 + 1000)
local epoch = redis.call('GET', KEYS[2])
local created = 0
if not epoch then
  epoch = ARGV[3]
  created = 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return {now, n, epoch, created}
"""

LEAVE_LUA = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# ---------------------------------------------------------------- estimates and usage
_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _count(value: Any) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def estimate_tokens(
    body: bytes, path: str, bytes_per_token: float = 1.0, default_max_tokens: int = 4096
) -> int:
    """The tokens to reserve for a request: its body's bytes / ``bytes_per_token`` (the
    prompt) plus the completion limit it names (``max_tokens``, ``max_completion_tokens``,
    ``max_output_tokens``, Gemini's ``generationConfig.maxOutputTokens``, Ollama's
    ``options.num_predict``) times ``n`` choices; a JSON request that names none reserves
    ``default_max_tokens`` (an embeddings request none). No body: 0."""
    if not body:
        return 0
    prompt = math.ceil(len(body) / bytes_per_token)
    try:
        data = json.loads(body)
    except ValueError:
        return prompt
    if not isinstance(data, dict):
        return prompt
    limit: Optional[int] = None
    for name in _LIMIT_FIELDS:
        limit = _count(data.get(name))
        if limit is not None:
            break
    if limit is None:
        config = data.get("generationConfig") or data.get("generation_config")
        if isinstance(config, dict):
            limit = _count(config.get("maxOutputTokens", config.get("max_output_tokens")))
    if limit is None:
        options = data.get("options")
        if isinstance(options, dict):
            limit = _count(options.get("num_predict"))
    if limit is None:
        limit = 0 if "embed" in path else default_max_tokens
    choices = _count(data.get("n")) or 1
    return prompt + limit * choices


_USAGE_MARKERS = (b'"usage"', b'"usageMetadata"', b'"billed_units"')
_IN_FIELDS = ("prompt_tokens", "input_tokens", "promptTokenCount")
_IN_EXTRA = ("cache_creation_input_tokens", "cache_read_input_tokens")
_OUT_FIELDS = ("completion_tokens", "output_tokens", "candidatesTokenCount")
_OUT_EXTRA = ("thoughtsTokenCount",)
_TOTAL_FIELDS = ("total_tokens", "totalTokenCount")
_OLLAMA = re.compile(rb'"(prompt_eval_count|eval_count)"\s*:\s*(\d+)')
_SCAN_WHOLE = 256 * 1024
"""Bodies up to this size are scanned whole; of larger ones the first and last
:data:`_SCAN_EDGE` bytes (where the APIs put usage)."""
_SCAN_EDGE = 16 * 1024


def _json_object_at(data: bytes, start: int) -> Optional[bytes]:
    """The balanced ``{...}`` beginning at ``data[start]`` (None: not an object, or cut)."""
    if start >= len(data) or data[start] != 0x7B:  # "{"
        return None
    depth = 0
    in_string = False
    i = start
    end = min(len(data), start + 8192)
    while i < end:
        c = data[i]
        if in_string:
            if c == 0x5C:  # backslash
                i += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return data[start : i + 1]
        i += 1
    return None


def _first(obj: Dict[str, Any], names: Sequence[str]) -> Optional[int]:
    for name in names:
        value = _count(obj.get(name))
        if value is not None:
            return value
    return None


def usage_tokens(body: bytes) -> Optional[int]:
    """Prompt plus completion tokens from an answer's usage (None: it reports none).

    Works on a JSON body, an SSE stream and NDJSON alike: every ``"usage"``,
    ``"usageMetadata"`` and ``"billed_units"`` object is read, and the largest input and
    output counts win (streams repeat or accumulate them: Anthropic's ``message_start``
    holds the input, its last ``message_delta`` the output)."""
    if len(body) > _SCAN_WHOLE:
        body = body[:_SCAN_EDGE] + b"\n" + body[-_SCAN_EDGE:]
    best_in = best_out = best_total = -1
    for marker in _USAGE_MARKERS:
        pos = body.find(marker)
        while pos >= 0:
            colon = pos + len(marker)
            while colon < len(body) and body[colon] in b" \t\r\n":
                colon += 1
            if colon < len(body) and body[colon] == 0x3A:  # ":"
                start = colon + 1
                while start < len(body) and body[start] in b" \t\r\n":
                    start += 1
                raw = _json_object_at(body, start)
                if raw is not None:
                    try:
                        found = json.loads(raw)
                    except ValueError:
                        found = None
                    if isinstance(found, dict):
                        if isinstance(found.get("tokens"), dict):  # Cohere v2
                            found = found["tokens"]
                        elif isinstance(found.get("billed_units"), dict):
                            found = found["billed_units"]
                        tokens_in = _first(found, _IN_FIELDS)
                        if tokens_in is not None:
                            tokens_in += sum(_count(found.get(n)) or 0 for n in _IN_EXTRA)
                            best_in = max(best_in, tokens_in)
                        tokens_out = _first(found, _OUT_FIELDS)
                        if tokens_out is not None:
                            tokens_out += sum(_count(found.get(n)) or 0 for n in _OUT_EXTRA)
                            best_out = max(best_out, tokens_out)
                        total = _first(found, _TOTAL_FIELDS)
                        if total is not None:
                            best_total = max(best_total, total)
            pos = body.find(marker, pos + 1)
    if best_in < 0 and best_out < 0 and best_total < 0:
        ollama = {name: int(value) for name, value in _OLLAMA.findall(body)}
        if not ollama:
            return None
        return ollama.get(b"prompt_eval_count", 0) + ollama.get(b"eval_count", 0)
    return max(max(best_in, 0) + max(best_out, 0), best_total)


_API_KEY_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
_KEY_QUERY = re.compile(r"[?&]key=([^&#]*)")


def api_key_digest(headers: Dict[str, str], request_target: str = "") -> Optional[str]:
    """SHA-256 hex digest of the request's API key (``Authorization: Bearer``,
    ``x-api-key``, ``api-key``, ``x-goog-api-key``, else ``?key=``); None without one."""
    key: Optional[str] = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _API_KEY_HEADERS:
            key = value[7:] if lowered == "authorization" and value[:7].lower() == "bearer " \
                else value  # fmt: skip
            key = key.strip()
            break
    if key is None and "key=" in request_target:
        found = _KEY_QUERY.search(request_target)
        if found:
            key = found.group(1)
    if not key:
        return None
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T").match
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> Optional[float]:
    """Seconds of OpenAI's reset format (``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m"``)
    or a plain number of seconds; None when it is neither."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _seconds_until(text: str) -> Optional[float]:
    """A duration, or an RFC 3339 / HTTP date (Anthropic's resets, ``retry-after``) as
    seconds from now (this host's clock: the provider's dates are wall-clock times)."""
    found = parse_duration(text)
    if found is not None:
        return found
    try:
        if _ISO_DATE(text.strip()):
            from datetime import datetime

            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
        else:
            parsed = email.utils.parsedate_to_datetime(text)
            when = parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - time.time())


_RATE_HEADERS = frozenset(
    {
        b"retry-after",
        b"retry-after-ms",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-reset-tokens",
        b"anthropic-ratelimit-requests-remaining",
        b"anthropic-ratelimit-tokens-remaining",
        b"anthropic-ratelimit-requests-reset",
        b"anthropic-ratelimit-tokens-reset",
    }
)


def rate_headers(raw: List[Tuple[bytes, bytes]]) -> Dict[bytes, str]:
    """The rate-limit headers of an answer (lower-case names)."""
    found: Dict[bytes, str] = {}
    for name, value in raw:
        lowered = name.lower()
        if lowered in _RATE_HEADERS:
            found[lowered] = value.decode("latin-1")
    return found


def retry_after_s(headers: Dict[bytes, str]) -> Optional[float]:
    """``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date), in seconds."""
    ms = headers.get(b"retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    text = headers.get(b"retry-after")
    return _seconds_until(text) if text is not None else None


def _int_header(headers: Dict[bytes, str], *names: bytes) -> Optional[int]:
    for name in names:
        text = headers.get(name)
        if text is not None:
            try:
                return max(0, int(float(text)))
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------- the quotas
_UP, _RECOVERING, _DOWN = 0, 1, 2
_STATE_NAMES = ("up", "recovering", "down")
_REDIS, _LOCAL, _UNCOUNTED = 1, 2, 3
_WHY_REQUESTS, _WHY_TOKENS, _WHY_BLOCKED, _WHY_SHARE = 1, 2, 3, 4
MAX_BUCKETS = 10_000
"""Counters kept per worker (one per quota, or per quota and key with ``per_key``); idle
ones are forgotten beyond it."""
_SNAPSHOTS_PER_BEAT = 64
SETTLE_DELAY_S = 0.02
"""Reconciliations wait at most this long for an admission of the same quota to take
them to Redis, then go on their own (several in one call)."""


class Quota:
    """One configured quota, compiled."""

    def __init__(self, name: str, settings: QuotaSettings, prefix: str) -> None:
        self.name = name
        self.settings = settings
        self.patterns: List[Pattern[str]] = [
            re.compile(fnmatch.translate(p.lower())) for p in settings.hosts
        ]
        self.keys = frozenset(d.lower() for d in settings.api_keys)
        self.per_key = settings.per_key
        self.limit_r = settings.requests if settings.requests is not None else -1
        self.limit_t = settings.tokens if settings.tokens is not None else -1
        self.window_s = settings.window_s
        bucket_ms = settings.bucket_ms if settings.bucket_ms is not None else max(
            1.0, settings.window_s * 10.0
        )  # fmt: skip
        self.g = int(bucket_ms * 1000)
        self.span = int((settings.window_s * 1000 + settings.guard_ms) * 1000)
        self.nb = self.span // self.g + 2
        self.ttl_ms = int((self.span + self.g) / 1000 * 2) + 1000
        self.poll_s = max(0.01, self.g / 1e6)
        """How often the head of a queue waiting for tokens asks again: reconciliations
        anywhere in the fleet free tokens before the charges expire."""
        self.lease_s = settings.guard_ms / 2000.0
        """How long an allowance fetched ahead (a lease) may be used: half the guard, so
        that a request admitted from it at its end still reaches the provider within
        the guard of the lease's charge."""
        self.mode = settings.on_backend_failure
        self.bytes_per_token = settings.prompt_bytes_per_token
        self.default_max_tokens = settings.default_max_tokens
        self.key = f"{prefix}quota:{name}:{int(settings.window_s * 1000)}:{bucket_ms:g}"
        """The Redis key (its window and bucket in it: runtimes configured differently do
        not misread each other's buckets)."""

    def matches(self, host: str, port: int) -> bool:
        host = host.lower()
        host_port = f"{host}:{port}"
        return any(p.match(host) or p.match(host_port) for p in self.patterns)

    def describe(self, why: int) -> str:
        """``600 requests per 60 s (quotas.openai.requests)`` and the like."""
        if why == _WHY_TOKENS:
            return f"{self.limit_t} tokens per {self.window_s:g} s (quotas.{self.name}.tokens)"
        return f"{self.limit_r} requests per {self.window_s:g} s (quotas.{self.name}.requests)"


def _bump(
    table: Dict[int, List[int]], idx: int, r: int, t: int, keep_empty: bool = False
) -> Tuple[int, int]:
    """Add (r, t) to the window cell ``table[idx]``, neither count going below zero; the
    amounts actually added. A missing cell is made when something is added (or always,
    with ``keep_empty``)."""
    cell = table.get(idx)
    if cell is None:
        if r <= 0 and t <= 0 and not keep_empty:
            return 0, 0
        cell = table[idx] = [0, 0]
    r = max(r, -cell[0])
    t = max(t, -cell[1])
    cell[0] += r
    cell[1] += t
    return r, t


class Bucket:
    """The counters of one quota (and API key) as this worker knows them, its queue of
    waiting requests, and what it admitted without Redis."""

    def __init__(self, quota: Quota, key: str, per_key: bool) -> None:
        self.quota = quota
        self.key = key
        self.per_key = per_key
        self.queue: List[Ticket] = []
        self.pumping = False
        self.blocked_until = 0.0
        """Loop time before which no request of this worker asks (the quota is full)."""
        self.provider_block = 0.0
        """Loop time until which a provider 429 blocks the quota."""
        self.why = 0
        self.wait_s = 0.0
        """Why and for how long (at most) the last request that did not fit waits."""
        self.timer: Optional[asyncio.TimerHandle] = None
        self.timer_at = 0.0
        self.used_at = 0.0
        self.left_r = -1
        self.left_t = -1
        """What the fleet had left at the last answer from Redis (-1: unknown)."""
        # bucket index -> [requests, tokens]
        self.mirror: Dict[int, List[int]] = {}
        """The fleet's counters: the last snapshot plus what later answers showed."""
        self.m_r = 0
        self.m_t = 0
        self.own: Dict[int, List[int]] = {}
        """What this worker admitted without Redis (still counted)."""
        self.mine: Dict[int, List[int]] = {}
        """What this worker admitted that Redis counts (still counted): its part of the
        mirror, which its share must include when Redis fails mid-window."""
        self.i_r = 0
        self.i_t = 0
        self.o_r = 0
        self.o_t = 0
        self.unmerged: Dict[int, List[int]] = {}
        """Changes Redis has not seen yet (added to it when it answers again)."""
        self.flush_pending = False
        self.settles: Dict[int, List[int]] = {}
        """Reconciliations of charges made in Redis, not sent yet: they go with this
        worker's next admission of the quota, or after ``SETTLE_DELAY_S`` at most."""
        self.settle_timer: Optional[asyncio.TimerHandle] = None
        self.expired_to = -(2**62)
        """The ``first`` of the last :meth:`expire` (nothing older is left)."""
        # the lease: requests and tokens charged in Redis ahead, admitted locally
        self.lease_r = 0
        self.lease_t = 0
        self.lease_idx = 0
        self.lease_until = 0.0
        self.lease_timer: Optional[asyncio.TimerHandle] = None
        self.lease_pending = False
        self.lease_k = 0
        """The size of the current lease (requests)."""
        self.gap_s = 1.0
        """Moving average of the time between this worker's admissions (the lease size)."""
        self.cost_t_avg = 0.0
        self.last_admit = 0.0

    # -- local counters
    def expire(self, first: int) -> None:
        if first <= self.expired_to:
            return
        self.expired_to = first
        for table, name in ((self.mirror, "m"), (self.own, "o"), (self.mine, "i")):
            if not table:
                continue
            old = [i for i in table if i < first]
            for i in old:
                r, t = table.pop(i)
                if name == "m":
                    self.m_r -= r
                    self.m_t -= t
                elif name == "o":
                    self.o_r -= r
                    self.o_t -= t
                else:
                    self.i_r -= r
                    self.i_t -= t

    def add_own(self, idx: int, r: int, t: int) -> None:
        r, t = _bump(self.own, idx, r, t, keep_empty=True)
        self.o_r += r
        self.o_t += t

    def add_mine(self, idx: int, r: int, t: int) -> None:
        r, t = _bump(self.mine, idx, r, t)
        self.i_r += r
        self.i_t += t

    def add_unmerged(self, idx: int, r: int, t: int) -> None:
        cell = self.unmerged.get(idx)
        if cell is None:
            self.unmerged[idx] = [r, t]
        else:
            cell[0] += r
            cell[1] += t

    def add_mirror(self, idx: int, r: int, t: int) -> None:
        r, t = _bump(self.mirror, idx, r, t)
        self.m_r += r
        self.m_t += t

    def fits_locally(self, now_us: float, cost_r: int, cost_t: int, live: int) -> Tuple[int, float]:
        """(0, 0) when this worker's share has room, else (why, us until it may; -1:
        never on the share alone)."""
        q = self.quota
        first = math.floor((now_us - q.span) / q.g)
        self.expire(first)

        # Two bounds: a share of what the fleet had left by this worker's last copy of
        # the counters (which may lack what the others admitted since), and a share of
        # the whole limit counting what this worker admitted itself in the window
        # (which holds however uneven the workers are, as long as the others keep to
        # theirs too).
        def room(o_r: int, o_t: int, m_r: int, m_t: int, i_r: int, i_t: int) -> int:
            if q.limit_r >= 0 and (o_r + cost_r > (q.limit_r - m_r) / live
                                   or i_r + o_r + cost_r > q.limit_r / live):  # fmt: skip
                return _WHY_REQUESTS
            if q.limit_t >= 0 and (o_t + cost_t > (q.limit_t - m_t) / live
                                   or i_t + o_t + cost_t > q.limit_t / live):  # fmt: skip
                return _WHY_TOKENS
            return 0

        why = room(self.o_r, self.o_t, self.m_r, self.m_t, self.i_r, self.i_t)
        if not why:
            return 0, 0.0
        o_r, o_t, m_r, m_t = self.o_r, self.o_t, self.m_r, self.m_t
        i_r, i_t = self.i_r, self.i_t
        for j in sorted(set(self.own) | set(self.mirror) | set(self.mine)):
            cell = self.own.get(j)
            if cell is not None:
                o_r -= cell[0]
                o_t -= cell[1]
            cell = self.mirror.get(j)
            if cell is not None:
                m_r -= cell[0]
                m_t -= cell[1]
            cell = self.mine.get(j)
            if cell is not None:
                i_r -= cell[0]
                i_t -= cell[1]
            if not room(o_r, o_t, m_r, m_t, i_r, i_t):
                return why, (j + 1) * q.g + q.span - now_us
        return why, -1.0

    def add_settle(self, idx: int, r: int, t: int) -> None:
        cell = self.settles.get(idx)
        if cell is None:
            self.settles[idx] = [r, t]
        else:
            cell[0] += r
            cell[1] += t

    def take_settles(self) -> List[int]:
        """The pending reconciliations as MERGE/SETTLE triples (and none pending after)."""
        if self.settle_timer is not None:
            self.settle_timer.cancel()
            self.settle_timer = None
        taken, self.settles = self.settles, {}
        out: List[int] = []
        for idx, (r, t) in taken.items():
            if r or t:
                out += (idx, r, t)
        return out

    def idle(self) -> bool:
        return not (self.queue or self.pumping or self.own or self.unmerged or self.settles
                    or self.lease_r or self.lease_pending)  # fmt: skip


class Ticket:
    """One request's claim on a quota: its admission before each attempt, what the
    attempt was charged and its reconciliation. Made by :meth:`QuotaService.ticket`."""

    __slots__ = (
        "bucket",
        "charged",
        "closed",
        "cost_r",
        "cost_t",
        "deadline",
        "exchange",
        "head_bytes",
        "idx",
        "pending",
        "pumped",
        "queued",
        "seq",
        "service",
        "t0",
        "tail",
        "waited",
        "where",
    )

    def __init__(
        self, service: QuotaService, bucket: Bucket, exchange: Any, deadline: float,
        cost_t: int, seq: int,
    ) -> None:  # fmt: skip
        self.service = service
        self.bucket = bucket
        self.exchange = exchange
        self.deadline = deadline
        self.cost_r = 1
        self.cost_t = cost_t
        self.seq = seq
        self.charged = False
        self.closed = False
        self.pending = False
        self.pumped = False
        self.queued = False
        self.waited = False
        self.where = 0
        self.idx = 0
        self.t0 = 0.0
        self.head_bytes: Optional[bytearray] = None
        self.tail: Optional[bytearray] = None

    # -- the pipeline's hooks
    def admit(self) -> None:
        """Admit the next attempt: calls ``exchange.go()`` (now or once it fits) or
        ``exchange.quota_refused(message)``."""
        if self.closed:
            return
        if self.charged:  # an attempt that ended without reporting: keep its estimate
            self.charged = False
        self.head_bytes = self.tail = None
        try:
            self.service.admit(self)
        except Exception:  # a bug: let the request through rather than leave it hanging
            log.exception("quotas: internal error admitting a request; letting it through")
            if not self.closed and not self.charged and not self.queued and not self.pending:
                self.exchange.go()

    def head(self, status: int, headers: List[Tuple[bytes, bytes]]) -> None:
        """The answer's status and headers: a 429's ``retry-after``, the provider's
        remaining counts."""
        if self.charged or status == 429:
            self.service.provider_said(self, status, headers)

    def chunk(self, data: bytes) -> None:
        """A piece of a streamed answer (its first and last bytes hold the usage)."""
        if not self.charged:
            return
        head = self.head_bytes
        if head is None:
            head = self.head_bytes = bytearray()
            self.tail = bytearray()
        if len(head) < _SCAN_EDGE:
            head += data[: _SCAN_EDGE - len(head)]
        tail = self.tail
        assert tail is not None
        tail += data
        if len(tail) > 2 * _SCAN_EDGE:
            del tail[:-_SCAN_EDGE]

    def done(self, status: int, body: bytes) -> None:
        """The answer ended: charge what it used instead of the estimate (read from the
        answer after it has gone to the client: the next loop iteration)."""
        if not self.charged:
            return
        self.charged = False
        if self.bucket.quota.limit_t < 0:  # requests only: the charge stands
            self.head_bytes = self.tail = None
            return
        if not body and self.head_bytes is not None:
            assert self.tail is not None
            body = bytes(self.head_bytes) + b"\n" + bytes(self.tail)
        self.head_bytes = self.tail = None
        self.service.loop.call_soon(self.service.reconcile, self.bucket, self.where, self.idx,
                                    self.cost_r, self.cost_t, status, body)  # fmt: skip

    def failed(self, connect: bool) -> None:
        """The attempt failed: a connection that never carried the request costs
        nothing; one that may have reached the provider keeps its estimate."""
        if self.charged:
            if connect:
                self.settle(0, 0)
            else:
                self.charged = False

    def close(self) -> None:
        """The request ended (any way): leave the queue; an attempt still charged keeps
        its estimate (it may have reached the provider)."""
        if self.closed:
            return
        self.closed = True
        self.charged = False
        if self.queued:
            self.service.leave_queue(self)

    # -- bookkeeping
    def settle(self, requests: int, tokens: int) -> None:
        if not self.charged:
            return
        self.charged = False
        dr = requests - self.cost_r
        dt = tokens - self.cost_t if self.bucket.quota.limit_t >= 0 else 0
        if dr or dt:
            self.service.adjust(self.bucket, self.where, self.idx, dr, dt)


class QuotaService:
    """The quotas of one worker process: matching, admission, reconciliation, the
    heartbeat and the degraded modes. Create it on the runtime's loop, ``await
    start()``, ``await close()`` at shutdown."""

    def __init__(
        self,
        settings: RuntimeSettings,
        loop: asyncio.AbstractEventLoop,
        metrics: Optional[Metrics] = None,
        backend: Optional[RedisBackend] = None,
    ) -> None:
        shared = settings.shared_state
        assert shared.redis_url is not None
        self.loop = loop
        self.metrics = metrics if metrics is not None else Metrics()
        self.timeout_s = shared.timeout_ms / 1000.0
        self.backend = backend if backend is not None else RedisBackend(
            shared.redis_url, self.timeout_s, loop
        )  # fmt: skip
        self.prefix = shared.key_prefix
        self.quotas = [Quota(name, q, shared.key_prefix) for name, q in settings.quotas.items()]
        self.breaker_failures = shared.breaker_failures
        self.retry_s = shared.retry_s
        self.heartbeat_s = shared.heartbeat_s
        self.settle_s = shared.retry_s + shared.heartbeat_s
        self.assumed_runtimes = shared.assumed_runtimes
        self.member = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._members_key = f"{self.prefix}runtimes"
        self._epoch_key = f"{self.prefix}epoch"
        b = self.backend
        self._admit = b.script(ADMIT_LUA)
        self._settle = b.script(SETTLE_LUA)
        self._block = b.script(BLOCK_LUA)
        self._lower = b.script(LOWER_LUA)
        self._snapshot = b.script(SNAPSHOT_LUA)
        self._merge = b.script(MERGE_LUA)
        self._beat = b.script(BEAT_LUA)
        self._leave = b.script(LEAVE_LUA)
        self.state = _DOWN
        self.failures = 0
        self.live = 0
        """Live worker processes at the last heartbeat (0: not counted yet)."""
        self.epoch: Optional[str] = None
        self.recovering_since = 0.0
        self.offset_us = time.time() * 1e6 - loop.time() * 1e6
        """Redis's clock less this loop's, in us (first guessed from the wall clock)."""
        self._by_host: Dict[str, Tuple[Quota, ...]] = {}
        self._buckets: Dict[str, Bucket] = {}
        self._seq = 0
        self._beat_task: Optional[asyncio.Task] = None
        self.closing = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Count this worker in (one heartbeat, within the deadline) and start beating.
        An unreachable Redis does not stop the runtime: the quotas start degraded."""
        self.metrics.quota_backend(False)
        self.metrics.quota_degraded(True)
        await self._heartbeat()
        if self.state != _UP:
            log.warning("quotas: Redis cannot be reached at start; every quota runs on its "
                        "on_backend_failure mode until it answers")  # fmt: skip
        self._beat_task = self.loop.create_task(self._beat_loop())

    async def close(self) -> None:
        self.closing = True
        await cancel_and_wait(self._beat_task)
        settles = []
        for bucket in self._buckets.values():
            self._drop_lease(bucket, True)
            if bucket.timer is not None:
                bucket.timer.cancel()
                bucket.timer = None
            triples = bucket.take_settles()
            if triples:
                settles.append((bucket, triples))
        if self.state == _UP:
            try:
                for bucket, triples in settles:
                    q = bucket.quota
                    await self.backend.run(self._settle, (bucket.key,),
                                           (q.g, q.span, q.nb, q.ttl_ms, *triples))  # fmt: skip
                await self._merge_all(False)
                await self.backend.run(self._leave, [self._members_key], [self.member])
            except BackendError:
                pass
        await self.backend.close()

    # ------------------------------------------------------------ matching
    def ticket(
        self, exchange: Any, target: Any, method: str, headers: Dict[str, str], body: bytes,
        deadline: float, previous: Optional[Ticket] = None,
    ) -> Optional[Ticket]:  # fmt: skip
        """The ticket for a request to ``target`` (None: no quota applies)."""
        if previous is not None:
            previous.close()
        candidates = self._by_host.get(target.host_key)
        if candidates is None:
            if len(self._by_host) >= 10_000:
                self._by_host.clear()
            candidates = tuple(q for q in self.quotas if q.matches(target.host, target.port))
            self._by_host[target.host_key] = candidates
        if not candidates:
            return None
        digest: Optional[str] = None
        digested = False
        quota: Optional[Quota] = None
        for q in candidates:
            if q.keys or q.per_key:
                if not digested:
                    digest = api_key_digest(headers, target.request_target)
                    digested = True
                if q.keys and digest not in q.keys:
                    continue
            quota = q
            break
        if quota is None:
            return None
        key = quota.key
        per_key = quota.per_key and digest is not None
        if per_key:
            assert digest is not None
            key = f"{key}:{digest[:32]}"
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.idle()}
            bucket = self._buckets[key] = Bucket(quota, key, per_key)
        cost_t = 0
        if quota.limit_t >= 0:
            cost_t = estimate_tokens(body, target.request_target, quota.bytes_per_token,
                                     quota.default_max_tokens)  # fmt: skip
        self._seq += 1
        return Ticket(self, bucket, exchange, deadline, cost_t, self._seq)

    # ------------------------------------------------------------ admission
    def admit(self, t: Ticket) -> None:
        b = t.bucket
        q = b.quota
        t.t0 = self.loop.time()
        b.used_at = t.t0
        if q.limit_t >= 0 and t.cost_t > q.limit_t:
            self._refuse(t, (
                f"this request reserves {t.cost_t} tokens (its body's size plus max_tokens), "
                f"more than quota {q.name!r} allows in a whole window: "
                f"{q.describe(_WHY_TOKENS)}; lower max_tokens (or raise "
                f"quotas.{q.name}.prompt_bytes_per_token for long prompts)"
            ))  # fmt: skip
            return
        if b.queue or b.pumping or t.t0 < b.blocked_until:
            if b.blocked_until >= t.deadline:  # known full past its deadline: no need to ask
                self._refuse(t, self._full_message(b, b.why, b.wait_s))
                return
            t.waited = True
            self._enqueue(t)
            self._schedule(b)
            return
        if b.lease_r and self.state == _UP and self._from_lease(t, b):
            return
        self._decide(t)

    # -- leases: the in-process allowance that spares a request the round trip
    def _from_lease(self, t: Ticket, b: Bucket) -> bool:
        """Admit ``t`` from the bucket's lease when it is valid and has room."""
        now = t.t0
        if now >= b.lease_until or b.lease_r < t.cost_r or b.lease_t < t.cost_t:
            return False
        b.lease_r -= t.cost_r
        if b.quota.limit_t >= 0:
            b.lease_t -= t.cost_t
        self._admitted(t, _REDIS, b.lease_idx, "lease")
        return True

    def _note_admission(self, b: Bucket, t: Ticket) -> None:
        """Track the admission rate; fetch the next lease when it pays and fits."""
        now = t.t0
        gap = now - b.last_admit
        b.last_admit = now
        b.gap_s = 0.8 * b.gap_s + 0.2 * min(gap, 1.0)
        b.cost_t_avg = 0.8 * b.cost_t_avg + 0.2 * t.cost_t if b.cost_t_avg else float(t.cost_t)
        q = b.quota
        if b.lease_r * 2 > b.lease_k and now < b.lease_until - q.lease_s / 2:
            return  # the current one still serves
        self._fetch_lease(b)

    def _fetch_lease(self, b: Bucket) -> None:
        """Charge the next lease: twice what this worker admits in a lease's life."""
        if self.state != _UP or b.lease_pending or self.closing:
            return
        q = b.quota
        expected = q.lease_s / max(b.gap_s, 1e-4)
        if expected < 0.5:
            return  # admissions are sparser than a lease lives: one round trip each
        k = min(math.ceil(2 * expected), 64)
        kt = math.ceil(k * b.cost_t_avg * 1.5) if q.limit_t >= 0 else 0
        live = max(1, self.live)
        # only while the fleet is far from the limits: near them, every request asks
        if q.limit_r >= 0 and (b.left_r < 0 or b.left_r < 4 * live * k):
            return
        if q.limit_t >= 0 and (b.left_t < 0 or b.left_t < 4 * live * kt):
            return
        b.lease_pending = True
        sent = self.loop.time()
        args = [q.g, q.span, q.nb, q.ttl_ms, q.limit_r, q.limit_t, k, kt]
        triples = b.take_settles() if b.settles else None
        if triples:
            args += triples
        self.backend.call(self._admit, (b.key,), args,
                          lambda result, error: self._leased(b, k, kt, sent, result, error,
                                                             triples))  # fmt: skip

    def _leased(self, b: Bucket, k: int, kt: int, sent: float, result: Any,
                error: Optional[BaseException], triples: Optional[List[int]]) -> None:  # fmt: skip
        b.lease_pending = False
        if error is not None:
            if triples:
                self._settles_failed(b, triples)
            self._failed(error)
            return
        self._succeeded()
        ok, _, total_r, total_t, cur, now_us, _ = (int(v) for v in result[:7])
        self._clock(now_us)
        self._saw_totals(b, total_r, total_t, cur, now_us)
        if not ok:
            return
        self._drop_lease(b, True)
        if self.state != _UP or self.closing:
            self.adjust(b, _REDIS, cur, -k, -kt, True)
            return
        b.lease_r, b.lease_t, b.lease_idx, b.lease_k = k, kt, cur, k
        b.lease_until = sent + b.quota.lease_s  # from before Redis charged it: never late
        b.lease_timer = self.loop.call_at(sent + b.quota.lease_s / 2, self._lease_half, b)

    def _lease_half(self, b: Bucket) -> None:
        """Half the lease's life: while the worker stays busy, the next one is charged
        now, so that requests keep finding a valid lease; the old one ends at its time."""
        b.lease_timer = self.loop.call_at(b.lease_until, self._lease_expired, b)
        if self.loop.time() - b.last_admit < 2 * b.quota.lease_s:
            self._fetch_lease(b)

    def _lease_expired(self, b: Bucket) -> None:
        b.lease_timer = None
        self._drop_lease(b, True)

    def _drop_lease(self, b: Bucket, give_back: bool) -> None:
        """End the lease; what it did not use goes back to the fleet (when Redis can
        hear of it; else its charge just expires)."""
        if b.lease_timer is not None:
            b.lease_timer.cancel()
            b.lease_timer = None
        r, tk = b.lease_r, b.lease_t
        b.lease_r = b.lease_t = 0
        b.lease_until = 0.0
        if give_back and (r or tk) and self.state != _DOWN:
            self.adjust(b, _REDIS, b.lease_idx, -r, -tk, True)

    def _decide(self, t: Ticket) -> None:
        b = t.bucket
        q = b.quota
        # Recovering: the shares keep to their share until every runtime has merged what
        # it admitted alone, and ask Redis too (those already counting there again spend
        # from the same counters)
        if self.state == _RECOVERING and q.mode == "local_share" and not self._fits_share(t):
            return
        if self.state != _DOWN:
            t.pending = True
            args = [q.g, q.span, q.nb, q.ttl_ms, q.limit_r, q.limit_t, t.cost_r, t.cost_t]
            triples = b.take_settles() if b.settles else None
            if triples:
                args += triples
            self.backend.call(self._admit, (b.key,), args,
                              lambda result, error: self._answered(t, result, error, triples))  # fmt: skip
        else:
            self._decide_locally(t)

    def _answered(self, t: Ticket, result: Any, error: Optional[BaseException],
                  triples: Optional[List[int]] = None) -> None:  # fmt: skip
        t.pending = False
        if error is not None and triples:
            self._settles_failed(t.bucket, triples)
        try:
            self._decided(t, result, error)
        except Exception:  # a bug: let the request through rather than leave it hanging
            log.exception("quotas: internal error deciding a request; letting it through")
            if not t.closed and not t.charged and not t.queued:
                t.pumped = False
                t.exchange.go()

    def _decided(self, t: Ticket, result: Any, error: Optional[BaseException]) -> None:
        b = t.bucket
        if error is not None:
            self._failed(error)
            if t.closed:
                self._release(t)
                return
            self._decide_locally(t)
            return
        self._succeeded()
        ok, wait_us, total_r, total_t, cur, now_us, why = (int(v) for v in result[:7])
        self._clock(now_us)
        self._saw_totals(b, total_r, total_t, cur, now_us)
        if ok:
            if t.closed:  # the request ended while asking: give the charge back
                self._remote_adjust(b, cur, -t.cost_r, -t.cost_t)
                self._release(t)
                return
            self._admitted(t, _REDIS, cur, "admitted")
            return
        if t.closed:
            self._release(t)
            return
        self._wait(t, wait_us / 1e6, why)

    def _release(self, t: Ticket) -> None:
        if t.pumped:
            self._pumped_done(t)

    def _decide_locally(self, t: Ticket) -> None:
        """Admission while Redis cannot be reached: the quota's on_backend_failure."""
        b = t.bucket
        q = b.quota
        now_us = self.redis_now()
        cur = math.floor(now_us / q.g)
        if q.mode == "closed":
            self.metrics.quota_decision(q.name, "closed")
            self._refuse(t, (
                f"the quota backend (Redis) cannot be reached and quota {q.name!r} refuses "
                f"requests then (quotas.{q.name}.on_backend_failure: closed); retry later"
            ))  # fmt: skip
            return
        if q.mode == "open":
            self._admit_locally(b, cur, t)
            self._admitted(t, _LOCAL, cur, "open")
            return
        if self._fits_share(t):
            self._admit_locally(b, cur, t)
            self._admitted(t, _LOCAL, cur, "local")

    def _fits_share(self, t: Ticket) -> bool:
        """True when ``t`` fits this worker's share (local_share); else it waits."""
        b = t.bucket
        q = b.quota
        live = self.live if self.live > 0 else self.assumed_runtimes
        why, wait_us = b.fits_locally(self.redis_now(), t.cost_r, t.cost_t, live)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("quota %s: share decision %s (own %d/%d, mine %d/%d, fleet %d/%d, %d live)",
                      q.name, "wait" if why else "admit", b.o_r, b.o_t, b.i_r, b.i_t, b.m_r,
                      b.m_t, live)  # fmt: skip
        if not why:
            return True
        if wait_us < 0:  # more than this worker's whole share: wait for Redis
            self._wait(t, self.retry_s, _WHY_SHARE)
        else:
            self._wait(t, wait_us / 1e6, _WHY_SHARE if why == _WHY_REQUESTS else -_WHY_SHARE)
        return False

    def _admit_locally(self, b: Bucket, cur: int, t: Ticket) -> None:
        b.add_own(cur, t.cost_r, t.cost_t)
        b.add_unmerged(cur, t.cost_r, t.cost_t)
        if self.state == _RECOVERING:
            self._flush_soon(b)

    def _admitted(self, t: Ticket, where: int, idx: int, decision: str) -> None:
        t.charged = True
        t.where = where
        t.idx = idx
        if where == _REDIS:
            t.bucket.add_mine(idx, t.cost_r, t.cost_t)
            self._note_admission(t.bucket, t)
        now = self.loop.time()
        metrics = self.metrics
        if t.waited:
            t.waited = False
            metrics.quota_wait(t.bucket.quota.name, now - t.t0)
        else:
            metrics.quota_admission(now - t.t0)
        metrics.quota_decision(t.bucket.quota.name, decision)
        pumped = t.pumped
        if pumped:
            self._pumped_done(t)
        t.exchange.go()

    def _wait(self, t: Ticket, wait_s: float, why: int) -> None:
        """The request does not fit for ``wait_s`` (at most: tokens may come back
        sooner, by reconciliation): queue it, or refuse it when its turn cannot come
        before its deadline (and the queued ones behind it that cannot make it either)."""
        b = t.bucket
        q = b.quota
        now = self.loop.time()
        b.why = why
        b.wait_s = wait_s
        if why == _WHY_BLOCKED and now + wait_s > b.provider_block:
            b.provider_block = now + wait_s
        tokens = why == _WHY_TOKENS or why == -_WHY_SHARE
        until = now + (min(wait_s, q.poll_s) if tokens else wait_s)
        if until > b.blocked_until:
            b.blocked_until = until
        was_pumped = t.pumped
        t.pumped = False
        if was_pumped:
            b.pumping = False
        if b.blocked_until + (q.poll_s if tokens else 0.0) >= t.deadline:
            self._refuse(t, self._full_message(b, why, wait_s))
        else:
            t.waited = True
            self._enqueue(t)
        if b.queue:
            keep = []
            for other in b.queue:
                if other.closed:
                    continue
                if b.blocked_until >= other.deadline:
                    other.queued = False
                    self._refuse(other, self._full_message(b, why, wait_s))
                else:
                    keep.append(other)
            b.queue[:] = keep
        self._schedule(b)

    def _freed(self, b: Bucket) -> None:
        """This worker gave tokens or requests back: its queue may ask again at once."""
        if not b.queue or b.pumping:
            return
        now = self.loop.time()
        b.blocked_until = max(now, b.provider_block)
        self._schedule(b)

    def _full_message(self, b: Bucket, why: int, wait_s: float) -> str:
        q = b.quota
        whose = " for this API key" if b.per_key else ""
        when = (f"it frees up in {wait_s:.2f} s, after this request's deadline; retry later, "
                "give the request a later deadline, or raise the quota")  # fmt: skip
        if why == _WHY_BLOCKED:
            return (f"the provider answered 429 for quota {q.name!r}{whose} and asked the fleet "
                    f"to wait (retry-after): {when}")  # fmt: skip
        if abs(why) == _WHY_SHARE:
            kind = _WHY_TOKENS if why < 0 else _WHY_REQUESTS
            return (f"quota {q.name!r}{whose} ({q.describe(kind)}) runs on this runtime's "
                    "share while Redis cannot be reached (on_backend_failure: local_share), "
                    f"and the share is used up: {when}")  # fmt: skip
        return f"quota {q.name!r}{whose} is used up across the fleet ({q.describe(why)}): {when}"

    def _refuse(self, t: Ticket, message: str) -> None:
        b = t.bucket
        self.metrics.quota_decision(b.quota.name, "refused")
        t.queued = False
        if t.pumped:
            self._pumped_done(t)
        t.exchange.quota_refused(message)

    # -- the queue
    def _enqueue(self, t: Ticket) -> None:
        t.queued = True
        queue = t.bucket.queue
        if not queue or queue[-1].seq < t.seq:
            queue.append(t)
        else:  # an earlier request that asked Redis at the same time: keep the order
            seqs = [x.seq for x in queue]
            queue.insert(bisect.bisect(seqs, t.seq), t)

    def leave_queue(self, t: Ticket) -> None:
        t.queued = False
        try:
            t.bucket.queue.remove(t)
        except ValueError:
            pass

    def _schedule(self, b: Bucket) -> None:
        if not b.queue or b.pumping:
            return
        at = max(b.blocked_until, self.loop.time())
        if b.timer is not None:
            if b.timer_at <= at + 1e-4:
                return
            b.timer.cancel()
        b.timer_at = at
        b.timer = self.loop.call_at(at, self._pump, b)

    def _pump(self, b: Bucket) -> None:
        """The head of the queue asks again (one at a time, in order)."""
        b.timer = None
        if self.closing:
            return
        if self.loop.time() < b.blocked_until:
            self._schedule(b)
            return
        while b.queue and not b.pumping:
            if self.loop.time() < b.blocked_until:  # the last one decided to wait again
                self._schedule(b)
                return
            head = b.queue.pop(0)
            head.queued = False
            if head.closed:
                continue
            b.pumping = True
            head.pumped = True
            self._decide(head)

    def _pumped_done(self, t: Ticket) -> None:
        b = t.bucket
        t.pumped = False
        b.pumping = False
        if b.queue and b.timer is None:
            if self.loop.time() >= b.blocked_until:
                b.timer_at = 0.0
                b.timer = self.loop.call_soon(self._pump, b)  # type: ignore[assignment]
            else:
                self._schedule(b)

    # ------------------------------------------------------------ answers
    def provider_said(self, t: Ticket, status: int, raw: List[Tuple[bytes, bytes]]) -> None:
        """A 429's retry-after blocks the quota fleet-wide; remaining counts lower it."""
        headers = rate_headers(raw)
        if not headers:
            return
        b = t.bucket
        q = b.quota
        retry = retry_after_s(headers) if status == 429 else None
        if retry is not None and retry > 0:
            until = self.loop.time() + retry
            if until > b.blocked_until:
                b.blocked_until = until
            if until > b.provider_block:
                b.provider_block = until
            if self.state != _DOWN:
                self.backend.call(self._block, (b.key,),
                                  (q.g, q.span, q.nb, q.ttl_ms, int(retry * 1e6)),
                                  self._background_done)  # fmt: skip
            log.info("quota %s: the provider answered 429; the fleet waits %.3f s (retry-after)",
                     q.name, retry)  # fmt: skip
        rem_r = _int_header(headers, b"x-ratelimit-remaining-requests",
                            b"anthropic-ratelimit-requests-remaining")  # fmt: skip
        rem_t = _int_header(headers, b"x-ratelimit-remaining-tokens",
                            b"anthropic-ratelimit-tokens-remaining")  # fmt: skip
        if q.limit_r < 0:
            rem_r = None
        if q.limit_t < 0:
            rem_t = None
        lower_r = rem_r is not None and (b.left_r < 0 or rem_r < b.left_r)
        lower_t = rem_t is not None and (b.left_t < 0 or rem_t < b.left_t)
        if not (lower_r or lower_t) or self.state == _DOWN:
            return
        fallback = retry if retry is not None else q.window_s

        def reset(*names: bytes) -> int:
            for name in names:
                text = headers.get(name)
                if text is not None:
                    seconds = _seconds_until(text)
                    if seconds is not None:
                        return int(seconds * 1e6)
            return int(fallback * 1e6)

        self.backend.call(
            self._lower, (b.key,),
            (q.g, q.span, q.nb, q.ttl_ms, q.limit_r, q.limit_t,
             rem_r if lower_r and rem_r is not None else -1,
             rem_t if lower_t and rem_t is not None else -1,
             reset(b"x-ratelimit-reset-requests", b"anthropic-ratelimit-requests-reset"),
             reset(b"x-ratelimit-reset-tokens", b"anthropic-ratelimit-tokens-reset")),
            self._background_done,
        )  # fmt: skip
        if lower_r and rem_r is not None:
            b.left_r = rem_r
        if lower_t and rem_t is not None:
            b.left_t = rem_t

    def reconcile(self, b: Bucket, where: int, idx: int, cost_r: int, cost_t: int,
                  status: int, body: bytes) -> None:  # fmt: skip
        """An answer ended: what it used replaces its estimate (Ticket.done)."""
        used = usage_tokens(body) if body else None
        if 200 <= status < 300:
            tokens = cost_t if used is None else used
        else:  # an error answer: the provider counted the request, no tokens
            tokens = used or 0
        dr = 1 - cost_r
        dt = tokens - cost_t
        if dr or dt:
            self.adjust(b, where, idx, dr, dt)

    def adjust(self, b: Bucket, where: int, idx: int, dr: int, dt: int,
               lease: bool = False) -> None:  # fmt: skip
        """An attempt's charge changes by (dr, dt): its reconciliation (or, ``lease``,
        what a lease did not use goes back)."""
        if dr < 0 or dt < 0:
            self.loop.call_soon(self._freed, b)  # its queue may fit now
        if where == _REDIS:
            b.add_mirror(idx, dr, dt)
            if not lease:
                b.add_mine(idx, dr, dt)
            if self.state != _DOWN:
                b.add_settle(idx, dr, dt)
                if b.settle_timer is None:
                    b.settle_timer = self.loop.call_later(SETTLE_DELAY_S, self._flush_settles, b)
            elif dr > 0 or dt > 0:  # more than reserved: Redis must hear of it later
                b.add_unmerged(idx, max(dr, 0), max(dt, 0))
        elif where == _LOCAL:
            b.add_own(idx, dr, dt)
            if idx in b.unmerged or self.state == _DOWN:
                b.add_unmerged(idx, dr, dt)
            else:
                self._remote_adjust(b, idx, dr, dt)

    def _remote_adjust(self, b: Bucket, idx: int, dr: int, dt: int) -> None:
        q = b.quota
        self.backend.call(self._settle, (b.key,),
                          (q.g, q.span, q.nb, q.ttl_ms, idx, dr, dt),
                          self._background_done)  # fmt: skip

    def _flush_settles(self, b: Bucket) -> None:
        """Send the reconciliations no admission took along."""
        b.settle_timer = None
        triples = b.take_settles()
        if not triples:
            return
        if self.state == _DOWN:
            self._settles_failed(b, triples)
            return
        q = b.quota

        def done(result: Any, error: Optional[BaseException]) -> None:
            if error is not None:
                self._settles_failed(b, triples)
                self._failed(error)
            else:
                self._succeeded()

        self.backend.call(self._settle, (b.key,), (q.g, q.span, q.nb, q.ttl_ms, *triples), done)

    def _settles_failed(self, b: Bucket, triples: List[int]) -> None:
        """Reconciliations Redis did not take: more than reserved must reach it later
        (merged with what was admitted alone); less is dropped (the estimate stands,
        which errs on the safe side)."""
        for i in range(0, len(triples), 3):
            idx, dr, dt = triples[i], triples[i + 1], triples[i + 2]
            if dr > 0 or dt > 0:
                b.add_unmerged(idx, max(dr, 0), max(dt, 0))

    def _background_done(self, result: Any, error: Optional[BaseException]) -> None:
        if error is not None:
            self._failed(error)
        else:
            self._succeeded()

    # ------------------------------------------------------------ the backend's health
    def redis_now(self) -> float:
        """Redis's clock now, as this worker estimates it (us)."""
        return self.loop.time() * 1e6 + self.offset_us

    def _clock(self, now_us: int) -> None:
        self.offset_us = now_us - self.loop.time() * 1e6

    def _saw_totals(self, b: Bucket, total_r: int, total_t: int, cur: int, now_us: int) -> None:
        """An answer showed the fleet's totals: what the mirror lacks was admitted since
        its snapshot (by other workers), in the current bucket."""
        q = b.quota
        b.left_r = q.limit_r - total_r if q.limit_r >= 0 else -1
        b.left_t = q.limit_t - total_t if q.limit_t >= 0 else -1
        b.expire(math.floor((now_us - q.span) / q.g))
        if total_r > b.m_r or total_t > b.m_t:
            b.add_mirror(cur, max(0, total_r - b.m_r), max(0, total_t - b.m_t))

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        if self.state == _RECOVERING or (
            self.state == _UP and self.failures >= self.breaker_failures
        ):
            self._set_state(_DOWN, str(error))
        elif self.state == _UP:
            log.debug("quotas: a Redis call failed (%d in a row): %s", self.failures, error)

    def _succeeded(self) -> None:
        self.failures = 0

    def _set_state(self, state: int, why: str = "") -> None:
        old = self.state
        if old == state:
            return
        self.state = state
        metrics = self.metrics
        metrics.quota_backend(state != _DOWN)
        metrics.quota_degraded(state != _UP)
        if state == _UP or old == _UP:  # waits computed the other way no longer hold
            now = self.loop.time()
            for b in self._buckets.values():
                b.blocked_until = max(b.provider_block, min(b.blocked_until, now))
                self._schedule(b)
        if state == _DOWN:
            for b in self._buckets.values():
                self._drop_lease(b, False)  # still charged in Redis: conservative
            self.backend.reset()
            log.warning("quotas: Redis cannot be reached (%s); every quota runs on its "
                        "on_backend_failure mode until it answers again", why)  # fmt: skip
        elif state == _RECOVERING:
            log.info("quotas: Redis answers again; keeping to local shares for %.1f s while "
                     "every runtime adds what it admitted alone", self.settle_s)  # fmt: skip
        else:
            log.info("quotas: counting in Redis, fleet-wide")

    # ------------------------------------------------------------ the heartbeat
    async def _beat_loop(self) -> None:
        while not self.closing:
            interval = self.heartbeat_s if self.state == _UP else min(self.retry_s,
                                                                      self.heartbeat_s)  # fmt: skip
            await asyncio.sleep(interval)
            if self.closing:
                return
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: keep beating
                log.exception("quotas: heartbeat failed")

    async def _heartbeat(self) -> None:
        """Count this worker in, learn the live count, notice a Redis that lost its data,
        merge what was admitted without Redis, refresh the mirrors."""
        live_us = int(self.heartbeat_s * 3 * 1e6)
        try:
            result = await self.backend.run(
                self._beat, (self._members_key, self._epoch_key),
                (self.member, live_us, os.urandom(8).hex(), 7 * 24 * 3600 * 1000),
            )  # fmt: skip
        except BackendError as exc:
            self._failed(exc)
            return
        self._succeeded()
        now_us, live = int(result[0]), int(result[1])
        epoch = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
        created = int(result[3]) == 1
        self._clock(now_us)
        if live != self.live:
            self.live = live
            self.metrics.quota_runtimes(live)
        first_contact = self.epoch is None
        lost = not first_contact and epoch != self.epoch
        self.epoch = epoch
        if lost:
            log.warning("quotas: Redis lost the fleet's counters (restarted?)%s",
                        "; restoring the last known ones" if created else "")  # fmt: skip
        try:
            if self.state == _DOWN:
                alone = any(b.unmerged or b.own for b in self._buckets.values())
                await self._merge_all(lost)
                if first_contact and not alone:  # a fresh start: nothing to settle
                    self._set_state(_UP)
                else:
                    self.recovering_since = self.loop.time()
                    self._set_state(_RECOVERING)
            else:
                await self._merge_all(lost)
                if (self.state == _RECOVERING
                        and self.loop.time() - self.recovering_since >= self.settle_s):  # fmt: skip
                    await self._merge_all(False)
                    self._set_state(_UP)
            await self._refresh_mirrors()
        except BackendError as exc:
            self._failed(exc)

    def _merge_args(self, b: Bucket, restore: bool) -> Tuple[List[int], Dict[int, List[int]]]:
        """The MERGE arguments of ``b`` (the mirror's counters as lower bounds when
        restoring a Redis that lost them, then the unmerged changes) and the unmerged
        changes they take ([] when there is nothing to send)."""
        taken, b.unmerged = b.unmerged, {}
        floors: List[int] = []
        if restore:
            for idx in sorted(b.mirror):
                r, t = b.mirror[idx]
                if r or t:
                    floors += (idx, r, t)
        adds: List[int] = []
        for idx in sorted(taken):
            r, t = taken[idx]
            if r or t:
                adds += (idx, r, t)
        if not floors and not adds:
            return [], taken
        return [len(floors), *floors, *adds], taken

    @staticmethod
    def _merged(b: Bucket, taken: Dict[int, List[int]], ok: bool) -> None:
        """After a MERGE: what it added is now the fleet's (mirror), not this worker's
        alone (own); or, when it failed, still to be merged."""
        for idx, (r, t) in taken.items():
            if ok:
                b.add_own(idx, -r, -t)
                b.add_mirror(idx, r, t)
                b.add_mine(idx, r, t)
            else:
                b.add_unmerged(idx, r, t)

    async def _merge_all(self, restore: bool) -> None:
        for b in list(self._buckets.values()):
            if not b.unmerged and not (restore and b.mirror):
                continue
            q = b.quota
            args, taken = self._merge_args(b, restore)
            if not args:
                continue
            try:
                await self.backend.run(self._merge, (b.key,),
                                       (q.g, q.span, q.nb, q.ttl_ms, *args))  # fmt: skip
            except BackendError:
                self._merged(b, taken, False)
                raise
            self._merged(b, taken, True)

    def _flush_soon(self, b: Bucket) -> None:
        if b.flush_pending:
            return
        b.flush_pending = True
        self.loop.call_soon(self._flush, b)

    def _flush(self, b: Bucket) -> None:
        b.flush_pending = False
        if self.state == _DOWN or not b.unmerged:
            return
        q = b.quota
        args, taken = self._merge_args(b, False)
        if not args:
            return

        def done(result: Any, error: Optional[BaseException]) -> None:
            self._merged(b, taken, error is None)
            if error is not None:
                self._failed(error)

        self.backend.call(self._merge, (b.key,), (q.g, q.span, q.nb, q.ttl_ms, *args), done)

    async def _refresh_mirrors(self) -> None:
        """Copy the fleet's counters of the quotas this worker used lately."""
        now = self.loop.time()
        active = [b for b in self._buckets.values()
                  if now - b.used_at <= b.quota.span / 1e6 + self.heartbeat_s]  # fmt: skip
        active.sort(key=lambda b: -b.used_at)
        for b in active[:_SNAPSHOTS_PER_BEAT]:
            q = b.quota
            result = await self.backend.run(self._snapshot, (b.key,),
                                            (q.g, q.span, q.nb, q.ttl_ms))  # fmt: skip
            values = [int(v) for v in result]
            now_us, blk, total_r, total_t = values[0], values[3], values[4], values[5]
            mirror: Dict[int, List[int]] = {}
            m_r = m_t = 0
            for i in range(6, len(values), 3):
                mirror[values[i]] = [values[i + 1], values[i + 2]]
                m_r += values[i + 1]
                m_t += values[i + 2]
            b.mirror, b.m_r, b.m_t = mirror, m_r, m_t
            b.left_r = q.limit_r - total_r if q.limit_r >= 0 else -1
            b.left_t = q.limit_t - total_t if q.limit_t >= 0 else -1
            if blk > now_us:
                until = self.loop.time() + (blk - now_us) / 1e6
                if until > b.blocked_until:
                    b.blocked_until = until
                if until > b.provider_block:
                    b.provider_block = until

    # ------------------------------------------------------------ for tests and tools
    def describe(self) -> Dict[str, Any]:
        """The service's state: backend, live workers, queued requests per quota."""
        return {
            "state": _STATE_NAMES[self.state],
            "live": self.live,
            "queued": {b.key: len(b.queue) for b in self._buckets.values() if b.queue},
        }
