"""The 35 KB SSE response decode against the released SDK's own code.

    python -m vastar_fast.benchmarks.released_sdk_decode --released-sdk ../shared/peers/sdk-python
    python -m vastar_fast.benchmarks.released_sdk_decode --released-python /path/to/sdk-venv/bin/python

The released side runs the real ``RuntimeClient._process_frame`` of the released
``vastar_connector_sdk`` (FlatBuffers accessors, ``bytes(PayloadAsNumpy())``,
``.decode()``, ``json.loads``, ``.encode()`` of the body) in its own process, with the
SDK directory on its PYTHONPATH and whatever interpreter ``--released-python`` names
(a venv with flatbuffers and numpy; by default this one), so it cannot mask what
vastar_fast imports.  Our side decodes the same frame bytes (frame decode + response
payload decode, what the client does per response) with the compiled twin on each
JSON-unescaper path this CPU allows, then the pure twin.  Every result is checked
against the released one (status, headers, body) before timing.  Figures: medians of
``--repeat`` runs of ``--number`` calls each; ratios are released / ours.

The SDK path may also come from VASTAR_RELEASED_SDK; without one the script says so and
exits 0 (a clean checkout has no released SDK).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from typing import Any, Callable, Dict, List, Optional

# Importing numpy starts OpenBLAS's thread pool, whose threads keep two shared cores
# busy for a while and halve the speed of whatever is timed next (measured: the pure
# decode 97 -> 244 us right after `import numpy`).  The decode never calls BLAS, so both
# processes run it single-threaded; test_bench_codec below imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from vastar_fast.benchmarks.test_bench_codec import _sse_response_body

# Runs in the released SDK's process: time _process_frame on the frame in argv[1].
_RELEASED = r"""
import hashlib, json, statistics, sys, timeit
from vastar_connector_sdk.runtime_client import RuntimeClient
import numpy
frame = open(sys.argv[1], "rb").read()
number, repeat = int(sys.argv[2]), int(sys.argv[3])
process = RuntimeClient._process_frame  # does not touch self
r = process(None, frame)
runs = timeit.repeat(lambda: process(None, frame), number=number, repeat=repeat)
print(json.dumps({
    "median_s": statistics.median(runs) / number,
    "samples_s": [r / number for r in runs],
    "status": r.status_code, "headers": r.headers, "body_len": len(r.body),
    "body_sha256": hashlib.sha256(r.body).hexdigest(),
    "numpy": numpy.__version__, "python": sys.version.split()[0],
}))
"""


def _find_sdk(arg: Optional[str]) -> Optional[str]:
    for candidate in (
        arg,
        os.environ.get("VASTAR_RELEASED_SDK"),
    ):
        if candidate and os.path.isfile(
            os.path.join(candidate, "vastar_connector_sdk", "runtime_client.py")
        ):
            return os.path.abspath(candidate)
    return None


def _samples(fn: Callable[[], Any], number: int, repeat: int) -> List[float]:
    """Seconds per call, one value per run of ``number`` calls."""
    return [t / number for t in timeit.repeat(fn, number=number, repeat=repeat)]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--released-sdk", help="directory holding vastar_connector_sdk/")
    ap.add_argument(
        "--released-python",
        default=sys.executable,
        help="interpreter for the released side (needs flatbuffers, numpy)",
    )
    ap.add_argument("--number", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="few calls (a smoke run)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample here")
    args = ap.parse_args(argv)
    if args.quick:
        args.number, args.repeat = 40, 5
    sdk = _find_sdk(args.released_sdk)
    if sdk is None:
        print("released SDK not found (--released-sdk or VASTAR_RELEASED_SDK): nothing to compare")
        return 0

    body = _sse_response_body()
    frame = bytes([1]) + body  # what _process_frame receives: type byte + FlatBuffers
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(frame)
    try:
        env = dict(os.environ, PYTHONPATH=sdk)
        env.pop("PYTHONSTARTUP", None)
        proc = subprocess.run(
            [
                args.released_python,
                "-c",
                _RELEASED,
                f.name,
                str(args.number // 4 or 1),
                str(args.repeat),
            ],
            env=env,
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return 1
    released: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])

    from vastar_fast.protocol import _codec_py

    try:
        from vastar_fast.protocol import _codec_c
    except ImportError:
        _codec_c = None  # type: ignore[assignment]

    def decoder(codec: Any) -> Callable[[], Any]:
        def decode() -> Any:
            r = codec.decode_execute_response(body)
            return codec.decode_http_response_payload(r.payload)

        return decode

    rows = []
    variants: List[tuple] = []
    if _codec_c is not None:
        before = _codec_c._simd()
        for path in _codec_c._simd_paths():
            variants.append((f"compiled-{path}", _codec_c, path))
    variants.append(("pure", _codec_py, None))
    for name, codec, path in variants:
        if path:
            _codec_c._simd(path)
        fn = decoder(codec)
        got = fn()
        same = (
            got.status_code == released["status"]
            and dict(got.headers) == released["headers"]
            and len(got.body) == released["body_len"]
            and hashlib.sha256(got.body).hexdigest() == released["body_sha256"]
        )
        if not same:
            print(f"{name}: result differs from the released SDK's", file=sys.stderr)
            return 1
        samples = _samples(fn, args.number if path else args.number // 4 or 1, args.repeat)
        rows.append((name, statistics.median(samples), samples))
    if _codec_c is not None:
        _codec_c._simd(before)

    base = released["median_s"]
    print(
        f"35 KB SSE response decode ({len(body)} bytes frame, body {released['body_len']} bytes); "
        f"released SDK on Python {released['python']}, numpy {released['numpy']}"
    )
    print(f"{'variant':<20} {'median':>10} {'vs released SDK':>16}")
    print(f"{'released SDK':<20} {base * 1e6:8.2f} us {1.0:15.1f}x")
    for name, med, _ in rows:
        print(f"{name:<20} {med * 1e6:8.2f} us {base / med:15.1f}x")
    if args.json:
        out = {
            "frame_bytes": len(body),
            "released": released,
            "variants": {name: {"median_s": med, "samples_s": s} for name, med, s in rows},
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
