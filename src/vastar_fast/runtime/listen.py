"""Binding the daemon's listening sockets."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from typing import Any, Optional

__all__ = ["SocketInUseError", "bind_tcp", "bind_unix", "check_exposure", "is_loopback"]


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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Any) -> Optional[str]:
    """Why listening on TCP ``host`` must be refused (None: it may listen).

    Beyond loopback anyone on the network can reach the socket; the runtime then needs a
    token on every request (``security.token``, or a token for every tenant including
    ``default``), because it executes HTTP for whoever connects.
    """
    if is_loopback(host):
        return None
    tenants = settings.tenants
    every_tenant = bool(tenants) and all(p.token is not None for p in tenants.values())
    if settings.security.token is not None or every_tenant:
        return None
    return (
        f"refusing to listen on TCP {host}: that address is reachable from the network and "
        "the runtime would execute HTTP requests for anyone who connects. Listen on "
        "127.0.0.1 (or a Unix socket), or configure security.token (every request must then "
        "carry it)"
    )


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
