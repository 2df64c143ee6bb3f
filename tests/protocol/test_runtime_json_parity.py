"""The runtime side of the http connector JSON: the request payload the runtime decodes and
the response payload (and whole frame) it encodes, compiled twin against pure twin.

Identical results and identical errors (type and message) on the shapes real peers send,
on bent and truncated documents, and on hostile strings (escapes, lone surrogates,
invalid UTF-8). The compiled functions must be real twins, not the pure ones re-exported.
"""

from __future__ import annotations

import json
from typing import Any, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .codec_helpers import outcome
from .test_codec_parity import ESCAPE_CASES

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_text = st.text(max_size=30)
header_values = st.one_of(json_text, st.integers(), st.none(), st.lists(json_text, max_size=2))


def test_compiled_functions_are_twins_not_aliases(twins: Any) -> None:
    pure, comp = twins
    for name in (
        "decode_http_request_payload",
        "encode_http_response_payload",
        "encode_http_response_frame",
    ):
        assert getattr(comp, name) is not getattr(pure, name), name


@st.composite
def request_documents(draw: st.DrawFn) -> bytes:
    """The request JSON as the released Python/TypeScript SDKs send it, then bent."""
    items: List[Tuple[str, Any]] = [
        ("method", draw(st.one_of(st.sampled_from(["GET", "POST", ""]), json_text, st.none()))),
        (
            "url",
            draw(st.one_of(st.just("https://api.example.com/v1/x?y=1"), json_text, st.integers())),
        ),
        (
            "headers",
            draw(
                st.one_of(
                    st.dictionaries(json_text, json_text, max_size=4),
                    st.none(),
                    st.dictionaries(json_text, header_values, max_size=2),
                    st.sampled_from([[], 0, "", False, {}]),
                )
            ),
        ),
        ("body", draw(st.one_of(json_text, st.none(), st.integers(), st.just("")))),
    ]
    items = draw(st.permutations(items))
    keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    items = [kv for kv, k in zip(items, keep) if k or kv[0] in ("method", "url")]
    if draw(st.booleans()):
        items.append(
            (
                draw(st.sampled_from(["body", "url", "extra", "headers", "method"])),
                draw(st.one_of(json_text, st.integers(), st.none())),
            )
        )
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    enc = json.JSONEncoder(ensure_ascii=draw(st.booleans()), separators=sep)
    parts = [enc.encode(k) + sep[1] + enc.encode(v) for k, v in items]
    doc = draw(st.sampled_from(["", " ", "\n"])) + "{" + sep[0].join(parts) + "}"
    doc += draw(st.sampled_from(["", " \r\n", "x", "}", ","]))
    return doc.encode("utf-8", "surrogatepass")


@SETTINGS
@given(doc=request_documents())
def test_request_json_parity(twins: Any, doc: bytes) -> None:
    pure, comp = twins
    a = outcome(pure.decode_http_request_payload, doc)
    b = outcome(comp.decode_http_request_payload, doc)
    assert a == b, (doc, a, b)


@SETTINGS
@given(doc=request_documents(), data=st.data())
def test_request_json_mutation_parity(twins: Any, doc: bytes, data: st.DataObject) -> None:
    pure, comp = twins
    cut = data.draw(st.integers(0, len(doc)))
    patched = bytearray(doc[:cut] if data.draw(st.booleans()) else doc)
    if patched and data.draw(st.booleans()):
        pos = data.draw(st.integers(0, len(patched) - 1))
        patched[pos : pos + 1] = data.draw(
            st.sampled_from(
                [
                    b"\\",
                    b'"',
                    b"\x00",
                    b"\xff",
                    b"\xed\xa0\x80",
                    b"\\u",
                    b"\\ud800",
                    b"}",
                    b"{",
                    b"\x1f",
                    b"\xc3",
                    b" ",
                    b"null",
                    b",",
                ]
            )
        )
    doc2 = bytes(patched)
    assert outcome(pure.decode_http_request_payload, doc2) == outcome(
        comp.decode_http_request_payload, doc2
    )


@pytest.mark.parametrize("raw", ESCAPE_CASES)
@pytest.mark.parametrize("where", ["method", "url", "header_name", "header_value", "body"])
def test_request_string_escapes_parity(twins: Any, raw: str, where: str) -> None:
    pure, comp = twins
    fields = {
        "method": '"GET"',
        "url": '"http://h/"',
        "header_name": '"X"',
        "header_value": '"v"',
        "body": '"b"',
    }
    fields[where] = raw
    doc = (
        f'{{"method": {fields["method"]}, "url": {fields["url"]}, '
        f'"headers": {{{fields["header_name"]}: {fields["header_value"]}}}, '
        f'"body": {fields["body"]}}}'
    ).encode("latin-1")
    a = outcome(pure.decode_http_request_payload, doc)
    b = outcome(comp.decode_http_request_payload, doc)
    assert a == b, (doc, a, b)


def test_released_sdk_request_decodes_on_the_fast_path(twins: Any) -> None:
    """What the released SDK sends (json.dumps defaults) takes the compiled path."""
    _, comp = twins
    doc = json.dumps(
        {"method": "POST", "url": "https://x/v1", "headers": {"A": "b"}, "body": '{"é": 1}'}
    ).encode()
    r = comp.decode_http_request_payload(doc)
    assert r == ("POST", "https://x/v1", {"A": "b"}, '{"é": 1}')
    assert type(r).__name__ == "HTTPRequestPayload"


statuses = st.one_of(st.integers(100, 599), st.integers(-(2**40), 2**40),
                     st.sampled_from([True, 2.5, None, "200"]))  # fmt: skip
resp_headers = st.one_of(
    st.dictionaries(json_text, json_text, max_size=6),
    st.sampled_from([{"a": "\udc00"}, {1: "a"}, {"a": 1}, [("a", "b")], None]),
)
resp_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.sampled_from([b"\xff\xfe", b"ok\xed\xa0\x80", "\ud800x", "", b"", bytearray(b"ba"), None]),
)
streaming = st.one_of(st.booleans(), st.sampled_from([0, 1, "", "x", None]))


@SETTINGS
@given(status=statuses, headers=resp_headers, body=resp_bodies, is_streaming=streaming)
def test_response_payload_encode_parity(
    twins: Any, status: Any, headers: Any, body: Any, is_streaming: Any
) -> None:
    pure, comp = twins
    a = outcome(pure.encode_http_response_payload, status, headers, body, is_streaming)
    b = outcome(comp.encode_http_response_payload, status, headers, body, is_streaming)
    assert a == b, (status, headers, body, a, b)


@SETTINGS
@given(
    rid=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([-1, 2**64, "1"])),
    status=statuses,
    headers=resp_headers,
    body=resp_bodies,
    is_streaming=streaming,
    dur=st.one_of(st.integers(0, 2**64 - 1), st.just(-5)),
)
def test_response_frame_encode_parity(
    twins: Any, rid: Any, status: Any, headers: Any, body: Any, is_streaming: Any, dur: Any
) -> None:
    pure, comp = twins
    a = outcome(pure.encode_http_response_frame, rid, status, headers, body, is_streaming, dur)
    b = outcome(comp.encode_http_response_frame, rid, status, headers, body, is_streaming, dur)
    assert a == b


@SETTINGS
@given(
    status=st.integers(100, 599),
    headers=st.dictionaries(json_text, json_text, max_size=4),
    body=st.text(max_size=100),
)  # fmt: skip
def test_response_frame_round_trips(twins: Any, status: int, headers: Any, body: str) -> None:
    """What the runtime encodes, a client decodes back (both twins, surrogates aside)."""
    pure, comp = twins
    try:
        body.encode("utf-8")
        for k, v in headers.items():
            (k + v).encode("utf-8")
    except UnicodeEncodeError:
        return
    for enc in (pure, comp):
        frame = enc.encode_http_response_frame(9, status, headers, body, False, 42)
        resp = comp.decode_execute_response(frame[5:])
        assert (resp.request_id, resp.error_class, resp.duration_us) == (9, 0, 42)
        http = pure.decode_http_response_payload(resp.payload)
        assert (http.status_code, http.headers, http.body) == (status, headers, body.encode())
