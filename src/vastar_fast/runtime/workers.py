"""``vastar runtime --workers N``: one supervisor process and N worker processes.

The supervisor binds the listening sockets (Unix and/or TCP), makes the
:class:`~.shared.SharedState` (tenant concurrency counts, circuit breakers), then
forks the workers. Every worker runs a whole :class:`~.server.Runtime` on its own event
loop. The supervisor accepts each new connection and hands it (its file descriptor,
over a per-worker Unix socket pair) to the workers in turn, so connections spread
evenly; a worker serves a connection to its end. (Letting every worker accept on the
shared socket left the kernel to pick, and it often gave most connections to one.) Limits that are promises about the
daemon as a whole stay so: a tenant's ``max_concurrent`` is counted in shared memory,
and a host's breaker is one breaker for all workers (``shared.py`` says why shared
rather than divided). Credits are per connection, so per worker by construction.

Lifecycle: the readiness line and ``--ready-file`` (with the workers' pids) come once
every worker listens. SIGTERM or SIGINT reaches the supervisor, which forwards SIGTERM
to every worker (they drain as a single daemon does: finish what is in flight within
the grace period), removes the socket file and exits 0 once all have exited cleanly; a
second signal makes the workers abandon what is left at once. Workers ignore SIGINT
(a terminal's Ctrl-C reaches the whole process group; the supervisor decides) and stop
when the supervisor dies. A worker that dies otherwise is replaced; one that keeps
dying (``RESPAWN_LIMIT`` times within ``RESPAWN_WINDOW_S``) makes the supervisor stop
the others and exit 1, saying why. With ``--metrics-port`` the supervisor serves the
sum of the workers' metrics (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from vastar_fast._log import logger

from . import engine
from .config import DEFAULT_SPIN_US, RuntimeSettings
from .listen import SocketInUseError, bind_tcp, bind_unix, check_exposure

__all__ = [
    "RESPAWN_LIMIT",
    "RESPAWN_WINDOW_S",
    "default_spin_us",
    "default_workers",
    "supervise",
    "usable_cpus",
]

log = logger("vastar_fast.runtime")  # the real one, with the package's NullHandler

RESPAWN_LIMIT = 5
RESPAWN_WINDOW_S = 60.0
_READY_TIMEOUT_S = 60.0


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """The worker count used when ``--workers`` is not given.

    Measured on a 2-CPU machine (docs/decisions.md, "Workers"): with clients and an
    upstream on the same host, one worker per two usable CPUs served best, because the
    clients and the upstream need the other CPUs; so ``max(1, usable CPUs // 2)``, and 1
    where workers need what the platform lacks (fork).
    """
    if not hasattr(os, "fork"):
        return 1
    return max(1, usable_cpus() // 2)


def default_spin_us() -> int:
    """The polling window used when neither ``--spin-us``, ``spin_us`` nor
    ``$VASTAR_RUNTIME_SPIN_US`` sets it: ``DEFAULT_SPIN_US`` with at least 2 usable
    CPUs (a polling worker then leaves the others to its clients and upstreams, as
    :func:`default_workers` does), 0 on one (polling would take the only CPU from them)."""
    return DEFAULT_SPIN_US if usable_cpus() >= 2 else 0


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _run_worker(
    index: int,
    settings: RuntimeSettings,
    channel: socket.socket,
    socket_path: Optional[str],
    shared: Any,
    ready_fd: int,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    supervisor: int,
) -> int:
    """The body of a forked worker process; its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    from .metrics import PrometheusMetrics
    from .server import Runtime

    loop = loop_factory()
    asyncio.set_event_loop(loop)
    metrics = PrometheusMetrics(None) if settings.metrics_port is not None else None
    runtime = Runtime(settings, socket_path, None, shared=shared, metrics=metrics, channel=channel)

    async def serve() -> int:
        await runtime.start()
        loop.add_signal_handler(signal.SIGTERM, runtime.request_stop)
        os.write(ready_fd, b"r")

        def watchdog() -> None:  # the supervisor is gone (macOS has no PDEATHSIG)
            if os.getppid() != supervisor:
                runtime.request_stop()
            else:
                loop.call_later(1.0, watchdog)

        loop.call_later(1.0, watchdog)
        await runtime.serve_until_stopped()
        return 0

    try:
        return loop.run_until_complete(serve())
    except BaseException:  # reported; the supervisor replaces this worker
        log.exception("runtime worker %d failed", index)
        return 1
    finally:
        loop.close()


class _Supervisor:
    def __init__(
        self,
        settings: RuntimeSettings,
        count: int,
        sockets: List[Any],
        socket_path: Optional[str],
        loop_factory: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self.settings = settings
        self.count = count
        self.sockets = sockets
        self.socket_path = socket_path
        self.loop_factory = loop_factory
        self.shared = engine.shared.SharedState(shared=True)
        self.workers: Dict[int, int] = {}  # pid -> index
        self.channels: Dict[int, socket.socket] = {}  # pid -> our end of its channel
        self._turn = 0
        self.deaths: List[float] = []
        self.signals = 0
        self.forwarded = 0
        self.ready_r, self.ready_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.failed: Optional[str] = None
        self.on_stop: Callable[[], None] = lambda: None
        """Closes the supervisor's listening sockets and removes the socket file."""

    def spawn(self, index: int) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(self.ready_r)
                os.close(self.wake_r)
                os.close(self.wake_w)
                ours.close()
                for sock in [*self.sockets, *self.channels.values()]:
                    sock.close()  # only the supervisor accepts; siblings' channels are theirs
                code = _run_worker(index, self.settings, theirs, self.socket_path,
                                   self.shared, self.ready_w, self.loop_factory,
                                   os.getppid())  # fmt: skip
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.workers[pid] = index
        self.channels[pid] = ours
        return pid

    def hand_over(self, listener: socket.socket) -> None:
        """Accept what is waiting on ``listener`` and give each connection to the next
        worker in turn (one that cannot take it is skipped)."""
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: the client retries
                log.warning("runtime supervisor: accept failed: %s", exc)
                return
            try:
                pids = sorted(self.channels)
                for attempt in range(len(pids)):
                    pid = pids[(self._turn + attempt) % len(pids)]
                    try:
                        socket.send_fds(self.channels[pid], [b"c"], [conn.fileno()])
                    except OSError:
                        continue
                    self._turn = (self._turn + attempt + 1) % len(pids)
                    break
            finally:
                conn.close()  # the worker has its own descriptor for it now

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        self._wake()

    def _wake(self, *_: Any) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def wait_ready(self, wanted: int) -> bool:
        """Block until ``wanted`` readiness bytes arrived (or a worker died, or a signal)."""
        got = 0
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while got < wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                self.failed = f"the workers did not start within {_READY_TIMEOUT_S:.0f}s"
                return False
            readable, _, _ = select.select([self.ready_r, self.wake_r], [], [], min(left, 0.5))
            if self.ready_r in readable:
                got += len(os.read(self.ready_r, 64))
            if self.wake_r in readable:
                os.read(self.wake_r, 64)
            if self.signals:
                return False
            for pid, status in self._reap():
                self.failed = (
                    f"runtime worker (pid {pid}) exited during startup ({_describe(status)}); "
                    "see the log above"
                )
                return False
        return True

    def _reap(self) -> List[Tuple[int, int]]:
        out = []
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                del self.workers[pid]
                channel = self.channels.pop(pid, None)
                if channel is not None:
                    channel.close()
                out.append((pid, status))
                _mark_dead(pid)
        return out

    def run(self) -> int:
        """Supervise until stopped; the exit status."""
        clean = True
        while True:
            if self.signals > self.forwarded:
                if self.forwarded == 0:
                    self.on_stop()  # no new connections: clients see a stopped runtime
                self.forwarded = self.signals
                log.info(
                    "runtime supervisor: %s %d worker(s)",
                    "stopping" if self.forwarded == 1 else "abandoning in-flight requests of",
                    len(self.workers),
                )
                for pid in self.workers:
                    _signal(pid, signal.SIGTERM)
            for pid, status in self._reap():
                if self.signals:
                    clean = clean and status == 0
                    continue
                index = self.workers.get(pid, len(self.workers))
                now = time.monotonic()
                self.deaths = [t for t in self.deaths if now - t < RESPAWN_WINDOW_S] + [now]
                if len(self.deaths) >= RESPAWN_LIMIT:
                    self.failed = (
                        f"runtime workers died {len(self.deaths)} times within "
                        f"{RESPAWN_WINDOW_S:.0f}s (last: pid {pid}, {_describe(status)}); "
                        "stopping the runtime, see the log above"
                    )
                    log.error("%s", self.failed)
                    self.signals = self.forwarded = 1
                    self.on_stop()
                    for other in self.workers:
                        _signal(other, signal.SIGTERM)
                    clean = False
                    continue
                log.warning("runtime worker pid %d exited (%s); starting a new one", pid,
                            _describe(status))  # fmt: skip
                self.spawn(index)
            if self.signals and not self.workers:
                return 0 if clean and self.failed is None else 1
            listeners = [] if self.signals else self.sockets
            readable, _, _ = select.select([self.wake_r, self.ready_r, *listeners], [], [], 0.5)
            for sock in listeners:
                if sock in readable:
                    self.hand_over(sock)
            if self.wake_r in readable:
                os.read(self.wake_r, 64)
            if self.ready_r in readable:
                os.read(self.ready_r, 64)  # a replacement worker is ready


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _mark_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)
        except Exception:  # metrics are best effort here
            pass


def supervise(
    settings: RuntimeSettings,
    count: int,
    socket_path: Optional[str],
    tcp: Optional[Tuple[str, int]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    ready_file: Optional[str],
    write_ready_file: Callable[[str, Dict[str, Any]], None],
) -> int:
    """Run the daemon as ``count`` worker processes; the exit status."""
    if not hasattr(os, "fork"):
        print("vastar runtime: --workers above 1 needs fork(), which this platform lacks; "
              "run one runtime per port instead", file=sys.stderr)  # fmt: skip
        return 2
    sockets: List[Any] = []
    inode: Optional[Tuple[int, int]] = None
    tcp_port: Optional[int] = None
    try:
        if socket_path is not None:
            sockets.append(bind_unix(socket_path))
            st = os.stat(socket_path)
            inode = (st.st_dev, st.st_ino)
        if tcp is not None:
            refusal = check_exposure(tcp[0], settings)
            if refusal is not None:
                raise OSError(refusal)
            sock = bind_tcp(*tcp)
            tcp_port = sock.getsockname()[1]
            sockets.append(sock)
    except (SocketInUseError, OSError) as exc:
        for sock in sockets:
            sock.close()
        print(f"vastar runtime: cannot listen: {exc}", file=sys.stderr)
        return 2
    metrics_dir: Optional[str] = None
    metrics_server: Any = None
    if settings.metrics_port is not None:
        metrics_dir = tempfile.mkdtemp(prefix="vastar-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client loads
    sup = _Supervisor(settings, count, sockets, socket_path, loop_factory)

    def stop_listening() -> None:
        for sock in sockets:
            sock.close()
        sockets.clear()
        if socket_path is not None and inode is not None:
            try:
                st = os.stat(socket_path)
                if (st.st_dev, st.st_ino) == inode:  # still ours, not a successor's
                    os.unlink(socket_path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("could not remove %s: %s", socket_path, exc)

    sup.on_stop = stop_listening
    previous = {sig: signal.signal(sig, sup._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGCHLD, sup._wake)
    try:
        for index in range(count):
            sup.spawn(index)
        if not sup.wait_ready(count):
            if sup.signals:  # stopped while starting: a clean stop
                sup.forwarded = 0
                return sup.run()
            print(f"vastar runtime: {sup.failed}", file=sys.stderr)
            sup.signals = 1
            sup.run()
            return 1
        metrics_port = None
        if settings.metrics_port is not None:
            from .metrics import serve_multiprocess

            metrics_server = serve_multiprocess(settings.metrics_port)
            metrics_port = metrics_server.server_port if metrics_server is not None else None
        parts = [f"unix:{socket_path}"] if socket_path else []
        if tcp_port is not None and tcp is not None:
            parts.append(f"tcp:{tcp[0]}:{tcp_port}")
        if metrics_port is not None:
            parts.append(f"metrics:http://127.0.0.1:{metrics_port}/metrics")
        if ready_file:
            write_ready_file(ready_file, {
                "pid": os.getpid(), "socket": socket_path, "tcp_port": tcp_port,
                "metrics_port": metrics_port, "workers": sorted(sup.workers),
                "spin_us": settings.spin_us or 0,
            })  # fmt: skip
        log.info("runtime listening on %s with %d workers", " ".join(parts), count)
        print(f"vastar runtime ready: {' '.join(parts)} pid={os.getpid()} workers={count}",
              flush=True)  # fmt: skip
        code = sup.run()
        if sup.failed:
            print(f"vastar runtime: {sup.failed}", file=sys.stderr)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_listening()
        if metrics_server is not None:
            metrics_server.shutdown()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("runtime stopped")
