"""Raw HTTP checks of the Ollama, Cohere and Gemini dialects and the utility routes."""

from __future__ import annotations

import json

from vastar_fast.simulator import SimulatorServer
from vastar_fast.simulator.answers import answer_for, tokenize

from .helpers import post, request, sse_events

FRANCE = "What is the capital of France?"
PARIS = "The capital of France is Paris."


def _ndjson(body: bytes) -> list:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


# ------------------------------------------------------------------ utility routes


def test_health(sim: SimulatorServer) -> None:
    status, headers, body = request(sim, "GET", "/health")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    assert data["status"] == "ok"
    assert "openai" in data["dialects"]


def test_models_list_shape(sim: SimulatorServer) -> None:
    status, _, body = request(sim, "GET", "/v1/models")
    data = json.loads(body)
    assert status == 200
    assert data["object"] == "list"
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in data["data"])
    status, _, body = request(sim, "GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})
    data = json.loads(body)
    assert data["has_more"] is False
    assert all(m["type"] == "model" for m in data["data"])


def test_unknown_path_is_json_404(sim: SimulatorServer) -> None:
    status, headers, body = request(sim, "GET", "/v1/nothing-here")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"
    status, _, body = post(sim, "/api/unknown", {})
    assert status == 404
    assert "error" in json.loads(body)


# ------------------------------------------------------------------ Ollama


def test_ollama_streams_by_default(sim: SimulatorServer) -> None:
    status, headers, body = post(
        sim, "/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": FRANCE}]}
    )
    assert status == 200
    assert headers["content-type"] == "application/x-ndjson"
    lines = _ndjson(body)
    assert all(line["model"] == "llama3.2" for line in lines)
    assert all(line["done"] is False for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True
    assert last["done_reason"] == "stop"
    assert last["message"] == {"role": "assistant", "content": ""}
    assert last["eval_count"] == len(tokenize(PARIS))
    assert last["prompt_eval_count"] > 0
    assert isinstance(last["total_duration"], int)
    assert "".join(line["message"]["content"] for line in lines) == PARIS
    assert lines[0]["created_at"].endswith("Z")


def test_ollama_non_streaming_and_num_predict(sim: SimulatorServer) -> None:
    status, _, body = post(
        sim,
        "/api/chat",
        {
            "model": "llama3.2",
            "stream": False,
            "options": {"num_predict": 2},
            "messages": [{"role": "user", "content": FRANCE}],
        },
    )
    data = json.loads(body)
    assert status == 200
    assert data["done"] is True
    assert data["done_reason"] == "length"
    assert data["message"] == {"role": "assistant", "content": "The capital"}
    assert data["eval_count"] == 2


def test_ollama_errors(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/api/chat", {"messages": []})
    assert status == 400
    assert json.loads(body) == {"error": "model is required"}
    status, _, body = post(sim, "/api/chat", {"model": "x", "messages": "hi"})
    assert status == 400
    assert "cannot unmarshal string" in json.loads(body)["error"]
    status, _, body = post(sim, "/api/chat", b"{not json")
    assert status == 400
    assert isinstance(json.loads(body)["error"], str)


# ------------------------------------------------------------------ Cohere


def test_cohere_v2_stream(sim: SimulatorServer) -> None:
    status, headers, body = post(
        sim,
        "/v2/chat",
        {
            "model": "command-r-plus",
            "stream": True,
            "messages": [{"role": "user", "content": FRANCE}],
        },
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    names = [e for e, _ in events]
    n = len(tokenize(PARIS))
    assert names == ["message-start", "content-start"] + ["content-delta"] * n + [
        "content-end",
        "message-end",
    ]
    payloads = [json.loads(d) for _, d in events]
    assert all(p["type"] == e for p, e in zip(payloads, names))
    text = "".join(p["delta"]["message"]["content"]["text"] for p in payloads[2:-2])
    assert text == PARIS
    end = payloads[-1]["delta"]
    assert end["finish_reason"] == "COMPLETE"
    assert end["usage"]["billed_units"]["output_tokens"] == n
    assert payloads[0]["id"]


def test_cohere_v2_non_stream_and_errors(sim: SimulatorServer) -> None:
    status, _, body = post(
        sim,
        "/v2/chat",
        {"model": "command-r", "max_tokens": 2, "messages": [{"role": "user", "content": FRANCE}]},
    )
    data = json.loads(body)
    assert status == 200
    assert data["message"]["role"] == "assistant"
    assert data["message"]["content"] == [{"type": "text", "text": "The capital"}]
    assert data["finish_reason"] == "MAX_TOKENS"
    status, _, body = post(sim, "/v2/chat", {"messages": [{"role": "user", "content": "x"}]})
    assert status == 400
    assert "model" in json.loads(body)["message"]


def test_cohere_v1_stream_and_non_stream(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/v1/chat", {"message": FRANCE, "stream": True})
    assert status == 200
    lines = _ndjson(body)
    kinds = [line["event_type"] for line in lines]
    assert kinds[0] == "stream-start"
    assert kinds[-1] == "stream-end"
    assert set(kinds[1:-1]) == {"text-generation"}
    assert "".join(line["text"] for line in lines[1:-1]) == PARIS
    assert lines[-1]["is_finished"] is True
    assert lines[-1]["response"]["text"] == PARIS
    assert lines[-1]["finish_reason"] == "COMPLETE"

    status, _, body = post(sim, "/v1/chat", {"message": FRANCE})
    data = json.loads(body)
    assert data["text"] == PARIS
    assert data["finish_reason"] == "COMPLETE"
    assert data["meta"]["billed_units"]["output_tokens"] == len(tokenize(PARIS))

    status, _, body = post(sim, "/v1/chat", {"model": "command-r"})
    assert status == 400
    assert "message" in json.loads(body)


# ------------------------------------------------------------------ Gemini

_GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": FRANCE}]}]}


def test_gemini_generate_content(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/v1beta/models/gemini-2.0-flash:generateContent", _GEMINI_BODY)
    data = json.loads(body)
    assert status == 200
    cand = data["candidates"][0]
    assert cand["content"]["role"] == "model"
    assert cand["content"]["parts"][0]["text"] == PARIS
    assert cand["finishReason"] == "STOP"
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == len(tokenize(PARIS))
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert data["modelVersion"] == "gemini-2.0-flash"


def test_gemini_stream_sse(sim: SimulatorServer) -> None:
    status, headers, body = post(
        sim, "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", _GEMINI_BODY
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(d) for _, d in sse_events(body)]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == PARIS
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])


def test_gemini_stream_json_array_and_max_tokens(sim: SimulatorServer) -> None:
    status, headers, body = post(
        sim,
        "/v1beta/models/gemini-pro:streamGenerateContent",
        {**_GEMINI_BODY, "generationConfig": {"maxOutputTokens": 5}},
    )
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    chunks = json.loads(body)
    assert isinstance(chunks, list) and len(chunks) == 5
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "The capital of France is"
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_gemini_errors(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/v1beta/models/gemini-pro:generateContent", {"contents": []})
    assert status == 400
    err = json.loads(body)["error"]
    assert err["code"] == 400
    assert err["status"] == "INVALID_ARGUMENT"
    status, _, body = post(sim, "/v1beta/models/gemini-pro:explode", _GEMINI_BODY)
    assert status == 404
    assert json.loads(body)["error"]["status"] == "NOT_FOUND"


# ------------------------------------------------------------------ OpenAI/Anthropic 400s


def test_openai_400_shapes(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/v1/chat/completions", b"this is not json")
    assert status == 400
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"

    status, _, body = post(sim, "/v1/chat/completions", {"model": "gpt-4o"})
    err = json.loads(body)["error"]
    assert status == 400
    assert err["param"] == "messages"
    assert err["code"] == "missing_required_parameter"

    status, _, body = post(
        sim, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 400
    assert json.loads(body)["error"]["message"] == "you must provide a model parameter"

    status, _, body = post(sim, "/v1/chat/completions", {"model": "gpt-4o", "messages": "hello"})
    err = json.loads(body)["error"]
    assert status == 400
    assert err["code"] == "invalid_type"
    assert err["param"] == "messages"


def test_anthropic_invalid_json(sim: SimulatorServer) -> None:
    status, _, body = post(sim, "/v1/messages", b"[1, 2")
    data = json.loads(body)
    assert status == 400
    assert data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error"


def test_same_prompt_same_text_across_dialects(sim: SimulatorServer) -> None:
    prompt = "Write something about lighthouses."
    expected = answer_for(prompt)
    _, _, b1 = post(
        sim,
        "/api/chat",
        {"model": "m", "stream": False, "messages": [{"role": "user", "content": prompt}]},
    )
    _, _, b2 = post(sim, "/v1/chat", {"message": prompt})
    assert json.loads(b1)["message"]["content"] == expected
    assert json.loads(b2)["text"] == expected
