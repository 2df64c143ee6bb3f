"""Embeddings: OpenAI ``/v1/embeddings`` through the official client, Ollama ``/api/embed``."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Iterator, List

import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import SimulatorServer
from vastar_fast.simulator.answers import count_tokens

from .helpers import post


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10.0)
    yield c
    c.close()


def _cos(a: List[float], b: List[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_embeddings_create(client: OpenAI) -> None:
    texts = ["the cat sat on the mat", "a cat on a mat", "quarterly revenue grew strongly"]
    r = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert r.object == "list"
    assert r.model == "text-embedding-3-small"
    assert [d.index for d in r.data] == [0, 1, 2]
    vectors = [d.embedding for d in r.data]
    assert all(len(v) == 1536 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in vectors)
    # Shared words -> closer vectors: enough for a retrieval test to rank documents.
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.2
    assert r.usage.prompt_tokens == sum(count_tokens(t) for t in texts)
    assert r.usage.total_tokens == r.usage.prompt_tokens
    again = client.embeddings.create(model="text-embedding-3-small", input=texts[0])
    assert again.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def test_dimensions_and_formats(client: OpenAI, sim: SimulatorServer) -> None:
    small = client.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=64)
    assert len(small.data[0].embedding) == 64
    large = client.embeddings.create(model="text-embedding-3-large", input="hello")
    assert len(large.data[0].embedding) == 3072
    # The client asks for base64 by default; a float request gives the same numbers.
    status, _, raw = post(
        sim,
        "/v1/embeddings",
        {"model": "m", "input": "hello", "dimensions": 64, "encoding_format": "float"},
    )
    floats = json.loads(raw)["data"][0]["embedding"]
    assert status == 200 and floats == pytest.approx(small.data[0].embedding, abs=1e-6)
    status, _, raw = post(
        sim,
        "/v1/embeddings",
        {"model": "m", "input": "hello", "dimensions": 64, "encoding_format": "base64"},
    )
    packed = base64.b64decode(json.loads(raw)["data"][0]["embedding"])
    assert list(struct.unpack("<64f", packed)) == pytest.approx(floats, abs=1e-6)
    tokens = client.embeddings.create(model="m", input=[[1, 2, 3], [4, 5]], dimensions=8)
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_embedding_errors(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input="x", dimensions=0)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="")


def test_ollama_embed(sim: SimulatorServer, client: OpenAI) -> None:
    status, _, raw = post(sim, "/api/embed", {"model": "nomic-embed-text", "input": ["a b", "c"]})
    data = json.loads(raw)
    assert status == 200
    assert data["model"] == "nomic-embed-text"
    assert [len(v) for v in data["embeddings"]] == [768, 768]
    assert data["prompt_eval_count"] == 3
    status, _, raw = post(sim, "/api/embed", {"model": "m", "input": "a b", "dimensions": 32})
    vec = json.loads(raw)["embeddings"][0]
    same = client.embeddings.create(model="m", input="a b", dimensions=32).data[0].embedding
    assert vec == pytest.approx(same, abs=1e-6)  # one text, one vector, whatever the API
    status, _, raw = post(sim, "/api/embeddings", {"model": "m", "prompt": "a b", "dimensions": 32})
    assert json.loads(raw)["embedding"] == pytest.approx(vec, abs=1e-6)
    status, _, raw = post(sim, "/api/embed", {"model": "m", "input": 5})
    assert status == 400 and "input" in json.loads(raw)["error"]
