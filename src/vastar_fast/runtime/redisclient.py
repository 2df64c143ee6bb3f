"""The runtime's Redis client: redis-py's asyncio client, with a deadline on every call.

Used by :mod:`.quotas` only, and imported only when quotas are configured (the ``redis``
extra: ``pip install 'vastar-fast[redis]'``). What it adds to redis-py:

- every call has a deadline (``shared_state.timeout_ms``): connecting, waiting for a
  pooled connection and the round trip together; redis-py's own retries are turned
  off, so a Redis that is down or slow costs a request at most the deadline, never a
  hang;
- :meth:`RedisBackend.call` takes a callback instead of being awaited, so the request
  path (callbacks, no task per request) can use it; :meth:`RedisBackend.run` is the
  awaitable form for the background heartbeat.

Scripts are sent with EVALSHA and loaded again when Redis answers NOSCRIPT (a restarted
Redis), which redis-py's script objects do. Nothing here logs a URL or a password.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["BackendError", "RedisBackend", "import_redis"]

log = logging.getLogger("vastar_fast.runtime.quotas")

Done = Callable[[Any, Optional[BaseException]], None]
"""``done(result, error)``: exactly one of them is None (a script may return None)."""


class BackendError(Exception):
    """A Redis call that failed or took longer than its deadline."""


def import_redis() -> Any:
    """``redis.asyncio``, or a clear error saying how to install it."""
    try:
        import redis.asyncio as aredis
    except ImportError:
        raise RuntimeError(
            "quotas are counted in Redis and need the redis package: "
            "pip install 'vastar-fast[redis]'"
        ) from None
    return aredis


class RedisBackend:
    """One worker process's connection pool to the fleet's Redis."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop,
        max_connections: int = 32,
    ) -> None:
        aredis = import_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.timeout_s = timeout_s
        self.loop = loop
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a pooled connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._redis = aredis.Redis(connection_pool=pool)
        self._tasks: set = set()
        self.closed = False

    def script(self, source: str) -> Any:
        """A script object for :meth:`call` and :meth:`run` (EVALSHA, loaded on demand)."""
        return self._redis.register_script(source)

    def call(self, script: Any, keys: Sequence[str], args: Sequence[Any], done: Done) -> None:
        """Run ``script`` in the background; ``done(result, None)`` or ``done(None, error)``
        on the loop, within the deadline."""
        if self.closed:
            done(None, BackendError("the quota service is closed"))
            return
        task = self.loop.create_task(self._bounded(script, keys, args))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(t, done))

    async def run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Await ``script``'s result; :class:`BackendError` when it fails or is late."""
        if self.closed:
            raise BackendError("the quota service is closed")
        return await self._bounded(script, keys, args)

    async def _bounded(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        late = self.loop.call_later(self.timeout_s, task.cancel)
        try:
            return await script(keys=list(keys), args=list(args))
        except asyncio.CancelledError:
            if self.closed:
                raise
            uncancel = getattr(task, "uncancel", None)  # 3.11+: the cancel was ours
            if uncancel is not None:
                uncancel()
            raise BackendError(f"Redis did not answer within {self.timeout_s * 1000:g} ms "
                               "(shared_state.timeout_ms)") from None  # fmt: skip
        except Exception as exc:  # redis errors, OSError: the message names no secret
            raise BackendError(f"Redis call failed: {type(exc).__name__}: {_safe(exc)}") from None
        finally:
            late.cancel()

    def _finished(self, task: asyncio.Task, done: Done) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            done(None, BackendError("the quota service is closed"))
            return
        error = task.exception()
        if error is not None:
            done(None, error)
        else:
            done(task.result(), None)

    def reset(self) -> None:
        """Drop the pooled connections (Redis went away: they are all dead, and each
        would fail one call when it comes back)."""
        if self.closed:
            return
        task = self.loop.create_task(self._redis.connection_pool.disconnect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait (within the deadline) for calls in flight, then close the connections."""
        pending: List[asyncio.Task] = list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=self.timeout_s * 2)
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        try:
            close = getattr(self._redis, "aclose", None) or self._redis.close  # redis-py < 5
            await close()
            await self._redis.connection_pool.disconnect()
        except Exception:  # closing a connection that is already broken
            pass


def _safe(exc: BaseException) -> str:
    """An exception's text without anything that looks like a URL (it could carry a
    password)."""
    text = str(exc)
    if "://" in text or "@" in text:
        return "(details withheld: they name the Redis URL)"
    return text[:300]
