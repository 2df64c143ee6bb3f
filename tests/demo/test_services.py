"""EmbeddedServices: bounded startup, clear failures, and nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vastar_fast import RuntimeClient, RuntimeConfig
from vastar_fast.services import EmbeddedServices, ServiceError, child_environment

from .helpers import running, wait_gone

pytestmark = pytest.mark.timeout(120)


def fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_start_and_stop_both_services() -> None:
    svc = EmbeddedServices(ttft_ms=0, token_delay_ms=0)
    with svc:
        assert svc.simulator_url is not None and svc.runtime_socket is not None
        pids = svc.pids
        assert len(pids) == 2 and all(running(p) for p in pids)
        with RuntimeClient(RuntimeConfig(socket_path=svc.runtime_socket)) as client:
            assert client.health_check().healthy
        tmpdir = svc.tmpdir
        assert tmpdir is not None and os.path.isdir(tmpdir)
    assert wait_gone(pids) == []
    assert not os.path.exists(tmpdir)
    svc.stop()  # idempotent


def test_a_service_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "echo 'boom: cannot start' >&2; exit 3")
    svc = EmbeddedServices(simulator=False, python=python, startup_timeout_s=10)
    with pytest.raises(ServiceError) as info:
        svc.start()
    text = str(info.value)
    assert "exited with status 3" in text and "boom: cannot start" in text
    assert svc.tmpdir is None and svc.pids == []


def test_a_service_that_never_gets_ready_times_out_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    python = fake_python(tmp_path, f"echo $$ > {pid_file}; exec sleep 60")
    svc = EmbeddedServices(simulator=False, python=python, startup_timeout_s=1.0)
    with pytest.raises(ServiceError, match="not ready within the startup timeout"):
        svc.start()
    pid = int(pid_file.read_text())
    assert wait_gone([pid]) == []


def test_child_environment_drops_endpoint_overrides_and_keeps_the_package_importable() -> None:
    env = child_environment({"VASTAR_SOCKET_PATH": "/x", "VASTAR_USE_TCP": "1", "PYTHONPATH": "/a"})
    assert "VASTAR_SOCKET_PATH" not in env and "VASTAR_USE_TCP" not in env
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert "/a" in parts
    import vastar_fast

    root = os.path.dirname(os.path.dirname(os.path.abspath(vastar_fast.__file__)))
    assert parts[0] == root
