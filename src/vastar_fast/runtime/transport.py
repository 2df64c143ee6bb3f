"""The upstream HTTP transport: one pooled aiohttp ClientSession, and error classification.

One session for the daemon's lifetime: its connector pools keep-alive connections per
(host, port, TLS settings), bounded in total and per host. TLS settings vary per tenant
through the per-request ``ssl`` argument, which aiohttp includes in its pool key, so
tenants with different CA bundles never share a connection.

The session mimics the released runtime's HTTP client on the wire: no automatic
User-Agent, Accept-Encoding or Content-Type headers (the caller's headers go out as
given), no cookie jar (cookies must not leak between tenants), no proxy from the
environment.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Dict, Optional, Tuple, Union

import aiohttp

from ..types import ErrorClass
from .config import HTTPSettings, TenantPolicy

__all__ = ["HTTPTransport", "UpstreamFailure", "classify"]

SSLArg = Union[bool, ssl.SSLContext]


class UpstreamFailure(Exception):
    """A failure to get (all of) an HTTP answer, already classified.

    ``connect`` is True when the request certainly never reached the upstream (so a
    retry is safe for any method); ``host_fault`` says whether it counts against the
    host's circuit breaker.
    """

    def __init__(
        self, error_class: ErrorClass, message: str, connect: bool, host_fault: bool
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.connect = connect
        self.host_fault = host_fault


def classify(exc: BaseException, where: str) -> UpstreamFailure:
    """Map an aiohttp/OS exception to an error class and a message saying what to do."""
    name = type(exc).__name__
    detail = str(exc) or name
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamFailure(
            ErrorClass.PERMANENT,
            f"TLS certificate verification failed for {where}: {exc.certificate_error}; "
            "fix the upstream certificate or give the tenant a ca_file in the runtime config",
            False,
            False,
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamFailure(
            ErrorClass.PERMANENT, f"TLS handshake with {where} failed: {detail}", False, False
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamFailure(
            ErrorClass.TRANSIENT,
            f"cannot resolve the host of {where} (DNS: {exc.os_error}); check the URL's host "
            "name, or retry if DNS is flaky",
            True,
            True,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(
            ErrorClass.TRANSIENT,
            f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}; is the "
            "upstream running and reachable? Retry later",
            True,
            True,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure(
            ErrorClass.TRANSIENT,
            f"connecting to {where} timed out (http.connect_timeout_s); retry later",
            True,
            True,
        )
    if isinstance(exc, (aiohttp.TooManyRedirects, aiohttp.RedirectClientError)):
        return UpstreamFailure(
            ErrorClass.PERMANENT, f"{where} redirected badly ({detail}); fix the URL", False, False
        )
    if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
        return UpstreamFailure(
            ErrorClass.INVALID_REQUEST,
            f"the request cannot be sent to {where}: {detail}; check the URL and header values",
            False,
            False,
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamFailure(
            ErrorClass.TRANSIENT,
            f"{where} broke off the response body ({detail}); retry",
            False,
            True,
        )
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        return UpstreamFailure(
            ErrorClass.TRANSIENT,
            f"connection to {where} failed during the exchange ({name}: {detail}); retry",
            False,
            True,
        )
    return UpstreamFailure(
        ErrorClass.TRANSIENT,
        f"HTTP request to {where} failed unexpectedly ({name}: {detail}); retry, and report "
        "it if it persists",
        False,
        False,
    )


class HTTPTransport:
    """Owns the ClientSession; must be created and closed on the daemon's event loop."""

    def __init__(self, settings: HTTPSettings) -> None:
        connector = aiohttp.TCPConnector(
            limit=settings.pool_limit,
            limit_per_host=settings.per_host_limit,
            keepalive_timeout=settings.keepalive_timeout_s,
            ttl_dns_cache=10,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            auto_decompress=True,
            trust_env=False,
        )
        if hasattr(self.session, "_retry_connection"):
            # aiohttp >= 3.10 silently resends an idempotent request once after a dropped
            # connection; our retry policy (retry.max_attempts, deadline-aware backoff)
            # must be the only one, so that "max attempts" means what it says.
            self.session._retry_connection = False
        self._ssl: Dict[Tuple[bool, Optional[str]], SSLArg] = {}

    def ssl_for(self, policy: TenantPolicy) -> SSLArg:
        """The ``ssl`` argument for a tenant: verify (default), a CA bundle, or off."""
        key = (policy.tls_verify, policy.ca_file)
        arg = self._ssl.get(key)
        if arg is None:
            if not policy.tls_verify:
                arg = False
            elif policy.ca_file:
                arg = ssl.create_default_context(cafile=policy.ca_file)
            else:
                arg = True
            self._ssl[key] = arg
        return arg

    async def close(self) -> None:
        await self.session.close()
        await asyncio.sleep(0)  # let the connector's transports finish closing
