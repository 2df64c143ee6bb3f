"""The runtime's request path has a compiled and a pure twin, one source for both.

The daemon subprocess runs the twin under test (``VASTAR_FAST_NO_EXTENSIONS``); these
tests prove the switch, that the compiled twin is what a normal install serves, and that
the pure twin imports and works where Cython itself is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vastar_fast.runtime import engine

from .helpers import Daemon, child_env

TWINNED = ("breaker", "http1", "ipc", "pipeline", "policy", "shaping", "shared", "upstream")


def _probe(env_extra: dict, block_cython: bool = False) -> dict:
    code = (
        """
import json, sys
if BLOCK:
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "cython" or name.split(".")[0] == "Cython":
                raise ImportError("blocked for the test: " + name)
    sys.meta_path.insert(0, Block())
from vastar_fast.runtime import engine
mods = {n: getattr(engine, n).__name__ for n in %r}
shim = getattr(getattr(engine.pipeline, "cython", None), "__name__", None)
print(json.dumps({"accelerated": engine.ACCELERATED, "mods": mods, "cython": shim}))
""".replace("BLOCK", str(block_cython))
        % (TWINNED,)
    )
    env = child_env()
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_selector_follows_the_environment(implementation: str) -> None:
    pure = _probe({"VASTAR_FAST_NO_EXTENSIONS": "1"})
    assert pure["accelerated"] is False
    assert pure["mods"] == {n: f"vastar_fast.runtime.{n}" for n in TWINNED}
    normal = _probe({"VASTAR_FAST_NO_EXTENSIONS": "0"})
    if not normal["accelerated"]:
        pytest.skip("compiled runtime twins not built (python setup.py build_ext --inplace)")
    assert normal["mods"] == {n: f"vastar_fast.runtime._compiled.{n}" for n in TWINNED}


def test_this_process_serves_the_twin_under_test(implementation: str) -> None:
    if implementation == "compiled" and not engine.ACCELERATED:
        pytest.skip("compiled runtime twins not built")
    assert engine.ACCELERATED == (implementation == "compiled")


def test_pure_twin_works_without_cython_installed() -> None:
    """The pure twin's sources import ``cython``; without it they use the shim."""
    probe = _probe({"VASTAR_FAST_NO_EXTENSIONS": "1"}, block_cython=True)
    assert probe["cython"] == "vastar_fast._cython_shim"
    assert probe["accelerated"] is False


def test_daemon_without_cython_serves_requests(tmp_path: Path, upstream: object) -> None:
    """A whole daemon on the pure twin with Cython unimportable answers a request."""
    from vastar_fast.client.sync import RuntimeClient
    from vastar_fast.types import HTTPRequest, RuntimeConfig

    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cython' or name.split('.')[0] == 'Cython':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), old]))
    old_twin = os.environ.get("VASTAR_FAST_NO_EXTENSIONS")
    os.environ["VASTAR_FAST_NO_EXTENSIONS"] = "1"
    try:
        with Daemon(tmp_path / "rt", log_level="WARNING") as d:
            with RuntimeClient(RuntimeConfig(socket_path=d.socket_path)) as c:
                r = c.execute_http(HTTPRequest("GET", upstream.base + "/small"))  # type: ignore[attr-defined]
    finally:
        for name, value in (("PYTHONPATH", old), ("VASTAR_FAST_NO_EXTENSIONS", old_twin)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert r.status_code == 200 and r.body == b"hello, world!"
