"""A minimal runtime for client benchmarks: answers every ExecuteRequest at once with a
canned small HTTP response (the released runtime's golden 200 answer), so a benchmark
measures the client, not an upstream. Run as ``python canned_runtime.py SOCKET``.
"""

import os
import socket
import sys
import threading

from vastar_fast.protocol import codec

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
    cache = {}
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


def main() -> None:
    path = sys.argv[1]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    with open(path + ".ready", "w") as f:
        f.write(str(os.getpid()))
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
