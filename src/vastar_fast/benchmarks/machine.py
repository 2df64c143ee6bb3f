"""What a benchmark ran on: CPU, OS, Python, package versions, the twins in use, and the
released peers measured beside ours (``bench.json``'s ``machine`` and ``released``)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from typing import Any, Dict, Optional

#: Packages whose versions change what a benchmark measures.
PACKAGES = (
    "vastar-fast",
    "flatbuffers",
    "aiohttp",
    "httptools",
    "uvloop",
    "PyYAML",
    "numpy",
    "openai",
    "httpx",
    "pytest",
    "pytest-benchmark",
    "matplotlib",
    "Cython",
)


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, macOS sysctl), else platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> Dict[str, bool]:
    """The instruction sets the compiled codec can use, as the kernel reports them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(match.group(1).split()) if match else set()
    return {name: name in flags for name in ("sse2", "avx2", "avx512f", "avx512_vbmi2")}


def package_versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def twins() -> Dict[str, Any]:
    """Which twins this process runs: the compiled ones, and the codec's SIMD path."""
    import vastar_fast

    info: Dict[str, Any] = {"accelerated": bool(vastar_fast.ACCELERATED)}
    try:
        from vastar_fast.runtime import engine

        info["runtime_accelerated"] = bool(engine.ACCELERATED)
    except ImportError:  # the runtime extra is not installed
        info["runtime_accelerated"] = None
    try:
        from vastar_fast.protocol import _codec_c

        info["simd_path"] = _codec_c._simd()
        info["simd_paths"] = list(_codec_c._simd_paths())
    except (ImportError, AttributeError):
        info["simd_path"] = None
        info["simd_paths"] = []
    return info


def machine_info() -> Dict[str, Any]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "system": platform.system(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": package_versions(),
        "twins": twins(),
    }


def _sha256(path: str) -> Optional[str]:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def released_info(runtime: Optional[str], sdk: Optional[str]) -> Dict[str, Any]:
    """What the released peers are: paths, the runtime binary's sha256, the SDK version."""
    info: Dict[str, Any] = {"runtime": None, "sdk": None}
    if runtime:
        info["runtime"] = {"path": os.path.abspath(runtime), "sha256": _sha256(runtime)}
    if sdk:
        version = None
        for name in ("__init__.py", "_version.py", "version.py"):
            path = os.path.join(sdk, "vastar_connector_sdk", name)
            try:
                with open(path, encoding="utf-8") as f:
                    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", f.read())
            except OSError:
                continue
            if found:
                version = found.group(1)
                break
        info["sdk"] = {"path": os.path.abspath(sdk), "version": version}
    return info
