"""The environment snapshot an agent records for every run: what software, hardware and inputs
the notebook ran on. Built from the same interpreter that starts the run's kernel, just before
the run starts (a notebook that pip-installs changes its environment later; the snapshot is the
state it started from)."""

from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import protocol
from .envs import Environment, describe_environment
from .probe import _cpu_counts, _memory_total_mb, agent_version, probe_gpus

# Variables that change numerical results or hardware placement. An allowlist: anything else
# (tokens, credentials, paths with user names) is never recorded.
ENV_ALLOWLIST = (
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
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

# What a run's process inherits from the agent: the variables above, and these, which locate
# software or devices and hold no secret. Everything else (the node token, the site's
# DJANGO_*/DATABASE_URL/REDIS_URL, cloud credentials, any *_TOKEN or *_PASSWORD) stays behind.
RUN_ENV_ALLOWLIST = (
    *ENV_ALLOWLIST,
    "PATH",
    "JUPYTER_PATH",  # where the operator installed kernels (the sandbox mounts them read-only)
    "LANGUAGE",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "NVIDIA_DRIVER_CAPABILITIES",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
)
RUN_USER = "reprolab-run"

# The kernel for a notebook that names none, by its language, as Jupyter picks its default.
DEFAULT_KERNELS = {"python": "python3"}


def run_environment(source: Mapping[str, str], *, workdir: Path, pythonpath: str) -> dict[str, str]:
    """The whole environment of a run's process: an allowlist of the agent's variables, a home
    and temporary folder inside the run's working directory, and the agent package on the
    path (so `from reprolab_agent import record` works in the notebook)."""
    env = {k: v for k, v in source.items() if k in RUN_ENV_ALLOWLIST or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = str(workdir)
    env["TMPDIR"] = str(workdir / protocol.TMP_FOLDER)
    env["USER"] = env["LOGNAME"] = RUN_USER
    env["PYTHONPATH"] = pythonpath
    return env


class NoKernel(RuntimeError):
    """No kernel on this node can run the notebook."""


@dataclass(frozen=True)
class KernelChoice:
    name: str
    language: str | None  # given to papermill when the notebook does not say (it needs one)
    chosen: str  # "node" (the agent was told), "notebook" (its kernelspec), "default" (by language)

    def describe(self) -> str:
        if self.chosen == "default":
            return f"kernel {self.name}, chosen by default: the notebook names no kernel (language {self.language})"
        return f"kernel {self.name}" + (" (set on this node)" if self.chosen == "node" else "")


def _installed_kernels() -> dict[str, str]:
    """Installed kernel name -> language."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().get_all_specs()
    except Exception:  # no jupyter_client or a broken spec folder: only the defaults are known
        return {}
    return {name: str(s.get("spec", {}).get("language", "")).lower() for name, s in specs.items()}


def choose_kernel(
    metadata: Mapping[str, Any], *, override: str | None = None, installed: Mapping[str, str] | None = None
) -> KernelChoice:
    """The kernel a notebook runs on: the node's override, else its kernelspec, else the kernel
    for its language (python3 for Python, which is also the language of a notebook that says
    nothing: nbformat.v4.new_notebook(), upgraded v2/v3 notebooks, VS Code notebooks)."""
    kernelspec = metadata.get("kernelspec")
    kernelspec = kernelspec if isinstance(kernelspec, Mapping) else {}
    language_info = metadata.get("language_info")
    language_info = language_info if isinstance(language_info, Mapping) else {}
    declared = language_info.get("name") or kernelspec.get("language")
    language = str(declared or "python").lower()
    named, chosen = (override, "node") if override else (kernelspec.get("name"), "notebook")
    if isinstance(named, str) and named:
        # papermill reads a declared language itself; for an undeclared one, only a default
        # kernel's language is known.
        implied = next((lang for lang, kernel in DEFAULT_KERNELS.items() if kernel == named), None)
        return KernelChoice(named, None if declared else implied, chosen)
    if language in DEFAULT_KERNELS:
        return KernelChoice(DEFAULT_KERNELS[language], language, "default")
    kernels = _installed_kernels() if installed is None else installed
    matching = sorted(name for name, lang in kernels.items() if lang == language)
    if not matching:
        raise NoKernel(f"the notebook names no kernel and this node has none for {language}")
    return KernelChoice(matching[0], language, "default")


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


def _site_fingerprint() -> tuple[tuple[str, int], ...]:
    """What changes when a package is installed or removed here: the modification times of the
    folders on the path (a few stats, where listing every distribution costs ~0.3 s)."""
    marks = []
    for folder in sys.path:
        try:
            marks.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(marks)


_static_lock = threading.Lock()
_static: tuple[tuple[tuple[str, int], ...], dict[str, Any]] | None = None


def _static_parts() -> dict[str, Any]:
    """The parts of a snapshot that do not change from run to run on this node (software and
    hardware), measured once and again only when the installed packages change."""
    global _static
    fingerprint = _site_fingerprint()
    with _static_lock:
        if _static is not None and _static[0] == fingerprint:
            return _static[1]
        gpus, gpu_error = probe_gpus()
        usable, total = _cpu_counts()
        cuda = {}
        if gpus:
            cuda = {
                "runtime_version": gpus[0].get("cuda_runtime_version"),
                "driver_version": gpus[0].get("cuda_driver_version"),
                "cupy_version": gpus[0].get("cupy_version"),
            }
        parts: dict[str, Any] = {
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
            "gpus": [
                {k: g[k] for k in ("index", "name", "memory_total_mb", "compute_capability") if k in g} for g in gpus
            ],
            "cuda": cuda,
            "agent_version": agent_version(),
        }
        if gpu_error:
            parts["gpu_error"] = gpu_error
        _static = (fingerprint, parts)
        return parts


def capture(
    *,
    kernel_name: str | None,
    inputs: list[dict[str, Any]],
    kernel_chosen: str | None = None,
    env: Mapping[str, str] | None = None,
    environment: Environment | None = None,
) -> dict[str, Any]:
    """The snapshot: software, hardware, kernel (and how it was chosen), environment variables
    (of `env`, the run's own, when given), the inputs (each with the sha256 the agent verified
    when it fetched it), and the declared environment (its lock, whether the installed packages
    match it; `packages` are then the environment's)."""
    env = os.environ if env is None else env
    kernel = kernel_spec(kernel_name)
    if kernel_chosen:
        kernel["chosen"] = kernel_chosen
    snapshot = copy.deepcopy(_static_parts())
    snapshot["kernel"] = kernel
    snapshot["env"] = {name: env[name] for name in ENV_ALLOWLIST if name in env}
    snapshot["inputs"] = inputs
    snapshot["environment"] = describe_environment(environment)
    if environment is not None:  # the run's packages are the environment's, not the agent's
        snapshot["packages"] = snapshot["environment"].pop("packages")
        snapshot["kernel"] = {
            "name": kernel_name,
            "language": "python",
            "argv": [str(environment.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "environment": environment.sha256,
            **({"chosen": kernel_chosen} if kernel_chosen else {}),
        }
    return snapshot
