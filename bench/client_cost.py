"""The client's own cost per round trip, as CPU time of the client process.

Wall-clock round trips through a runtime are dominated by the runtime and the
scheduler; CPU time spent in the client process is what the client itself costs.
``raw`` (pre-encoded frame, one send, receive until complete, no decoding) is the floor
every client pays in syscalls; a client's own cost is its CPU time minus raw's.

    python bench/client_cost.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import canned_runtime  # noqa: E402
from released_client import ReleasedStyleClient, encode_request  # noqa: E402
from vastar_fast import ACCELERATED, HTTPRequest, RuntimeClient, RuntimeConfig  # noqa: E402

URL = "http://127.0.0.1:8088/small"


def cpu_per_call(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with canned_runtime.running() as path:
        frame = encode_request(1, "openai-connector", "default", "GET", URL, {}, b"")
        raw, raw_once = canned_runtime.raw_client(path, frame)

        ours = RuntimeClient(
            RuntimeConfig(tenant_id="openai-connector", workspace_id="default", socket_path=path)
        )
        ours.connect()
        request = HTTPRequest(method="GET", url=URL)
        released = ReleasedStyleClient(path)
        cases: Dict[str, Callable[[], object]] = {
            "raw": raw_once,
            "vastar_fast": lambda: ours.execute_http(request),
            "released": lambda: released.execute_http("GET", URL, {}, b""),
        }
        results: Dict[str, List[float]] = {k: [] for k in cases}
        for _ in range(args.repeat):
            for name, fn in cases.items():
                cpu_per_call(fn, 500)  # warm
                results[name].append(cpu_per_call(fn, args.requests))
        med = {k: statistics.median(v) for k, v in results.items()}
        own = {k: med[k] - med["raw"] for k in ("vastar_fast", "released")}
        print(f"compiled twins live: {ACCELERATED}")
        print(f"{'client':<14}{'CPU us/request':>16}{'own cost us':>14}")
        for k in cases:
            extra = f"{own[k] * 1e6:14.2f}" if k in own else ""
            print(f"{k:<14}{med[k] * 1e6:16.2f}{extra}")
        print(f"own cost, vastar_fast / released: {own['vastar_fast'] / own['released']:.3f}")
        ours.close()
        released.close()
        raw.close()


if __name__ == "__main__":
    main()
