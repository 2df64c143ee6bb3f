"""The services launcher (vastar_fast.services): readiness, bounded start, CPU pinning,
stop signals, cleanup at exit and on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vastar_fast.services import (
    ServiceError,
    ServiceProcess,
    canned_runtime_service,
    child_environment,
    free_port,
    pinned,
    ready_file_ready,
    tcp_ready,
)

from .helpers import running, wait_gone

pytestmark = pytest.mark.timeout(120)

LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
time.sleep(60)
"""


def python(code: str, *args: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def test_ready_when_the_port_accepts_and_gone_after_stop(tmp_path: Path) -> None:
    port = free_port()
    svc = ServiceProcess("listener", python(LISTEN, str(port)), log_path=str(tmp_path / "l.log"),
                         ready=tcp_ready("127.0.0.1", port), startup_timeout_s=20)  # fmt: skip
    with svc:
        assert svc.alive() and running(svc.pid)
        pid = svc.pid
    assert wait_gone([pid]) == [] and svc.returncode == -signal.SIGTERM
    assert "listening" in svc.log_text()  # stdout goes to the log too
    assert svc.stop() == -signal.SIGTERM  # idempotent


def test_a_stale_ready_file_of_another_pid_does_not_count(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps({"pid": 1}))
    svc = ServiceProcess("sleeper", python("import time; time.sleep(60)"),
                         log_path=str(tmp_path / "s.log"), ready=ready_file_ready(str(ready)),
                         startup_timeout_s=1.0)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"not ready within the startup timeout \(1 s\)"):
        svc.start()
    assert time.monotonic() - started < 15
    assert svc.returncode is not None  # stopped, not left behind


def test_a_service_that_ignores_its_stop_signal_is_killed(tmp_path: Path) -> None:
    code = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring", flush=True)
    time.sleep(60)
    """
    svc = ServiceProcess("stubborn", python(code), log_path=str(tmp_path / "x.log"),
                         ready=lambda p: "ignoring" in p.log_text(), stop_grace_s=0.5)  # fmt: skip
    svc.start()
    assert svc.stop() == -signal.SIGKILL


def test_the_stop_signal_is_the_services_own(tmp_path: Path) -> None:
    marker = tmp_path / "got"
    code = f"""
    import signal, sys, time
    def quit(signum, frame):
        open({str(marker)!r}, "w").write(str(signum)); sys.exit(0)
    signal.signal(signal.SIGQUIT, quit)
    print("up", flush=True)
    time.sleep(60)
    """
    svc = ServiceProcess("nginx-like", python(code), log_path=str(tmp_path / "q.log"),
                         ready=lambda p: "up" in p.log_text(), stop_signal=signal.SIGQUIT)  # fmt: skip
    with svc:
        pass
    assert svc.returncode == 0 and marker.read_text() == str(int(signal.SIGQUIT))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_cpu_pinning_of_the_child_and_of_the_caller(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    code = "import os, time; print(sorted(os.sched_getaffinity(0)), flush=True); time.sleep(60)"
    svc = ServiceProcess("pinned", python(code), log_path=str(tmp_path / "p.log"),
                         ready=lambda p: "]" in p.log_text(), cpus={cpu})  # fmt: skip
    with svc:
        assert os.sched_getaffinity(svc.pid) == {cpu}
        assert svc.log_text().strip() == str([cpu])
    before = os.sched_getaffinity(0)
    with pinned({cpu}) as done:
        assert done and os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before


PARENT = """
import sys, time
from vastar_fast.services import ServiceProcess, signals_raise
# The child takes half a second to stop; either way (the atexit hook, or the with block
# on SIGTERM) it must be gone once the parent has exited.
CHILD = (
    "import signal, sys, time\\n"
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(0)))\\n"
    "print('ready', flush=True)\\n"
    "time.sleep(60)\\n"
)
svc = ServiceProcess("child", [sys.executable, "-c", CHILD], log_path=sys.argv[1],
                     ready=lambda p: "ready" in p.log_text())
mode = sys.argv[2]
if mode == "exit":  # started, never stopped: stopped at exit all the same
    svc.start()
    print(svc.pid, flush=True)
    sys.exit(0)
with signals_raise(), svc:  # SIGTERM unwinds the with block, which stops the child
    print(svc.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["exit", "sigterm"])
def test_children_are_stopped_at_exit_and_on_sigterm(tmp_path: Path, mode: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "c.log"), mode],
                              stdout=subprocess.PIPE, text=True, env=child_environment())  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    if mode == "sigterm":
        assert running(child)
        parent.send_signal(signal.SIGTERM)
    code = parent.wait(30)
    assert not running(child)  # already stopped and reaped by the parent, not later
    if mode == "sigterm":
        assert code != 0  # Terminated escaped the with block, after stopping the child
    else:
        assert code == 0


def test_the_canned_runtime_answers_through_the_launcher(tmp_path: Path) -> None:
    from vastar_fast.benchmarks.canned_runtime import raw_client
    from vastar_fast.benchmarks.released_client import encode_request

    with canned_runtime_service(str(tmp_path)) as svc:
        assert svc.socket_path is not None and svc.info["pid"] == svc.pid
        frame = encode_request(7, "t", "w", "GET", "http://127.0.0.1:1/small", {}, b"")
        sock, once = raw_client(svc.socket_path, frame)
        try:
            assert once() > 100
        finally:
            sock.close()
