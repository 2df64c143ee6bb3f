"""The compiled twins of the runtime's request-path modules (``ipc``, ``pipeline``,
``shaping``, ``upstream``): the same sources as the modules one level up, compiled by
Cython in pure Python mode at install time. Empty when no compiler was available; see
:mod:`vastar_fast.runtime.engine`, which picks a twin."""
