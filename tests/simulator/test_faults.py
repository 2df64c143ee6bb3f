"""Fault injection: per-request header and seeded random faults."""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from typing import Any, Iterator, List, Optional

import anthropic
import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import FAULT_HEADER, FAULT_KINDS, SimulatorServer, SimulatorSettings
from vastar_fast.simulator.answers import answer_for, tokenize

from .helpers import httpx, post, sse_events

QUANTUM = "Explain quantum computing in simple terms."
MESSAGES: Any = [{"role": "user", "content": QUANTUM}]


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10.0)
    yield c
    c.close()


def _fault(kind: str) -> Any:
    return {"extra_headers": {FAULT_HEADER: kind}}


def test_rate_limit(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **_fault("rate_limit"))
    err = info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "1"
    assert isinstance(err.body, dict)
    assert err.body["code"] == "rate_limit_exceeded"
    # Streaming requests get the same 429 before any byte of the stream.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, **_fault("rate_limit")
        )


def test_rate_limit_anthropic_shape(sim: SimulatorServer) -> None:
    c = anthropic.Anthropic(base_url=sim.base_url, api_key="k", max_retries=0)
    try:
        with pytest.raises(anthropic.RateLimitError) as info:
            c.messages.create(
                model="claude-sim-1",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={FAULT_HEADER: "rate_limit"},
            )
    finally:
        c.close()
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"


def test_server_error(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **_fault("server_error"))
    assert info.value.status_code == 500
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"


def test_server_error_gemini_shape(sim: SimulatorServer) -> None:
    status, _, body = post(
        sim,
        "/v1beta/models/gemini-pro:generateContent",
        {"contents": [{"parts": [{"text": "hi"}]}]},
        headers={FAULT_HEADER: "server_error"},
    )
    assert status == 500
    assert json.loads(body)["error"]["status"] == "INTERNAL"


def test_disconnect_ends_stream_with_error(client: OpenAI) -> None:
    received: List[str] = []
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, **_fault("disconnect")
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    # The role chunk plus `fault_after_chunks` (3) content chunks arrived first.
    assert len(received) == 4
    assert answer_for(QUANTUM).startswith("".join(received))
    assert "".join(received) == "Quantum computing is"


def test_disconnect_non_streaming(client: OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **_fault("disconnect"))


def test_stall_times_out_client(sim: SimulatorServer) -> None:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=0.5)
    received: List[str] = []
    try:
        stream = c.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, **_fault("stall")
        )
        with pytest.raises((httpx.ReadTimeout, openai.APITimeoutError)):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    finally:
        c.close()
    assert "".join(received) == "Quantum computing is"


def test_stall_raw_socket_gets_partial_stream_then_silence(sim: SimulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=0.5)
    try:
        conn.request(
            "POST",
            "/api/chat",
            body=json.dumps({"model": "m", "messages": MESSAGES}),
            headers={FAULT_HEADER: "stall"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader(FAULT_HEADER) == "stall"
        lines = [json.loads(resp.readline()) for _ in range(3)]
        assert [line["message"]["content"] for line in lines] == ["Quantum", " computing", " is"]
        with pytest.raises((socket.timeout, TimeoutError)):
            resp.readline()
    finally:
        conn.close()


def test_malformed_openai_client_fails_to_parse(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, max_tokens=10, **_fault("malformed")
    )
    with pytest.raises(json.JSONDecodeError):
        for _ in stream:
            pass


@pytest.mark.parametrize(
    ("path", "body", "framing"),
    [
        (
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": MESSAGES, "max_tokens": 10},
            "sse",
        ),
        (
            "/v1/messages",
            {"model": "m", "stream": True, "messages": MESSAGES, "max_tokens": 10},
            "sse",
        ),
        ("/v2/chat", {"model": "m", "stream": True, "messages": MESSAGES, "max_tokens": 10}, "sse"),
        (
            "/api/chat",
            {"model": "m", "messages": MESSAGES, "options": {"num_predict": 10}},
            "ndjson",
        ),
        ("/v1/chat", {"message": QUANTUM, "stream": True, "max_tokens": 10}, "ndjson"),
        (
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            {
                "contents": [{"parts": [{"text": QUANTUM}]}],
                "generationConfig": {"maxOutputTokens": 10},
            },
            "sse",
        ),
    ],
)
def test_malformed_exactly_one_bad_chunk(
    sim: SimulatorServer, path: str, body: dict, framing: str
) -> None:
    status, headers, raw = post(sim, path, body, headers={FAULT_HEADER: "malformed"})
    assert status == 200
    assert headers[FAULT_HEADER] == "malformed"
    if framing == "sse":
        payloads = [d for _, d in sse_events(raw) if d != "[DONE]"]
    else:
        payloads = [line for line in raw.decode().splitlines() if line.strip()]
    good, bad = [], 0
    for payload in payloads:
        try:
            good.append(json.loads(payload))
        except json.JSONDecodeError:
            bad += 1
    assert bad == 1
    assert len(good) >= 10
    # Without the fault the same request yields exactly the good chunks.
    _, _, clean = post(sim, path, body)
    assert len(clean) < len(raw)


def test_unknown_fault_header_is_ignored(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=2, **_fault("bogus")
    )
    assert r.choices[0].message.content == "Quantum computing"


def _fault_sequence(server: SimulatorServer, count: int) -> List[Optional[str]]:
    seen: List[Optional[str]] = []
    for i in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5.0)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            seen.append(resp.getheader(FAULT_HEADER))
            try:
                resp.read()
            except (http.client.IncompleteRead, OSError):
                pass
        finally:
            conn.close()
    return seen


def _expected(seed: int, rate: float, count: int) -> List[Optional[str]]:
    rng = random.Random(seed)
    out: List[Optional[str]] = []
    for _ in range(count):
        roll = rng.random()
        kind = rng.choice(FAULT_KINDS)
        out.append(kind if roll < rate else None)
    return out


def test_fault_rate_is_reproducible_with_seed() -> None:
    count = 30
    settings = SimulatorSettings.fast(fault_rate=0.5, seed=1234, stall_max_s=0.05)
    with SimulatorServer(settings) as a:
        first = _fault_sequence(a, count)
    with SimulatorServer(settings) as b:
        second = _fault_sequence(b, count)
    with SimulatorServer(SimulatorSettings.fast(fault_rate=0.5, seed=99, stall_max_s=0.05)) as c:
        other = _fault_sequence(c, count)
    assert first == second
    assert first == _expected(1234, 0.5, count)
    assert other == _expected(99, 0.5, count)
    assert first != other
    assert None in first
    assert len({k for k in first if k is not None}) >= 3


def test_fault_rate_zero_and_one() -> None:
    with SimulatorServer(SimulatorSettings.fast(fault_rate=1.0, seed=7, stall_max_s=0.05)) as s:
        seq = _fault_sequence(s, 10)
    assert all(k in FAULT_KINDS for k in seq)
    with SimulatorServer(SimulatorSettings.fast(fault_rate=0.0, seed=7)) as s:
        assert _fault_sequence(s, 5) == [None] * 5


# ------------------------------------------------------------------ truncate, duplicate, spike


def _content_chunks(raw: bytes) -> List[str]:
    out = []
    for _, data in sse_events(raw):
        if data == "[DONE]":
            continue
        delta = json.loads(data)["choices"][0]["delta"]
        if delta.get("content"):
            out.append(delta["content"])
    return out


STREAM_BODY: Any = {"model": "m", "stream": True, "messages": MESSAGES, "max_tokens": 10}


@pytest.mark.parametrize("delayed", [False, True], ids=["single-write", "timed"])
def test_truncate_ends_the_stream_cleanly(sim: SimulatorServer, delayed: bool) -> None:
    extra = {"x-simulator-latency": "token_delay_ms=1"} if delayed else {}
    status, headers, raw = post(
        sim, "/v1/chat/completions", STREAM_BODY, headers={FAULT_HEADER: "truncate:5", **extra}
    )
    assert status == 200  # a complete HTTP response: only the SSE stream is cut short
    assert headers[FAULT_HEADER] == "truncate"
    assert _content_chunks(raw) == ["Quantum", " computing", " is", " a", " way"]
    assert b"[DONE]" not in raw and b'finish_reason":"length' not in raw
    _, _, raw = post(sim, "/v1/chat/completions", STREAM_BODY, headers={FAULT_HEADER: "truncate"})
    assert len(_content_chunks(raw)) == 3  # fault_after_chunks


def test_truncate_with_the_openai_client(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, max_tokens=10, **_fault("truncate:2")
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Quantum computing"
    assert all(c.choices[0].finish_reason is None for c in chunks)


@pytest.mark.parametrize("delayed", [False, True], ids=["single-write", "timed"])
def test_duplicate_sends_one_chunk_twice(sim: SimulatorServer, delayed: bool) -> None:
    extra = {"x-simulator-latency": "token_delay_ms=1"} if delayed else {}
    _, _, clean = post(sim, "/v1/chat/completions", STREAM_BODY)
    _, headers, raw = post(
        sim, "/v1/chat/completions", STREAM_BODY, headers={FAULT_HEADER: "duplicate", **extra}
    )
    assert headers[FAULT_HEADER] == "duplicate"
    good, dup = _content_chunks(clean), _content_chunks(raw)
    assert len(dup) == len(good) + 1
    at = next(i for i, (a, b) in enumerate(zip(good, dup)) if a != b)
    assert dup[at] == dup[at - 1] == good[at - 1]
    assert dup[:at] + dup[at + 1 :] == good
    assert raw.endswith(b"data: [DONE]\n\n")


def test_latency_spike_pauses_mid_stream(sim: SimulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10.0)
    try:
        conn.request(
            "POST",
            "/api/chat",
            body=json.dumps({"model": "m", "messages": MESSAGES, "options": {"num_predict": 6}}),
            headers={FAULT_HEADER: "latency_spike:400"},
        )
        start = time.perf_counter()
        resp = conn.getresponse()
        assert resp.getheader(FAULT_HEADER) == "latency_spike"
        lines = [json.loads(resp.readline()) for _ in range(7)]
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    text = "".join(line["message"]["content"] for line in lines)
    assert text == "".join(tokenize(answer_for(QUANTUM))[:6])
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 6
    assert elapsed >= 0.4  # the spike's pause (a sleep is never shorter)


def test_random_faults_from_chosen_kinds() -> None:
    kinds = ("truncate", "duplicate")
    settings = SimulatorSettings.fast(fault_rate=1.0, seed=5, fault_kinds=kinds)
    with SimulatorServer(settings) as s:
        seq = _fault_sequence(s, 12)
    rng = random.Random(5)
    expected = []
    for _ in range(12):
        rng.random()
        expected.append(rng.choice(kinds))
    assert seq == expected
    assert set(seq) == set(kinds)
