"""Binding the daemon's listening sockets."""

from __future__ import annotations

import errno
import os
import socket
import stat

__all__ = ["SocketInUseError", "bind_tcp", "bind_unix"]


class SocketInUseError(RuntimeError):
    """Another live daemon listens on the socket path (or it is not a socket)."""


def bind_unix(path: str, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking Unix socket at ``path``, mode 0600.

    A stale socket file (nobody accepts on it) is replaced; a live one, or a path that
    is not a socket, is refused with SocketInUseError.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUseError(
                f"{path} exists and is not a socket; remove it or choose another --socket path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: its daemon is gone
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise SocketInUseError(f"cannot check the existing socket {path}: {exc}") from exc
            os.unlink(path)
        else:
            raise SocketInUseError(
                f"another runtime is already listening on {path}; stop it first or choose "
                "another --socket path"
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the file is born 0600: no window with wider access
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking TCP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
