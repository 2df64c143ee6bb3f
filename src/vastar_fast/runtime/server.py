"""The runtime daemon: listeners, connections, the upstream pool, policy and breakers.

Per request (the hot path): ``IPCConnection.data_received`` -> ``ServerConnection``
decodes the frame -> admission (``ipc.py``) -> ``Exchange`` (``pipeline.py``: payload,
policy, breaker, an upstream connection, the answer) -> one ``transport.write`` of the
terminal frame. No task, no future and no log line above DEBUG on the way.

Modules, by concern: ``ipc.py`` (the per-connection protocol: credits, health, invalid
messages), ``pipeline.py`` (one request: exchange, streaming, cancellation),
``retry.py`` (the retry policy), ``shaping.py`` (what goes upstream, the answer's
shape), ``upstream.py`` (the HTTP/1.1 client and its pools), ``listen.py`` (socket
binding), ``breaker.py``, ``policy.py``, ``metrics.py``, ``config.py``. The first four
are the request path, compiled when a compiler was available (``engine.py`` picks the
twin).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, List, Optional, Set, Tuple

from vastar_fast._log import logger
from vastar_fast.protocol.connection import ServerConnection

from . import engine
from .config import RuntimeSettings
from .listen import SocketInUseError, bind_tcp, bind_unix, check_exposure, is_loopback
from .metrics import Metrics, create_metrics
from .retry import RetryPolicy
from .tracing import RuntimeTracer, runtime_tracer

__all__ = ["Runtime", "SocketInUseError"]


def _log_accept_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("runtime worker: could not serve a handed-over connection: %s",
                    task.exception())  # fmt: skip


def _frame_timeout(seconds: float) -> bytes:
    from vastar_fast.protocol.connection import ServerConnection
    from vastar_fast.types import ErrorClass

    return ServerConnection.send_response(
        0, int(ErrorClass.INVALID_REQUEST),
        f"Invalid frame: a frame was begun but not completed within {seconds:g}s "
        "(limits.frame_timeout_s); closing the connection", None, 0,
    )  # fmt: skip


log = logger("vastar_fast.runtime")  # the real one, with the package's NullHandler


class Runtime:
    """The daemon.

    Create it, ``await start()`` on the loop that will run it, then
    ``await serve_until_stopped()``; :meth:`request_stop` (signal handler, other thread
    via ``call_soon_threadsafe``) begins the graceful shutdown. ``sockets`` gives it
    listening sockets bound elsewhere; ``channel`` a socket over which accepted
    connections arrive instead, ``shared`` the state shared with its sibling processes
    and ``metrics`` the recorder (the worker processes of ``--workers``).
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        socket_path: Optional[str] = None,
        tcp: Optional[Tuple[str, int]] = None,
        sockets: Optional[List[socket.socket]] = None,
        shared: Optional[Any] = None,
        metrics: Optional[Metrics] = None,
        channel: Optional[socket.socket] = None,
    ) -> None:
        if socket_path is None and tcp is None and not sockets and channel is None:
            raise ValueError("the runtime needs a Unix socket path or a TCP address to listen on")
        self._channel = channel
        self.settings = settings
        self.socket_path = socket_path
        self.tcp = tcp
        self.tcp_port: Optional[int] = None
        self._given_sockets = list(sockets or [])
        self.default_deadline_s = settings.limits.default_deadline_ms / 1000.0
        self.stopping = False
        self.inflight = engine.pipeline.InFlight()
        """Requests in flight, counted by the request path (see :attr:`active`)."""
        self.connections: Set[Any] = set()
        """The live client connections (``IPCConnection`` of the serving twin)."""
        self.shared = shared if shared is not None else engine.shared.SharedState()
        """Tenant counts and breakers (shared by the worker processes of ``--workers``)."""
        self.policy = engine.policy.PolicyEngine(settings, self.shared)
        self.metrics: Metrics = Metrics()
        self._metrics_on = False
        self._given_metrics = metrics
        self.breakers = engine.breaker.Breakers(
            settings.breaker.failure_threshold,
            settings.breaker.reset_timeout_s,
            on_change=self._breaker_changed,
            shared=self.shared,
        )
        self.retry = RetryPolicy(settings.retry)
        self.tracer: Optional[RuntimeTracer] = runtime_tracer(settings)
        """OpenTelemetry spans (tracing.py): None unless tracing.otel / --otel; may be set
        before start() to record through a given TracerProvider."""
        self.debug = False
        self._servers: List[asyncio.AbstractServer] = []
        self._closed_servers: List[asyncio.AbstractServer] = []
        self._socket_inode: Optional[Tuple[int, int]] = None
        self._stop_requested: Optional[asyncio.Event] = None
        self._idle: Optional[asyncio.Event] = None
        self._abandon: Optional[asyncio.Event] = None
        limits = settings.limits
        self._sweep_every = max(0.05, min(1.0, limits.frame_timeout_s / 4,
                                         limits.idle_timeout_s / 4))  # fmt: skip
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self.pool: Any = None
        """The upstream connection pool (``UpstreamPool`` of the serving twin)."""
        self.deadlines: Any = None
        """Every request's deadline (``pipeline.Deadlines`` of the serving twin)."""
        self.quotas: Any = None
        """Fleet quotas (``quotas.QuotaService``), or None when none are configured (then
        Redis is never imported)."""
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the listeners and set up the upstream pool; returns once listening."""
        self.loop = asyncio.get_running_loop()
        self.debug = log.isEnabledFor(logging.DEBUG)
        self._stop_requested = asyncio.Event()
        self._idle = asyncio.Event()  # set by the last request to finish while stopping
        self.inflight.on_idle = self._idle.set
        self._abandon = asyncio.Event()
        self.pool = engine.upstream.UpstreamPool(self.loop, self.settings.http)
        self.deadlines = engine.pipeline.Deadlines(self.loop)
        if self.settings.spin_us:  # None (embedded default) and 0: the loop sleeps at once
            self.inflight.poll_after(self.loop, self.settings.spin_us / 1e6)
        # The pure codec twin imports flatbuffers with its first frame buffer: pay that
        # now, not in the first client's first request.
        ServerConnection()
        for policy in self.settings.tenants.values():
            self.pool.ssl_for(policy)  # a bad ca_file fails now, not per request
        try:
            for sock in self._given_sockets:
                await self._serve_socket(sock)
            if self._channel is not None:
                self._channel.setblocking(False)
                self.loop.add_reader(self._channel.fileno(), self._take_connections)
            elif self.socket_path is not None and not self._given_sockets:
                sock = bind_unix(self.socket_path)
                st = os.stat(self.socket_path)
                self._socket_inode = (st.st_dev, st.st_ino)
                await self._serve_socket(sock)
            if self.tcp is not None and not self._given_sockets and self._channel is None:
                refusal = check_exposure(self.tcp[0], self.settings)
                if refusal is not None:
                    raise OSError(refusal)
                await self._serve_socket(bind_tcp(*self.tcp))
                if not is_loopback(self.tcp[0]):
                    log.warning("listening on TCP %s:%s, reachable from the network: every "
                                "request must carry the token", self.tcp[0], self.tcp_port)  # fmt: skip
            if self._given_metrics is not None:
                self.metrics = self._given_metrics
                self._metrics_on = True
            elif self.settings.metrics_port is not None:
                self.metrics = create_metrics(self.settings.metrics_port)
                self._metrics_on = True
            if self._metrics_on:
                self.inflight.metrics = self.metrics
            if self.settings.quotas:  # fleet quotas: this process's own Redis client
                from .quotas import QuotaService

                self.quotas = QuotaService(self.settings, self.loop, self.metrics)
                await self.quotas.start()
        except BaseException:
            await self._close_listeners()
            await self.pool.close()
            if self.quotas is not None:
                await self.quotas.close()
            raise
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        log.info("runtime listening on %s", self.describe())

    def _sweep(self) -> None:
        """Close connections idle past ``limits.idle_timeout_s`` and those with a frame
        begun but not finished within ``limits.frame_timeout_s``."""
        self._sweeper = None
        if self.stopping:
            return
        now = self.loop.time()
        limits = self.settings.limits
        for conn in list(self.connections):
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            quiet = now - conn.last_rx
            if conn.sc.partial_frame and quiet > limits.frame_timeout_s:
                conn.write(_frame_timeout(limits.frame_timeout_s))
                transport.close()
            elif not conn.requests and quiet > limits.idle_timeout_s:
                if self.debug:
                    log.debug("closing a client connection idle for %.0fs", quiet)
                transport.close()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _take_connections(self) -> None:
        """Connections the supervisor accepted and handed to this worker (``--workers``):
        file descriptors over the channel, served like our own accepts."""
        assert self._channel is not None
        try:
            msg, fds, _, _ = socket.recv_fds(self._channel, 64, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            msg, fds = b"", []
            log.warning("runtime worker: the supervisor's channel failed (%s); stopping", exc)
        if not msg and not fds:  # the supervisor is gone: finish what we have and stop
            self.loop.remove_reader(self._channel.fileno())
            self.request_stop()
            return
        for fd in fds:
            # Served even while stopping: the client sent its request before the stop,
            # and the admission answers it (TRANSIENT "shutting down") instead of a silent
            # close.
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            task = self.loop.create_task(
                self.loop.connect_accepted_socket(lambda: engine.ipc.IPCConnection(self), sock)
            )
            task.add_done_callback(_log_accept_failure)

    async def _serve_socket(self, sock: socket.socket) -> None:
        loop = self.loop
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(
                lambda: engine.ipc.IPCConnection(self), sock=sock
            )
        else:
            server = await loop.create_server(lambda: engine.ipc.IPCConnection(self), sock=sock)
            self.tcp_port = sock.getsockname()[1]
        self._servers.append(server)

    def describe(self) -> str:
        parts = []
        if self.socket_path is not None:
            parts.append(f"unix:{self.socket_path}")
        if self.tcp_port is not None:
            host = self.tcp[0] if self.tcp is not None else "127.0.0.1"
            parts.append(f"tcp:{host}:{self.tcp_port}")
        if self.metrics.port is not None:
            parts.append(f"metrics:http://127.0.0.1:{self.metrics.port}/metrics")
        return " ".join(parts)

    def request_stop(self) -> None:
        """Begin the graceful shutdown (loop thread only); a second call abandons the
        requests still in flight at once instead of waiting out the grace period."""
        if self._stop_requested is None:
            return
        if self._stop_requested.is_set() and self._abandon is not None:
            self._abandon.set()
        self._stop_requested.set()

    async def serve_until_stopped(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish within the grace period, abandon
        the rest with TRANSIENT answers, close connections, remove the socket file."""
        if self.stopping:
            return
        self.stopping = True
        self.inflight.stopping = True
        log.info("runtime stopping: %d request(s) in flight", self.active)
        await self._close_listeners()
        grace = self.settings.limits.shutdown_grace_s
        assert self._idle is not None
        if self.active:
            assert self._abandon is not None
            waiters = [
                asyncio.ensure_future(self._idle.wait()),
                asyncio.ensure_future(self._abandon.wait()),
            ]
            await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self.active:
                log.warning(
                    "%d request(s) still in flight after the %.1fs grace period "
                    "(limits.shutdown_grace_s); abandoning them",
                    self.active,
                    grace,
                )
                for conn in list(self.connections):
                    for ex in list(conn.requests.values()):
                        ex.cancel(engine.pipeline.BY_SHUTDOWN)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()  # flushes the last answers first
        for server in self._closed_servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                log.warning("some client connections did not close in time")
        await self.pool.close()
        self.deadlines.close()
        if self.quotas is not None:  # fleet quotas: leave the fleet's count
            await self.quotas.close()
        self.metrics.close()
        if self.tracer is not None:  # tracing.py: flush the spans
            self.tracer.shutdown()
        log.info("runtime stopped")

    async def _close_listeners(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._channel is not None:
            try:
                self.loop.remove_reader(self._channel.fileno())
            except (ValueError, OSError):
                pass
        await self._close_servers()

    async def _close_servers(self) -> None:
        """Stop accepting and remove the socket file. Not awaiting ``wait_closed`` here:
        from Python 3.12 it waits for every connection to end, and the connections must
        stay open to receive the answers of their requests in flight."""
        self._closed_servers, self._servers = self._servers, []
        for server in self._closed_servers:
            server.close()
        self._remove_socket()
        await asyncio.sleep(0)

    def _remove_socket(self) -> None:
        path, inode = self.socket_path, self._socket_inode
        if path is None or inode is None:
            return
        self._socket_inode = None
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == inode:  # still ours, not a successor's
                os.unlink(path)
        except OSError:
            pass

    # ------------------------------------------------------------ accounting
    @property
    def active(self) -> int:
        """Requests in flight (their exchanges count themselves in and out)."""
        return int(self.inflight.count)

    def _breaker_changed(self, host: str, state: str) -> None:
        if state == "open":
            log.warning("circuit breaker for %s opened", host)
        else:
            log.info("circuit breaker for %s is %s", host, state)
        self.metrics.breaker_state(host, state)
