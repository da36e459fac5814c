"""GPU smoke test: a real device through CuPy and real NVML through pynvml (nvidia-ml-py).

Runs for real only on a machine with a GPU and the agent's `gpu` extra installed; everywhere else
each test is skipped and says why.
"""

import numpy as np
import pytest
from reprolab_agent.gpus import GpuSampler
from reprolab_agent.probe import probe_gpus

MIB = 2**20


@pytest.fixture(scope="module")
def cupy():
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pytest.skip("CuPy is not installed (the agent's `gpu` extra)")
    gpus, error = probe_gpus()
    if error:
        pytest.skip(f"CuPy cannot reach a GPU: {error}")
    if not gpus:
        pytest.skip("CuPy sees no GPU")
    return cupy


@pytest.fixture(scope="module")
def pynvml():
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pytest.skip("pynvml is not installed (nvidia-ml-py, the agent's `gpu` extra)")
    return pynvml


def test_a_matrix_product_on_the_gpu_matches_numpy(cupy):
    rng = np.random.default_rng(20240601)
    a, b = rng.standard_normal((512, 384)), rng.standard_normal((384, 256))
    with cupy.cuda.Device(0):
        product = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
    # float64 sums of 384 terms of size ~1: cuBLAS and the CPU BLAS may sum in another order
    np.testing.assert_allclose(product, a @ b, rtol=1e-10, atol=1e-10)


def test_the_sampler_reports_memory_of_device_0(cupy, pynvml):
    # CUDA's device 0 is not always NVML's device 0 (CUDA numbers fastest first unless
    # CUDA_DEVICE_ORDER=PCI_BUS_ID, and this process may have started CUDA already), so find
    # NVML's index for it by its PCI bus id.
    bus_id = cupy.cuda.runtime.deviceGetPCIBusId(0)
    pynvml.nvmlInit()
    try:
        nvml_index = int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())))
    finally:
        pynvml.nvmlShutdown()  # nvmlInit counts references: the sampler's own init stays
    total_cuda_mb = int(cupy.cuda.runtime.getDeviceProperties(0)["totalGlobalMem"]) // MIB

    with cupy.cuda.Device(0):
        held = cupy.ones(256 * MIB // 8, dtype=cupy.float64)  # 256 MiB, held while sampling
        cupy.cuda.Device(0).synchronize()
        sampler = GpuSampler()
        readings = sampler.sample([nvml_index])
        del held

    assert readings is not None, f"NVML did not answer: {sampler.error}"
    [reading] = readings
    assert reading["index"] == nvml_index
    assert reading["name"]
    assert reading["memory_total_mb"] > 0
    # NVML counts memory the driver reserves, CUDA does not: close, not equal
    assert abs(reading["memory_total_mb"] - total_cuda_mb) <= 0.1 * reading["memory_total_mb"]
    assert 256 <= reading["memory_used_mb"] <= reading["memory_total_mb"]
    assert reading["utilization_percent"] is None or 0 <= reading["utilization_percent"] <= 100
