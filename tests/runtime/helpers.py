"""Starting the daemon for real (a subprocess) and talking to it at the frame level."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
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

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])  # the vastar_fast under test


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    for key in ("VASTAR_SOCKET_PATH", "VASTAR_USE_TCP", "VASTAR_TCP_PORT", "VASTAR_TCP_HOST"):
        env.pop(key, None)
    return env


class Daemon:
    """``python -m vastar_fast.runtime`` on a temp socket, with a YAML config."""

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
        self.socket_path = socket_path or str(tmp / "rt.sock")
        self.ready_file = tmp / "ready.json"
        self.log_file = tmp / "daemon.log"
        self.out_file = tmp / "daemon.out"
        args = [sys.executable, "-m", "vastar_fast.runtime", "--socket", self.socket_path,
                "--ready-file", str(self.ready_file), "--log-level", log_level]  # fmt: skip
        if config is not None:
            cfg = tmp / "config.yaml"
            cfg.write_text(yaml.safe_dump(config))
            args += ["--config", str(cfg)]
        if tcp:
            args += ["--tcp", "127.0.0.1:0"]
        if "--workers" not in extra:
            args += ["--workers", "1"]  # the same process layout on every machine
        args += list(extra)
        self.args = args
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.tcp_port: Optional[int] = None
        self.info: Dict[str, Any] = {}

    def start(self, timeout: float = 30.0) -> Daemon:
        with open(self.log_file, "wb") as err, open(self.out_file, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, env=child_env())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                self.tcp_port = self.info.get("tcp_port")
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"daemon not ready within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            finally:
                self.kill()


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
