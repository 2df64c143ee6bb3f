"""Client cost per round trip against one canned runtime process (issue: at most a tenth
of the released client's). Group ``client_round_trip``: ``raw`` sends a pre-encoded
frame and reads the answer's bytes without decoding; the client's own cost is its
median minus raw's.
"""

from __future__ import annotations

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


class InProcessRuntimeSocket:
    """A socket stand-in whose "runtime" answers inside sendall: no kernel, no scheduler.

    Every variant pays the same fake-runtime cost (decode the request id, look up a
    canned answer), so differences between variants are the clients' own CPU cost.
    """

    def __init__(self) -> None:
        from canned_runtime import PAYLOAD
        from vastar_fast.protocol import codec

        self._codec = codec
        self._payload = PAYLOAD
        self._answers: dict = {}
        self._out = bytearray()

    def sendall(self, frame: bytes) -> None:
        rid = self._codec.decode_execute_request(frame[5:]).request_id
        answer = self._answers.get(rid)
        if answer is None:
            answer = self._codec.encode_execute_response(rid, 0, None, self._payload, 457)
            self._answers = {rid: answer}
        self._out += answer

    def recv_into(self, buf, nbytes: int = 0) -> int:  # type: ignore[no-untyped-def]
        n = len(self._out)
        buf[:n] = self._out
        self._out.clear()
        return n

    def recv(self, n: int) -> bytes:
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def setsockopt(self, *args: object) -> None:
        pass

    def settimeout(self, t: object) -> None:
        pass

    def close(self) -> None:
        pass


def _own_cost_raw(benchmark) -> None:
    sock = InProcessRuntimeSocket()
    frame = encode_request(1795280070375, "openai-connector", "default", "GET", URL, {}, b"")
    buf = bytearray(65536)

    def once() -> int:
        sock.sendall(frame)
        got = sock.recv_into(buf)
        assert got >= 4 + struct.unpack_from(">I", buf)[0]
        return got

    assert benchmark(once) > 100


def _own_cost_vastar_fast(benchmark) -> None:
    client = RuntimeClient(RuntimeConfig(tenant_id="openai-connector", workspace_id="default"))
    client._sock = InProcessRuntimeSocket()  # type: ignore[assignment]
    request = HTTPRequest(method="GET", url=URL)
    response = benchmark(client.execute_http, request)
    assert response.body == b"hello, world!"


def _own_cost_released(benchmark) -> None:
    client = ReleasedStyleClient.__new__(ReleasedStyleClient)
    client.sock = InProcessRuntimeSocket()  # type: ignore[assignment]
    client.next_id = int(time.time() * 1000)
    response = benchmark(client.execute_http, "GET", URL, {}, b"")
    assert response["body"] == b"hello, world!"


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
    """In-process fake runtime: the difference to ``raw`` is the client's own CPU cost."""
    OWN_COST[variant](benchmark)
