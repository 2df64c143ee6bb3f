"""Frame-level tools of the verification suites.

:class:`Wire` is one asyncio connection to a runtime that decodes every frame it
receives with the codec alone (no client logic: nothing matched, merged or dropped),
so a suite can check what the runtime really sent: one terminal ExecuteResponse per
request id, stream frames only between a request's StreamStart and its terminal
answer, nothing for ids nobody sent. :func:`proc_stats` samples a process's RSS and
open file descriptors from ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Set, Tuple

from vastar_fast.protocol import codec
from vastar_fast.protocol.frames import EXT_HEADER, EXT_STREAM

STREAM_EXT = [(EXT_HEADER, EXT_STREAM)]

_RESPONSE, _HEALTH, _CREDIT, _START, _CHUNK = 1, 3, 4, 5, 6


class Wire:
    """One connection; every received frame decoded and filed by request id."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, strict: bool = True
    ) -> None:
        self.reader = reader
        self.strict = strict
        """Check stream-frame order per request id (off for hostile input, whose ids
        repeat)."""
        self.writer = writer
        self.buffer = codec.FrameBuffer()
        self.sent: Dict[int, bool] = {}
        """Request ids sent on this connection -> whether they opted in to streaming."""
        self.terminal: Dict[int, List[Any]] = defaultdict(list)
        self.starts: Dict[int, List[Any]] = defaultdict(list)
        self.chunks: Dict[int, List[bytes]] = defaultdict(list)
        self.health: List[Any] = []
        self.credits: List[Any] = []
        self.problems: List[str] = []
        """Frame-order violations seen as they arrived (checked by :meth:`violations`)."""
        self.frames_in = 0
        self.eof = asyncio.Event()
        self._waiters: Dict[int, asyncio.Future[Any]] = {}
        self._health_waiters: List[asyncio.Future[Any]] = []
        self._reader_task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, path: str, strict: bool = True) -> Wire:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 22)
        return cls(reader, writer, strict)

    # ------------------------------------------------------------------ receiving
    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(1 << 18)
                if not data:
                    break
                self.buffer.feed(data)
                for mtype, body in self.buffer.frames():
                    self.frames_in += 1
                    self._on_frame(mtype, body)
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a frame our codec cannot read is a finding too
            self.problems.append(f"unreadable frame from the runtime: {exc!r}")
        finally:
            self.eof.set()
            for fut in list(self._waiters.values()) + self._health_waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError("the runtime closed the connection"))

    def _on_frame(self, mtype: int, body: bytes) -> None:
        if mtype == _RESPONSE:
            r = codec.decode_execute_response(body)
            rid = r.request_id
            self.terminal[rid].append(r)
            fut = self._waiters.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(r)
        elif mtype == _START:
            s = codec.decode_stream_start(body)
            rid = s.request_id
            if not self.strict:
                pass
            elif self.terminal.get(rid):
                self.problems.append(f"StreamStart for {rid} after its terminal answer")
            elif self.starts.get(rid):
                self.problems.append(f"a second StreamStart for {rid}")
            elif not self.sent.get(rid, False):
                self.problems.append(f"StreamStart for {rid}, which did not ask to stream")
            self.starts[rid].append(s)
        elif mtype == _CHUNK:
            c = codec.decode_stream_chunk(body)
            rid = c.request_id
            if not self.strict:
                pass
            elif self.terminal.get(rid):
                self.problems.append(f"StreamChunk for {rid} after its terminal answer")
            elif not self.starts.get(rid):
                self.problems.append(f"StreamChunk for {rid} before its StreamStart")
            self.chunks[rid].append(c.data)
        elif mtype == _HEALTH:
            h = codec.decode_health_response(body)
            self.health.append(h)
            if self._health_waiters:
                fut = self._health_waiters.pop(0)
                if not fut.done():
                    fut.set_result(h)
        elif mtype == _CREDIT:
            self.credits.append(codec.decode_credit_update(body))
        else:
            self.problems.append(f"unexpected message type {mtype} from the runtime")

    # ------------------------------------------------------------------ sending
    def send_request(self, rid: int, frame: bytes, stream: bool) -> asyncio.Future[Any]:
        """Send one ExecuteRequest frame; the future gets its terminal answer."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent[rid] = stream
        self._waiters[rid] = fut
        self.writer.write(frame)
        return fut

    async def health_check(self, timeout: float = 10.0) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._health_waiters.append(fut)
        self.writer.write(codec.encode_health_check())
        return await asyncio.wait_for(fut, timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        self._reader_task.cancel()
        try:
            await self._reader_task
        except (asyncio.CancelledError, Exception):
            pass

    # ------------------------------------------------------------------ checking
    def violations(self) -> List[str]:
        """Every way this connection's frames break "exactly one terminal answer per
        request id, for ids that were sent, stream frames in order"."""
        out = list(self.problems)
        for rid in self.sent:
            n = len(self.terminal.get(rid, ()))
            if n != 1:
                out.append(f"request {rid}: {n} terminal answers")
        for rid in self.terminal:
            if rid not in self.sent:
                out.append(f"terminal answer for request {rid}, never sent on this connection")
        for rid in self.starts:
            if rid not in self.sent:
                out.append(f"StreamStart for request {rid}, never sent on this connection")
        return out


def http_frame(
    rid: int,
    method: str,
    url: str,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[str] = None,
    stream: bool = False,
    timeout_ms: int = 20000,
    tenant: str = "suites",
) -> bytes:
    deadline = int(time.time() * 1000) + timeout_ms
    return codec.encode_http_request_frame(rid, tenant, "ws", None, deadline, method, url,
                                           headers, body, STREAM_EXT if stream else None)  # fmt: skip


def response_payload(r: Any) -> Dict[str, Any]:
    """The HTTP answer (status_code, headers, body) of a successful terminal frame."""
    return dict(json.loads(r.payload))


# ---------------------------------------------------------------------- process stats
def proc_stats(pid: int) -> Tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a live process, from /proc."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples a process's RSS and fds every ``every`` seconds on the running loop."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.every = every
        self.samples: List[Tuple[float, int, int]] = []
        self._task: Optional[asyncio.Task[None]] = None

    def sample(self) -> Tuple[int, int]:
        rss, fds = proc_stats(self.pid)
        self.samples.append((time.monotonic(), rss, fds))
        return rss, fds

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except OSError:  # the process is gone: the suite's own checks say so
                return
            await asyncio.sleep(self.every)

    def start(self) -> Sampler:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def peak_rss_mb(self) -> float:
        return max(s[1] for s in self.samples) / 1024

    @property
    def peak_fds(self) -> int:
        return max(s[2] for s in self.samples)


def live_ids(wires: List[Wire]) -> Set[int]:
    return {rid for w in wires for rid in w.sent}
