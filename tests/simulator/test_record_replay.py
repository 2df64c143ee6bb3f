"""Record and replay: a round trip against a local upstream reproduces identical chunks."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import aiohttp
import pytest
from openai import OpenAI

from vastar_fast.simulator import FAULT_HEADER, SimulatorServer, SimulatorSettings
from vastar_fast.simulator.answers import answer_for

from .helpers import post

SECRET = "sk-record-secret-4242"
QUESTION = "What is the capital of France?"
CHAT: Dict[str, Any] = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [{"role": "user", "content": QUESTION}],
}
OLLAMA: Dict[str, Any] = {"model": "llama3", "messages": [{"role": "user", "content": "Hello"}]}


async def _http_chunks(
    url: str, body: Any, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Dict[str, str], List[bytes]]:
    """POST and return the response's HTTP chunks exactly as framed on the wire."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers or {}) as resp:
            chunks: List[bytes] = []
            buf = b""
            async for data, end_of_chunk in resp.content.iter_chunks():
                buf += data
                if end_of_chunk:
                    chunks.append(buf)
                    buf = b""
            if buf:
                chunks.append(buf)
            return resp.status, dict(resp.headers), chunks


def chunks_of(url: str, body: Any, **headers: str) -> Tuple[int, Dict[str, str], List[bytes]]:
    return asyncio.run(_http_chunks(url, body, headers))


def _stored(directory: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


@pytest.fixture(scope="module")
def upstream() -> Iterator[SimulatorServer]:
    # Delays make every frame its own write, hence its own HTTP chunk.
    with SimulatorServer(SimulatorSettings(ttft_ms=60, token_delay_ms=2)) as server:
        yield server


@pytest.fixture(scope="module")
def recorded(
    upstream: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Tuple[Path, Dict[str, List[bytes]]]:
    """Record a few exchanges; return the directory and the chunks the client got."""
    directory = tmp_path_factory.mktemp("cassettes")
    settings = SimulatorSettings(record_dir=str(directory), upstream=upstream.base_url)
    seen: Dict[str, List[bytes]] = {}
    with SimulatorServer(settings) as recorder:
        url = recorder.base_url
        status, headers, seen["chat"] = chunks_of(
            url + "/v1/chat/completions", CHAT, Authorization=f"Bearer {SECRET}"
        )
        assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
        status, _, seen["ollama"] = chunks_of(url + "/api/chat", OLLAMA, **{"x-api-key": SECRET})
        assert status == 200
        client = OpenAI(base_url=url + "/v1", api_key=SECRET, max_retries=0, timeout=10)
        try:
            full = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
            )
            assert full.choices[0].message.content == answer_for(QUESTION)
            # The same request again, this time answered with a 429: replayed in turn.
            status, _, _ = post(
                recorder,
                "/v1/embeddings?key=" + SECRET,
                {"model": "m", "input": "x", "dimensions": 4},
            )
            status, _, _ = post(
                recorder,
                "/v1/embeddings?key=" + SECRET,
                {"model": "m", "input": "x", "dimensions": 4},
                headers={FAULT_HEADER: "rate_limit"},
            )
            assert status == 429
        finally:
            client.close()
    return directory, seen


def test_recording_holds_chunks_timing_and_no_secret(
    recorded: Tuple[Path, Dict[str, List[bytes]]], upstream: SimulatorServer
) -> None:
    directory, seen = recorded
    stored = _stored(directory)
    assert len(stored) == 5
    chat = stored[0]
    assert chat["request"]["path"] == "/v1/chat/completions"
    chunks = [c["data"].encode() for c in chat["response"]["chunks"]]
    assert chunks == seen["chat"]  # the client got the upstream's chunks as they came
    assert len(chunks) > 5
    times = [c["t"] for c in chat["response"]["chunks"]]
    assert times == sorted(times) and times[-1] >= 0.06  # the upstream's time to first token
    # The same stream straight from the upstream has the same chunks (ids aside).
    _, _, direct = chunks_of(upstream.base_url + "/v1/chat/completions", CHAT)
    assert len(direct) == len(chunks)
    for path in directory.iterdir():
        assert SECRET not in path.read_text()
    headers = dict(stored[1]["request"]["headers"])
    assert headers["x-api-key"] == "REDACTED"
    assert "key=REDACTED" in stored[3]["request"]["query"]


def test_replay_reproduces_identical_chunks(
    recorded: Tuple[Path, Dict[str, List[bytes]]],
) -> None:
    directory, seen = recorded
    with SimulatorServer(SimulatorSettings(replay_dir=str(directory), replay_speed=0)) as replay:
        status, headers, chunks = chunks_of(replay.base_url + "/v1/chat/completions", CHAT)
        assert status == 200 and headers["x-simulator-replay"] == "hit"
        assert chunks == seen["chat"]
        # A JSON body matches whatever its key order; headers are not part of the match.
        reordered = dict(reversed(list(OLLAMA.items())))
        _, _, chunks = chunks_of(replay.base_url + "/api/chat", reordered)
        assert chunks == seen["ollama"]
        client = OpenAI(base_url=replay.base_url + "/v1", api_key="other", max_retries=0)
        try:
            stream = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": QUESTION}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream)
            assert text == answer_for(QUESTION)
            full = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
            )
            assert full.choices[0].message.content == answer_for(QUESTION)
        finally:
            client.close()
        body = {"model": "m", "input": "x", "dimensions": 4}
        statuses = [post(replay, "/v1/embeddings?key=zzz", body)[0] for _ in range(3)]
        assert statuses == [200, 429, 200]  # two recordings of one request, served in turn
        status, headers, raw = post(replay, "/v1/chat/completions", {**CHAT, "model": "other"})
        assert status == 404 and headers["x-simulator-replay"] == "miss"
        assert json.loads(raw)["error"]["code"] == "replay_miss"


def test_replay_keeps_recorded_timing(recorded: Tuple[Path, Dict[str, List[bytes]]]) -> None:
    directory, _ = recorded
    last = _stored(directory)[0]["response"]["chunks"][-1]["t"]
    with SimulatorServer(SimulatorSettings(replay_dir=str(directory), replay_speed=0.5)) as replay:
        start = time.perf_counter()
        chunks_of(replay.base_url + "/v1/chat/completions", CHAT)
        elapsed = time.perf_counter() - start
    assert elapsed >= 2 * last  # half speed: never earlier than twice the recorded time


def test_record_upstream_down_and_bad_settings(tmp_path: Path) -> None:
    settings = SimulatorSettings(record_dir=str(tmp_path), upstream="http://127.0.0.1:9")
    with SimulatorServer(settings) as recorder:
        status, _, raw = post(recorder, "/v1/chat/completions", CHAT)
    assert status == 502
    assert json.loads(raw)["error"]["code"] == "upstream_unreachable"
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="upstream"):
        SimulatorSettings(record_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="does not exist"):
        SimulatorServer(SimulatorSettings(replay_dir=str(tmp_path / "missing"))).start()
