"""The transports themselves, for both libraries (httpx2 and httpx, same API), with plain
clients through `vastar runtime` to the simulator (both twins): bodies as they arrive,
what a request maps to, every runtime error's exception, client ownership, loops."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from types import ModuleType
from typing import Any, Iterator, List, Tuple

import httpx
import httpx2
import pytest

from vastar_fast import AsyncRuntimeClient, RuntimeClient, RuntimeConfig
from vastar_fast.integrations import _core
from vastar_fast.integrations import httpx as via_httpx
from vastar_fast.integrations import httpx2 as via_httpx2

from .conftest import ANSWER, PROMPT, Stack

LIBS = {"httpx2": (httpx2, via_httpx2), "httpx": (httpx, via_httpx)}
CHAT = {"model": "gpt-4o", "messages": PROMPT}


@pytest.fixture(params=sorted(LIBS))
def lib(request: pytest.FixtureRequest) -> Tuple[ModuleType, ModuleType]:
    return LIBS[request.param]


def sync_client(lib: Tuple[ModuleType, ModuleType], config: RuntimeConfig, **kw: Any) -> Any:
    http, via = lib
    return http.Client(transport=via.RuntimeTransport(config), **kw)


def async_client(lib: Tuple[ModuleType, ModuleType], config: RuntimeConfig, **kw: Any) -> Any:
    http, via = lib
    return http.AsyncClient(transport=via.AsyncRuntimeTransport(config), **kw)


def chat_url(stack: Stack) -> str:
    return stack.url + "/v1/chat/completions"


def sse_deltas(text: str) -> str:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            choices = json.loads(line[6:]).get("choices") or [{}]
            out.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(out)


# ---------------------------------------------------------------- answers and bodies
def test_a_plain_request_and_its_answer(idle: Stack, lib: Any) -> None:
    with sync_client(lib, idle.config()) as client:
        resp = client.post(chat_url(idle), json=CHAT)
        models = client.get(idle.url + "/v1/models")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["choices"][0]["message"]["content"] == ANSWER
    assert resp.extensions["vastar_request_id"] > 0
    assert models.status_code == 200 and models.json()["data"]


def test_the_body_streams_as_the_runtime_forwards_it(idle: Stack, lib: Any) -> None:
    with sync_client(lib, idle.config()) as client:
        with client.stream(
            "POST", chat_url(idle), json=dict(CHAT, stream=True),
            headers={"x-simulator-fault": "stall"},
        ) as resp:  # fmt: skip
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            chunks = resp.iter_bytes()  # held: httpx2 closes a response whose iterator goes
            first = next(chunks)
            assert first.startswith(b"data: ")
            assert idle.active() == 1  # the upstream is still on it (stalled)
        assert idle.wait_idle()  # leaving the block closed the response: cancelled
        full = client.post(chat_url(idle), json=dict(CHAT, stream=True))
    assert sse_deltas(full.text) == ANSWER


def test_the_async_body_streams_and_closing_cancels(idle: Stack, lib: Any) -> None:
    async def go() -> List[Any]:
        async with async_client(lib, idle.config()) as client:
            async with client.stream(
                "POST", chat_url(idle), json=dict(CHAT, stream=True),
                headers={"x-simulator-fault": "stall"},
            ) as resp:  # fmt: skip
                chunks = resp.aiter_bytes()
                first = await chunks.__anext__()
                active = await asyncio.to_thread(idle.active)
            full = await client.post(chat_url(idle), json=dict(CHAT, stream=True))
            return [resp.status_code, first[:6], active, sse_deltas(full.text)]

    assert asyncio.run(go()) == [200, b"data: ", 1, ANSWER]
    assert idle.wait_idle()


def test_a_streamed_upload_arrives_whole(idle: Stack, lib: Any) -> None:
    body = json.dumps(CHAT).encode()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    with sync_client(lib, idle.config()) as client:
        resp = client.post(chat_url(idle), content=pieces(),
                           headers={"content-type": "application/json"})  # fmt: skip
    assert resp.json()["choices"][0]["message"]["content"] == ANSWER


def test_the_async_transport_follows_a_new_event_loop(idle: Stack, lib: Any) -> None:
    http, via = lib
    transport = via.AsyncRuntimeTransport(idle.config())

    async def once() -> int:
        client = http.AsyncClient(transport=transport)
        resp = await client.get(idle.url + "/v1/models")
        return int(resp.status_code)

    assert [asyncio.run(once()) for _ in range(2)] == [200, 200]  # two loops, one transport
    asyncio.run(transport.aclose())


def test_an_upstream_error_status_is_a_response(idle: Stack, lib: Any) -> None:
    with sync_client(lib, idle.config()) as client:
        resp = client.post(chat_url(idle), json=CHAT, headers={"x-simulator-fault": "rate_limit"})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert "x-vastar-error-class" not in resp.headers


# ---------------------------------------------------------------- runtime errors
def test_a_runtime_that_is_not_running_is_a_connect_error(nowhere: RuntimeConfig, lib: Any) -> None:
    http, _ = lib
    with sync_client(lib, nowhere) as client:
        with pytest.raises(http.ConnectError, match="cannot connect to the Vastar runtime"):
            client.get("http://127.0.0.1:9/")

    async def go() -> None:
        async with async_client(lib, nowhere) as aclient:
            await aclient.get("http://127.0.0.1:9/")

    with pytest.raises(http.ConnectError, match="is it running"):
        asyncio.run(go())


def test_the_runtimes_rate_limit_is_a_429_answer(idle: Stack, lib: Any) -> None:
    with sync_client(lib, idle.config(tenant_id="single")) as client:
        with client.stream("POST", chat_url(idle), json=dict(CHAT, stream=True),
                           headers={"x-simulator-fault": "stall"}) as held:  # fmt: skip
            chunks = held.iter_bytes()
            next(chunks)
            resp = client.get(idle.url + "/v1/models")
    assert resp.status_code == 429
    assert resp.headers["x-vastar-error-class"] == "RATE_LIMITED"
    error = resp.json()["error"]
    assert error["code"] == "vastar_runtime_rate_limited" and "single" in error["message"]
    assert idle.wait_idle()


def test_a_policy_refusal_is_a_proxy_error(idle: Stack, lib: Any) -> None:
    http, _ = lib
    with sync_client(lib, idle.config(tenant_id="restricted")) as client:
        with pytest.raises(http.ProxyError, match="PERMANENT") as info:
            client.get(idle.url + "/v1/models")
    assert "'restricted'" in str(info.value)  # the runtime's reason names the tenant


def test_an_unsendable_request_is_a_local_protocol_error(idle: Stack, lib: Any) -> None:
    http, _ = lib
    with sync_client(lib, idle.config()) as client:
        with pytest.raises(http.LocalProtocolError, match="INVALID_REQUEST"):
            client.post(chat_url(idle), content=b"\xff\xfe not UTF-8")


@pytest.mark.parametrize("phase", ["head", "body"])
def test_a_deadline_is_a_read_timeout(idle: Stack, lib: Any, phase: str) -> None:
    """0.2 s timeouts: a 0.6 s deadline, before the head (a slow first token) or in the
    middle of the body (a stall)."""
    http, _ = lib
    if phase == "head":
        headers = {"x-simulator-latency": "ttft_ms=5000"}
    else:
        headers = {"x-simulator-fault": "stall"}
    with sync_client(lib, idle.config(), timeout=0.2) as client:
        with pytest.raises(http.ReadTimeout, match="TIMEOUT"):
            client.post(chat_url(idle), json=dict(CHAT, stream=True), headers=headers)
    assert idle.wait_idle()


# ---------------------------------------------------------------- mapping and ownership
def test_a_request_maps_to_the_runtime_request(lib: Any) -> None:
    http, _ = lib
    request = http.Request(
        "post", "http://example.test/a?b=1",
        headers=[("X-Multi", "1"), ("x-multi", "2"), ("Authorization", "Bearer t")],
        content=b'{"a": 1}', extensions={"timeout": {"connect": 5.0, "read": 600.0,
                                                       "write": 600.0, "pool": 5.0}},
    )  # fmt: skip
    runtime = _core.runtime_request(request, request.read())
    assert (runtime.method, runtime.url, runtime.body) == (
        "POST", "http://example.test/a?b=1", b'{"a": 1}'
    )  # fmt: skip
    assert runtime.headers is not None
    assert runtime.headers["x-multi"] == "1, 2"
    assert runtime.headers["authorization"] == "Bearer t"
    assert runtime.timeout_ms == 1_205_000  # connect + write + read

    def timeout_of(extensions: Any) -> Any:
        return _core.runtime_request(http.Request("GET", "http://x/", extensions=extensions),
                                     b"").timeout_ms  # fmt: skip

    assert timeout_of({"timeout": {"connect": 1, "read": 0.25, "write": None}}) == 1250
    assert timeout_of({"timeout": {"connect": 1, "read": None, "write": 1}}) == _core.UNBOUNDED_MS
    assert timeout_of({}) is None  # the RuntimeConfig's timeout_ms


def test_a_given_client_is_shared_not_owned(idle: Stack, lib: Any) -> None:
    http, via = lib
    runtime_client = RuntimeClient(idle.config())
    with http.Client(transport=via.RuntimeTransport(client=runtime_client)) as client:
        assert client.get(idle.url + "/v1/models").status_code == 200
    assert runtime_client.connected  # closing the httpx client left it open
    with http.Client(transport=via.RuntimeTransport(client=runtime_client)) as client:
        assert client.get(idle.url + "/v1/models").status_code == 200
    runtime_client.close()
    with pytest.raises(ValueError, match="not both"):
        via.RuntimeTransport(idle.config(), client=runtime_client)

    async def shared() -> Tuple[int, bool]:
        async with AsyncRuntimeClient(idle.config()) as mine:
            async with http.AsyncClient(
                transport=via.AsyncRuntimeTransport(client=mine)
            ) as aclient:
                status = (await aclient.get(idle.url + "/v1/models")).status_code
            return status, mine.connected

    assert asyncio.run(shared()) == (200, True)
    with pytest.raises(ValueError, match="not both"):
        via.AsyncRuntimeTransport(idle.config(), client=AsyncRuntimeClient())


def test_a_transport_it_owns_closes_its_client(idle: Stack, lib: Any) -> None:
    http, via = lib
    transport = via.RuntimeTransport(idle.config())
    with http.Client(transport=transport) as client:
        client.get(idle.url + "/v1/models")
        assert transport.client.connected
    assert not transport.client.connected


PROBE = r"""
import sys
sys.modules[{missing!r}] = None  # as if not installed
import vastar_fast
assert not sys.modules.get("httpx") and not sys.modules.get("httpx2"), "imported unasked"
try:
    import vastar_fast.integrations.{missing}
except ImportError as exc:
    print("refused:", exc)
import vastar_fast.integrations.{other}
print("ok")
"""


@pytest.mark.parametrize("missing, other", [("httpx", "httpx2"), ("httpx2", "httpx")])
def test_only_the_integration_of_an_installed_library_imports(missing: str, other: str) -> None:
    src = os.path.dirname(os.path.dirname(os.path.abspath(via_httpx.__file__)))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(src))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(missing=missing, other=other)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"refused: vastar_fast.integrations.{missing} needs {missing}" in proc.stdout
    assert proc.stdout.strip().endswith("ok")
