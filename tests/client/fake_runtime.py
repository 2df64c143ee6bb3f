"""A scriptable fake runtime: a real Unix socket server in a thread.

Each test gives it a handler called for every decoded ExecuteRequest (and, with
``health=None``, HealthCheck and CancelRequest); the handler writes whatever bytes it
likes, whenever it likes, so tests can answer out of order, stall, close mid-frame or
send garbage. It decodes requests with the project's ServerConnection; what it sends
back is raw bytes chosen by the test.

``health`` says how it answers HealthCheck by itself: ``"released"`` like the released
runtime (an ExecuteResponse with request_id 0, InvalidRequest), ``"extended"`` like
vastar-fast's (HealthResponse, and a CreditUpdate of ``credits`` before the first answer
on a connection that opted in), ``None``: the handler decides.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Callable, List, Optional

from support import GOLDEN_DIR
from vastar_fast.protocol.connection import (
    CancelReceived,
    Event,
    HealthCheckReceived,
    RequestReceived,
    ServerConnection,
)

RELEASED_INVALID = open(
    os.path.join(GOLDEN_DIR, "runtime_invalid_flatbuffer_response.bin"), "rb"
).read()
"""The released runtime's answer to a frame it cannot parse (and to a HealthCheck)."""


class Peer:
    """One accepted connection, handed to handlers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.server = ServerConnection()
        self.closed = False
        self.stall_until = 0.0
        self._send_lock = threading.Lock()
        self.credited = False

    def send(self, data: bytes) -> None:
        """Send unless closed; a client that already hung up (a test that cancelled a
        stream and finished) marks the peer closed instead of raising in the thread."""
        with self._send_lock:
            if not self.closed:
                try:
                    self.sock.sendall(data)
                except OSError:
                    self.closed = True

    def stall(self, seconds: float) -> None:
        """Stop reading from the client for a while (its sends back up)."""
        self.stall_until = time.monotonic() + seconds

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


Handler = Callable[[Peer, Event], None]


class FakeRuntime:
    def __init__(
        self,
        handler: Handler,
        health: Optional[str] = "released",
        credits: int = 64,
        recv_size: int = 65536,
    ) -> None:
        self.handler = handler
        self.health = health
        self.credits = credits
        self.recv_size = recv_size
        self._dir = tempfile.mkdtemp(prefix="vastar-fake-")
        self.socket_path = os.path.join(self._dir, "rt.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket_path)
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.events: List[Event] = []
        self.connections = 0
        self.bytes_received = 0
        self.peers: List[Peer] = []

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

    def requests(self) -> List[RequestReceived]:
        return [e for e in self.events if isinstance(e, RequestReceived)]

    def cancels(self) -> List[int]:
        return [e.request_id for e in self.events if isinstance(e, CancelReceived)]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            peer = Peer(sock)
            self.peers.append(peer)
            t = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, peer: Peer) -> None:
        peer.sock.settimeout(0.05)
        try:
            while not self._stop.is_set() and not peer.closed:
                if time.monotonic() < peer.stall_until:
                    time.sleep(0.01)
                    continue
                try:
                    data = peer.sock.recv(self.recv_size)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.bytes_received += len(data)
                for event in peer.server.receive_data(data):
                    self.events.append(event)
                    self._dispatch(peer, event)
        finally:
            if not peer.closed:
                peer.sock.close()

    def _dispatch(self, peer: Peer, event: Event) -> None:
        if self.health == "extended" and not peer.credited and peer.server.extended:
            peer.credited = True
            peer.send(peer.server.send_credit_update(self.credits, self.credits))
        if isinstance(event, HealthCheckReceived) and self.health is not None:
            if self.health == "released":
                peer.send(RELEASED_INVALID)
            else:
                peer.send(ServerConnection.send_health(True, "ok", 0, self.credits))
            return
        if isinstance(event, CancelReceived) and self.health is not None:
            return
        if isinstance(event, (RequestReceived, HealthCheckReceived, CancelReceived)):
            self.handler(peer, event)


def request_id(event: Event) -> int:
    assert isinstance(event, RequestReceived)
    return event.frame.request_id


def path_of(event: Event) -> str:
    import json

    assert isinstance(event, RequestReceived)
    url: str = json.loads(event.frame.payload)["url"]
    return url.split("://", 1)[-1].split("/", 1)[-1]


def ok(
    event: Event, body: str = "hello", status: int = 200, headers: Optional[dict] = None
) -> bytes:
    return ServerConnection.send_http_response(
        request_id(event), status, headers or {"content-type": "text/plain"}, body, False, 42
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
