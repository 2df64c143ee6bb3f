"""Start and stop a simulator and a runtime as subprocesses (``vastar demo``, tests, benches).

Why subprocesses and not the in-process servers: the demo must show the real
deployment shape (a runtime daemon on a Unix socket, an upstream HTTP server on a TCP
port) and must not let the services' event loops compete with the client for the GIL,
which would distort the time-to-first-token it prints.

Every start is bounded by a timeout, and everything started is stopped again: on normal
exit, on an exception and on Ctrl-C (``with EmbeddedServices(...)`` or ``try/finally``
around :meth:`EmbeddedServices.stop`). Stopping sends SIGTERM, waits a grace period,
then SIGKILLs; the temporary directory (socket, ready file, logs) is removed. On Linux
the children also get ``PR_SET_PDEATHSIG`` so they die with a parent that is killed
outright. Children run in their own session so a terminal Ctrl-C reaches only the
parent, which then stops them in order.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Callable, Dict, List, Optional, Type

import vastar_fast

__all__ = [
    "EmbeddedServices",
    "ManagedProcess",
    "ServiceError",
    "child_environment",
    "free_port",
]

log = logging.getLogger("vastar_fast.services")

#: Environment variables that would redirect a child runtime (or our client) elsewhere.
_ENDPOINT_VARS = ("VASTAR_SOCKET_PATH", "VASTAR_USE_TCP", "VASTAR_TCP_HOST", "VASTAR_TCP_PORT")


class ServiceError(RuntimeError):
    """A service did not start (in time); the text ends with the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for a child: this package importable, endpoint overrides removed.

    ``PYTHONPATH`` gets the directory holding the ``vastar_fast`` package we run from, so
    a source checkout works without installation.
    """
    env = dict(os.environ if base is None else base)
    for name in _ENDPOINT_VARS:
        env.pop(name, None)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(vastar_fast.__file__)))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in parts:
        parts.insert(0, package_root)
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when its parent dies (best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ManagedProcess:
    """One child process whose output goes to a log file; stopped gently, then firmly."""

    def __init__(self, name: str, args: List[str], log_path: str, env: Dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        with open(log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        log.debug("started %s (pid %d): %s", name, self.process.pid, " ".join(args))

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:]).rstrip()
        except OSError:
            return ""

    def failure(self, what: str) -> ServiceError:
        tail = self.log_tail()
        return ServiceError(f"{what}" + (f"\n--- {self.name} log ---\n{tail}" if tail else ""))

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the child."""
        proc = self.process
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, proc.pid)
                proc.kill()
                proc.wait(5.0)
            except ProcessLookupError:
                pass
        else:
            proc.wait()
        log.debug("%s (pid %d) stopped with status %s", self.name, proc.pid, proc.returncode)


def _wait_until(
    check: Callable[[], bool], proc: ManagedProcess, deadline: float, what: str
) -> None:
    """Poll ``check`` until true; fail fast if the process exits, fail at the deadline."""
    delay = 0.01
    while True:
        if check():
            return
        if not proc.alive():
            raise proc.failure(f"{what}: the process exited with status {proc.process.returncode}")
        if time.monotonic() >= deadline:
            raise proc.failure(f"{what}: not ready within the startup timeout")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class EmbeddedServices:
    """A simulator and/or a runtime started as subprocesses, stopped on exit.

    The runtime listens on a Unix socket in a fresh temporary directory; the simulator
    on a free loopback port. Read :attr:`simulator_url` and :attr:`runtime_socket`
    after :meth:`start`. ``start`` is bounded by ``startup_timeout_s`` and, if anything
    fails, stops what it had started before raising :class:`ServiceError`.
    """

    def __init__(
        self,
        *,
        simulator: bool = True,
        runtime: bool = True,
        ttft_ms: float = 150.0,
        token_delay_ms: float = 5.0,
        tokens_per_chunk: int = 1,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 20.0,
        stop_grace_s: float = 3.0,
        python: str = sys.executable,
    ) -> None:
        self.want_simulator = simulator
        self.want_runtime = runtime
        self.ttft_ms = ttft_ms
        self.token_delay_ms = token_delay_ms
        self.tokens_per_chunk = tokens_per_chunk
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.python = python
        self.tmpdir: Optional[str] = None
        self.simulator: Optional[ManagedProcess] = None
        self.runtime: Optional[ManagedProcess] = None
        self.simulator_url: Optional[str] = None
        self.simulator_port: Optional[int] = None
        self.runtime_socket: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmbeddedServices:
        """Start the wanted services and wait until each answers (bounded)."""
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            self.tmpdir = self._make_tmpdir()
            env = child_environment()
            if self.want_simulator:
                self._start_simulator(env, deadline)
            if self.want_runtime:
                self._start_runtime(env, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the runtime, then the simulator, and remove the temporary directory.

        Idempotent; safe to call from ``finally`` after a failed or interrupted start.
        """
        try:
            for proc in (self.runtime, self.simulator):
                if proc is not None:
                    try:
                        proc.stop(self.stop_grace_s)
                    except KeyboardInterrupt:  # a second Ctrl-C: do not leave it behind
                        proc.process.kill()
                        proc.process.wait(5.0)
                        raise
        finally:
            self.runtime = None
            self.simulator = None
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None

    def __enter__(self) -> EmbeddedServices:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def pids(self) -> List[int]:
        return [p.pid for p in (self.simulator, self.runtime) if p is not None]

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _make_tmpdir() -> str:
        path = tempfile.mkdtemp(prefix="vastar-demo-")
        # Unix socket paths are limited to ~107 bytes; long $TMPDIRs (macOS) exceed it.
        if len(os.path.join(path, "runtime.sock")) > 100 and os.path.isdir("/tmp"):
            shutil.rmtree(path, ignore_errors=True)
            path = tempfile.mkdtemp(prefix="vastar-demo-", dir="/tmp")
        return path

    def _start_simulator(self, env: Dict[str, str], deadline: float) -> None:
        assert self.tmpdir is not None
        # The port is picked here and bound by the child; if another process takes it in
        # between, the child exits at once and we try another port.
        for attempt in range(3):
            port = free_port(self.host)
            args = [
                self.python,
                "-m",
                "vastar_fast.simulator",
                "--host",
                self.host,
                "--port",
                str(port),
                "--ttft-ms",
                f"{self.ttft_ms:g}",
                "--token-delay-ms",
                f"{self.token_delay_ms:g}",
                "--tokens-per-chunk",
                str(self.tokens_per_chunk),
                "--log-level",
                "warning",
            ]
            log_path = os.path.join(self.tmpdir, f"simulator-{attempt}.log")
            proc = ManagedProcess("simulator", args, log_path, env)
            self.simulator = proc
            try:
                _wait_until(
                    functools.partial(_http_ok, self.host, port, "/health"),
                    proc,
                    deadline,
                    f"the simulator on {self.host}:{port} did not start",
                )
            except ServiceError:
                if proc.alive() or attempt == 2 or time.monotonic() >= deadline:
                    raise
                proc.stop(0.1)
                self.simulator = None
                continue
            self.simulator_port = port
            self.simulator_url = f"http://{self.host}:{port}"
            log.info("simulator ready at %s (pid %d)", self.simulator_url, proc.pid)
            return

    def _start_runtime(self, env: Dict[str, str], deadline: float) -> None:
        assert self.tmpdir is not None
        sock_path = os.path.join(self.tmpdir, "runtime.sock")
        ready_path = os.path.join(self.tmpdir, "runtime.ready")
        args = [
            self.python,
            "-m",
            "vastar_fast.runtime",
            "--socket",
            sock_path,
            "--ready-file",
            ready_path,
            "--log-level",
            "WARNING",
        ]
        proc = ManagedProcess("runtime", args, os.path.join(self.tmpdir, "runtime.log"), env)
        self.runtime = proc

        def ready() -> bool:
            if not os.path.exists(ready_path):
                return False
            try:
                with open(ready_path, encoding="utf-8") as f:
                    info = json.load(f)
            except (OSError, ValueError):
                return False
            return bool(info.get("pid") == proc.pid and os.path.exists(sock_path))

        _wait_until(ready, proc, deadline, f"the runtime on {sock_path} did not start")
        self.runtime_socket = sock_path
        log.info("runtime ready on %s (pid %d)", sock_path, proc.pid)
