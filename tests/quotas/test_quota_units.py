"""The fleet quotas' pure parts: token estimates, usage read from real answers (the
simulator's, every dialect, buffered and streamed), provider headers, API key digests and
the configuration's checks."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from email.utils import formatdate
from typing import Any, Dict, Iterator

import pytest

from vastar_fast.runtime.config import ConfigError, settings_from_mapping
from vastar_fast.runtime.quotas import (
    api_key_digest,
    estimate_tokens,
    parse_duration,
    rate_headers,
    retry_after_s,
    usage_tokens,
)
from vastar_fast.simulator import SimulatorServer, SimulatorSettings


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings.fast()) as server:
        yield server


def _post(base: str, path: str, body: Dict[str, Any]) -> bytes:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


# ---------------------------------------------------------------- estimates
def test_estimate_is_the_body_plus_the_completion_limit() -> None:
    body = json.dumps({"model": "m", "max_tokens": 50, "messages": [{"role": "user",
                                                                     "content": "hi"}]}).encode()  # fmt: skip
    assert estimate_tokens(body, "/v1/chat/completions") == len(body) + 50
    assert (
        estimate_tokens(body, "/v1/chat/completions", bytes_per_token=4) == -(-len(body) // 4) + 50
    )


@pytest.mark.parametrize(
    "extra, completion",
    [
        ({"max_completion_tokens": 70}, 70),
        ({"max_output_tokens": 80}, 80),
        ({"generationConfig": {"maxOutputTokens": 90}}, 90),
        ({"options": {"num_predict": 33}}, 33),
        ({"max_tokens": 10, "n": 3}, 30),
        ({}, 4096),
        ({"max_tokens": True}, 4096),  # not a number
    ],
)
def test_estimate_reads_every_dialects_limit(extra: Dict[str, Any], completion: int) -> None:
    body = json.dumps({"model": "m", "input": "x", **extra}).encode()
    assert estimate_tokens(body, "/v1/x") == len(body) + completion


def test_estimate_without_generation() -> None:
    assert estimate_tokens(b"", "/v1/models") == 0
    body = json.dumps({"model": "m", "input": "some text"}).encode()
    assert estimate_tokens(body, "/v1/embeddings") == len(body)  # nothing generated
    assert estimate_tokens(b"not json", "/v1/x") == 8
    assert estimate_tokens(body, "/v1/x", default_max_tokens=7) == len(body) + 7


def test_the_estimate_is_never_below_what_the_simulator_counts(sim: SimulatorServer) -> None:
    for content in ("hi", "What is the capital of France?", "word " * 300, "日本語のテキスト" * 20):
        body = {"model": "gpt-4", "max_tokens": 40,
                "messages": [{"role": "user", "content": content}]}  # fmt: skip
        usage = json.loads(_post(sim.base_url, "/v1/chat/completions", body))["usage"]
        raw = json.dumps(body).encode()
        assert estimate_tokens(raw, "/v1/chat/completions") >= usage["total_tokens"]


# ---------------------------------------------------------------- usage
MSGS = [{"role": "user", "content": "Tell me about Paris"}]
DIALECTS = {
    # name: (path, body, stream variant (path, body), expected(buffered answer))
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4", "messages": MSGS, "max_tokens": 20},
        ("/v1/chat/completions", {"model": "gpt-4", "messages": MSGS, "max_tokens": 20,
                                  "stream": True, "stream_options": {"include_usage": True}}),
        lambda a: a["usage"]["total_tokens"],
    ),
    "responses": (
        "/v1/responses",
        {"model": "gpt-4o", "input": "Tell me about Paris", "max_output_tokens": 20},
        ("/v1/responses", {"model": "gpt-4o", "input": "Tell me about Paris",
                           "max_output_tokens": 20, "stream": True}),
        lambda a: a["usage"]["total_tokens"],
    ),
    "anthropic": (
        "/v1/messages",
        {"model": "claude-3", "messages": MSGS, "max_tokens": 20},
        ("/v1/messages", {"model": "claude-3", "messages": MSGS, "max_tokens": 20,
                          "stream": True}),
        lambda a: a["usage"]["input_tokens"] + a["usage"]["output_tokens"],
    ),
    "gemini": (
        "/v1beta/models/gemini-pro:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "Tell me about Paris"}]}],
         "generationConfig": {"maxOutputTokens": 20}},
        ("/v1beta/models/gemini-pro:streamGenerateContent?alt=sse",
         {"contents": [{"role": "user", "parts": [{"text": "Tell me about Paris"}]}],
          "generationConfig": {"maxOutputTokens": 20}}),
        lambda a: a["usageMetadata"]["totalTokenCount"],
    ),
    "ollama": (
        "/api/chat",
        {"model": "llama3", "messages": MSGS, "options": {"num_predict": 20}, "stream": False},
        ("/api/chat", {"model": "llama3", "messages": MSGS, "options": {"num_predict": 20}}),
        lambda a: a["prompt_eval_count"] + a["eval_count"],
    ),
    "cohere": (
        "/v2/chat",
        {"model": "command-r", "messages": MSGS, "max_tokens": 20},
        ("/v2/chat", {"model": "command-r", "messages": MSGS, "max_tokens": 20,
                      "stream": True}),
        lambda a: a["usage"]["tokens"]["input_tokens"] + a["usage"]["tokens"]["output_tokens"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_usage_of_buffered_and_streamed_answers(sim: SimulatorServer, dialect: str) -> None:
    path, body, (stream_path, stream_body), expected_of = DIALECTS[dialect]
    answer = _post(sim.base_url, path, body)
    expected = expected_of(json.loads(answer))
    assert expected > 0
    assert usage_tokens(answer) == expected
    streamed = _post(sim.base_url, stream_path, stream_body)
    assert streamed.count(b"\n") > 3, "not a stream"
    assert usage_tokens(streamed) == expected  # the same prompt: the same answer


def test_usage_of_a_long_stream_is_read_from_its_ends() -> None:
    head = b'data: {"type":"message_start","message":{"usage":{"input_tokens":15,"output_tokens":1}}}\n\n'
    middle = b"".join(b'data: {"delta":"%d"}\n\n' % i for i in range(40_000))
    tail = b'data: {"type":"message_delta","usage":{"output_tokens":500}}\n\n'
    assert len(middle) > 600_000
    assert usage_tokens(head + middle + tail) == 515


def test_usage_absent_or_malformed() -> None:
    assert usage_tokens(b'{"id": "x", "choices": []}') is None
    assert usage_tokens(b"") is None
    assert usage_tokens(b'{"usage": null}') is None
    assert usage_tokens(b'{"usage": {"prompt_tokens": 3') is None  # cut short
    # a model's answer that talks about "usage" is escaped JSON, not a usage object
    text = json.dumps({"content": 'the "usage": {"prompt_tokens": 999} field'}).encode()
    assert usage_tokens(text) is None


# ---------------------------------------------------------------- provider headers
def test_durations() -> None:
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == pytest.approx(1.5)
    assert parse_duration("6m0s") == pytest.approx(360)
    assert parse_duration("1h2m3s") == pytest.approx(3723)
    assert parse_duration("7") == 7
    assert parse_duration("soon") is None
    assert parse_duration("5x") is None


def test_retry_after() -> None:
    assert retry_after_s(rate_headers([(b"Retry-After-Ms", b"1500"), (b"Retry-After", b"9")])) \
        == pytest.approx(1.5)  # fmt: skip
    assert retry_after_s(rate_headers([(b"retry-after", b"3")])) == 3
    date = formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after_s(rate_headers([(b"retry-after", date.encode())])) or 0) <= 31
    assert retry_after_s(rate_headers([(b"content-type", b"x")])) is None


def test_rate_headers_keeps_only_the_rate_limit_ones() -> None:
    got = rate_headers([(b"X-RateLimit-Remaining-Requests", b"5"), (b"Server", b"x"),
                        (b"anthropic-ratelimit-tokens-remaining", b"10")])  # fmt: skip
    assert got == {b"x-ratelimit-remaining-requests": "5",
                   b"anthropic-ratelimit-tokens-remaining": "10"}  # fmt: skip


# ---------------------------------------------------------------- API keys
def test_api_key_digests() -> None:
    want = hashlib.sha256(b"sk-test-123").hexdigest()
    assert api_key_digest({"Authorization": "Bearer sk-test-123"}) == want
    assert api_key_digest({"authorization": "bearer sk-test-123"}) == want
    assert api_key_digest({"X-Api-Key": "sk-test-123"}) == want
    assert api_key_digest({"x-goog-api-key": "sk-test-123"}) == want
    assert api_key_digest({}, "/v1beta/models/x:generateContent?alt=sse&key=sk-test-123") == want
    assert api_key_digest({"content-type": "application/json"}) is None


# ---------------------------------------------------------------- configuration
GOOD = {
    "shared_state": {"redis_url": "redis://127.0.0.1:6379/0"},
    "quotas": {"openai": {"hosts": ["api.openai.com"], "requests": 600, "tokens": 60000}},
}


def test_a_quota_configuration() -> None:
    settings = settings_from_mapping(GOOD)
    quota = settings.quotas["openai"]
    assert (quota.requests, quota.tokens, quota.window_s, quota.on_backend_failure) == (
        600, 60000, 60.0, "local_share")  # fmt: skip
    assert "redis" not in repr(settings.shared_state)  # the URL may carry a password
    assert settings_from_mapping({}).quotas == {}


@pytest.mark.parametrize(
    "change, key, words",
    [
        ({"shared_state": {}}, "quotas", "set shared_state.redis_url"),
        ({"shared_state": {"redis_url": "http://x"}}, "shared_state.redis_url", "redis://"),
        ({"quotas": {"q": {"hosts": [], "requests": 1}}}, "quotas.q.hosts", "at least one"),
        ({"quotas": {"q": {"hosts": ["h"]}}}, "quotas.q", "limits nothing"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 0}}}, "quotas.q.requests", "at least 1"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 1, "on_backend_failure": "maybe"}}},
         "quotas.q.on_backend_failure", "local_share, open, closed"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 1, "api_keys": ["sk-raw-key"]}}},
         "quotas.q.api_keys[0]", "SHA-256"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 1, "window_s": 0}}}, "quotas.q.window_s",
         "greater than 0"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 1, "bucket_ms": 40000}}},
         "quotas.q.bucket_ms", "half the window"),
        ({"quotas": {"q": {"hosts": ["h"], "requests": 1, "typo": 1}}}, "quotas.q.typo",
         "unknown key"),
        ({"quotas": {"a b": {"hosts": ["h"], "requests": 1}}}, "quotas.a b", "letters"),
        ({"shared_state": {"redis_url": "unix:///x", "timeout_ms": 0}},
         "shared_state.timeout_ms", "greater than 0"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(change: Dict[str, Any], key: str, words: str) -> None:
    data = {**GOOD, **change}
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data)
    assert err.value.key == key
    assert words in str(err.value)
    assert "sk-raw-key" not in str(err.value)


# ---------------------------------------------------------------- the Redis client
def test_resp_parser_reads_every_reply_type_in_pieces() -> None:
    from vastar_fast.runtime.redisclient import ReplyError, RespParser, encode_command

    stream = (b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n$2\r\nab\r\n*1\r\n:-7\r\n"
              b"-NOSCRIPT No matching script\r\n*0\r\n")  # fmt: skip
    for size in (1, 3, len(stream)):
        parser = RespParser()
        got = []
        for i in range(0, len(stream), size):
            parser.feed(stream[i : i + size])
            while True:
                reply = parser.gets()
                if reply is False:
                    break
                got.append(reply)
        assert got[:5] == [b"OK", 42, b"hello", None, [1, b"ab", [-7]]]
        assert isinstance(got[5], ReplyError) and str(got[5]).startswith("NOSCRIPT")
        assert got[6] == [] and len(got) == 7
    assert encode_command([b"EVALSHA", "ab", 1, "k", -3]) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$2\r\n-3\r\n"
    )


def test_redis_urls() -> None:
    from vastar_fast.runtime.redisclient import parse_url

    assert parse_url("redis://127.0.0.1:6380/2") == {
        "host": "127.0.0.1", "port": 6380, "path": None, "tls": False, "db": 2,
        "username": None, "password": None}  # fmt: skip
    got = parse_url("rediss://user:p%40ss@cache.internal/0")
    assert (got["host"], got["port"], got["tls"], got["username"], got["password"]) == (
        "cache.internal",
        6379,
        True,
        "user",
        "p@ss",
    )
    got = parse_url("redis://:secret@localhost")
    assert (got["username"], got["password"], got["db"]) == (None, "secret", 0)
    got = parse_url("unix:///run/redis/redis.sock?db=3&password=pw")
    assert (got["path"], got["db"], got["password"]) == ("/run/redis/redis.sock", 3, "pw")
    with pytest.raises(ValueError):
        parse_url("http://localhost")
