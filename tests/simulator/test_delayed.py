"""The paced (non-zero delay) writer: same content as the single-write fast path.

No timing is asserted (machines are noisy); delays are 1 ms so the tests stay fast.
"""

from __future__ import annotations

import http.client
import json
from typing import Iterator

import pytest

from vastar_fast.simulator import FAULT_HEADER, SimulatorServer, SimulatorSettings
from vastar_fast.simulator.answers import answer_for

from .helpers import post, request, sse_events

FRANCE = "What is the capital of France?"
PARIS = "The capital of France is Paris."


@pytest.fixture(scope="module")
def slow() -> Iterator[SimulatorServer]:
    settings = SimulatorSettings(ttft_ms=1, token_delay_ms=1, tokens_per_chunk=2, stall_max_s=5)
    with SimulatorServer(settings) as server:
        yield server


def test_anthropic_paced_stream(slow: SimulatorServer) -> None:
    status, _, body = post(
        slow,
        "/v1/messages",
        {
            "model": "m",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": FRANCE}],
        },
    )
    assert status == 200
    events = sse_events(body)
    deltas = [json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta"]
    assert deltas == ["The capital", " of France", " is Paris", "."]
    assert events[-1][0] == "message_stop"


def test_ollama_paced_non_stream(slow: SimulatorServer) -> None:
    status, _, body = post(
        slow,
        "/api/chat",
        {"model": "m", "stream": False, "messages": [{"role": "user", "content": FRANCE}]},
    )
    assert status == 200
    assert json.loads(body)["message"]["content"] == PARIS


def test_paced_malformed_has_one_bad_chunk(slow: SimulatorServer) -> None:
    status, headers, body = post(
        slow,
        "/v1/chat/completions",
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": FRANCE}]},
        headers={FAULT_HEADER: "malformed"},
    )
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"  # really went through the paced writer
    bad = 0
    text = ""
    for _, data in sse_events(body):
        if data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            bad += 1
            continue
        text += chunk["choices"][0]["delta"].get("content") or ""
    assert bad == 1
    assert text == PARIS


def test_client_leaving_mid_stream_does_not_hurt_server(slow: SimulatorServer) -> None:
    prompt = "Explain quantum computing in simple terms."
    conn = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=10.0)
    conn.request(
        "POST",
        "/api/chat",
        body=json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]}),
    )
    resp = conn.getresponse()
    first = json.loads(resp.readline())
    assert answer_for(prompt).startswith(first["message"]["content"])
    conn.close()  # hang up while the server is still pacing tokens
    status, _, body = request(slow, "GET", "/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
