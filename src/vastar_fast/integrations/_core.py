"""What the httpx2 and httpx transports share: the library is a parameter.

httpx2 (the HTTP library of openai 3.x and anthropic 2.x) and httpx (older releases)
have the same transport API, so one implementation serves both; the public classes in
``httpx2.py`` / ``httpx.py`` are thin typed shells around :class:`SyncCore` and
:class:`AsyncCore`, given the library module.

Mapping (docs/integrations.md):

- request: method, URL, headers (repeated ones joined with ", "), body (read whole,
  sent as UTF-8 text: the wire protocol's body is a string), and one deadline for the
  whole exchange, the sum of the request's ``connect``, ``write`` and ``read`` timeouts
  (24 h without a read timeout; ``RuntimeConfig.timeout_ms`` without a timeout
  extension at all). The runtime sets Host, Content-Length and the hop-by-hop headers
  itself.
- response: status and headers as soon as the runtime forwards them (the streaming
  extension), then the body chunk by chunk; against a runtime without the extension
  (the released one) the whole body arrives at once, after the head. Closing the
  response early cancels the upstream request.
- errors: TRANSIENT before the head (the runtime is not running, it could not reach
  the upstream, it went away) -> ``ConnectError``; TRANSIENT mid-body -> ``ReadError``;
  TIMEOUT -> ``ReadTimeout``; INVALID_REQUEST -> ``LocalProtocolError``; PERMANENT
  (refused by policy, TLS verification, size limits) -> ``ProxyError``; RATE_LIMITED
  (the runtime's own limits) -> a synthesized HTTP 429 answer, so the SDKs' rate-limit
  handling and error class apply.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from typing import Any, AsyncIterator, Dict, Iterator, Optional

from ..client.aio import AsyncHTTPStream, AsyncRuntimeClient
from ..client.sync import HTTPStream, RuntimeClient
from ..errors import ConnectorException
from ..types import ErrorClass, HTTPRequest, RuntimeConfig

__all__ = ["AsyncCore", "SyncCore", "runtime_request"]

UNBOUNDED_MS = 24 * 3600 * 1000
"""The deadline of a request without a read timeout (httpx ``timeout=None``)."""

RATE_LIMITED_HEADER = "x-vastar-error-class"
"""Names the runtime's error class on a synthesized answer (``RATE_LIMITED``)."""


def _timeout_ms(extensions: Any) -> Optional[int]:
    timeout = extensions.get("timeout") if extensions else None
    if not isinstance(timeout, dict):
        return None  # no timeout extension: the RuntimeConfig's timeout_ms
    if timeout.get("read") is None:
        return UNBOUNDED_MS
    total = sum(float(timeout[k]) for k in ("connect", "write", "read") if timeout.get(k))
    return max(1, math.ceil(total * 1000))


def runtime_request(request: Any, body: bytes) -> HTTPRequest:
    """The runtime request for an httpx(2) ``Request`` whose body has been read."""
    headers: Dict[str, str] = {}
    for name, value in request.headers.multi_items():
        prev = headers.get(name)
        headers[name] = value if prev is None else prev + ", " + value
    return HTTPRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        body=body,
        timeout_ms=_timeout_ms(request.extensions),
    )


def _error(lib: Any, exc: ConnectorException, request: Any, started: bool) -> Exception:
    """The library's exception for a runtime error (``started``: the head had arrived)."""
    cls = exc.error_class
    message = f"{exc.message} (vastar runtime: {exc.get_error_class_name()})"
    if cls == ErrorClass.TIMEOUT:
        kind = lib.ReadTimeout
    elif cls == ErrorClass.TRANSIENT:
        kind = lib.ReadError if started else lib.ConnectError
    elif cls == ErrorClass.INVALID_REQUEST:
        kind = lib.LocalProtocolError
    elif cls in (ErrorClass.PERMANENT, ErrorClass.RATE_LIMITED):
        kind = lib.ProxyError
    else:
        kind = lib.TransportError
    error: Exception = kind(message, request=request)
    return error


def _rate_limited(lib: Any, exc: ConnectorException) -> Any:
    """HTTP 429 standing for the runtime's RATE_LIMITED answer (nothing went upstream)."""
    body = {
        "error": {
            "message": exc.message,
            "type": "rate_limit_error",
            "code": "vastar_runtime_rate_limited",
        }
    }
    return lib.Response(
        429,
        headers=[("content-type", "application/json"), (RATE_LIMITED_HEADER, "RATE_LIMITED")],
        content=json.dumps(body).encode("utf-8"),
        extensions={"vastar_request_id": exc.request_id},
    )


def _response(lib: Any, stream: Any, body: Any) -> Any:
    return lib.Response(
        stream.status_code,
        headers=list(stream.headers.items()),
        stream=body,
        extensions={"vastar_request_id": stream.request_id},
    )


# ---------------------------------------------------------------- sync
class SyncCore:
    """``handle_request`` for a ``BaseTransport`` of library ``lib``."""

    def __init__(
        self, lib: Any, config: Optional[RuntimeConfig], client: Optional[RuntimeClient]
    ) -> None:
        if config is not None and client is not None:
            raise ValueError("give a RuntimeConfig or a RuntimeClient, not both")
        self.lib = lib
        self.client = client if client is not None else RuntimeClient(config)
        self.owned = client is None
        self.body_class = _sync_body_class(lib)

    def handle(self, request: Any) -> Any:
        lib = self.lib
        runtime = runtime_request(request, request.read())
        try:
            stream = self.client.stream_http(runtime)
        except ConnectorException as exc:
            if exc.error_class == ErrorClass.RATE_LIMITED:
                return _rate_limited(lib, exc)
            raise _error(lib, exc, request, False) from exc
        return _response(lib, stream, self.body_class(stream, request))

    def close(self) -> None:
        if self.owned:
            self.client.close()


@functools.cache
def _sync_body_class(lib: Any) -> Any:
    class SyncBody(lib.SyncByteStream):
        """The body as the runtime forwards it; closing it early cancels the request."""

        def __init__(self, stream: HTTPStream, request: Any) -> None:
            self._stream = stream
            self._request = request

        def __iter__(self) -> Iterator[bytes]:
            try:
                yield from self._stream
            except ConnectorException as exc:
                raise _error(lib, exc, self._request, True) from exc

        def close(self) -> None:
            self._stream.close()

    return SyncBody


# ---------------------------------------------------------------- asyncio
class AsyncCore:
    """``handle_async_request`` for an ``AsyncBaseTransport`` of library ``lib``.

    A client it makes itself belongs to the event loop it was made on: a request on
    another loop (a second ``asyncio.run``) gets a new one."""

    def __init__(
        self, lib: Any, config: Optional[RuntimeConfig], client: Optional[AsyncRuntimeClient]
    ) -> None:
        if config is not None and client is not None:
            raise ValueError("give a RuntimeConfig or an AsyncRuntimeClient, not both")
        self.lib = lib
        self.config = config
        self.client = client
        self.owned = client is None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.body_class = _async_body_class(lib)

    def _client(self) -> AsyncRuntimeClient:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncRuntimeTransport runs on asyncio (the Vastar asyncio client); "
                "use it from asyncio code, or use RuntimeTransport from threads"
            ) from None
        client = self.client
        if client is not None and (not self.owned or self._loop is loop):
            return client
        if client is not None:
            _drop(client)  # made on another loop (one that is gone, as a rule)
        self.client = client = AsyncRuntimeClient(self.config)
        self._loop = loop
        return client

    async def handle(self, request: Any) -> Any:
        lib = self.lib
        runtime = runtime_request(request, await request.aread())
        stream = self._client().stream_http(runtime)
        try:
            await stream.start()
        except ConnectorException as exc:
            if exc.error_class == ErrorClass.RATE_LIMITED:
                return _rate_limited(lib, exc)
            raise _error(lib, exc, request, False) from exc
        return _response(lib, stream, self.body_class(stream, request))

    async def aclose(self) -> None:
        client = self.client
        if not self.owned or client is None:
            return
        self.client = None
        _drop(client)


def _drop(client: AsyncRuntimeClient) -> None:
    """Close a client; one whose event loop is closed has nothing left to close."""
    try:
        client._close_now()
    except RuntimeError:  # "Event loop is closed": its transport went with the loop
        pass


@functools.cache
def _async_body_class(lib: Any) -> Any:
    class AsyncBody(lib.AsyncByteStream):
        """The body as the runtime forwards it; closing it early cancels the request."""

        def __init__(self, stream: AsyncHTTPStream, request: Any) -> None:
            self._stream = stream
            self._request = request

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._stream:
                    yield chunk
            except ConnectorException as exc:
                raise _error(lib, exc, self._request, True) from exc

        async def aclose(self) -> None:
            await self._stream.aclose()

    return AsyncBody
