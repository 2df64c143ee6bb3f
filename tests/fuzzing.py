"""Hostile input for the fuzzing suites: frames a broken or malicious client could send.

:class:`Hostile` draws, from one seeded :class:`random.Random`, whole frames (and
byte blobs) of every shape the issue lists: random bytes, mutated golden frames
(tests/golden/*.bin), truncations, absurd length fields, KeyValue amplification shapes,
huge vectors, and valid-looking requests with strange fields. The in-process decoder
fuzzers use :meth:`Hostile.body` (FlatBuffers bodies without the frame header).
"""

from __future__ import annotations

import json
import random
import struct
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import flatbuffers

from vastar_fast.protocol import _codec_py
from vastar_fast.types import MAX_PAYLOAD_SIZE

GOLDEN = Path(__file__).resolve().parent / "golden"

_INTERESTING_U32 = (0, 1, 4, 5, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "get", "TRACE",
            "CONNECT", "BREW", "", "G\x00T", "\u00e9", "GET " * 40)  # fmt: skip
_PATHS = ("/small", "/echo", "/status/404", "/status/500", "/status/204", "/sse", "/nope",
          "/%00", "/" + "a" * 3000, "/?q=" + "%" * 50, "/echo?x=\u2603")  # fmt: skip


def golden_frames() -> List[bytes]:
    """Every captured frame (requests and responses) of tests/golden."""
    return [p.read_bytes() for p in sorted(GOLDEN.glob("*.bin"))]


def frame(message_type: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, message_type) + body


def kv_request(pairs: Sequence[Tuple[str, str]], repeat_first: int = 0,
               payload: bytes = b'{"method":"GET","url":"http://h/"}') -> bytes:  # fmt: skip
    """An ExecuteRequest body whose KeyValue vector repeats its first table
    ``repeat_first`` more times (a hostile builder's amplification shape)."""
    b = flatbuffers.Builder(1024)
    tables = []
    for k, v in pairs:
        ko, vo = b.CreateString(k), b.CreateString(v)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, ko, 0)
        b.PrependUOffsetTRelativeSlot(1, vo, 0)
        tables.append(b.EndObject())
    entries = tables + [tables[0]] * repeat_first
    b.StartVector(4, len(entries), 4)
    for t in reversed(entries):
        b.PrependUOffsetTRelative(t)
    vec = b.EndVector()
    tenant, conn, op = b.CreateString("t"), b.CreateString("http"), b.CreateString("request")
    body = b.CreateByteVector(payload)
    b.StartObject(9)
    b.PrependUint64Slot(0, 7, 0)
    b.PrependUOffsetTRelativeSlot(1, tenant, 0)
    b.PrependUOffsetTRelativeSlot(4, conn, 0)
    b.PrependUOffsetTRelativeSlot(5, op, 0)
    b.PrependUOffsetTRelativeSlot(7, body, 0)
    b.PrependUOffsetTRelativeSlot(8, vec, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def shared_string_request(text_len: int) -> bytes:
    """An ExecuteRequest body whose five string fields all point at one long string."""
    b = flatbuffers.Builder(text_len + 256)
    s = b.CreateString("x" * text_len)
    body = b.CreateByteVector(b"{}")
    b.StartObject(9)
    b.PrependUint64Slot(0, 9, 0)
    for slot in (1, 2, 3, 4, 5):
        b.PrependUOffsetTRelativeSlot(slot, s, 0)
    b.PrependUOffsetTRelativeSlot(7, body, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


class Hostile:
    """Seeded source of hostile frames; ``sink`` is a base URL requests may reach."""

    def __init__(self, seed: int, sink: Optional[str] = None, huge_every: int = 400) -> None:
        self.rng = random.Random(seed)
        self.sink = sink
        self.huge_every = huge_every
        self.golden = golden_frames()
        self.golden_bodies = [g[5:] for g in self.golden]
        self.rids: List[int] = [1]
        self.drawn = 0

    # ------------------------------------------------------------------ pieces
    def mutate(self, data: bytes, rounds: Optional[int] = None) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rounds if rounds is not None else rng.randint(1, 8)):
            op = rng.randrange(7)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and buf:  # flip a bit
                i = min(pos, len(buf) - 1)
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1 and buf:  # an interesting byte
                buf[min(pos, len(buf) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF))
            elif op == 2 and len(buf) >= 4:  # an interesting 32-bit word (offsets, lengths)
                i = min(pos, len(buf) - 4)
                value = rng.choice((*_INTERESTING_U32, len(buf), len(buf) - i, i))
                buf[i : i + 4] = struct.pack("<I", value & 0xFFFFFFFF)
            elif op == 3:  # insert random bytes
                buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
            elif op == 4 and buf:  # delete a range
                del buf[pos : pos + rng.randint(1, 16)]
            elif op == 5 and buf:  # duplicate a range
                end = min(len(buf), pos + rng.randint(1, 32))
                buf[pos:pos] = buf[pos:end]
            else:  # splice in a piece of another golden body
                other = rng.choice(self.golden_bodies)
                a = rng.randrange(len(other))
                buf[pos:pos] = other[a : a + rng.randint(1, 64)]
        return bytes(buf)

    def _rid(self) -> int:
        rng = self.rng
        if rng.random() < 0.1:
            return rng.choice(self.rids)  # a duplicate id (maybe still in flight)
        rid = rng.choice((rng.randrange(1, 1 << 20), rng.randrange(1 << 64), 0, 1 << 63))
        self.rids.append(rid)
        if len(self.rids) > 64:
            del self.rids[:32]
        return rid

    def _text(self, limit: int = 40) -> str:
        rng = self.rng
        pick = rng.randrange(5)
        if pick == 0:
            return ""
        if pick == 1:
            return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randint(1, limit)))
        if pick == 2:
            return "".join(chr(rng.choice((rng.randrange(0x80, 0xD800),
                                           rng.randrange(0xE000, 0x110000))))
                           for _ in range(rng.randint(1, limit)))  # fmt: skip
        if pick == 3:
            return rng.choice(("default", "suites", "x" * 300, "\u202e", "a\nb", "vastar-ext"))
        return str(rng.randrange(1 << 64))

    def weird_request(self) -> bytes:
        """A well-formed ExecuteRequest frame with strange fields."""
        rng = self.rng
        method = rng.choice(_METHODS)
        if self.sink is not None and rng.random() < 0.6:
            url = self.sink + rng.choice(_PATHS)
        else:
            url = rng.choice(("http://169.254.169.254/latest/meta-data/", "ftp://h/x",
                              "http://[::1", "https://example.invalid/", "http://h:99999/",
                              "", "javascript:alert(1)", "http://" + "a" * 300 + "/",
                              "http://user:pw@127.0.0.1:1/"))  # fmt: skip
        headers = {self._text(12) or "X": self._text(60) for _ in range(rng.randint(0, 6))}
        if rng.random() < 0.2:
            headers["Content-Length"] = str(rng.choice((-1, 0, 10**12)))
        if rng.random() < 0.2:
            headers["Transfer-Encoding"] = "chunked"
        body: Optional[str] = rng.choice((None, "", self._text(200), "x" * 70_000))
        now = int(time.time() * 1000)
        deadline = rng.choice((0, 1, now - 1000, now + rng.randint(1, 3000), (1 << 64) - 1))
        ext = None
        if rng.random() < 0.3:
            ext = [("vastar-ext", rng.choice(("stream", "stream,zz", "", ",,,")))]
        if rng.random() < 0.1:
            ext = (ext or []) + [("vastar-token", self._text(30))]
        tenant = self._text() or "suites"
        try:
            payload = _codec_py.encode_http_request_payload(method, url, headers, body)
        except Exception:
            payload = b'{"method":"GET"}'
        if rng.random() < 0.15:
            payload = self.mutate(payload, 2)
        connector, op = ("http", "request") if rng.random() < 0.9 else (self._text(), self._text())
        try:
            return _codec_py.encode_execute_request(self._rid(), tenant, None, self._text(),
                                                    connector, op, deadline % (1 << 64),
                                                    payload, ext)  # fmt: skip
        except Exception:
            return _codec_py.encode_execute_request(self._rid(), "t", None, None, "http",
                                                    "request", 0, payload)  # fmt: skip

    def huge(self) -> bytes:
        """A frame near the 10 MiB cap, or with a huge KeyValue list or nesting."""
        rng = self.rng
        pick = rng.randrange(5)
        if pick == 0:  # a 9 MB payload that is not JSON
            payload = rng.randbytes(64) * (9 * 1024 * 1024 // 64)
            return _codec_py.encode_execute_request(self._rid(), "t", None, None, "http",
                                                    "request", 0, payload)  # fmt: skip
        if pick == 1:  # the 4096 KeyValue entries a frame may carry (over max_frame_headers)
            pairs = [(f"k{i}", "v" * 8) for i in range(4096)]
            return frame(0, kv_request(pairs))
        if pick == 2:  # JSON nested 500,000 deep
            payload = b'{"method":"GET","url":"http://h/","headers":' + b"[" * 500_000 + b"}"
            return _codec_py.encode_execute_request(self._rid(), "t", None, None, "http",
                                                    "request", 0, payload)  # fmt: skip
        if pick == 3:  # 60,000 HTTP headers in the payload
            hdrs = ",".join(f'"h{i}":"v"' for i in range(60_000))
            payload = ('{"method":"GET","url":"http://h/","headers":{' + hdrs + "}}").encode()
            return _codec_py.encode_execute_request(self._rid(), "t", None, None, "http",
                                                    "request", 0, payload)  # fmt: skip
        return frame(0, shared_string_request(2 * 1024 * 1024))  # one string, five fields

    # ------------------------------------------------------------------ the draws
    def item(self) -> bytes:
        """One frame that keeps the byte stream in sync (its length field is right)."""
        rng = self.rng
        self.drawn += 1
        if self.huge_every and self.drawn % self.huge_every == 0:
            return self.huge()
        pick = rng.randrange(100)
        if pick < 30:
            return self.weird_request()
        if pick < 55:  # a mutated golden frame, re-framed
            g = rng.choice(self.golden)
            mtype = g[4] if rng.random() < 0.8 else rng.randrange(256)
            return frame(mtype, self.mutate(g[5:]))
        if pick < 63:  # a golden body cut short, re-framed
            body = rng.choice(self.golden_bodies)
            return frame(0, body[: rng.randrange(len(body))])
        if pick < 71:  # random bytes as the body of a random message type
            return frame(rng.randrange(256), rng.randbytes(rng.randint(0, 300)))
        if pick < 76:  # amplification shapes
            shape = rng.randrange(3)
            if shape == 0:
                return frame(0, kv_request([("k", "v" * 3000)], repeat_first=3000))
            if shape == 1:
                return frame(0, kv_request([("k", "v")], repeat_first=5000))
            return frame(0, shared_string_request(rng.randint(1000, 100_000)))
        if pick < 84:
            return _codec_py.encode_health_check()
        if pick < 92:
            return _codec_py.encode_cancel_request(rng.choice(self.rids))
        if pick < 96:  # a golden frame as it was (requests to the golden URLs: denied)
            return rng.choice(self.golden)
        return frame(rng.randrange(8, 256), b"")  # an unknown message type

    def tail(self) -> bytes:
        """Bytes that break the framing: the last thing sent on a connection."""
        rng = self.rng
        self.drawn += 1
        pick = rng.randrange(6)
        if pick == 0:  # an absurd or zero length field
            length = rng.choice((0, MAX_PAYLOAD_SIZE + 1, 0x7FFFFFFF, 0xFFFFFFFF))
            return struct.pack(">I", length) + rng.randbytes(rng.randint(0, 16))
        if pick == 1:  # a frame cut short (the rest never comes)
            g = rng.choice(self.golden)
            return g[: rng.randrange(1, len(g))]
        if pick == 2:  # random bytes, no framing at all
            return rng.randbytes(rng.randint(1, 2000))
        if pick == 3:  # a length field claiming the whole 10 MiB, then a little
            return struct.pack(">IB", MAX_PAYLOAD_SIZE, 0) + rng.randbytes(100)
        if pick == 4:  # half a length field
            return rng.randbytes(rng.randint(1, 3))
        return self.mutate(rng.choice(self.golden))  # a golden frame, length field and all

    def body(self) -> bytes:
        """A FlatBuffers body (no frame header) for the in-process decoder fuzzers."""
        rng = self.rng
        pick = rng.randrange(10)
        if pick < 6:
            return self.mutate(rng.choice(self.golden_bodies))
        if pick < 7:
            b = rng.choice(self.golden_bodies)
            return b[: rng.randrange(len(b) + 1)]
        if pick < 8:
            return rng.randbytes(rng.randint(0, 200))
        if pick < 9:
            return self.weird_request()[5:]
        return self.mutate(kv_request([("k", "v" * rng.randint(0, 50))],
                                      repeat_first=rng.randint(0, 40)), 2)  # fmt: skip


def http_payload_doc(rng: random.Random) -> bytes:
    """A JSON-ish HTTP request payload (method, url, headers, body), often broken."""
    doc = {"method": rng.choice(_METHODS), "url": rng.choice(("http://h/", "https://x/y?z=1")),
           "headers": {"a": "b", "\u00e9": "\ud7ff"}, "body": "x" * rng.randint(0, 30)}  # fmt: skip
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    return Hostile(rng.randrange(1 << 30)).mutate(text, rng.randint(0, 4))


Decoder = Callable[[bytes], object]
