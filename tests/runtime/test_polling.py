"""``vastar runtime --spin-us``: the loop polls for its window after request events, then
sleeps; how the window is chosen (option, config, environment, default) and refused."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vastar_fast.runtime.__main__ import _spin_us, build_parser
from vastar_fast.runtime.config import (
    DEFAULT_SPIN_US,
    MAX_SPIN_US,
    ConfigError,
    RuntimeSettings,
    settings_from_mapping,
)
from vastar_fast.runtime.workers import default_spin_us, usable_cpus

from .helpers import Daemon, Raw, child_env, payload
from .upstream import Upstream


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_window_comes_from_option_then_config_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VASTAR_RUNTIME_SPIN_US", raising=False)
    plain = RuntimeSettings()
    assert plain.spin_us is None  # an embedded RuntimeServer: no polling
    assert default_spin_us() == (DEFAULT_SPIN_US if usable_cpus() >= 2 else 0)
    assert _spin_us(args(), plain) == default_spin_us()
    monkeypatch.setenv("VASTAR_RUNTIME_SPIN_US", "40")
    assert _spin_us(args(), plain) == 40
    from_file = settings_from_mapping({"spin_us": 0})
    assert _spin_us(args(), from_file) == 0  # the file wins over the environment
    assert _spin_us(args("--spin-us", "7"), from_file) == 7  # the option over both
    for bad, needle in (("x", "not a whole number"), ("-1", "out of range")):
        monkeypatch.setenv("VASTAR_RUNTIME_SPIN_US", bad)
        with pytest.raises(ValueError, match=needle) as info:
            _spin_us(args(), plain)
        assert "$VASTAR_RUNTIME_SPIN_US" in str(info.value)
    with pytest.raises(ValueError, match="--spin-us 100001 is out of range"):
        _spin_us(args("--spin-us", str(MAX_SPIN_US + 1)), plain)


@pytest.mark.parametrize("value", [-1, MAX_SPIN_US + 1, "fast", 1.5])
def test_a_bad_spin_us_in_the_config_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"spin_us": value})
    assert "<dict>: spin_us: " in str(info.value)


def test_a_bad_spin_us_option_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vastar_fast.runtime", "--socket", str(tmp_path / "s"),
         "--spin-us", "-5"], capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert proc.returncode == 2 and "--spin-us -5 is out of range" in proc.stderr, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_daemon_polls_while_it_pays_and_sleeps_when_idle(
    tmp_path: Path, upstream: Upstream
) -> None:
    """With a 40 ms window, twelve requests to an upstream that answers in 20 ms, 60 ms
    apart: the daemon polls while each waits for its answer (about 12 x 20 ms of CPU),
    not after the answers (the client's next request comes later than the window), and
    nothing once requests stop. Without a window: a few milliseconds in all."""
    used = {}
    url = upstream.base + "/slow?delay=0.02"
    for window in (40_000, 0):
        with Daemon(tmp_path / str(window), {}, log_level="WARNING",
                    extra=["--spin-us", str(window)]) as d:  # fmt: skip
            assert d.info["spin_us"] == window
            pid = d.info["pid"]
            with Raw(d.socket_path) as raw:
                for _ in range(3):  # warm up; the daemon learns the gaps
                    assert payload(raw.response(raw.http("GET", url)))
                    time.sleep(0.06)
                before = cpu_seconds(pid)
                for _ in range(12):
                    assert payload(raw.response(raw.http("GET", url)))
                    time.sleep(0.06)
                used[window] = cpu_seconds(pid) - before
                time.sleep(0.1)  # the last window ends
                before = cpu_seconds(pid)
                time.sleep(0.5)
                idle = cpu_seconds(pid) - before
            assert idle < 0.1, f"spin_us {window}: {idle:.3f} s of CPU in 0.5 s idle"
    # ~0.24 s while waiting, against 12 x 60 ms = 0.72 s if it polled after the answers
    # too; generous bounds for a loaded machine (polling can be preempted, not inflated)
    assert 0.1 < used[40_000] < 0.5, used
    assert used[0] < 0.08, used
