"""``RuntimeServer``: the daemon in a background thread with its own event loop.

For tests, demos and applications that want a runtime in-process. The daemon behaves
exactly as the ``python -m vastar_fast.runtime`` one (it is the same ``Runtime``), minus
signal handling and logging setup, which belong to the process's owner.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Callable, Optional, Type

from .config import RuntimeSettings, load_settings

if TYPE_CHECKING:
    from .server import Runtime

__all__ = ["RuntimeServer", "loop_factory"]


def loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed and wanted, else asyncio's default."""
    if use_uvloop and os.environ.get("VASTAR_NO_UVLOOP", "") in ("", "0"):
        try:
            import uvloop

            return uvloop.new_event_loop
        except ImportError:
            pass
    return asyncio.new_event_loop


class RuntimeServer:
    """Run the runtime daemon in a thread.

    ``RuntimeServer(socket_path=None, tcp_port=None)`` with neither listens on a Unix
    socket in a fresh temporary directory; ``tcp_port=0`` picks a free loopback port.
    ``start()`` returns once the daemon accepts connections; ``stop()`` shuts it down
    gracefully (in-flight requests get the grace period of ``settings.limits``).
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        tcp_port: Optional[int] = None,
        *,
        tcp_host: str = "127.0.0.1",
        settings: Optional[RuntimeSettings] = None,
        config_file: Optional[str] = None,
        use_uvloop: bool = True,
    ) -> None:
        if settings is not None and config_file is not None:
            raise ValueError("give settings or config_file, not both")
        self.settings = settings if settings is not None else load_settings(config_file)
        self._tmpdir: Optional[str] = None
        if socket_path is None and tcp_port is None:
            self._tmpdir = tempfile.mkdtemp(prefix="vastar-rt-")
            socket_path = os.path.join(self._tmpdir, "rt.sock")
        self.socket_path = socket_path
        self._tcp = (tcp_host, tcp_port) if tcp_port is not None else None
        self.tcp_port: Optional[int] = None
        self._use_uvloop = use_uvloop
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runtime: Optional[Runtime] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    @property
    def runtime(self) -> Runtime:
        """The daemon object (touch it only from its loop thread)."""
        if self._runtime is None:
            raise RuntimeError("the RuntimeServer is not started")
        return self._runtime

    def start(self, timeout: float = 30.0) -> RuntimeServer:
        """Start the daemon; raise what prevented it from listening."""
        if self._thread is not None:
            return self
        from .server import Runtime

        self._runtime = Runtime(self.settings, self.socket_path, self._tcp)
        self._thread = threading.Thread(target=self._run, name="vastar-runtime", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the runtime did not start listening within {timeout}s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        self.tcp_port = self._runtime.tcp_port
        return self

    def _run(self) -> None:
        loop = loop_factory(self._use_uvloop)()
        self._loop = loop
        asyncio.set_event_loop(loop)
        runtime = self._runtime
        assert runtime is not None
        try:
            try:
                loop.run_until_complete(runtime.start())
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_until_complete(runtime.serve_until_stopped())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Graceful shutdown; waits up to ``timeout`` (default: grace period + 10 s)."""
        thread, loop, runtime = self._thread, self._loop, self._runtime
        if thread is None or loop is None or runtime is None:
            self._cleanup()
            return
        if thread.is_alive():
            try:
                loop.call_soon_threadsafe(runtime.request_stop)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout if timeout is not None else self.settings.limits.shutdown_grace_s + 10)
        self._thread = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> RuntimeServer:
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: object, tb: object) -> None:
        self.stop()
