"""The socket-methods path (protocol/_sockio.py, what both twins do on Windows): the
socket stays non-blocking and each call waits within its own caller's time, so no
thread can set a timeout that another thread's call then waits out.

The old path set the socket object's one timeout before every call; ``settimeout``
releases the GIL after storing the value, so a sender's 20 s could replace a reader's
150 ms just before the read began (the reader then waited 20 s past its deadline:
seen about once in 70 runs of test_behaviour's many-callers test).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator, List, Optional

import pytest

from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig
from vastar_fast.client.endpoint import resolve_endpoint
from vastar_fast.protocol import _sockio

from .adapters import io_switches
from .fake_runtime import FakeRuntime, ok, path_of


@pytest.fixture
def pair() -> Iterator[Any]:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_recv_within_waits_for_data_at_most_its_timeout(pair: Any) -> None:
    a, b = pair
    buf = bytearray(64)
    start = time.monotonic()
    assert _sockio.recv_within(a, buf, 0.2) is None
    waited = time.monotonic() - start
    assert 0.15 <= waited < 5
    b.sendall(b"hello")
    assert _sockio.recv_within(a, buf, 5) == 5 and bytes(buf[:5]) == b"hello"
    b.close()
    assert _sockio.recv_within(a, buf, 5) == 0  # the peer closed: end of stream


def test_send_within_sends_everything_or_times_out_when_the_peer_stops_reading(
    pair: Any,
) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frame = bytes(range(256)) * 64  # 16 KiB: more than the buffer takes at once
    got = bytearray()

    def drain() -> None:
        while len(got) < len(frame):
            got.extend(b.recv(65536))

    t = threading.Thread(target=drain)
    t.start()
    _sockio.send_within(a, frame, 10)
    t.join(10)
    assert bytes(got) == frame
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        for _ in range(10_000):  # nobody reads now: the buffers fill, then it times out
            _sockio.send_within(a, frame, 0.2)
    assert time.monotonic() - start < 10


class RecordingSocket(socket.socket):
    """A socket that remembers every settimeout() call made on it."""

    calls: List[Optional[float]]

    def settimeout(self, value: Optional[float]) -> None:
        self.calls.append(value)
        super().settimeout(value)


@pytest.fixture
def socket_methods(implementation: Optional[str]) -> Iterator[None]:
    switches = io_switches()
    before = [s(None) for s in switches]
    for s in switches:
        s(False)
    try:
        yield
    finally:
        for s, b in zip(switches, before):
            s(b)


def test_a_socket_methods_channel_never_sets_a_shared_timeout(socket_methods: None) -> None:
    def handler(peer: Any, event: Any) -> None:
        if not path_of(event).startswith("hang"):
            peer.send(ok(event, body=path_of(event)))

    with FakeRuntime(handler) as rt:
        config = RuntimeConfig(socket_path=rt.socket_path)
        client = RuntimeClient(config)
        sock = RecordingSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.calls = []
        sock.connect(rt.socket_path)
        client._attach(sock, resolve_endpoint(config))
        try:
            assert client.execute_http(HTTPRequest("GET", "http://x/a")).body == b"a"
            with pytest.raises(Exception) as info:
                client.execute_http(HTTPRequest("GET", "http://x/hang", timeout_ms=100))
            assert "TIMEOUT" in repr(info.value)
            assert (
                client.execute_http(HTTPRequest("GET", "http://x/b", timeout_ms=30_000)).body
                == b"b"
            )
            assert sock.calls == []
            assert sock.gettimeout() == 0.0  # non-blocking all along
        finally:
            client.close()
