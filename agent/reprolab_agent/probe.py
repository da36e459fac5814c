"""What this node has: CPUs, memory, Python, and GPUs as CuPy sees them.

`probe_capabilities()` returns plain JSON-serializable facts the agent reports to the site when it
registers; `summarize()` turns them into one line for logs. The probe never raises for a missing
GPU: without CuPy the GPU list is empty, and when CuPy is installed but cannot reach a device (no
driver, no device, broken CUDA install) the list is empty and `gpu_error` says why.

Standard library only (CuPy is optional and imported lazily), and compatible with Python 3.10.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import sys
from pathlib import Path
from typing import Any

DISTRIBUTION = "reprolab-agent"
_UNKNOWN_VERSION = "0+unknown"
TIMES = "\N{MULTIPLICATION SIGN}"  # between the count and the name of GPUs in summaries


def agent_version() -> str:
    """The version of the agent that is running.

    In a source checkout the `pyproject.toml` next to the package is the truth (an older install
    elsewhere on the path must not mask it); an installed wheel answers through its metadata.
    """
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if text:
        project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
        if project:
            found = re.search(r"^version\s*=\s*[\"']([^\"']+)[\"']", project.group(1), re.MULTILINE)
            if found:
                return found.group(1)
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - always there on 3.10+
        return _UNKNOWN_VERSION
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return _UNKNOWN_VERSION


def _cpu_counts() -> tuple[int, int | None]:
    """(CPUs this process may run on, CPUs the machine has)."""
    total = os.cpu_count()
    usable = total
    if hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):
            usable = len(os.sched_getaffinity(0))
    return max(usable or 1, 1), total


def _memory_total_mb() -> int | None:
    """Physical memory in MiB: /proc/meminfo on Linux, sysconf elsewhere; None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    fields = line.split()
                    kib = int(fields[1])
                    unit = fields[2].lower() if len(fields) > 2 else "kb"
                    if unit == "kb":
                        return kib // 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages > 0 and page_size > 0:
        return pages * page_size // (1024 * 1024)
    return None


def _cuda_version(number: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor: 12040 -> "12.4"."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _error_text(error: BaseException) -> str:
    message = " ".join(str(error).split())[:500]  # one line, bounded: it goes into logs and reports
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def probe_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """(GPUs as CuPy sees them, why the probe failed or None). Never raises."""
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return [], None  # no CuPy: a CPU-only node, nothing went wrong
    except Exception as error:  # a broken CuPy install can fail with anything on import
        return [], _error_text(error)
    try:
        runtime = cupy.cuda.runtime
        count = int(runtime.getDeviceCount())
        runtime_version = _cuda_version(int(runtime.runtimeGetVersion()))
        driver_version = _cuda_version(int(runtime.driverGetVersion()))
        cupy_version = str(getattr(cupy, "__version__", "unknown"))
        gpus = []
        for index in range(count):
            props = runtime.getDeviceProperties(index)
            gpu: dict[str, Any] = {
                "index": index,
                "name": _text(props["name"]),
                "memory_total_mb": int(props["totalGlobalMem"]) // (1024 * 1024),
                "compute_capability": f"{int(props['major'])}.{int(props['minor'])}",
            }
            if "multiProcessorCount" in props:
                gpu["multiprocessor_count"] = int(props["multiProcessorCount"])
            gpu.update(
                cuda_runtime_version=runtime_version,
                cuda_driver_version=driver_version,
                cupy_version=cupy_version,
            )
            gpus.append(gpu)
    except Exception as error:  # CUDARuntimeError without a driver or device, and anything odd
        return [], _error_text(error)
    return gpus, None


def probe_capabilities() -> dict[str, Any]:
    """JSON-serializable facts about this node. Fast (no subprocesses) and never raises for GPUs."""
    usable_cpus, total_cpus = _cpu_counts()
    gpus, gpu_error = probe_gpus()
    capabilities: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "cpu_count": usable_cpus,
        "cpu_count_total": total_cpus,
        "memory_total_mb": _memory_total_mb(),
        "agent_version": agent_version(),
        "gpus": gpus,
    }
    if gpu_error is not None:
        capabilities["gpu_error"] = gpu_error
    return capabilities


def _gib(mb: Any) -> str:
    if not isinstance(mb, (int, float)) or mb <= 0:
        return "? GiB"
    gib = f"{mb / 1024:.1f}".removesuffix(".0")
    return f"{gib} GiB"


def summarize(capabilities: dict[str, Any]) -> str:
    """One line for logs: "16 CPUs, 128 GiB, 1× NVIDIA H200 (139 GiB, cc 9.0, CUDA 12.4)"."""  # noqa: RUF002
    cpus = capabilities.get("cpu_count")
    parts = [f"{cpus} CPU{'' if cpus == 1 else 's'}" if cpus else "? CPUs", _gib(capabilities.get("memory_total_mb"))]
    groups: dict[str, int] = {}  # identical GPUs are counted together, in the order first seen
    for gpu in capabilities.get("gpus") or []:
        details = [_gib(gpu.get("memory_total_mb"))]
        if gpu.get("compute_capability"):
            details.append(f"cc {gpu['compute_capability']}")
        cuda = gpu.get("cuda_runtime_version") or gpu.get("cuda_driver_version")
        if cuda:
            details.append(f"CUDA {cuda}")
        label = f"{gpu.get('name') or 'GPU'} ({', '.join(details)})"
        groups[label] = groups.get(label, 0) + 1
    if groups:
        parts.append(" + ".join(f"{count}{TIMES} {label}" for label, count in groups.items()))
    elif capabilities.get("gpu_error"):
        parts.append(f"no GPU ({capabilities['gpu_error']})")
    else:
        parts.append("no GPU")
    return ", ".join(parts)
