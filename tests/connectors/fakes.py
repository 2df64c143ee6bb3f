"""A fake RuntimeClient for connector unit tests: records requests, replays scripted answers."""

from __future__ import annotations

import json
from typing import Callable, Iterator, List, Optional, Union

from vastar_fast.errors import ConnectorException
from vastar_fast.sse import SSEDecoder
from vastar_fast.types import ErrorClass, HTTPRequest, HTTPResponse

Answer = Union[HTTPResponse, ConnectorException]


def sse_body(deltas: List[str]) -> bytes:
    """An OpenAI-style SSE stream carrying ``deltas``."""
    events = [
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": d}}]}) + "\n\n"
        for d in deltas
    ]
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def json_answer(content: str, status: int = 200) -> HTTPResponse:
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
    return HTTPResponse(1, status, {"content-type": "application/json"}, body.encode(), 10, 0)


def error_answer(status: int, message: str, etype: str = "invalid_request_error") -> HTTPResponse:
    body = json.dumps({"error": {"message": message, "type": etype}})
    return HTTPResponse(1, status, {"content-type": "application/json"}, body.encode(), 10, 0)


class FakeStream:
    def __init__(self, status: int, chunks: List[bytes], fail_after: Optional[ConnectorException]):
        self.status_code = status
        self.headers = {"content-type": "text/event-stream"}
        self._chunks = chunks
        self._fail = fail_after
        self.closed = False
        self.consumed = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.consumed += 1
            yield chunk
        if self._fail is not None:
            raise self._fail

    def iter_deltas(self) -> Iterator[str]:
        decoder = SSEDecoder()
        for chunk in self:
            yield from decoder.feed_deltas(chunk)
        yield from decoder.flush_deltas()

    def read(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """Stands in for RuntimeClient; ``answers`` are consumed in order."""

    def __init__(
        self,
        answers: Optional[List[Answer]] = None,
        streams: Optional[List[Union[FakeStream, ConnectorException]]] = None,
        connect_error: Optional[ConnectorException] = None,
        on_request: Optional[Callable[[HTTPRequest], None]] = None,
    ) -> None:
        self.answers = list(answers or [])
        self.streams = list(streams or [])
        self.connect_error = connect_error
        self.requests: List[HTTPRequest] = []
        self.connected = False
        self.closed = 0
        self.on_request = on_request

    def connect(self) -> None:
        if self.connect_error is not None:
            raise self.connect_error
        self.connected = True

    def close(self) -> None:
        self.closed += 1
        self.connected = False

    def execute_http(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, ConnectorException):
            raise answer
        return answer

    def stream_http(self, request: HTTPRequest) -> FakeStream:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        stream = self.streams.pop(0)
        if isinstance(stream, ConnectorException):
            raise stream
        return stream


def transient(message: str) -> ConnectorException:
    return ConnectorException(message, ErrorClass.TRANSIENT, 42)
