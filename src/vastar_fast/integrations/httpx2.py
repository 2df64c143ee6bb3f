"""httpx2 transports through the Vastar runtime (openai 3.x, anthropic 2.x).

``httpx2.Client(transport=RuntimeTransport())`` and
``httpx2.AsyncClient(transport=AsyncRuntimeTransport())`` send every request through the
runtime: pooling, circuit breaking, tenant policy, deadlines and metrics for code that
keeps its SDK. How requests, answers and errors map: :mod:`vastar_fast.integrations._core`
and docs/integrations.md.
"""

from __future__ import annotations

from typing import Optional

try:
    import httpx2
except ImportError:  # pragma: no cover - exercised in a fresh interpreter by the tests
    raise ImportError(
        "vastar_fast.integrations.httpx2 needs httpx2 (pip install httpx2, or an openai / "
        "anthropic release built on it); for httpx use vastar_fast.integrations.httpx"
    ) from None

from ..client.aio import AsyncRuntimeClient
from ..client.sync import RuntimeClient
from ..types import RuntimeConfig
from ._core import AsyncCore, SyncCore

__all__ = ["AsyncRuntimeTransport", "RuntimeTransport"]


class RuntimeTransport(httpx2.BaseTransport):
    """An httpx2 transport that sends each request through the Vastar runtime.

    ``config`` says where the runtime listens and the tenant (default: a
    ``RuntimeConfig()``, overridden by the ``VASTAR_*`` variables as in the clients);
    ``client`` shares an existing :class:`~vastar_fast.RuntimeClient` instead (not closed
    with the transport). Thread-safe: one transport may serve many threads.
    """

    def __init__(
        self, config: Optional[RuntimeConfig] = None, *, client: Optional[RuntimeClient] = None
    ) -> None:
        self._core = SyncCore(httpx2, config, client)

    @property
    def client(self) -> RuntimeClient:
        """The runtime client the requests go through."""
        return self._core.client

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = self._core.handle(request)
        return response

    def close(self) -> None:
        self._core.close()


class AsyncRuntimeTransport(httpx2.AsyncBaseTransport):
    """An httpx2 async transport that sends each request through the Vastar runtime
    (asyncio only). ``config`` / ``client`` as for :class:`RuntimeTransport`; a client
    made here belongs to the event loop of its first request."""

    def __init__(
        self,
        config: Optional[RuntimeConfig] = None,
        *,
        client: Optional[AsyncRuntimeClient] = None,
    ) -> None:
        self._core = AsyncCore(httpx2, config, client)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = await self._core.handle(request)
        return response

    async def aclose(self) -> None:
        await self._core.aclose()
