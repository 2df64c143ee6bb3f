"""FrameBuffer (the socket read loop's sans-I/O half), on both twins and in parity."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vastar_fast.errors import FrameTooLargeError, ProtocolError

from .codec_helpers import outcome

Twins = Tuple[ModuleType, ModuleType]
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def frame(message_type: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, message_type) + body


def drain(fb: Any) -> List[Any]:
    out = []
    while True:
        f = fb.next_frame()
        if f is None:
            return out
        out.append(f)


def feed_via_recv(fb: Any, chunk: bytes) -> None:
    """What sock.recv_into + buffer_updated do."""
    view = fb.get_buffer(-1)
    assert len(view) >= min(len(chunk), 65536)
    view[: len(chunk)] = chunk
    fb.buffer_updated(len(chunk))


def test_basic_split(codec: ModuleType) -> None:
    fb = codec.FrameBuffer()
    data = frame(1, b"hello") + frame(0, b"") + frame(255, b"x" * 1000)
    fb.feed(data[:3])
    assert fb.next_frame() is None and fb.pending == 3
    fb.feed(data[3:12])
    assert fb.next_frame() == (1, b"hello")
    assert fb.pending == 2
    fb.feed(data[12:])
    assert fb.frames() == [(0, b""), (255, b"x" * 1000)]
    assert fb.pending == 0 and fb.next_frame() is None and fb.frames() == []
    assert fb.max_frame_size == 10 * 1024 * 1024
    mt, body = codec.FrameBuffer().next_frame() or (None, None)
    assert mt is None and body is None


def test_get_buffer_contract(codec: ModuleType) -> None:
    fb = codec.FrameBuffer()
    view = fb.get_buffer(-1)
    assert isinstance(view, memoryview) and not view.readonly and len(view) >= 65536
    big = fb.get_buffer(300_000)
    assert len(big) >= 300_000
    payload = frame(7, b"abc") * 3
    big[: len(payload)] = payload
    fb.buffer_updated(len(payload))
    assert fb.frames() == [(7, b"abc")] * 3
    fb.get_buffer()
    fb.buffer_updated(0)
    assert fb.pending == 0
    fb.get_buffer()
    with pytest.raises(ValueError):
        fb.buffer_updated(-1)


def test_large_frame_through_recv_pieces(codec: ModuleType) -> None:
    body = bytes(range(256)) * (5 * 4096)  # 5 MiB
    data = frame(1, body) + frame(2, b"tail")
    fb = codec.FrameBuffer()
    got: List[Any] = []
    for i in range(0, len(data), 65536):
        feed_via_recv(fb, data[i : i + 65536])
        got += fb.frames()
    assert got == [(1, body), (2, b"tail")] and fb.pending == 0


def test_stale_view_after_growth_is_harmless(codec: ModuleType) -> None:
    """A view kept past buffer_updated must not corrupt later frames (or memory)."""
    fb = codec.FrameBuffer()
    old = fb.get_buffer()
    first = frame(1, b"one")
    old[: len(first)] = first
    fb.buffer_updated(len(first))
    fb.feed(frame(2, b"y" * 200_000)[:100])  # partial frame, forces room to grow later
    fb.feed(frame(2, b"y" * 200_000)[100:])
    old[:8] = b"\xff" * 8  # writes into memory the buffer may no longer use
    assert fb.frames()[-1] == (2, b"y" * 200_000)
    assert fb.pending == 0
    del old


@pytest.mark.parametrize(
    "header, exc",
    [
        (b"\x00\x00\x00\x00", ProtocolError),
        (b"\x00\xa0\x00\x01", FrameTooLargeError),
        (b"\xff\xff\xff\xf0", FrameTooLargeError),
    ],
)
def test_bad_length_fields_stick(codec: ModuleType, header: bytes, exc: type) -> None:
    fb = codec.FrameBuffer()
    fb.feed(frame(3, b"ok") + header + b"\x01rest")
    assert fb.next_frame() == (3, b"ok")
    with pytest.raises(exc) as first:
        fb.next_frame()
    with pytest.raises(exc) as second:
        fb.frames()
    assert first.value is second.value  # the same error, again
    fb.feed(frame(1, b"after"))
    with pytest.raises(exc):
        fb.next_frame()
    if exc is FrameTooLargeError:
        assert first.value.limit == 10 * 1024 * 1024
        assert first.value.length == int.from_bytes(header, "big")


@pytest.mark.parametrize("limit", [1, 10, 4096, 2**32 - 1, 2**40])
def test_custom_limit(codec: ModuleType, limit: int) -> None:
    fb = codec.FrameBuffer(limit)
    assert fb.max_frame_size == limit
    ok = frame(1, b"x" * (min(limit, 5000) - 1))
    fb.feed(ok)
    assert fb.next_frame() == (1, ok[5:])
    if limit < 2**32 - 1:
        fb.feed(struct.pack(">I", limit + 1))
        with pytest.raises(FrameTooLargeError):
            fb.next_frame()


frames_strategy = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=25)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> List[bytes]:
    """data cut into pieces: single bytes, small, large, or random."""
    mode = draw(st.sampled_from(["ones", "random", "whole"]))
    if mode == "ones":
        return [data[i : i + 1] for i in range(len(data))]
    if mode == "whole":
        return [data]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=30)))
    pieces, prev = [], 0
    for c in [*cuts, len(data)]:
        pieces.append(data[prev:c])
        prev = c
    return pieces


@SETTINGS
@given(frames=frames_strategy, data=st.data())
def test_chunking_parity(
    twins: Twins, frames: List[Tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(frame(t, b) for t, b in frames)
    pieces = data.draw(chunkings(stream))
    use_recv = data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    results = []
    for codec in twins:
        fb = codec.FrameBuffer()
        got, pendings = [], []
        for piece, recv in zip(pieces, use_recv):
            if recv:
                feed_via_recv(fb, piece)
            else:
                fb.feed(piece)
            got += drain(fb)
            pendings.append(fb.pending)
        results.append((got, pendings))
    assert results[0] == results[1]
    assert results[0][0] == frames
    assert results[0][1][-1] == 0 if pieces else True


@SETTINGS
@given(
    frames=frames_strategy,
    bad=st.sampled_from([0, 11, 2**31, 2**32 - 1]),
    limit=st.sampled_from([10, 300, 10 * 1024 * 1024]),
    data=st.data(),
)
def test_error_parity(
    twins: Twins, frames: List[Tuple[int, bytes]], bad: int, limit: int, data: st.DataObject
) -> None:
    stream = b"".join(frame(t, b) for t, b in frames) + struct.pack(">I", bad) + b"\x01zz"
    pieces = data.draw(chunkings(stream))
    logs = []
    for codec in twins:
        fb = codec.FrameBuffer(limit)
        log: List[Any] = []
        for piece in pieces:
            fb.feed(piece)
            log.append(outcome(drain, fb))
            log.append(fb.pending)
        logs.append(log)
    assert logs[0] == logs[1]
    lengths = [len(b) + 1 for _, b in frames] + [bad]
    first_bad = next((n for n in lengths if n == 0 or n > limit), None)
    if first_bad is not None:
        want = ProtocolError if first_bad == 0 else FrameTooLargeError
        assert logs[0][-2][0] == "err" and logs[0][-2][1][0] is want
    else:  # a legal length with too few bytes behind it: just waiting
        assert logs[0][-2][0] == "ok" and logs[0][-1] == 7
