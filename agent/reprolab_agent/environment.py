"""The environment snapshot an agent records for every run: what software, hardware and inputs
the notebook ran on. Built from the same interpreter that starts the run's kernel, just before
the run starts (a notebook that pip-installs changes its environment later; the snapshot is the
state it started from)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .probe import _cpu_counts, _memory_total_mb, agent_version, probe_gpus

# Variables that change numerical results or hardware placement. An allowlist: anything else
# (tokens, credentials, paths with user names) is never recorded.
ENV_ALLOWLIST = (
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "NUMEXPR_NUM_THREADS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "LANG",
    "LC_ALL",
    "TZ",
)


def installed_packages() -> dict[str, str]:
    """Every installed distribution, normalised name -> version."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(packages.items()))


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_spec(name: str | None) -> dict[str, Any]:
    """The kernel the run uses, as jupyter_client resolves it here (its argv names the Python)."""
    if not name:
        return {}
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(name)
    except Exception as error:  # no such kernel here: the run will fail and say so
        return {"name": name, "error": f"{type(error).__name__}: {error}"}
    return {"name": name, "display_name": spec.display_name, "language": spec.language, "argv": list(spec.argv)}


def capture(*, kernel_name: str | None, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshot: software, hardware, kernel, environment variables, and the inputs (each
    with the sha256 the agent verified when it fetched it)."""
    gpus, gpu_error = probe_gpus()
    usable, total = _cpu_counts()
    cuda = {}
    if gpus:
        cuda = {
            "runtime_version": gpus[0].get("cuda_runtime_version"),
            "driver_version": gpus[0].get("cuda_driver_version"),
            "cupy_version": gpus[0].get("cupy_version"),
        }
    snapshot: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": os.path.realpath(sys.executable),
        },
        "packages": installed_packages(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "machine": platform.machine(),
            "libc": " ".join(platform.libc_ver()).strip(),
        },
        "cpu": {"model": cpu_model(), "count": usable, "count_total": total},
        "memory_mb": _memory_total_mb(),
        "gpus": [{k: g[k] for k in ("index", "name", "memory_total_mb", "compute_capability") if k in g} for g in gpus],
        "cuda": cuda,
        "kernel": kernel_spec(kernel_name),
        "env": {name: os.environ[name] for name in ENV_ALLOWLIST if name in os.environ},
        "inputs": inputs,
        "agent_version": agent_version(),
    }
    if gpu_error:
        snapshot["gpu_error"] = gpu_error
    return snapshot
