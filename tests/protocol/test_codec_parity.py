"""Twin parity: the pure and compiled codecs must agree on every input.

Both twins get the same input and must give the same output: encoders byte-identical
frames and payload JSON (the compiled twin replicates flatbuffers.Builder's layout),
decoders equal results; where one raises, the other raises the same exception type
with the same message and attributes (``codec_helpers.outcome``).  Inputs include
wrong types, out-of-range numbers, lone surrogates, invalid UTF-8, and random,
truncated, bit-flipped and hostile frames.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .codec_helpers import outcome

Twins = Tuple[ModuleType, ModuleType]
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=40)
# anything a caller might pass by mistake: wrong types, out of range, lone surrogates
bad_int = st.one_of(
    u64, st.integers(-(2**70), 2**70), st.sampled_from([0.0, 1.5, True, False, None, "1"])
)
bad_str = st.one_of(
    text, st.none(), st.sampled_from(["\ud800", "a\udfffb", b"bytes", 5, "é\ud83d"])
)
headers_dict = st.dictionaries(text, text, max_size=6)
ext_headers = st.one_of(
    st.none(),
    st.lists(st.tuples(text, text), max_size=5),
    st.lists(st.tuples(text, text), max_size=3).map(tuple),
)
bodies = st.one_of(
    st.none(),
    text,
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=300),
    st.binary(max_size=60),
    text.map(lambda s: s.encode("utf-8")),
)


def _decode_all(codec: ModuleType, decoder: str, frame: bytes) -> Tuple[str, Any]:
    return outcome(getattr(codec, decoder), frame[5:])


def _agree(twins: Twins, encoder: str, decoder: str, *args: Any) -> None:
    """Both encoders give the same bytes or the same error; both decoders read the frame
    back the same, without error."""
    pure, comp = twins
    a, b = outcome(getattr(pure, encoder), *args), outcome(getattr(comp, encoder), *args)
    assert a == b, (args, a, b)
    if a[0] == "err":
        return
    reads = [_decode_all(codec, decoder, a[1]) for codec in twins]
    assert reads[0] == reads[1], reads
    assert reads[0][0] == "ok", reads[0]


@SETTINGS
@given(
    request_id=bad_int,
    tenant=bad_str,
    workspace=bad_str,
    trace=bad_str,
    deadline=bad_int,
    payload=st.one_of(st.binary(max_size=100), st.sampled_from([None, "str", bytearray(b"ba")])),
    headers=ext_headers,
)
def test_execute_request_parity(
    twins: Twins,
    request_id: Any,
    tenant: Any,
    workspace: Any,
    trace: Any,
    deadline: Any,
    payload: Any,
    headers: Any,
) -> None:
    _agree(
        twins,
        "encode_execute_request",
        "decode_execute_request",
        request_id,
        tenant,
        workspace,
        trace,
        "http",
        "request",
        deadline,
        payload,
        headers,
    )


@SETTINGS
@given(
    request_id=st.one_of(u64, bad_int),
    tenant=text,
    workspace=st.one_of(st.none(), text),
    trace=st.one_of(st.none(), text),
    deadline=u64,
    method=st.one_of(st.sampled_from(["get", "POST", "pAtch", "ß", "ﬁx", 3, None]), text),
    url=st.one_of(text, st.sampled_from(['https://x/y?z="1"', b"u", "\ud800"])),
    headers=st.one_of(
        st.none(),
        headers_dict,
        st.sampled_from([{"a": 1}, {1: "a"}, [("a", "b")], {"a": "\udc00"}, {}]),
    ),
    body=st.one_of(
        bodies,
        st.sampled_from(
            [
                b"\xff",
                b"\xed\xa0\x80",
                "\ud800",
                bytearray(b"ba"),
                memoryview(b"mv"),
                0,
                7,
                [],
                b"\xc0\x80",
                b"\xf4\x90\x80\x80",
                b"ok\xe4\xb8",
            ]
        ),
    ),
    ext=ext_headers,
)
def test_http_request_frame_parity(
    twins: Twins,
    request_id: Any,
    tenant: str,
    workspace: Any,
    trace: Any,
    deadline: int,
    method: Any,
    url: Any,
    headers: Any,
    body: Any,
    ext: Any,
) -> None:
    pure, comp = twins
    pa = outcome(pure.encode_http_request_payload, method, url, headers, body)
    pb = outcome(comp.encode_http_request_payload, method, url, headers, body)
    assert pb == pa  # byte-identical JSON, or the same error
    _agree(
        twins,
        "encode_http_request_frame",
        "decode_execute_request",
        request_id,
        tenant,
        workspace,
        trace,
        deadline,
        method,
        url,
        headers,
        body,
        ext,
    )


@SETTINGS
@given(
    rid=bad_int,
    ec=st.one_of(st.integers(-130, 130), bad_int),
    msg=bad_str,
    payload=st.one_of(st.none(), st.binary(max_size=50), st.just("s")),
    dur=bad_int,
)
def test_execute_response_parity(
    twins: Twins, rid: Any, ec: Any, msg: Any, payload: Any, dur: Any
) -> None:
    _agree(twins, "encode_execute_response", "decode_execute_response", rid, ec, msg, payload, dur)


@SETTINGS
@given(
    healthy=st.one_of(st.booleans(), st.sampled_from([0, 2, "", "x", None])),
    msg=bad_str,
    active=st.one_of(st.integers(-2, 2**32 + 1), bad_int),
    credits=bad_int,
    delta=st.one_of(st.integers(-(2**31) - 1, 2**31), bad_int),
    total=st.one_of(st.integers(-1, 2**32), bad_int),
    rid=bad_int,
    status=st.one_of(st.integers(-1, 65536), bad_int),
    headers=ext_headers,
    streaming=st.one_of(st.booleans(), st.sampled_from([0, 1, "", None])),
    data=st.one_of(st.binary(max_size=40), st.just("s")),
)
def test_small_frames_parity(
    twins: Twins,
    healthy: Any,
    msg: Any,
    active: Any,
    credits: Any,
    delta: Any,
    total: Any,
    rid: Any,
    status: Any,
    headers: Any,
    streaming: Any,
    data: Any,
) -> None:
    _agree(twins, "encode_health_response", "decode_health_response", healthy, msg, active, credits)
    _agree(twins, "encode_credit_update", "decode_credit_update", delta, total)
    _agree(twins, "encode_stream_start", "decode_stream_start", rid, status, headers, streaming)
    _agree(twins, "encode_stream_chunk", "decode_stream_chunk", rid, data)
    _agree(twins, "encode_cancel_request", "decode_cancel_request", rid)
    pure, comp = twins
    assert outcome(pure.encode_frame, status, data) == outcome(comp.encode_frame, status, data)


DECODERS = [
    "decode_execute_request",
    "decode_execute_response",
    "decode_health_response",
    "decode_credit_update",
    "decode_stream_start",
    "decode_stream_chunk",
    "decode_cancel_request",
]


def _decoders_agree(twins: Twins, data: Any) -> None:
    pure, comp = twins
    for name in DECODERS:
        a = outcome(getattr(pure, name), data)
        b = outcome(getattr(comp, name), data)
        assert a == b, (name, data, a, b)


def _valid_bodies(codec: ModuleType) -> List[bytes]:
    frames = [
        codec.encode_http_request_frame(
            2**64 - 1,
            "tenant",
            "ws",
            "trace-é",
            99,
            "POST",
            "https://x",
            {"a": "b"},
            b'{"k": "v"}',
            [("x-1", "y"), ("😀", "")],
        ),
        codec.encode_execute_request(1, "t", None, None, "c", "o", 0, b"", None),
        codec.encode_execute_response(5, 3, "boom ✗", b'{"status_code":200}', 17),
        codec.encode_execute_response(0, 0, None, None, 0),
        codec.encode_health_response(True, "ok", 1, 2),
        codec.encode_credit_update(-3, 9),
        codec.encode_stream_start(4, 200, [("content-type", "text/plain")], True),
        codec.encode_stream_chunk(4, b"chunk"),
        codec.encode_cancel_request(4),
    ]
    return [f[5:] for f in frames]


@pytest.mark.parametrize("which", ["pure", "compiled"])
def test_truncations_and_bit_flips_parity(twins: Twins, which: str) -> None:
    """Every prefix and every single-bit flip of valid frames from either encoder."""
    for body in _valid_bodies(twins[0] if which == "pure" else twins[1]):
        for cut in range(len(body) + 1):
            _decoders_agree(twins, body[:cut])
        for i in range(len(body)):
            for bit in range(8):
                flipped = bytearray(body)
                flipped[i] ^= 1 << bit
                _decoders_agree(twins, bytes(flipped))


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_parity(twins: Twins, data: bytes) -> None:
    _decoders_agree(twins, data)


@SETTINGS
@given(data=st.data())
def test_hostile_patches_parity(twins: Twins, data: st.DataObject) -> None:
    """Valid frames with random bytes overwritten at random places (offsets, lengths,
    vtable entries, string contents including invalid UTF-8)."""
    which = data.draw(st.sampled_from(twins))
    body = bytearray(data.draw(st.sampled_from(_valid_bodies(which))))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=4))
        body[pos : pos + len(patch)] = patch
    _decoders_agree(twins, bytes(body))


@pytest.mark.parametrize(
    "bad", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe4\xb8", b"\x80"]
)
def test_invalid_utf8_in_strings_parity(twins: Twins, bad: bytes) -> None:
    """Replace the text of each string field with invalid UTF-8 of the same length."""
    pure, comp = twins
    marker = "Q" * len(bad)
    for frame in (
        pure.encode_execute_request(
            1, marker, marker, marker, marker, marker, 2, b"", [(marker, marker)]
        ),
        comp.encode_execute_request(
            1, marker, marker, marker, marker, marker, 2, b"", [(marker, marker)]
        ),
        comp.encode_execute_response(1, 0, marker, b"", 0),
        comp.encode_health_response(True, marker, 0, 0),
        comp.encode_stream_start(1, 200, [(marker, marker)], False),
    ):
        body = frame[5:]
        start = 0
        while True:
            i = body.find(marker.encode(), start)
            if i < 0:
                break
            patched = body[:i] + bad + body[i + len(bad) :]
            _decoders_agree(twins, patched)
            start = i + 1
            a = outcome(pure.decode_execute_request, patched)
            if a[0] == "err":
                assert issubclass(a[1][0], ValueError)


# ------------------------------------------------------------ response JSON parity

json_text = st.text(max_size=30)
header_values = st.one_of(json_text, st.integers(), st.none(), st.lists(json_text, max_size=2))


@st.composite
def response_documents(draw: st.DrawFn) -> bytes:
    """The released runtime's response JSON, then possibly bent out of shape."""
    items: List[Tuple[str, Any]] = [
        ("body", draw(st.one_of(json_text, st.none(), st.integers()))),
        (
            "headers",
            draw(
                st.one_of(
                    st.dictionaries(json_text, json_text, max_size=4),
                    st.none(),
                    st.dictionaries(json_text, header_values, max_size=2),
                )
            ),
        ),
        ("is_streaming", draw(st.one_of(st.booleans(), st.none(), st.integers(0, 1)))),
        (
            "status_code",
            draw(
                st.one_of(
                    st.integers(-(10**20), 10**20),
                    st.just(200),
                    st.floats(allow_nan=False),
                    st.none(),
                    st.booleans(),
                )
            ),
        ),
    ]
    items = draw(st.permutations(items))
    keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    items = [kv for kv, k in zip(items, keep) if k or kv[0] == "status_code"]
    if draw(st.booleans()):
        items.append(
            (
                draw(st.sampled_from(["body", "status_code", "extra", "headers"])),
                draw(st.one_of(json_text, st.integers(), st.none())),
            )
        )
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    ensure_ascii = draw(st.booleans())
    enc = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=sep)
    parts = [enc.encode(k) + sep[1] + enc.encode(v) for k, v in items]
    doc = draw(st.sampled_from(["", " ", "\n"])) + "{" + sep[0].join(parts) + "}"
    doc += draw(st.sampled_from(["", " \r\n", "x", "}", ","]))
    return doc.encode("utf-8", "surrogatepass")


@SETTINGS
@given(doc=response_documents())
def test_response_json_parity(twins: Twins, doc: bytes) -> None:
    pure, comp = twins
    a = outcome(pure.decode_http_response_payload, doc)
    b = outcome(comp.decode_http_response_payload, doc)
    assert a == b, (doc, a, b)
    if a[0] == "ok":
        assert type(b[1].body) is bytes and type(b[1].status_code) is int


@SETTINGS
@given(doc=response_documents(), data=st.data())
def test_response_json_mutation_parity(twins: Twins, doc: bytes, data: st.DataObject) -> None:
    """Truncations and byte patches of response documents."""
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
                    b"0",
                    b"-",
                    b"\x1f",
                    b"\xc3",
                    b"e5",
                    b" ",
                ]
            )
        )
    doc2 = bytes(patched)
    assert outcome(pure.decode_http_response_payload, doc2) == outcome(
        comp.decode_http_response_payload, doc2
    )


ESCAPE_CASES = [
    r'"\ud83d\ude00"',
    r'"\ud800"',
    r'"\udc00\ud800"',
    r'"\ud800\u0041"',
    r'"\ud800\ud800"',
    r'"\ud800\udZ00"',
    r'"\uD834\uDD1E"',
    r'"\/\b\f\n\r\t\"\\"',
    r'"\x"',
    r'"\u12"',
    r'"\ud800\u"',
    '"\xed\xa0\x80"',
    '"\xed\xa0\x80\xed\xb0\x80"',
    r'"\ud800' + '\xed\xb0\x80"',
    '"\x7f"',
    '"\x1f"',
    '"\xc3\xa9 caf\xc3\xa9"',
    '"' + "a" * 40 + r"\"" + "b" * 40 + '"',
    '"\xf0\x9f\x98\x80"',
    '"\xf0\x9f\x98"',
    '"\xe0\x80\x80"',
    '"\xc2"',
]


@pytest.mark.parametrize("raw", ESCAPE_CASES)
@pytest.mark.parametrize("where", ["body", "header_value", "header_key"])
def test_response_json_escapes_parity(twins: Twins, raw: str, where: str) -> None:
    s = raw.encode("latin-1")
    if where == "body":
        doc = b'{"status_code":200,"body":' + s + b"}"
    elif where == "header_value":
        doc = b'{"status_code":200,"headers":{"k":' + s + b"}}"
    else:
        doc = b'{"status_code":200,"headers":{' + s + b':"v"}}'
    pure, comp = twins
    a = outcome(pure.decode_http_response_payload, doc)
    assert a == outcome(comp.decode_http_response_payload, doc), doc


@SETTINGS
@given(
    body=st.text(),
    headers=st.dictionaries(st.text(), st.text(), max_size=5),
    status=st.integers(-(2**63), 2**63),
    streaming=st.booleans(),
)
def test_response_payload_roundtrip_parity(
    twins: Twins, body: str, headers: Dict[str, str], status: int, streaming: bool
) -> None:
    pure, comp = twins
    payload = pure.encode_http_response_payload(status, headers, body, streaming)
    assert comp.encode_http_response_payload(status, headers, body, streaming) == payload
    a = pure.decode_http_response_payload(payload)
    assert comp.decode_http_response_payload(payload) == a
    assert a == (status, headers, body.encode("utf-8", "surrogatepass"), streaming)


def test_non_bytes_inputs_parity(twins: Twins) -> None:
    pure, comp = twins
    body = pure.encode_execute_response(1, 0, "m", b"p", 2)[5:]
    for data in (bytearray(body), "str", None, 5, b"", memoryview(b"ab")):
        for name in DECODERS:
            assert outcome(getattr(pure, name), data) == outcome(getattr(comp, name), data)
    for doc in (bytearray(b'{"status_code": 1}'), '{"status_code": 1}', None, 3):
        assert outcome(pure.decode_http_response_payload, doc) == outcome(
            comp.decode_http_response_payload, doc
        )


def test_compiled_fast_paths_do_not_defer(twins: Twins, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parity tests above only prove something if the compiled twin's own code ran:
    for ordinary inputs it must not hand the call to the pure twin."""
    pure, comp = twins

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled twin deferred to the pure twin")

    for name in (
        "encode_http_request_frame",
        "encode_http_request_payload",
        "encode_execute_request",
        "encode_execute_response",
        "encode_stream_chunk",
        "encode_stream_start",
        "decode_http_response_payload",
        "decode_execute_response",
        "decode_execute_request",
    ):
        monkeypatch.setattr(pure, name, refuse)
    frame = comp.encode_http_request_frame(
        1,
        "t",
        "w",
        None,
        2,
        "post",
        "https://x",
        {"a": "b"},
        '{"x": "\\u00e9 é"}'.encode(),
        [("k", "v")],
    )
    assert comp.decode_execute_request(frame[5:]).connector_name == "http"
    assert comp.encode_http_request_payload("get", "u", {"h": "v"}, "b\n\u2028")
    comp.encode_execute_request(1, "t", "w", "tr", "c", "o", 3, b"p", [("k", "v")])
    resp = comp.encode_execute_response(1, 0, None, b"x", 2)
    assert comp.decode_execute_response(resp[5:]).payload == b"x"
    comp.encode_stream_chunk(1, b"d")
    comp.encode_stream_start(1, 200, [("a", "b")], True)
    doc = (
        ' {"body" : "caf\\u00e9 \\ud83d\\ude00 \\ud800 中 \\"q\\"", "headers":'
        ' {"a": "1", "b": "\\u00e9", "a": "2"}, "is_streaming": true,'
        ' "status_code": -0}\n'
    ).encode()
    got = comp.decode_http_response_payload(doc)
    assert got.body == 'café 😀 \ud800 中 "q"'.encode("utf-8", "surrogatepass")
    assert got.headers == {"a": "2", "b": "é"} and list(got.headers) == ["a", "b"]
    assert got.status_code == 0 and got.is_streaming is True


@SETTINGS
@given(
    tenant=text,
    workspace=st.one_of(st.none(), text),
    headers=st.lists(st.tuples(text, text), max_size=4),
    payload=st.binary(max_size=80),
    message=st.one_of(st.none(), text),
    data=st.data(),
)
def test_truncated_and_patched_random_frames_parity(
    twins: Twins,
    tenant: str,
    workspace: Any,
    headers: List[Tuple[str, str]],
    payload: bytes,
    message: Any,
    data: st.DataObject,
) -> None:
    """Frames built from random field values, cut at a random byte and/or with random
    bytes patched in, through every decoder and through FrameBuffer, on both twins."""
    pure = twins[0]
    frame = data.draw(
        st.sampled_from(
            [
                pure.encode_execute_request(
                    7, tenant, workspace, None, "c", "o", 9, payload, headers
                ),
                pure.encode_execute_response(7, 0, message, payload, 3),
                pure.encode_stream_start(7, 200, headers, True),
            ]
        )
    )
    cut = data.draw(st.integers(0, len(frame)))
    damaged = bytearray(frame[:cut])
    if damaged and data.draw(st.booleans()):
        pos = data.draw(st.integers(0, len(damaged) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=4))
        damaged[pos : pos + len(patch)] = patch
    _decoders_agree(twins, bytes(damaged[5:]))
    results = []
    for codec in twins:
        fb = codec.FrameBuffer()
        fb.feed(bytes(damaged))
        results.append((outcome(fb.frames), fb.pending))
    assert results[0] == results[1]


# Pieces of long response bodies: plain runs of every length around the 16/64-byte
# block sizes, every JSON escape, backslash runs, non-ASCII, lone surrogates.
_BODY_PIECES = st.one_of(
    st.integers(0, 70).map(lambda k: "x" * k),
    st.sampled_from(['"', "\\", "\\\\", "\\\\\\", "\n", "\r", "\t", "\b", "\f", "/", "\x00"]),
    st.sampled_from(["\x1f", "\x7f", "é", "中", "😀", "\ud800", "\udc00", "\\u", '\\"']),
    st.text(max_size=8),
)


def _simd_modes(comp: ModuleType) -> List[str]:
    """The compiled twin's JSON unescaper has one path per instruction set (scalar,
    sse2, avx2, avx512, neon): test each one that this build and CPU can run."""
    modes = list(comp._simd_paths())
    assert "scalar" in modes
    return modes


@SETTINGS
@given(
    pieces=st.lists(_BODY_PIECES, max_size=60),
    ensure_ascii=st.booleans(),
    data=st.data(),
)
def test_long_response_body_parity(
    twins: Twins, pieces: List[str], ensure_ascii: bool, data: st.DataObject
) -> None:
    """Long escape-dense bodies (the vector unescapers' territory, windows of 16 and
    64 bytes), then truncated or with a raw quote, control, backslash, invalid
    escape or invalid UTF-8 byte patched in at a random place."""
    pure, comp = twins
    body = "".join(pieces)
    doc = (
        '{"body":'
        + json.dumps(body, ensure_ascii=ensure_ascii)
        + ',"headers":{},"is_streaming":true,"status_code":200}'
    ).encode("utf-8", "surrogatepass")
    damaged = bytearray(doc)
    how = data.draw(st.sampled_from(["none", "cut", "patch"]))
    if how == "cut":
        damaged = damaged[: data.draw(st.integers(0, len(doc)))]
    elif how == "patch":
        pos = data.draw(st.integers(8, len(doc) - 1))
        damaged[pos : pos + 1] = data.draw(
            st.sampled_from([b'"', b"\x01", b"\\", b"\\x", b"\\u12", b"\xff", b"\xc3", b"\\ud800"])
        )
    want = outcome(pure.decode_http_response_payload, bytes(damaged))
    if how == "none":
        # json joins an escaped \ud800\udc00 pair into one character, so not just body
        expected = json.loads(doc)["body"].encode("utf-8", "surrogatepass")
        assert want[0] == "ok" and want[1].body == expected
    before = comp._simd()
    try:
        for path in _simd_modes(comp):
            assert comp._simd(path) == path
            got = outcome(comp.decode_http_response_payload, bytes(damaged))
            assert got == want, (path, bytes(damaged))
    finally:
        comp._simd(before)
