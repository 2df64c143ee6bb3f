"""A scriptable fake runtime: a real Unix socket server in a thread.

Each test gives it a handler called for every decoded ExecuteRequest (and HealthCheck);
the handler writes whatever bytes it likes, whenever it likes, so tests can answer out
of order, stall, close mid-frame or send garbage. It uses the project's ServerConnection
to decode requests; what it sends back is raw bytes chosen by the test.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from typing import Callable, List, Optional

from vastar_fast.protocol.connection import (
    CancelReceived,
    Event,
    HealthCheckReceived,
    RequestReceived,
    ServerConnection,
)


class Peer:
    """One accepted connection, handed to handlers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.server = ServerConnection()
        self.held: List[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        """Send unless closed; a client that already hung up (a test that cancelled a
        stream and finished) marks the peer closed instead of raising in the thread."""
        if not self.closed:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


Handler = Callable[[Peer, Event], None]


class FakeRuntime:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._dir = tempfile.mkdtemp(prefix="vastar-fake-")
        self.socket_path = os.path.join(self._dir, "rt.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket_path)
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.events: List[Event] = []
        self.connections = 0
        self.raw_received: List[bytes] = []
        self._peers: List[Peer] = []

    def __enter__(self) -> FakeRuntime:
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._listener.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        os.rmdir(self._dir)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            peer = Peer(sock)
            self._peers.append(peer)
            t = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, peer: Peer) -> None:
        peer.sock.settimeout(0.2)
        try:
            while not self._stop.is_set() and not peer.closed:
                try:
                    data = peer.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.raw_received.append(data)
                for event in peer.server.receive_data(data):
                    self.events.append(event)
                    if isinstance(event, (RequestReceived, HealthCheckReceived, CancelReceived)):
                        self.handler(peer, event)
        finally:
            if not peer.closed:
                peer.sock.close()


def request_id(event: Event) -> int:
    assert isinstance(event, RequestReceived)
    return event.frame.request_id


def ok(
    event: Event, body: str = "hello", status: int = 200, headers: Optional[dict] = None
) -> bytes:
    return ServerConnection.send_http_response(
        request_id(event), status, headers or {"content-type": "text/plain"}, body, False, 42
    )
