"""Helpers for running ``vastar demo`` in a subprocess and checking what it left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

DEMO = [sys.executable, "-m", "vastar_fast.cli", "demo"]


def demo_env(**changes: Optional[str]) -> Dict[str, str]:
    """The test's environment (PYTHONPATH included), minus variables that change the mode."""
    env = dict(os.environ)
    for name in (
        "USE_SIMULATOR",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "VASTAR_SOCKET_PATH",
        "VASTAR_USE_TCP",
        "NO_COLOR",
    ):
        env.pop(name, None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_demo(
    *args: str, timeout: float = 120.0, **env: Optional[str]
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DEMO, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=demo_env(**env),
        timeout=timeout,
    )


def pids_in(text: str) -> List[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)", text)]


def socket_in(text: str) -> Optional[str]:
    found = re.search(r"unix socket (\S+\.sock)", text)
    return found.group(1) if found else None


def running(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def wait_gone(pids: List[int], timeout: float = 10.0) -> List[int]:
    """The pids still running after ``timeout`` (bounded poll)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if running(p)]
    return alive


class LiveDemo:
    """A demo subprocess whose stdout is collected by a thread, for signal tests."""

    def __init__(self, *args: str, **env: Optional[str]) -> None:
        self.proc = subprocess.Popen(
            [*DEMO, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=demo_env(**env),
        )
        self.out: List[str] = []
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read(1)
            if not chunk:
                return
            self.out.append(chunk)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout:
                return True
            if self.proc.poll() is not None:
                return text in self.stdout
            time.sleep(0.02)
        return False

    def finish(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()
        return code
