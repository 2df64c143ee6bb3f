"""OpenAIStreamConnector against a fake RuntimeClient: requests, parsing, errors, secrecy."""

from __future__ import annotations

import json
import logging
from typing import Any, List, cast

import pytest

from vastar_fast import ConnectorException, ErrorClass, RuntimeClient
from vastar_fast.connectors.config import ConnectorConfig, MissingAPIKeyError, default_config
from vastar_fast.connectors.openai import (
    OpenAIConnectorError,
    OpenAIStreamConnector,
    StreamStats,
)

from .fakes import FakeClient, FakeStream, error_answer, json_answer, sse_body, transient

KEY = "sk-test-very-secret-key"


def sim_config() -> ConnectorConfig:
    return default_config(simulator_url="http://127.0.0.1:4545", environ={})


def real_config() -> ConnectorConfig:
    return default_config(
        use_simulator=False,
        environ={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "https://api.example.test"},
    )


def make(config: ConnectorConfig, fake: FakeClient, **kw: Any) -> OpenAIStreamConnector:
    return OpenAIStreamConnector(config, client=cast(RuntimeClient, fake), **kw)


def test_non_streaming_request_shape_in_real_mode() -> None:
    fake = FakeClient(answers=[json_answer("The capital of France is Paris.")])
    conn = make(real_config(), fake)
    assert conn.chat_completion("What is the capital of France?") == (
        "The capital of France is Paris."
    )
    (req,) = fake.requests
    assert req.method == "POST"
    assert req.url == "https://api.example.test/v1/chat/completions"
    assert req.headers is not None
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.timeout_ms == 60000
    body = json.loads(cast(bytes, req.body))
    assert body == {
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": False,
    }


def test_simulator_mode_sends_no_authorization_without_a_key() -> None:
    fake = FakeClient(answers=[json_answer("ok")])
    conn = make(sim_config(), fake)
    conn.chat_completion("hi")
    (req,) = fake.requests
    assert req.url == "http://127.0.0.1:4545/v1/chat/completions"
    assert "Authorization" not in (req.headers or {})


def test_streaming_tokens_reach_the_callback_in_order() -> None:
    deltas = ["Quantum", " computing", " is", "", " neat", "."]
    body = sse_body(deltas)
    # cut at awkward places so events straddle chunks
    chunks = [body[:7], body[7:90], body[90:91], body[91:]]
    fake = FakeClient(streams=[FakeStream(200, chunks, None)])
    seen: List[str] = []
    conn = make(sim_config(), fake, on_token=seen.append)
    text = conn.streaming_chat_completion("Explain quantum computing in simple terms.")
    assert text == "Quantum computing is neat."
    assert seen == ["Quantum", " computing", " is", " neat", "."]
    (req,) = fake.requests
    assert json.loads(cast(bytes, req.body))["stream"] is True
    stats = conn.last_stream_stats
    assert stats is not None and stats.tokens == 5 and stats.characters == len(text)
    assert stats.ttft_s is not None and 0 <= stats.ttft_s <= stats.total_s


def test_per_call_callback_wins_and_default_is_none() -> None:
    fake = FakeClient(
        streams=[
            FakeStream(200, [sse_body(["a", "b"])], None),
            FakeStream(200, [sse_body(["c"])], None),
        ]
    )
    default: List[str] = []
    conn = make(sim_config(), fake, on_token=default.append)
    per_call: List[str] = []
    assert conn.streaming_chat_completion("x", on_token=per_call.append) == "ab"
    assert per_call == ["a", "b"] and default == []
    silent = make(sim_config(), FakeClient(streams=[FakeStream(200, [sse_body(["z"])], None)]))
    assert silent.streaming_chat_completion("x") == "z"


def test_stream_chat_is_lazy_and_closes_the_stream() -> None:
    stream = FakeStream(200, [sse_body(["one"]), sse_body(["two"])], None)
    conn = make(sim_config(), FakeClient(streams=[stream]))
    it = conn.stream_chat("x")
    assert next(it) == "one"
    assert stream.consumed == 1  # the second chunk has not been read yet
    it.close()
    assert stream.closed


def test_http_error_carries_status_and_api_message() -> None:
    fake = FakeClient(answers=[error_answer(401, "Incorrect API key provided: sk-...abc.")])
    conn = make(real_config(), fake)
    with pytest.raises(OpenAIConnectorError) as info:
        conn.chat_completion("hi")
    err = info.value
    assert err.status_code == 401
    assert err.api_message == "Incorrect API key provided: sk-...abc."
    assert err.error_type == "invalid_request_error"
    assert "HTTP 401" in str(err) and "OPENAI_API_KEY" in str(err)


def test_streaming_http_error_reads_the_body() -> None:
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit"}}).encode()
    stream = FakeStream(429, [body], None)
    conn = make(sim_config(), FakeClient(streams=[stream]))
    with pytest.raises(OpenAIConnectorError) as info:
        conn.streaming_chat_completion("hi")
    assert info.value.status_code == 429
    assert info.value.api_message == "Rate limit reached"
    assert stream.closed


def test_non_json_error_body_is_quoted() -> None:
    bad = error_answer(502, "x")
    bad.body = b"<html>Bad gateway</html>"
    conn = make(sim_config(), FakeClient(answers=[bad]))
    with pytest.raises(OpenAIConnectorError, match="HTTP 502: <html>Bad gateway</html>"):
        conn.chat_completion("hi")


def test_unexpected_success_body() -> None:
    odd = json_answer("x")
    odd.body = b'{"id": "no-choices"}'
    conn = make(sim_config(), FakeClient(answers=[odd]))
    with pytest.raises(OpenAIConnectorError, match=r"no choices\[0\]\.message\.content"):
        conn.chat_completion("hi")


def test_sse_body_for_a_non_streaming_request_is_accepted() -> None:
    resp = json_answer("x")
    resp.body = sse_body(["Hello", " there"])
    conn = make(sim_config(), FakeClient(answers=[resp]))
    assert conn.chat_completion("hi") == "Hello there"


def test_runtime_not_running_keeps_the_client_message_and_adds_the_hint() -> None:
    err = transient("no Vastar runtime at unix socket /tmp/x.sock; start one with `vastar runtime`")
    conn = make(sim_config(), FakeClient(connect_error=err))
    with pytest.raises(ConnectorException) as info:
        conn.connect()
    assert info.value.error_class == ErrorClass.TRANSIENT
    assert "start one with `vastar runtime`" in info.value.message
    assert "must be running first" in info.value.message


def test_simulator_not_answering_says_how_to_start_it() -> None:
    fake = FakeClient(answers=[transient("connection refused: 127.0.0.1:4545")])
    fake.connected = True
    conn = make(sim_config(), fake)
    with pytest.raises(ConnectorException) as info:
        conn.chat_completion("hi")
    assert info.value.request_id == 42
    assert "connection refused" in info.value.message
    assert "start it with `vastar simulator --port 4545`" in info.value.message


def test_upstream_unreachable_in_real_mode_names_the_base_url() -> None:
    fake = FakeClient(streams=[transient("dns failure")])
    fake.connected = True
    conn = make(real_config(), fake)
    with pytest.raises(ConnectorException, match=r"could not reach https://api\.example\.test"):
        conn.streaming_chat_completion("hi")


def test_lost_runtime_connection_mid_stream_is_not_blamed_on_the_simulator() -> None:
    stream = FakeStream(200, [sse_body(["a"])], transient("lost the connection to the runtime"))
    fake = FakeClient(streams=[stream])  # connected stays False: the connection broke
    conn = make(sim_config(), fake)
    with pytest.raises(ConnectorException) as info:
        conn.streaming_chat_completion("hi")
    assert "needs a running Vastar runtime" in info.value.message
    assert "simulator" not in info.value.message


def test_other_error_classes_pass_through_unchanged() -> None:
    timeout = ConnectorException("deadline passed", ErrorClass.TIMEOUT, 9)
    fake = FakeClient(answers=[timeout])
    fake.connected = True
    conn = make(sim_config(), fake)
    with pytest.raises(ConnectorException) as info:
        conn.chat_completion("hi")
    assert info.value is timeout


def test_missing_key_in_real_mode_is_refused_at_construction() -> None:
    cfg = default_config(use_simulator=False, environ={})
    with pytest.raises(MissingAPIKeyError, match="export OPENAI_API_KEY=sk-"):
        make(cfg, FakeClient())


def test_context_manager_closes_only_an_owned_client() -> None:
    fake = FakeClient()
    with make(sim_config(), fake) as conn:
        assert fake.connected and conn.use_simulator
    assert fake.closed == 0  # shared client: not ours to close
    owned = OpenAIStreamConnector(sim_config())
    assert isinstance(owned.client, RuntimeClient)
    owned.close()


def test_test_connection_is_a_small_non_streaming_request() -> None:
    fake = FakeClient(answers=[json_answer("OK")])
    assert make(sim_config(), fake).test_connection() is True
    assert json.loads(cast(bytes, fake.requests[0].body))["stream"] is False


def test_the_key_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeClient(
        answers=[json_answer("ok"), error_answer(500, "boom")],
        streams=[FakeStream(200, [sse_body(["a", "b"])], None)],
    )
    conn = make(real_config(), fake)
    conn.chat_completion("hi")
    conn.streaming_chat_completion("hi")
    with pytest.raises(OpenAIConnectorError) as info:
        conn.chat_completion("hi")
    assert caplog.records, "the connector should log something at DEBUG"
    assert KEY not in caplog.text
    assert KEY not in str(info.value) and KEY not in repr(conn.config)


def test_stream_stats_rate_counts_the_tokens_after_the_first() -> None:
    # 11 tokens: the first at 0.1 s, then 10 more over 1.0 s -> 10 tokens/s.
    stats = StreamStats(ttft_s=0.1, total_s=1.1, tokens=11, characters=50)
    assert stats.tokens_per_s == pytest.approx(10.0)
    assert StreamStats(ttft_s=0.1, total_s=0.2, tokens=1, characters=3).tokens_per_s is None
    assert StreamStats(ttft_s=None, total_s=0.2, tokens=0, characters=0).tokens_per_s is None
    assert StreamStats(ttft_s=0.2, total_s=0.2, tokens=5, characters=9).tokens_per_s is None
