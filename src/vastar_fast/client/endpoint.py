"""Where the runtime listens: RuntimeConfig plus the released SDKs' environment overrides.

Shared by the sync and asyncio clients so both resolve and describe endpoints alike.
"""

from __future__ import annotations

import os
import sys

from ..errors import ConnectorException
from ..types import ErrorClass, RuntimeConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from dataclasses import dataclass as record
    from typing import Mapping, Optional
else:
    from .._records import record

__all__ = ["Endpoint", "connect_error", "open_socket", "resolve_endpoint"]

_TRUE = ("1", "true", "yes", "on")


@record(frozen=True)
class Endpoint:
    """A Unix socket path, or a TCP host and port."""

    path: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 5000

    @property
    def is_tcp(self) -> bool:
        return self.path is None

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}" if self.path is None else f"unix socket {self.path}"

    def how_to_start(self) -> str:
        if self.path is None:
            return (
                f"start one with `vastar runtime --tcp {self.host}:{self.port}`, or point "
                "VASTAR_TCP_HOST/VASTAR_TCP_PORT (RuntimeConfig.tcp_host/tcp_port) at a running one"
            )
        return (
            f"start one with `vastar runtime --socket {self.path}`, or point "
            "VASTAR_SOCKET_PATH (RuntimeConfig.socket_path) at a running one"
        )


def resolve_endpoint(config: RuntimeConfig, environ: Mapping[str, str] = os.environ) -> Endpoint:
    """The endpoint to dial: environment variables override the config, as released.

    ``VASTAR_USE_TCP=true`` (or ``config.use_tcp``, or a platform without Unix sockets)
    selects TCP at ``VASTAR_TCP_HOST``/``VASTAR_TCP_PORT`` or the config's host/port;
    otherwise the Unix socket at ``VASTAR_SOCKET_PATH`` or ``config.socket_path``.
    """
    use_tcp = config.use_tcp or environ.get("VASTAR_USE_TCP", "").lower() in _TRUE
    if use_tcp or sys.platform == "win32":
        host = environ.get("VASTAR_TCP_HOST") or config.tcp_host
        port_text = environ.get("VASTAR_TCP_PORT")
        try:
            port = int(port_text) if port_text else int(config.tcp_port)
        except ValueError:
            raise ConnectorException(
                f"VASTAR_TCP_PORT={port_text!r} is not a port number", ErrorClass.INVALID_REQUEST, 0
            ) from None
        return Endpoint(None, host, port)
    return Endpoint(environ.get("VASTAR_SOCKET_PATH") or config.socket_path)


def open_socket(endpoint: Endpoint, timeout: Optional[float] = None) -> socket.socket:
    """A connected blocking socket, or ConnectorException(TRANSIENT) saying what to do."""
    import socket  # here, not at import: the compiled client core needs no socket module

    try:
        if endpoint.path is None:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(endpoint.path)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise connect_error(endpoint, exc) from exc
    sock.settimeout(None)
    return sock


def connect_error(endpoint: Endpoint, exc: BaseException) -> ConnectorException:
    """TRANSIENT: the runtime cannot be reached; says where and how to start one."""
    reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
    return ConnectorException(
        f"cannot connect to the Vastar runtime at {endpoint.describe()}: {reason}; "
        f"is it running? {endpoint.how_to_start()}",
        ErrorClass.TRANSIENT,
        0,
    )
