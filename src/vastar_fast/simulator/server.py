"""Run the simulator in a background thread (tests, demos, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Optional, Type

from aiohttp import web

from vastar_fast._log import logger

from .app import create_app
from .settings import SimulatorSettings

__all__ = ["SimulatorServer", "new_event_loop"]

log = logger("vastar_fast.simulator")  # the real one, with the package's NullHandler


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when importable (much cheaper per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the environment
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SimulatorServer:
    """The simulator on its own event loop in a daemon thread.

    Why a thread: tests and demos are mostly synchronous (the official SDKs'
    sync clients), so the server must run beside them without an event loop in
    the caller. ``port=0`` picks a free port; read it back from :attr:`port` or
    :attr:`base_url` after :meth:`start`.

    Usage::

        with SimulatorServer(SimulatorSettings.fast()) as sim:
            client = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test")
    """

    def __init__(
        self,
        settings: Optional[SimulatorSettings] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.settings = settings or SimulatorSettings()
        self.host = host
        self._requested_port = port
        self._port: Optional[int] = None
        self._shutdown_timeout = shutdown_timeout
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self.app: Optional[web.Application] = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` without a trailing slash or API prefix."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        """Start serving; return once the socket is bound (or raise)."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self._run, name="vastar-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        self.app = create_app(self.settings)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        log.info("simulator listening on http://%s:%d", self.host, self._port)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving (stalled streams are released) and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            try:
                future.result(timeout)
            except Exception:  # pragma: no cover - best effort during teardown
                log.exception("error while stopping the simulator")
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()
