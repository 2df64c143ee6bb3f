"""Interop (optional): the sync transport against the released runtime binary, which has
no streaming extension: the same SDK calls work, the body arriving whole after the head.
Skipped, with the reason, when ../shared/peers is not beside the checkout."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import anthropic
import httpx2
import openai
import pytest

import support
from vastar_fast import RuntimeConfig
from vastar_fast.integrations.httpx2 import RuntimeTransport
from vastar_fast.services import make_tmpdir, released_runtime_service, start_simulator

from .conftest import ANSWER, PROMPT

BINARY = Path(support.SHARED) / "peers" / "vastar-connector-runtime"

pytestmark = pytest.mark.skipif(
    not os.access(BINARY, os.X_OK),
    reason=f"the released runtime is not at {BINARY} (../shared/peers is absent)",
)


@pytest.fixture(scope="module")
def released() -> Iterator[tuple]:
    tmp = make_tmpdir("vastar-released-")
    deadline = time.monotonic() + 60
    simulator = start_simulator(tmp, deadline=deadline, ttft_ms=5, token_delay_ms=1)
    runtime = released_runtime_service(str(BINARY), tmp)
    try:
        runtime.start(deadline)
        yield simulator.url, RuntimeConfig(socket_path=runtime.socket_path)
    finally:
        runtime.stop(5)
        simulator.stop(5)
        shutil.rmtree(tmp, ignore_errors=True)


def test_openai_through_the_released_runtime(released: tuple) -> None:
    url, config = released
    transport = RuntimeTransport(config)
    client = openai.OpenAI(
        base_url=url + "/v1", api_key="sk-test", http_client=httpx2.Client(transport=transport)
    )
    answer = client.chat.completions.create(model="gpt-4o", messages=PROMPT)
    assert answer.choices[0].message.content == ANSWER
    deltas = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(model="gpt-4o", messages=PROMPT, stream=True)
        if c.choices and c.choices[0].delta.content
    ]
    assert "".join(deltas) == ANSWER and len(deltas) > 3  # buffered, still event by event
    with pytest.raises(openai.RateLimitError):
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o", messages=PROMPT, extra_headers={"x-simulator-fault": "rate_limit"}
        )
    client.close()


def test_anthropic_through_the_released_runtime(released: tuple) -> None:
    url, config = released
    client = anthropic.Anthropic(
        base_url=url, api_key="sk-ant-test",
        http_client=httpx2.Client(transport=RuntimeTransport(config)),
    )  # fmt: skip
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=PROMPT) as s:
        assert "".join(s.text_stream) == ANSWER
    client.close()
