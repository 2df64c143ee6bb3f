"""HTTP helpers for the simulator tests (stdlib only, bounded timeouts)."""

from __future__ import annotations

import http.client
import json
from typing import Any, Dict, List, Optional, Tuple

from vastar_fast.simulator import SimulatorServer

try:  # the openai/anthropic SDKs' HTTP library; some distributions rename it
    import httpx
except ImportError:  # pragma: no cover - environment dependent
    import httpx2 as httpx

__all__ = ["httpx", "post", "request", "sse_events"]


def request(
    server: SimulatorServer,
    method: str,
    path: str,
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 10.0,
) -> Tuple[int, Dict[str, str], bytes]:
    """Plain HTTP/1.1 request; returns (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        if body is None:
            payload = None
        elif isinstance(body, (bytes, str)):
            payload = body.encode() if isinstance(body, str) else body
        else:
            payload = json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def post(
    server: SimulatorServer, path: str, body: Any, **kw: Any
) -> Tuple[int, Dict[str, str], bytes]:
    return request(server, "POST", path, body, **kw)


def sse_events(raw: bytes) -> List[Tuple[Optional[str], str]]:
    """Parse an SSE body into (event, data) pairs (enough for these tests)."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        events.append((event, "\n".join(data)))
    return events
