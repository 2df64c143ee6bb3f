"""Build script for the optional compiled twins.

Every hot path has a pure-Python twin, so the package installs and runs without a C
compiler: set VASTAR_FAST_NO_EXTENSIONS=1 to skip the extensions, and a failed compile
falls back to a pure install with a warning instead of failing ``pip install``.
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = os.environ.get("VASTAR_FAST_NO_EXTENSIONS", "") not in ("", "0") or (
    sys.implementation.name != "cpython"
)
# Wheel builds (cibuildwheel) set this: a wheel without its compiled twins is a failure,
# not a fallback.
REQUIRE_EXTENSIONS = os.environ.get("VASTAR_FAST_REQUIRE_EXTENSIONS", "") not in ("", "0")

EXTENSIONS = [
    ("vastar_fast.protocol._codec_c", "src/vastar_fast/protocol/_codec_c.pyx"),
    ("vastar_fast.sse._scanner_c", "src/vastar_fast/sse/_scanner_c.pyx"),
    ("vastar_fast.runtime._atomics_c", "src/vastar_fast/runtime/_atomics_c.pyx"),
]
# The runtime's request path, written in Cython's pure Python mode: the .py modules are
# the pure twin and are compiled, unchanged, into vastar_fast.runtime._compiled.
RUNTIME_TWINS = [
    "breaker", "http1", "ipc", "pipeline", "policy", "shaping", "shared", "upstream",
]
# Compiled into the same package from elsewhere: the sans-I/O core's ServerConnection,
# which the compiled ipc drives (the client side has its own compiled twin in _codec_c).
RUNTIME_ALSO = {"connection": "src/vastar_fast/protocol/connection.py"}


class OptionalBuildExt(build_ext):
    """Build the compiled twins, but never fail the install over them."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # this one failed to compile
            self._warn(exc, ext.name)

    @staticmethod
    def _warn(exc: BaseException, name: str = "compiled twins") -> None:
        if REQUIRE_EXTENSIONS:
            raise RuntimeError(
                f"could not build {name} and VASTAR_FAST_REQUIRE_EXTENSIONS is set"
            ) from exc
        sys.stderr.write(
            f"WARNING: could not build {name} ({exc}); vastar_fast will use its pure-Python "
            "twins, which work the same but slower.\n"
        )


def compile_args(platform: str) -> list:
    """Extra compiler flags for a ``sys.platform`` (tools/native_checks.py uses the same)."""
    return [] if platform == "win32" else ["-O3"]


def _extensions() -> list:
    if NO_EXTENSIONS:
        return []
    sources = [(name, path) for name, path in EXTENSIONS if os.path.exists(path)]
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        sys.stderr.write("WARNING: Cython is not installed; building the pure-Python twins only.\n")
        return []
    extra = compile_args(sys.platform)
    # The C helpers are headers: list them so editing one rebuilds the extensions.
    headers = sorted(glob.glob(os.path.join("csrc", "*.h")))
    exts = [
        Extension(name, [path], include_dirs=["csrc"], extra_compile_args=extra, depends=headers)
        for name, path in sources
    ]
    built = cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        quiet=True,
    )
    runtime = [
        Extension(f"vastar_fast.runtime._compiled.{name}", [path], extra_compile_args=extra)
        for name in RUNTIME_TWINS
        if os.path.exists(path := f"src/vastar_fast/runtime/{name}.py")
    ] + [
        Extension(f"vastar_fast.runtime._compiled.{name}", [path], extra_compile_args=extra)
        for name, path in RUNTIME_ALSO.items()
        if os.path.exists(path)
    ]
    if runtime:
        # Python semantics kept (negative indexes, bounds, division): these are ordinary
        # Python modules that happen to be compiled.
        built += cythonize(
            runtime, compiler_directives={"language_level": "3", "embedsignature": True},
            quiet=True,
        )  # fmt: skip
    return built


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
