"""The package's loggers: ``lazy_logger`` for the modules ``import vastar_fast`` loads,
importing :mod:`logging` on first use rather than at import, and ``logger`` for the
modules that import logging anyway (runtime, simulator, asyncio client...).

``logging`` (with the ``traceback``, ``threading``, ``string`` and ``textwrap`` it
imports) is the largest stdlib cost of ``import vastar_fast`` beyond what the released
SDK's own types need, and the client logs only on rare paths (connect and close, an
answer nobody waits for, a malformed frame): docs/decisions.md has the figures.

``lazy_logger(name)`` returns a stand-in that looks the real logger up with
``logging.getLogger(name)`` on its first call, then forwards to it: the logging methods
are then the real logger's bound methods, stored on the stand-in, so a call costs what
it costs on the logger itself. Nothing about the logger is decided here: it is the one
object ``logging.getLogger(name)`` returns to the application, whether the application
configured it (level, handlers, propagation, ``logging.disable``, ``dictConfig``) before
or after this package was imported or first logged. Its state (``level``, ``handlers``...) is the real logger's, through
``.logger``.

Both give the package logger ``vastar_fast`` its :class:`logging.NullHandler` (a
library never configures logging, it only keeps Python's last-resort handler from
printing its records when the application has configured none) on their first lookup,
so before any record of ours can be emitted, as when ``import vastar_fast`` added it.
"""

from __future__ import annotations

from _thread import allocate_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

__all__ = ["LazyLogger", "lazy_logger", "logger"]

PACKAGE = "vastar_fast"

# The Logger methods the stand-in offers. Bound methods of a Logger never change, so the
# first call stores the real logger's in the stand-in's __dict__, where they shadow the
# class's forwarding methods: later calls go straight to the logger.
_METHODS = ("debug", "info", "warning", "error", "exception", "critical", "log")
_QUERIES = ("isEnabledFor", "getEffectiveLevel")

_lock = allocate_lock()
_null_handler_added = False
_stand_ins: Dict[str, LazyLogger] = {}


def logger(name: str) -> Any:
    """``logging.getLogger(name)``, once the package logger has its NullHandler."""
    global _null_handler_added
    import logging

    if not _null_handler_added:
        with _lock:
            if not _null_handler_added:
                logging.getLogger(PACKAGE).addHandler(logging.NullHandler())
                _null_handler_added = True
    return logging.getLogger(name)


class LazyLogger:
    """Forwards to ``logging.getLogger(name)``, imported and looked up on first use.

    It offers the logging methods (``debug`` ... ``log``, ``isEnabledFor``,
    ``getEffectiveLevel``) and ``logger``, the real one, for anything else. No
    ``__getattr__``: with one, every attribute lookup goes through Python's slower hook
    (a disabled ``debug`` call measured 151 ns that way, 137 ns this way, 125 ns on the
    logger itself).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def logger(self) -> Any:
        """The real :class:`logging.Logger` (imports logging when not yet done)."""
        return logger(self.name)

    def _bind(self) -> Any:
        real = self.logger
        for attr in _METHODS + _QUERIES:
            self.__dict__[attr] = getattr(real, attr)
        return real

    # First calls only: each binds the real methods, then forwards (one frame deeper, so
    # stacklevel is raised by one and the record names our caller, not this module).
    def debug(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().debug(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def info(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().info(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def warning(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().warning(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def error(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().error(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def exception(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().exception(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def critical(self, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().critical(msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def log(self, level: int, msg: object, *args: Any, stacklevel: int = 1, **kwargs: Any) -> None:
        self._bind().log(level, msg, *args, stacklevel=stacklevel + 1, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return bool(self._bind().isEnabledFor(level))

    def getEffectiveLevel(self) -> int:
        return int(self._bind().getEffectiveLevel())

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def lazy_logger(name: str) -> LazyLogger:
    """The stand-in for ``logging.getLogger(name)``; one per name."""
    stand_in = _stand_ins.get(name)
    if stand_in is None:
        stand_in = _stand_ins.setdefault(name, LazyLogger(name))
    return stand_in
