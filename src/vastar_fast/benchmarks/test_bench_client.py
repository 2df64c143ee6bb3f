"""Client cost per round trip against one canned runtime process (issue: at most a tenth
of the released client's). Group ``client_round_trip``: ``raw`` sends a pre-encoded
frame and reads the answer's bytes without decoding; the client's own cost is its
median minus raw's.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Iterator

import pytest

import canned_runtime
from released_client import ReleasedStyleClient, encode_request
from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig

URL = "http://127.0.0.1:8088/small"


@pytest.fixture(scope="module")
def runtime_socket() -> Iterator[str]:
    with canned_runtime.running() as path:
        yield path


def _round_trip_raw(benchmark, runtime_socket) -> None:
    frame = encode_request(1, "openai-connector", "default", "GET", URL, {}, b"")
    sock, once = canned_runtime.raw_client(runtime_socket, frame)
    assert benchmark(once) > 100
    sock.close()


def _round_trip_vastar_fast(benchmark, runtime_socket) -> None:
    request = HTTPRequest(method="GET", url=URL)
    with RuntimeClient(
        RuntimeConfig(
            tenant_id="openai-connector", workspace_id="default", socket_path=runtime_socket
        )
    ) as client:
        response = benchmark(client.execute_http, request)
    assert response.body == b"hello, world!"


def _round_trip_released(benchmark, runtime_socket) -> None:
    client = ReleasedStyleClient(runtime_socket)
    response = benchmark(client.execute_http, "GET", URL, {}, b"")
    assert response["body"] == b"hello, world!"
    client.close()


class PreAnswered:
    """A socketpair whose "runtime" end has the answer written before each call: the
    client's recv finds it at once, so no scheduler, no wake-up, no other process.

    Every variant pays the same extra work per call (encode the answer for the request
    id the client is about to use, one send, and reading the requests off now and
    then), so the difference to ``raw`` is the client's own CPU cost, hot.
    """

    def __init__(self, payload: bytes) -> None:
        from vastar_fast.protocol import codec

        self.client_sock, self._runtime = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._runtime.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._encode = codec.encode_execute_response
        self._payload = payload
        self._calls = 0

    def answer(self, rid: int) -> None:
        self._runtime.sendall(self._encode(rid, 0, None, self._payload, 457))
        self._calls += 1
        if self._calls % 256 == 0:  # keep the client's sends from filling the buffer
            self._runtime.setblocking(False)
            try:
                while self._runtime.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            self._runtime.setblocking(True)

    def close(self) -> None:
        self.client_sock.close()
        self._runtime.close()


def _sse_payload() -> bytes:
    from stack_bench import sse_body

    from vastar_fast.protocol import codec

    body = sse_body().decode()
    return codec.encode_http_response_payload(
        200, {"content-type": "text/event-stream"}, body, True
    )


PAYLOADS = {"13B": canned_runtime.PAYLOAD, "35KB_SSE": _sse_payload()}


def _own_cost_raw(benchmark, payload: bytes) -> None:
    pair = PreAnswered(payload)
    frame = encode_request(1795280070375, "openai-connector", "default", "GET", URL, {}, b"")
    sock = pair.client_sock
    buf = bytearray(1 << 20)
    view = memoryview(buf)

    def once() -> int:
        pair.answer(1795280070375)
        sock.sendall(frame)
        got = sock.recv_into(buf)
        while got < 4 or got < 4 + struct.unpack_from(">I", buf)[0]:
            got += sock.recv_into(view[got:])
        return got

    assert benchmark(once) > 100
    pair.close()


def _own_cost_vastar_fast(benchmark, payload: bytes) -> None:
    from vastar_fast.client.endpoint import Endpoint

    pair = PreAnswered(payload)
    client = RuntimeClient(RuntimeConfig(tenant_id="openai-connector", workspace_id="default"))
    seed = 1795280070375
    client._next_id = seed
    client._attach(pair.client_sock, Endpoint("in-process"))
    request = HTTPRequest(method="GET", url=URL)
    rid = [seed]

    def once() -> object:
        pair.answer(rid[0])
        rid[0] += 1
        return client.execute_http(request)

    response = benchmark(once)
    assert response.status_code == 200 and response.body
    pair.close()


def _own_cost_released(benchmark, payload: bytes) -> None:
    pair = PreAnswered(payload)
    client = ReleasedStyleClient.__new__(ReleasedStyleClient)
    client.sock = pair.client_sock
    client.next_id = int(time.time() * 1000)

    def once() -> object:
        pair.answer(client.next_id)
        return client.execute_http("GET", URL, {}, b"")

    response = benchmark(once)
    assert response["status_code"] == 200 and response["body"]
    pair.close()


ROUND_TRIP = {
    "raw": _round_trip_raw,
    "vastar_fast": _round_trip_vastar_fast,
    "released": _round_trip_released,
}
OWN_COST = {
    "raw": _own_cost_raw,
    "vastar_fast": _own_cost_vastar_fast,
    "released": _own_cost_released,
}


@pytest.mark.benchmark(group="client_round_trip")
@pytest.mark.parametrize("variant", list(ROUND_TRIP))
def test_round_trip(benchmark, runtime_socket, variant: str) -> None:
    ROUND_TRIP[variant](benchmark, runtime_socket)


@pytest.mark.benchmark(group="client_own_cost")
@pytest.mark.parametrize("variant", list(OWN_COST))
def test_own_cost(benchmark, variant: str) -> None:
    """Pre-answered socketpair, 13 B body: the difference to ``raw`` is the client's own
    CPU cost, hot (no wake-up after a blocking receive)."""
    OWN_COST[variant](benchmark, PAYLOADS["13B"])


@pytest.mark.benchmark(group="client_own_cost_sse35k")
@pytest.mark.parametrize("variant", list(OWN_COST))
def test_own_cost_sse(benchmark, variant: str) -> None:
    """The same with the 35 KB SSE body of bench/stack_bench.py."""
    OWN_COST[variant](benchmark, PAYLOADS["35KB_SSE"])
