"""Bounded socket calls for the channels that use the socket objects' own methods.

A Python socket has one timeout for both directions (``settimeout``), and setting it
releases the GIL (the ``ioctl`` that makes the socket non-blocking) *after* the new value
is stored. With one thread reading and others sending on the same connection, a
``settimeout(0.15)`` for a read could thus be overwritten by a sender's
``settimeout(20)`` before the read started, and a request with a 150 ms deadline waited
20 s. So these channels never set a timeout: the socket stays non-blocking and every
call waits for readiness itself, bounded by its own caller's time. This is the path of
the compiled twin on Windows (``_codec_c._client_io(False)``) and of the pure twin where
``SO_RCVTIMEO``/``SO_SNDTIMEO`` cannot be used (Windows); on POSIX the channels set
those per direction and block in one system call instead.

Each wait is a ``poll`` (``select`` where poll is missing) and then the call, which is
what Python's own socket timeouts do.
"""

from __future__ import annotations

import select
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

    Buffer = Union[bytes, bytearray, memoryview]

_poll = getattr(select, "poll", None)
_TIMEOUT = getattr(socket, "timeout", TimeoutError)  # TimeoutError from 3.10; its own before


def ready(sock: socket.socket, writing: bool, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for ``sock`` to be readable (or writable);
    whether it is (an error or hang-up counts: the next call reports it)."""
    timeout = max(timeout, 0.0)
    if _poll is not None:
        poller = _poll()
        poller.register(sock, select.POLLOUT if writing else select.POLLIN)
        return bool(poller.poll(timeout * 1000.0))
    if writing:
        _, out, err = select.select([], [sock], [sock], timeout)
        return bool(out or err)
    into, _, err = select.select([sock], [], [sock], timeout)
    return bool(into or err)


def recv_within(sock: socket.socket, buf: Buffer, timeout: float) -> Optional[int]:
    """``sock.recv_into(buf)`` once data is there, waiting at most ``timeout`` seconds;
    None when none came in time. OSError as the call raises it."""
    if not ready(sock, False, timeout):
        return None
    try:
        return sock.recv_into(buf)
    except BlockingIOError:  # readiness without data (another wake-up): nothing yet
        return None


def send_within(sock: socket.socket, frame: Buffer, timeout: float) -> None:
    """Send all of ``frame`` within ``timeout`` seconds; TimeoutError when the socket
    stayed full that long (``socket.timeout``: the runtime stopped reading; part of the
    frame may be out).
    OSError as the calls raise it."""
    deadline = time.monotonic() + timeout
    view = memoryview(frame)
    off, total = 0, len(view)
    while off < total:
        try:
            off += sock.send(view[off:])
            continue
        except BlockingIOError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not ready(sock, True, remaining):
            raise _TIMEOUT("the runtime stopped reading (send timed out)")
