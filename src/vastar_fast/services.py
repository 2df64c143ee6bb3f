"""The one launcher for services in subprocesses: runtime, simulator, canned runtime.

``vastar demo``, the tests and the benchmarks start every service through this module,
so they all get the same guarantees:

* **Readiness.** :meth:`ServiceProcess.start` returns only once the service answers: the
  runtime has written its ready file (naming its own pid) and its socket exists, the
  simulator answers ``/health``, a plain socket accepts connections. A process that
  exits during the wait fails at once with its exit status and the tail of its log.
* **A bounded start.** Every wait has a deadline (``startup_timeout_s``); a service that
  is not ready by then is stopped and :class:`ServiceError` raised.
* **Optional CPU pinning.** ``cpus={1}`` pins the child (and what it forks) before it
  runs any code, so client and service can sit on different cores in a benchmark;
  :func:`pinned` does the same for the calling process and restores it after.
* **Cleanup.** Stopping sends the service's stop signal (SIGTERM, or e.g. SIGQUIT for
  nginx), waits a grace period, then SIGKILLs and reaps. Everything still running is
  stopped at interpreter exit (``atexit``), and inside :func:`signals_raise` a SIGTERM or
  SIGHUP becomes the :class:`Terminated` exception so that ``with`` blocks unwind and
  stop their services. On Linux children also get ``PR_SET_PDEATHSIG`` so they die
  with a parent that is killed outright, and they run in their own session so a
  terminal Ctrl-C reaches only the parent, which then stops them in order.

Why subprocesses and not the in-process servers: the demo and the benchmarks must show
the real deployment shape (a runtime daemon on a Unix socket, an upstream HTTP server on
a TCP port) and must not let the services' event loops compete with the client for the
GIL, which would distort what they measure.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from types import FrameType, TracebackType
from typing import (
    IO,
    Any,
    Callable,
    Collection,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Type,
    Union,
)

import vastar_fast

from ._log import logger

__all__ = [
    "ENDPOINT_VARS",
    "EmbeddedServices",
    "ManagedProcess",
    "ServiceError",
    "ServiceProcess",
    "Terminated",
    "canned_runtime_service",
    "child_environment",
    "free_port",
    "http_ready",
    "make_tmpdir",
    "pinned",
    "ready_file_ready",
    "redis_server_path",
    "redis_service",
    "released_runtime_service",
    "runtime_service",
    "signals_raise",
    "simulator_service",
    "start_simulator",
    "tcp_ready",
    "unix_socket_ready",
]

log = logger("vastar_fast.services")  # the real one, with the package's NullHandler

#: Environment variables that would redirect a child runtime (or our client) elsewhere.
ENDPOINT_VARS = ("VASTAR_SOCKET_PATH", "VASTAR_USE_TCP", "VASTAR_TCP_HOST", "VASTAR_TCP_PORT")

Readiness = Callable[["ServiceProcess"], bool]
_Output = Union[str, "os.PathLike[str]", int, None]


class ServiceError(RuntimeError):
    """A service did not start (in time); the text ends with the tail of its log."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived inside :func:`signals_raise` (a BaseException, like
    KeyboardInterrupt, so that ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


# --------------------------------------------------------------------------- helpers
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(vastar_fast.__file__)))


def child_environment(
    base: Optional[Dict[str, str]] = None, *, extra_path: Sequence[str] = ()
) -> Dict[str, str]:
    """The environment for a child: this package importable, endpoint overrides removed.

    ``PYTHONPATH`` starts with ``extra_path`` (e.g. the released SDK's directory), then
    the directory holding the ``vastar_fast`` package we run from, so a source checkout
    works without installation and a child runs the same code as its parent.
    """
    env = dict(os.environ if base is None else base)
    for name in ENDPOINT_VARS:
        env.pop(name, None)
    package_root = _package_root()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    parts = [p for p in parts if p != package_root]
    env["PYTHONPATH"] = os.pathsep.join([*extra_path, package_root, *parts])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def make_tmpdir(prefix: str = "vastar-") -> str:
    """A fresh private temporary directory short enough for Unix socket paths (~107
    bytes; long ``$TMPDIR`` values, as on macOS, exceed it: then ``/tmp`` is used)."""
    path = tempfile.mkdtemp(prefix=prefix)
    if len(os.path.join(path, "runtime.ready.sock")) > 100 and os.path.isdir("/tmp"):
        shutil.rmtree(path, ignore_errors=True)
        path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    return path


def _usable_cpus(cpus: Iterable[int]) -> List[int]:
    wanted = sorted(set(cpus))
    if not hasattr(os, "sched_getaffinity"):
        return []
    allowed = os.sched_getaffinity(0)
    return [c for c in wanted if c in allowed]


@contextlib.contextmanager
def pinned(cpus: Iterable[int]) -> Iterator[bool]:
    """Run the calling process on ``cpus`` inside the block (Linux; elsewhere, or when
    none of them is allowed, a no-op); yields whether it pinned. Restores the previous
    CPU set on exit."""
    usable = _usable_cpus(cpus)
    if not usable:
        yield False
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, usable)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setaffinity(0, before)


def _child_setup(cpus: Optional[Sequence[int]]) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the parent
            except Exception:
                pass
        if cpus:
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass

    return setup


# --------------------------------------------------------------------------- readiness
def ready_file_ready(path: str, *, needs: Sequence[str] = ()) -> Readiness:
    """Ready once ``path`` holds JSON whose ``pid`` is the child's and the paths in
    ``needs`` exist (the runtime's ``--ready-file``). The parsed JSON lands in
    :attr:`ServiceProcess.info`."""

    def check(proc: ServiceProcess) -> bool:
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return False
        if not isinstance(info, dict) or info.get("pid") != proc.pid:
            return False
        if not all(os.path.exists(p) for p in needs):
            return False
        proc.info = info
        return True

    return check


def unix_socket_ready(path: str) -> Readiness:
    """Ready once a connection to the Unix socket ``path`` succeeds."""

    def check(proc: ServiceProcess) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                return False

    return check


def tcp_ready(host: str, port: int) -> Readiness:
    """Ready once a TCP connection to ``host:port`` succeeds."""

    def check(proc: ServiceProcess) -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def http_ready(host: str, port: int, path: str = "/health") -> Readiness:
    """Ready once ``GET path`` on ``host:port`` answers 200."""

    def check(proc: ServiceProcess) -> bool:
        conn = http.client.HTTPConnection(host, port, timeout=0.5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return check


# --------------------------------------------------------------------------- the process
_LIVE: weakref.WeakSet[ServiceProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_stop_all_at_exit)


class ServiceProcess:
    """One service in a subprocess, started with a bounded wait for readiness.

    ``log_path`` receives the child's stderr, and its stdout too unless ``stdout_path``
    is given (``subprocess.DEVNULL`` discards it). ``ready`` is polled until true (see
    :func:`ready_file_ready` and friends; None: started means ready). ``cpus`` pins the
    child. ``stop_signal`` and ``stop_grace_s`` say how :meth:`stop` asks it to go.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: str,
        env: Optional[Dict[str, str]] = None,
        stdout_path: _Output = None,
        ready: Optional[Readiness] = None,
        startup_timeout_s: float = 20.0,
        cpus: Optional[Collection[int]] = None,
        stop_signal: int = signal.SIGTERM,
        stop_grace_s: float = 3.0,
        cwd: Optional[str] = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = child_environment() if env is None else env
        self.stdout_path = stdout_path
        self.ready = ready
        self.startup_timeout_s = startup_timeout_s
        self.cpus = _usable_cpus(cpus) if cpus else []
        self.stop_signal = stop_signal
        self.stop_grace_s = stop_grace_s
        self.cwd = cwd
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.info: Dict[str, object] = {}
        #: Where the service listens, as its factory knows it (None: not applicable).
        self.socket_path: Optional[str] = None
        self.port: Optional[int] = None
        self.url: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle
    def spawn(self) -> ServiceProcess:
        """Start the child without waiting for readiness (see :meth:`wait_ready`)."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} was already started")
        out: Optional[IO[bytes]] = None
        with contextlib.ExitStack() as files:
            err = files.enter_context(open(self.log_path, "wb"))
            stdout: Union[int, IO[bytes]]
            if isinstance(self.stdout_path, int):
                stdout = self.stdout_path
            elif self.stdout_path is None:
                stdout = err  # one log for both streams
            else:
                out = files.enter_context(open(self.stdout_path, "wb"))
                stdout = out
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_child_setup(self.cpus) if os.name == "posix" else None,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        log.debug("started %s (pid %d): %s", self.name, self.pid, " ".join(self.args))
        return self

    def wait_ready(self, deadline: Optional[float] = None) -> ServiceProcess:
        """Poll the readiness check until true; on an exit or at the deadline, stop the
        child and raise :class:`ServiceError` with the tail of its log."""
        if deadline is None:
            deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.005
        while True:
            if self.ready is None or self.ready(self):
                log.info("%s ready (pid %d)", self.name, self.pid)
                return self
            if not self.alive():
                raise self.failure(f"{self.name} did not start: the process exited with "
                                   f"status {self.returncode}")  # fmt: skip
            if time.monotonic() >= deadline:
                self.stop(0.5)
                raise self.failure(f"{self.name} did not start: not ready within the startup "
                                   f"timeout ({self.startup_timeout_s:g} s)")  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def start(self, deadline: Optional[float] = None) -> ServiceProcess:
        """Spawn and wait until ready (bounded); stops the child again on any failure."""
        self.spawn()
        try:
            return self.wait_ready(deadline)
        except BaseException:
            self.stop(0.5)
            raise

    def stop(self, grace_s: Optional[float] = None) -> Optional[int]:
        """The stop signal, up to ``grace_s`` to exit, then SIGKILL; always reaps the
        child. Idempotent; returns the exit status (None if it was never started)."""
        proc = self.process
        if proc is None:
            return None
        grace = self.stop_grace_s if grace_s is None else grace_s
        try:
            if proc.poll() is None:
                try:
                    proc.send_signal(self.stop_signal)
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored its stop signal; killing it",
                                self.name, proc.pid)  # fmt: skip
                    self.kill()
                except ProcessLookupError:
                    pass
                except KeyboardInterrupt:  # a second Ctrl-C: do not leave it behind
                    self.kill()
                    raise
            proc.wait()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
        log.debug("%s (pid %d) stopped with status %s", self.name, proc.pid, proc.returncode)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> ServiceProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.pid

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]).rstrip()

    def failure(self, what: str) -> ServiceError:
        tail = self.log_tail()
        return ServiceError(what + (f"\n--- {self.name} log ---\n{tail}" if tail else ""))


#: The name this class had before every service went through the launcher.
ManagedProcess = ServiceProcess


@contextlib.contextmanager
def signals_raise(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Inside the block, SIGTERM / SIGHUP raise :class:`Terminated`, so ``with`` blocks and
    ``finally`` clauses stop what they started. Main thread only (elsewhere a no-op)."""

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise Terminated(signum)

    previous: Dict[int, Any] = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
    except (ValueError, AttributeError):  # not the main thread, or no such signal
        for signum, old in previous.items():
            signal.signal(signum, old)
        previous = {}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# --------------------------------------------------------------------------- the services
def runtime_service(
    directory: str,
    *,
    name: str = "runtime",
    socket_path: Optional[str] = None,
    tcp: Optional[str] = None,
    config_path: Optional[str] = None,
    log_level: str = "WARNING",
    workers: Optional[int] = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
    env: Optional[Dict[str, str]] = None,
    stdout_path: _Output = None,
    **options: Any,
) -> ServiceProcess:
    """``vastar runtime`` (``python -m vastar_fast.runtime``) with its socket, ready file
    and log in ``directory``. Ready when the ready file names the child's pid and the
    socket exists; :attr:`ServiceProcess.info` then holds the ready file (``tcp_port``,
    ``metrics_port``, ``workers``). ``options`` go to :class:`ServiceProcess`."""
    socket_path = socket_path or os.path.join(directory, f"{name}.sock")
    ready_path = os.path.join(directory, f"{name}.ready")
    args = [python, "-m", "vastar_fast.runtime", "--socket", socket_path,
            "--ready-file", ready_path, "--log-level", log_level]  # fmt: skip
    if config_path is not None:
        args += ["--config", config_path]
    if tcp is not None:
        args += ["--tcp", tcp]
    if workers is not None and "--workers" not in extra:
        args += ["--workers", str(workers)]
    args += list(extra)
    proc = ServiceProcess(
        name,
        args,
        log_path=os.path.join(directory, f"{name}.log"),
        env=env,
        stdout_path=stdout_path,
        ready=ready_file_ready(ready_path, needs=[socket_path]),
        **options,
    )
    proc.socket_path = socket_path
    return proc


def released_runtime_service(
    binary: str, directory: str, *, name: str = "released", **options: Any
) -> ServiceProcess:
    """The released runtime binary on a socket in ``directory`` (it reads
    ``VASTAR_SOCKET_PATH``). Its three INFO lines per request on stdout are discarded;
    stderr goes to the log. Ready when the socket accepts a connection."""
    socket_path = os.path.join(directory, f"{name}.sock")
    env = child_environment()
    env["VASTAR_SOCKET_PATH"] = socket_path
    proc = ServiceProcess(
        name,
        [binary],
        log_path=os.path.join(directory, f"{name}.log"),
        env=env,
        stdout_path=subprocess.DEVNULL,
        ready=unix_socket_ready(socket_path),
        **options,
    )
    proc.socket_path = socket_path
    return proc


def canned_runtime_service(
    directory: str, *, name: str = "canned-runtime", **options: Any
) -> ServiceProcess:
    """The benchmarks' canned runtime (answers every request at once with one small
    response; :mod:`vastar_fast.benchmarks.canned_runtime`) on a socket in ``directory``."""
    socket_path = os.path.join(directory, f"{name}.sock")
    ready_path = os.path.join(directory, f"{name}.ready")
    proc = ServiceProcess(
        name,
        [sys.executable, "-m", "vastar_fast.benchmarks.canned_runtime", socket_path, ready_path],
        log_path=os.path.join(directory, f"{name}.log"),
        ready=ready_file_ready(ready_path, needs=[socket_path]),
        **options,
    )
    proc.socket_path = socket_path
    return proc


def simulator_service(
    directory: str,
    *,
    host: str = "127.0.0.1",
    port: Optional[int] = None,
    ttft_ms: float = 150.0,
    token_delay_ms: float = 5.0,
    tokens_per_chunk: int = 1,
    log_level: str = "warning",
    extra: Sequence[str] = (),
    python: str = sys.executable,
    name: str = "simulator",
    **options: Any,
) -> ServiceProcess:
    """``vastar simulator`` on ``host:port`` (a free port if None), ready when
    ``/health`` answers. :func:`start_simulator` also retries when the port is taken."""
    port = free_port(host) if port is None else port
    args = [python, "-m", "vastar_fast.simulator", "--host", host, "--port", str(port),
            "--ttft-ms", f"{ttft_ms:g}", "--token-delay-ms", f"{token_delay_ms:g}",
            "--tokens-per-chunk", str(tokens_per_chunk), "--log-level", log_level,
            *extra]  # fmt: skip
    proc = ServiceProcess(
        name,
        args,
        log_path=os.path.join(directory, f"{name}-{port}.log"),
        ready=http_ready(host, port, "/health"),
        **options,
    )
    proc.port = port
    proc.url = f"http://{host}:{port}"
    return proc


def redis_server_path() -> Optional[str]:
    """Debian's ``redis-server`` (the fleet quotas' tests and benchmark), or None."""
    found = shutil.which("redis-server")
    if found is None:
        for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server",
                          "/usr/local/bin/redis-server"):  # fmt: skip
            if os.access(candidate, os.X_OK):
                return candidate
    return found


def redis_service(
    directory: str,
    *,
    name: str = "redis",
    socket_path: Optional[str] = None,
    port: Optional[int] = None,
    binary: Optional[str] = None,
    **options: Any,
) -> ServiceProcess:
    """``redis-server`` without persistence, on the Unix socket ``socket_path`` (default:
    ``directory/name.sock``) or, with ``port``, on 127.0.0.1:port only; ready when it
    accepts connections. :attr:`ServiceProcess.url` is its ``unix://`` or ``redis://``
    URL. Stopping it loses its data (as a crash would)."""
    binary = binary or redis_server_path()
    if binary is None:
        raise ServiceError("redis-server is not installed: apt-get install redis-server "
                           "(.ci/run installs it)")  # fmt: skip
    args = [binary, "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", directory, "--logfile", ""]  # fmt: skip
    if port is not None:
        args += ["--port", str(port), "--bind", "127.0.0.1"]
        ready = tcp_ready("127.0.0.1", port)
        url = f"redis://127.0.0.1:{port}/0"
    else:
        socket_path = socket_path or os.path.join(directory, f"{name}.sock")
        args += ["--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700"]
        ready = unix_socket_ready(socket_path)
        url = f"unix://{socket_path}"
    proc = ServiceProcess(
        name, args, log_path=os.path.join(directory, f"{name}.log"), ready=ready, **options
    )
    proc.socket_path = socket_path
    proc.port = port
    proc.url = url
    return proc


def start_simulator(
    directory: str, *, deadline: Optional[float] = None, attempts: int = 3, **kwargs: Any
) -> ServiceProcess:
    """Start :func:`simulator_service` on a free port and wait until it is ready. The
    port is picked here and bound by the child; if another process takes it in between,
    the child exits at once and another port is tried (``attempts`` in all)."""
    for attempt in range(attempts):
        proc = simulator_service(directory, **kwargs)
        try:
            return proc.start(deadline)
        except ServiceError:
            late = deadline is not None and time.monotonic() >= deadline
            if proc.returncode is None or attempt == attempts - 1 or late:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- the demo's pair
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
        runtime_cpus: Optional[Collection[int]] = None,
        simulator_cpus: Optional[Collection[int]] = None,
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
        self.runtime_cpus = runtime_cpus
        self.simulator_cpus = simulator_cpus
        self.tmpdir: Optional[str] = None
        self.simulator: Optional[ServiceProcess] = None
        self.runtime: Optional[ServiceProcess] = None
        self.simulator_url: Optional[str] = None
        self.simulator_port: Optional[int] = None
        self.runtime_socket: Optional[str] = None

    def start(self) -> EmbeddedServices:
        """Start the wanted services and wait until each answers (bounded)."""
        deadline = time.monotonic() + self.startup_timeout_s
        common: Dict[str, Any] = {
            "startup_timeout_s": self.startup_timeout_s,
            "stop_grace_s": self.stop_grace_s,
        }
        try:
            self.tmpdir = make_tmpdir("vastar-demo-")
            if self.want_simulator:
                self.simulator = start_simulator(
                    self.tmpdir,
                    deadline=deadline,
                    host=self.host,
                    ttft_ms=self.ttft_ms,
                    token_delay_ms=self.token_delay_ms,
                    tokens_per_chunk=self.tokens_per_chunk,
                    python=self.python,
                    cpus=self.simulator_cpus,
                    **common,
                )
                self.simulator_port = self.simulator.port
                self.simulator_url = self.simulator.url
                log.info("simulator ready at %s (pid %d)", self.simulator_url, self.simulator.pid)
            if self.want_runtime:
                runtime = runtime_service(
                    self.tmpdir, python=self.python, cpus=self.runtime_cpus, **common
                )
                self.runtime = runtime
                runtime.start(deadline)
                self.runtime_socket = runtime.socket_path
                log.info("runtime ready on %s (pid %d)", self.runtime_socket, runtime.pid)
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
                    proc.stop(self.stop_grace_s)
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
        return [p.pid for p in (self.simulator, self.runtime) if p is not None and p.process]
