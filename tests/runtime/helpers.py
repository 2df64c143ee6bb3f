"""Starting the daemon for real (a subprocess) and talking to it at the frame level."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

import vastar_fast
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import (
    ClientConnection,
    CreditsUpdated,
    Event,
    HealthReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from vastar_fast.services import child_environment, runtime_service

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])  # the vastar_fast under test


def child_env() -> Dict[str, str]:
    """The launcher's child environment: this vastar_fast importable, endpoint overrides
    removed."""
    return child_environment()


class Daemon:
    """``python -m vastar_fast.runtime`` on a temp socket, with a YAML config, started by
    the services launcher (:func:`vastar_fast.services.runtime_service`)."""

    def __init__(
        self,
        tmp: Path,
        config: Optional[Dict[str, Any]] = None,
        tcp: bool = False,
        log_level: str = "DEBUG",
        extra: Sequence[str] = (),
        socket_path: Optional[str] = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        config_path = None
        if config is not None:
            cfg = tmp / "config.yaml"
            cfg.write_text(yaml.safe_dump(config))
            config_path = str(cfg)
        self.service = runtime_service(
            str(tmp),
            name="daemon",
            socket_path=socket_path or str(tmp / "rt.sock"),
            tcp="127.0.0.1:0" if tcp else None,
            config_path=config_path,
            log_level=log_level,
            workers=1,  # the same process layout on every machine, unless extra says
            extra=extra,
            stdout_path=str(tmp / "daemon.out"),
            stop_grace_s=30.0,
        )
        assert self.service.socket_path is not None
        self.socket_path: str = self.service.socket_path
        self.ready_file = tmp / "daemon.ready"
        self.log_file = Path(self.service.log_path)
        self.out_file = tmp / "daemon.out"
        self.args = self.service.args
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.tcp_port: Optional[int] = None
        self.info: Dict[str, Any] = {}

    def start(self, timeout: float = 30.0) -> Daemon:
        self.service.startup_timeout_s = timeout
        self.service.spawn()
        self.proc = self.service.process
        self.service.wait_ready()
        self.info = dict(self.service.info)
        self.tcp_port = self.info.get("tcp_port")
        return self

    def log(self) -> str:
        return self.service.log_text()

    def stdout(self) -> str:
        return self.out_file.read_text(errors="replace") if self.out_file.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        self.service.kill()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            finally:
                self.service.stop()


class Raw:
    """A frame-level client: send what you like, collect the events that come back."""

    def __init__(self, path: Optional[str] = None, port: Optional[int] = None) -> None:
        if port is not None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        else:
            assert path is not None
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(path)
        self.conn = ClientConnection(request_id_seed=1000)
        self.events: List[Event] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame_http(
        self,
        method: str,
        url: str,
        headers: Optional[Dict[str, str]] = None,
        body: Optional[str] = None,
        tenant: str = "tests",
        timeout_ms: int = 20000,
        stream: bool = False,
        rid: Optional[int] = None,
    ) -> tuple:
        rid = self.conn.next_request_id() if rid is None else rid
        deadline = int(time.time() * 1000) + timeout_ms if timeout_ms else 0
        frame = self.conn.send_http(
            rid, tenant, "ws", None, deadline, method, url, headers, body, stream
        )
        return rid, frame

    def http(self, method: str, url: str, **kw: Any) -> int:
        rid, frame = self.frame_http(method, url, **kw)
        self.send(frame)
        return rid

    def pump(self, timeout: float) -> bool:
        """Read once (up to ``timeout``); False on EOF or timeout."""
        if self.eof:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.events.extend(self.conn.receive_data(data))
        return True

    def wait(self, predicate: Callable[[List[Event]], bool], timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while not predicate(self.events):
            left = end - time.monotonic()
            if left <= 0 or (not self.pump(left) and self.eof):
                return predicate(self.events)
        return True

    def response(self, rid: int, timeout: float = 15.0) -> ResponseReceived:
        def done(events: List[Event]) -> bool:
            return any(isinstance(e, ResponseReceived) and e.request_id == rid for e in events)

        assert self.wait(done, timeout), f"no response for {rid}; got {self.events}"
        return next(
            e for e in self.events if isinstance(e, ResponseReceived) and e.request_id == rid
        )

    def responses(self) -> List[ResponseReceived]:
        return [e for e in self.events if isinstance(e, ResponseReceived)]

    def health(self, timeout: float = 10.0) -> HealthReceived:
        before = len([e for e in self.events if isinstance(e, HealthReceived)])
        self.send(self.conn.send_health_check())
        assert self.wait(
            lambda ev: len([e for e in ev if isinstance(e, HealthReceived)]) > before, timeout
        )
        return [e for e in self.events if isinstance(e, HealthReceived)][-1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payload(event: ResponseReceived) -> Dict[str, Any]:
    assert event.error_class == 0, (event.error_class, event.error_message)
    return dict(json.loads(event.payload))


def stream_events(events: List[Event], rid: int) -> List[Event]:
    return [
        e
        for e in events
        if isinstance(e, (StreamStarted, StreamDataReceived, ResponseReceived))
        and e.request_id == rid
    ]


def credits(events: List[Event]) -> List[CreditsUpdated]:
    return [e for e in events if isinstance(e, CreditsUpdated)]


__all__ = ["SRC", "Daemon", "Raw", "child_env", "codec", "credits", "payload", "stream_events"]


def runtime_twin(twin: str, name: str) -> ModuleType:
    """Module ``name`` of the runtime's request path as the pure twin
    (``vastar_fast.runtime.NAME``) or the compiled one (``..._compiled.NAME``); skips
    the test when the compiled twins are not built."""
    import importlib

    import pytest

    if twin == "pure":
        return importlib.import_module(f"vastar_fast.runtime.{name}")
    try:
        return importlib.import_module(f"vastar_fast.runtime._compiled.{name}")
    except ImportError:
        pytest.skip("compiled runtime twins not built (python setup.py build_ext --inplace)")
