"""The one-pass read of a plain upstream answer (runtime/http1.py), both twins, against
llhttp itself: whatever it accepts, llhttp reads the same way (status, headers in
order, body, keep-alive); what it declines is left to llhttp untouched."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, List, Optional, Tuple

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vastar_fast.runtime import http1 as pure_http1
from vastar_fast.runtime.shaping import response_headers

from .helpers import runtime_twin

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Last-Modified: Tue, 01 Dec 2026 09:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "674c2f50-d"\r\nAccept-Ranges: bytes\r\n\r\nhello, world!'
)


@pytest.fixture(params=["pure", "compiled"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return runtime_twin(request.param, "http1")


class Llhttp:
    """What llhttp makes of the same bytes, fed in one piece as the upstream does."""

    def __init__(self) -> None:
        self.headers: List[Tuple[bytes, bytes]] = []
        self.body: List[bytes] = []
        self.complete = False
        self.keep = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True

    def read(self, data: bytes) -> Optional[Tuple[int, List[Tuple[bytes, bytes]], bytes, bool]]:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            return None
        if not self.complete:
            return None
        return self.parser.get_status_code(), self.headers, b"".join(self.body), self.keep


def test_nginx_answer(mod: ModuleType) -> None:
    got = mod.read_simple(NGINX)
    assert got is not None
    status, headers, body, keep, length, encoding = got
    assert (status, body, keep, length, encoding) == (200, b"hello, world!", True, 13, b"")
    assert headers[0] == (b"Server", b"nginx/1.22.1")
    assert (b"Content-Length", b"13") in headers and len(headers) == 8
    assert got[:4] == Llhttp().read(NGINX)


def test_shaped_headers_are_what_shaping_makes_of_the_raw_ones(mod: ModuleType) -> None:
    data = NGINX.replace(b"ETag", b"Set-Cookie").replace(b"Accept-Ranges: bytes",
                                                        b"SET-COOKIE: b=2\r\nX-U: \xff")  # fmt: skip
    raw, shaped = mod.read_simple(data), mod.read_simple(data, True)
    assert raw is not None and shaped is not None
    assert shaped[1] == response_headers(raw[1], False)
    assert list(shaped[1]) == list(response_headers(raw[1], False))  # same order
    assert shaped[1]["set-cookie"] == '"674c2f50-d", b=2' and shaped[1]["x-u"] == "\ufffd"
    assert shaped[0] == raw[0] and shaped[2:] == raw[2:]
    again = mod.read_simple(data, True)  # the names now come from the cache
    assert again == shaped


def test_content_encoding_is_reported_stripped_and_lowered(mod: ModuleType) -> None:
    data = NGINX.replace(b"Accept-Ranges: bytes", b"Content-Encoding:  GZip ")
    got = mod.read_simple(data)
    assert got is not None and got[5] == b"gzip"


def test_only_the_compiled_twin_takes_the_fast_path(mod: ModuleType) -> None:
    for shape in (False, True):
        expected = None if mod is pure_http1 else mod.read_simple(NGINX, shape)
        assert mod.parse_simple(NGINX, shape) == expected


@pytest.mark.parametrize(
    "data",
    [
        NGINX[:-1],  # body still arriving
        NGINX + b"H",  # more bytes after the answer
        NGINX[:40],  # head still arriving
        NGINX.replace(b"HTTP/1.1", b"HTTP/1.0"),
        NGINX.replace(b"200 OK", b"204 No Content"),
        NGINX.replace(b"200 OK", b"304 Not Modified"),
        NGINX.replace(b"200 OK", b"100 Continue"),
        NGINX.replace(b"200 OK", b"600 Odd"),
        NGINX.replace(b"200 OK", b"2x0 OK"),
        NGINX.replace(b"Content-Length: 13", b"Transfer-Encoding: chunked"),
        NGINX.replace(b"Content-Length: 13\r\n", b""),  # delimited by EOF
        NGINX.replace(b"Content-Length: 13", b"Content-Length: 13\r\nContent-Length: 13"),
        NGINX.replace(b"Content-Length: 13", b"Content-Length: +13"),
        NGINX.replace(b"Content-Length: 13", b"Content-Length: 1 3"),
        NGINX.replace(b"Content-Length: 13", b"Content-Length:"),
        NGINX.replace(b"Server: nginx", b"Server : nginx"),  # whitespace before the colon
        NGINX.replace(b"\r\nDate", b"\r\n Date"),  # obs-fold
        NGINX.replace(b"\r\nDate", b"\nDate"),  # bare LF
        NGINX.replace(b"Server", b"Ser[ver"),  # not a token
        NGINX.replace(b"nginx/1.22.1", b"nginx\x01"),  # a control character
        NGINX.replace(b"nginx/1.22.1", b"nginx\x7f"),
        NGINX.replace(b"Content-Length: 13", b"Content-Length: 99999999999999999999"),
    ],
)
def test_declined_answers_are_left_to_llhttp(mod: ModuleType, data: bytes) -> None:
    assert mod.read_simple(data) is None


def test_connection_close_and_obs_text(mod: ModuleType) -> None:
    data = NGINX.replace(b"keep-alive", b"Keep-Alive, CLOSE").replace(b"nginx/1.22.1", b"\xe9t\xe9")
    got = mod.read_simple(data)
    assert got is not None and got[3] is False
    assert (b"Server", b"\xe9t\xe9") in got[1]
    assert got[:4] == Llhttp().read(data)


def test_values_lose_leading_whitespace_keep_trailing_and_may_be_empty(mod: ModuleType) -> None:
    data = NGINX.replace(b"Server: nginx/1.22.1", b"Server:\t  nginx 1 \t ").replace(
        b"Accept-Ranges: bytes", b"X-Empty:"
    )
    got = mod.read_simple(data)
    assert got is not None
    assert (b"Server", b"nginx 1 \t ") in got[1] and (b"X-Empty", b"") in got[1]
    assert got[:4] == Llhttp().read(data)


_TEXT = [c for c in range(256) if c == 9 or 32 <= c <= 126 or c >= 128]
_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _Often:
    """Mostly well-formed parts and now and then an odd one, so that both the accepted
    and the declined paths are exercised (hypothesis' own choices favour the odd)."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.rnd = draw(st.randoms(use_true_random=True))

    def __call__(self, valid: Any, odd: Any) -> Any:
        return self.draw(odd if self.rnd.random() < 0.06 else valid)


_NAMES = (
    st.one_of(
        st.sampled_from([b"Content-Type", b"connection", b"CONNECTION", b"ETag", b"Set-Cookie",
                         b"X-A"]),
        st.lists(st.sampled_from(list(_TCHAR)), min_size=1, max_size=8).map(bytes),
    ),
    st.sampled_from([b"Bad Name", b"", b"A:B", b"N\x00", b"\xe9", b"Transfer-Encoding",
                     b"content-length"]),
)  # fmt: skip
_VALUES = (
    st.one_of(
        st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, Close", b"13", b"0", b"chunked",
                         b"", b" x ", b"a\tb", b"upgrade"]),
        st.lists(st.sampled_from(_TEXT), max_size=12).map(bytes),
    ),
    st.binary(max_size=12),
)  # fmt: skip


@st.composite
def answers(draw: Any) -> bytes:
    often = _Often(draw)
    version = often(st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    status = often(st.sampled_from([b"200", b"201", b"404", b"500", b"599"]),
                   st.sampled_from([b"204", b"304", b"101", b"600", b"099", b"20"]))  # fmt: skip
    reason = often(st.sampled_from([b"OK", b"", b"Not Found", b"\xe9 t"]),
                   st.sampled_from([b"a\x00b", b"x\ry"]))  # fmt: skip
    body = draw(st.binary(max_size=40))
    headers = [(often(*_NAMES), often(*_VALUES)) for _ in range(draw(st.integers(0, 5)))]
    if often(st.just(True), st.just(False)):
        headers.append((b"Content-Length", often(st.just(str(len(body)).encode()), _VALUES[1])))
    often.rnd.shuffle(headers)
    eol = often(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r"]))
    head = version + b" " + status + b" " + reason + eol
    head += b"".join(n + b":" + draw(st.sampled_from([b" ", b"", b"\t", b" \t"])) + v + eol
                     for n, v in headers)  # fmt: skip
    data = head + eol + body
    if often(st.just(False), st.just(True)):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    return data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=answers())
def test_whatever_it_accepts_llhttp_reads_the_same_way(data: bytes) -> None:
    pure = pure_http1.read_simple(data)
    try:
        compiled: Any = importlib.import_module("vastar_fast.runtime._compiled.http1")
    except ImportError:
        compiled = None
    shaped = pure_http1.read_simple(data, True)
    if compiled is not None:  # the twins agree, always
        assert compiled.read_simple(data) == pure
        assert compiled.read_simple(data, True) == shaped
    if pure is not None:
        assert Llhttp().read(data) == pure[:4]
        assert shaped is not None and shaped[1] == response_headers(pure[1], False)
        assert shaped[0] == pure[0] and shaped[2:] == pure[2:]
    else:
        assert shaped is None
