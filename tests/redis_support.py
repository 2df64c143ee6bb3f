"""A real Redis for the fleet quotas' tests: Debian's ``redis-server`` on a Unix socket in
a temporary directory, started and stopped by the tests (``.ci/run`` installs it). Tests
skip, saying why, without redis-server (or, where they read Redis themselves, without
the redis package).

Import the fixtures into a conftest or test module: ``from redis_support import
redis_server, redis_prefix  # noqa: F401``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from vastar_fast.services import ServiceProcess, redis_server_path, redis_service

_PREFIXES = itertools.count(1)


class RedisServer:
    """One redis-server (no persistence); :meth:`stop` loses its data, as a crash does,
    and :meth:`start` brings it back on the same socket."""

    def __init__(self, directory: Path, name: str = "redis") -> None:
        if redis_server_path() is None:
            pytest.skip(
                "these tests need Debian's redis-server (apt-get install redis-server; "
                ".ci/run installs it when missing)"
            )
        self.directory = directory
        self.name = name
        self.socket_path = str(directory / f"{name}.sock")
        self.url = f"unix://{self.socket_path}"
        self.proc: Optional[ServiceProcess] = None

    def start(self) -> RedisServer:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.proc = redis_service(str(self.directory), name=self.name,
                                  socket_path=self.socket_path, startup_timeout_s=20)  # fmt: skip
        self.proc.start()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop(0.5)
            self.proc = None

    def client(self) -> Any:
        """A redis-py client (the tests read the counters with it; the runtime has its
        own client and does not need the package)."""
        redis = pytest.importorskip(
            "redis", reason="reading Redis in these tests needs the redis package "
            "(pip install -e '.[test]')"
        )  # fmt: skip

        return redis.Redis(unix_socket_path=self.socket_path, socket_timeout=5)

    def counters(self, prefix: str) -> Dict[str, Dict[str, int]]:
        """The quota hashes under ``prefix``: key -> {field: int}."""
        with self.client() as r:
            out = {}
            for key in r.scan_iter(match=f"{prefix}quota:*"):
                out[key.decode()] = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
            return out

    def totals(self, prefix: str) -> List[int]:
        """[requests, tokens] counted now, over every quota hash under ``prefix``."""
        with self.client() as r:
            totals = [0, 0]
            for key in r.scan_iter(match=f"{prefix}quota:*"):
                got = r.hmget(key, "R", "T")
                totals[0] += int(got[0] or 0)
                totals[1] += int(got[1] or 0)
            return totals

    def script_calls(self) -> int:
        """EVALSHA and EVAL calls Redis has served (INFO commandstats)."""
        with self.client() as r:
            stats = r.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis for the session; tests keep apart by their key prefixes."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{os.getpid()}-{next(_PREFIXES)}:"
