"""The package's loggers (``vastar_fast._log``): ``import vastar_fast`` leaves logging
unimported, yet every record reaches the application's configuration, however and
whenever it was made, from the real logger ``logging.getLogger(name)`` returns, naming
its real caller, and nothing is printed when the application configured nothing.
Each case runs in a fresh interpreter, where logging is not imported yet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import vastar_fast

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])


def run(code: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_configured_before_import_and_records_name_their_caller() -> None:
    proc = run(
        """
        import logging, sys
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        logging.getLogger("vastar_fast.client").addHandler(Keep())
        logging.getLogger("vastar_fast.client").setLevel(logging.DEBUG)
        from vastar_fast.client import sync
        def caller():
            sync.log.debug("first %d", 1)   # binds the real logger
            sync.log.info("second %s", "x")
        caller()
        assert [r.getMessage() for r in records] == ["first 1", "second x"], records
        assert [r.funcName for r in records] == ["caller", "caller"], [r.funcName for r in records]
        assert all(r.filename == "<string>" for r in records), [r.filename for r in records]
        assert sync.log.logger is logging.getLogger("vastar_fast.client")
        assert sync.log.debug == logging.getLogger("vastar_fast.client").debug
        assert sync.log.isEnabledFor(logging.DEBUG)
        """
    )
    assert proc.stderr == ""


def test_configured_after_import_and_after_first_use() -> None:
    run(
        """
        import sys
        import vastar_fast
        from vastar_fast import retry
        from vastar_fast.protocol import tracecontext
        assert "logging" not in sys.modules
        assert not retry.log.isEnabledFor(10)   # first use: logging imported here
        import logging
        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append((record.name, record.levelname, record.getMessage()))
        logging.basicConfig(level=logging.DEBUG)
        logging.getLogger().addHandler(Keep())
        assert retry.log.isEnabledFor(logging.DEBUG)   # the level set after first use
        retry.log.warning("w")
        tracecontext.log.error("e %s", 2)   # another logger, first used after configuring
        logging.getLogger("vastar_fast").setLevel(logging.ERROR)
        retry.log.warning("dropped by the level set last")
        assert seen == [("vastar_fast.retry", "WARNING", "w"),
                        ("vastar_fast.client", "ERROR", "e 2")], seen
        """
    )


def test_nothing_printed_when_the_application_configured_nothing() -> None:
    proc = run(
        """
        import logging, sys
        from vastar_fast.client import sync
        sync.log.warning("a warning nobody configured a handler for")
        handlers = logging.getLogger("vastar_fast").handlers
        assert [type(h) for h in handlers] == [logging.NullHandler], handlers
        """
    )
    assert proc.stderr == ""


def test_eager_loggers_get_the_null_handler_too() -> None:
    proc = run(
        """
        import logging
        from vastar_fast.client import aio
        assert aio.log is logging.getLogger("vastar_fast.client")
        aio.log.warning("from the asyncio client, nothing configured")
        assert [type(h) for h in logging.getLogger("vastar_fast").handlers] == [logging.NullHandler]
        """
    )
    assert proc.stderr == ""
