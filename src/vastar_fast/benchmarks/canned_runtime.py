"""A minimal runtime for client benchmarks: answers every ExecuteRequest at once with a
canned small HTTP response (the released runtime's golden 200 answer), so a benchmark
measures the client, not an upstream. Run as
``python -m vastar_fast.benchmarks.canned_runtime SOCKET [READY_FILE]``; started for
benchmarks by :func:`vastar_fast.services.canned_runtime_service`.
"""

import json
import os
import shutil
import socket
import struct
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Tuple

from vastar_fast.protocol import codec
from vastar_fast.services import canned_runtime_service, make_tmpdir, pinned

PAYLOAD = codec.encode_http_response_payload(
    200,
    {
        "accept-ranges": "bytes",
        "connection": "keep-alive",
        "content-length": "13",
        "content-type": "text/plain",
        "date": "Sat, 21 Nov 2026 16:54:30 GMT",
        "etag": '"6b01cc32-d"',
        "last-modified": "Sat, 21 Nov 2026 16:52:02 GMT",
        "server": "nginx/1.22.1",
    },
    "hello, world!",
    False,
)


def serve(conn: socket.socket) -> None:
    frames = codec.FrameBuffer()
    cache: Dict[int, bytes] = {}
    while True:
        n = conn.recv_into(frames.get_buffer())
        if not n:
            return
        frames.buffer_updated(n)
        out = []
        for mtype, body in frames.frames():
            if mtype != 0:
                continue
            rid = codec.decode_execute_request(body).request_id
            frame = cache.get(rid)
            if frame is None:
                frame = codec.encode_execute_response(rid, 0, None, PAYLOAD, 457)
                if len(cache) < 4:
                    cache[rid] = frame
            out.append(frame)
        conn.sendall(b"".join(out))


@contextmanager
def running(start_timeout_s: float = 30.0) -> Iterator[str]:
    """Start this runtime as a subprocess on a temp socket (on CPU 1, the caller on CPU
    0, when there are two); yield the socket path; stop it and restore the caller's
    CPUs on exit."""
    tmp = make_tmpdir("vastar-bench-")
    two = (os.cpu_count() or 1) >= 2
    try:
        service = canned_runtime_service(
            tmp, startup_timeout_s=start_timeout_s, cpus={1} if two else None
        )
        with service, pinned({0} if two else ()):
            assert service.socket_path is not None
            yield service.socket_path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def raw_client(path: str, frame: bytes) -> Tuple[socket.socket, Callable[[], int]]:
    """The least a client can do per round trip: send a pre-encoded frame, then receive
    until the answer's frame is complete, decoding nothing. Returns (socket, once)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    buf = bytearray(65536)
    view = memoryview(buf)

    def once() -> int:
        sock.sendall(frame)
        got = sock.recv_into(buf)
        while got < 4 or got < 4 + struct.unpack_from(">I", buf)[0]:
            got += sock.recv_into(view[got:])
        return got

    return sock, once


def main() -> None:
    path = sys.argv[1]
    ready = sys.argv[2] if len(sys.argv) > 2 else path + ".ready"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    with open(ready + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "socket": path}, f)
    os.replace(ready + ".tmp", ready)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_and_close, args=(conn,), daemon=True).start()


def _serve_and_close(conn: socket.socket) -> None:
    try:
        serve(conn)
    except OSError:
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    main()
