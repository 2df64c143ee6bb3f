"""Existing HTTP clients through the Vastar runtime, unchanged: transports for the HTTP
libraries the official LLM SDKs are built on.

- :mod:`vastar_fast.integrations.httpx2`: httpx2 (openai 3.x, anthropic 2.x).
- :mod:`vastar_fast.integrations.httpx`: httpx (older openai and anthropic releases).

Each has ``RuntimeTransport`` (sync) and ``AsyncRuntimeTransport`` (asyncio)::

    import httpx2, openai
    from vastar_fast.integrations.httpx2 import RuntimeTransport

    client = openai.OpenAI(http_client=httpx2.Client(transport=RuntimeTransport()))

Only the module for an installed library imports; neither library is a dependency of
vastar_fast. See docs/integrations.md.
"""
