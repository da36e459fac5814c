"""The node agent's capability probe: the real one here (no GPU, no CuPy), and CuPy faked.

CuPy is the edge of the world: this machine has neither CuPy nor a GPU, so a stand-in module
placed in `sys.modules` plays the CUDA runtime, answering the calls the probe makes.
"""

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"
if str(AGENT_DIR) not in sys.path:  # harmless when pytest's pythonpath already has it
    sys.path.insert(0, str(AGENT_DIR))

from reprolab_agent import probe  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

GIB = 1024**3


class CUDARuntimeError(RuntimeError):
    """What CuPy raises when the driver is missing."""


def fake_cupy(
    devices: list[dict[str, Any]] | None = None,
    *,
    runtime_version: int = 12040,
    driver_version: int = 12060,
    count_error: Exception | None = None,
) -> types.ModuleType:
    devices = devices or []

    def get_device_count() -> int:
        if count_error is not None:
            raise count_error
        return len(devices)

    module = types.ModuleType("cupy")
    module.__version__ = "13.3.0"  # type: ignore[attr-defined]
    module.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=types.SimpleNamespace(
            getDeviceCount=get_device_count,
            getDeviceProperties=lambda index: devices[index],
            runtimeGetVersion=lambda: runtime_version,
            driverGetVersion=lambda: driver_version,
        )
    )
    return module


def h200() -> dict[str, Any]:
    # As CuPy returns it: the name is bytes, the memory in bytes.
    return {
        "name": b"NVIDIA H200",
        "totalGlobalMem": 150_121_545_728,
        "major": 9,
        "minor": 0,
        "multiProcessorCount": 132,
    }


@pytest.fixture
def no_cupy(monkeypatch):
    """Make `import cupy` fail even where CuPy happens to be installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)


def test_real_probe_on_this_machine(no_cupy):
    capabilities = probe.probe_capabilities()

    assert json.loads(json.dumps(capabilities)) == capabilities
    assert capabilities["gpus"] == []
    assert "gpu_error" not in capabilities
    assert capabilities["cpu_count"] >= 1
    assert capabilities["cpu_count_total"] >= capabilities["cpu_count"]
    assert capabilities["memory_total_mb"] > 0
    assert capabilities["hostname"]
    assert capabilities["platform"]["system"]
    assert capabilities["platform"]["release"]
    assert capabilities["python_version"].count(".") == 2
    assert capabilities["agent_version"] == "0.1.0"  # from agent/pyproject.toml in this checkout


def test_real_probe_without_cupy_installed_is_the_default_here():
    # No stand-in: whatever this machine has. It must answer, and without a GPU the list is empty.
    capabilities = probe.probe_capabilities()
    assert isinstance(capabilities["gpus"], list)
    json.dumps(capabilities)


def test_memory_falls_back_to_sysconf(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert (probe._memory_total_mb() or 0) > 0


def test_gpus_reported_from_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy([h200(), h200()]))

    capabilities = probe.probe_capabilities()

    assert json.loads(json.dumps(capabilities)) == capabilities
    assert "gpu_error" not in capabilities
    assert capabilities["gpus"] == [
        {
            "index": index,
            "name": "NVIDIA H200",
            "memory_total_mb": 143_167,
            "compute_capability": "9.0",
            "multiprocessor_count": 132,
            "cuda_runtime_version": "12.4",
            "cuda_driver_version": "12.6",
            "cupy_version": "13.3.0",
        }
        for index in (0, 1)
    ]


def test_name_padding_and_missing_optional_properties(monkeypatch):
    device = {"name": b"Tesla T4\x00\x00\x00", "totalGlobalMem": 16 * GIB, "major": 7, "minor": 5}
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy([device], runtime_version=11080, driver_version=12000))

    (gpu,) = probe.probe_capabilities()["gpus"]

    assert gpu["name"] == "Tesla T4"
    assert gpu["memory_total_mb"] == 16 * 1024
    assert gpu["compute_capability"] == "7.5"
    assert "multiprocessor_count" not in gpu
    assert (gpu["cuda_runtime_version"], gpu["cuda_driver_version"]) == ("11.8", "12.0")


def test_cupy_without_driver_reports_the_error(monkeypatch):
    error = CUDARuntimeError(
        "cudaErrorInsufficientDriver: CUDA driver version is\ninsufficient for CUDA runtime version"
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count_error=error))

    capabilities = probe.probe_capabilities()

    assert capabilities["gpus"] == []
    assert capabilities["gpu_error"] == (
        "CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
    )
    json.dumps(capabilities)


def test_cupy_with_no_devices_is_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy([]))

    capabilities = probe.probe_capabilities()

    assert capabilities["gpus"] == []
    assert "gpu_error" not in capabilities


def test_a_device_that_fails_midway_gives_no_partial_list(monkeypatch):
    broken = {"name": b"Broken"}  # no memory, no compute capability
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy([h200(), broken]))

    capabilities = probe.probe_capabilities()

    assert capabilities["gpus"] == []
    assert capabilities["gpu_error"] == "KeyError: 'totalGlobalMem'"


def test_summarize_cpu_only():
    capabilities = {"cpu_count": 2, "memory_total_mb": 23_962, "gpus": []}
    assert probe.summarize(capabilities) == "2 CPUs, 23.4 GiB, no GPU"
    assert probe.summarize({"cpu_count": 1, "memory_total_mb": 1024, "gpus": []}) == "1 CPU, 1 GiB, no GPU"


def test_summarize_with_gpu_error():
    capabilities = {"cpu_count": 4, "memory_total_mb": 8192, "gpus": [], "gpu_error": "CUDARuntimeError: no driver"}
    assert probe.summarize(capabilities) == "4 CPUs, 8 GiB, no GPU (CUDARuntimeError: no driver)"


def test_summarize_with_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy([h200()]))
    capabilities = {**probe.probe_capabilities(), "cpu_count": 16, "memory_total_mb": 131_072}
    capabilities["gpus"][0]["memory_total_mb"] = 139 * 1024

    assert probe.summarize(capabilities) == "16 CPUs, 128 GiB, 1× NVIDIA H200 (139 GiB, cc 9.0, CUDA 12.4)"  # noqa: RUF001


def test_summarize_groups_identical_gpus():
    a100 = {
        "name": "NVIDIA A100",
        "memory_total_mb": 81_920,
        "compute_capability": "8.0",
        "cuda_runtime_version": "12.4",
    }
    t4 = {"name": "Tesla T4", "memory_total_mb": 15_360, "compute_capability": "7.5", "cuda_runtime_version": "12.4"}
    capabilities = {"cpu_count": 64, "memory_total_mb": 512 * 1024, "gpus": [a100, a100, t4]}

    assert probe.summarize(capabilities) == (
        "64 CPUs, 512 GiB, 2× NVIDIA A100 (80 GiB, cc 8.0, CUDA 12.4) + 1× Tesla T4 (15 GiB, cc 7.5, CUDA 12.4)"  # noqa: RUF001
    )


def test_summarize_real_probe_is_one_line(no_cupy):
    line = probe.summarize(probe.probe_capabilities())
    assert "\n" not in line
    assert line.endswith("no GPU")


def test_package_version_agrees_with_pyproject():
    import reprolab_agent  # type: ignore[import-not-found, unused-ignore]

    # The probe reports the pyproject's version; a hard-coded __version__ must not drift from it.
    assert getattr(reprolab_agent, "__version__", probe.agent_version()) == probe.agent_version() == "0.1.0"
