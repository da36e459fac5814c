"""The node's GPUs as slots that runs hold, and their utilisation and memory read through NVML.

`GpuSlots` hands device indices to runs: each run that asks for GPUs gets its own (or, on a node
that allows sharing, the least-used ones), and `visible_devices()` turns them into the run's
`CUDA_VISIBLE_DEVICES`. `GpuSampler.sample()` reads the GPUs a run holds through NVML (the
`pynvml` module of the `nvidia-ml-py` package, imported lazily) for its `resources` events; it
answers None where NVML is not there and never raises, like the probe.

Device indices. One number names a GPU everywhere in the agent: its index in PCI bus order, which
is NVML's order (the order `nvidia-smi` shows). CUDA numbers devices fastest first unless
`CUDA_DEVICE_ORDER=PCI_BUS_ID`, so the agent sets that variable for runs, where it decides how
`CUDA_VISIBLE_DEVICES` is read; on a node with GPUs of one model both orders usually agree. The indices
given to `GpuSlots` (from `probe_gpus()`, which asks CuPy in the agent's own process) are in PCI
bus order only when the agent process itself runs with `CUDA_DEVICE_ORDER=PCI_BUS_ID` set before
CUDA starts. NVML ignores `CUDA_VISIBLE_DEVICES` and always sees every GPU of the machine. MIG
instances are not handled: a MIG-partitioned GPU counts as one whole device.

Standard library only at import time, and compatible with Python 3.10.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .probe import _error_text, _text

MIB = 1024 * 1024
CUDA_DEVICE_ORDER = "PCI_BUS_ID"  # the value of CUDA_DEVICE_ORDER under which indices mean the same to CUDA and NVML


def visible_devices(indices: Iterable[int]) -> str:
    """The `CUDA_VISIBLE_DEVICES` value that shows a run exactly these GPUs: "2,0" for [2, 0].

    A run that holds no GPU gets "" (every GPU hidden), never an unset variable: unset, CUDA shows
    the run every GPU of the node, including those other runs hold.
    """
    return ",".join(str(int(index)) for index in indices)


def gpu_environment(indices: Iterable[int]) -> dict[str, str]:
    """The variables a run's environment needs for the GPUs it holds (none: every GPU hidden)."""
    return {"CUDA_DEVICE_ORDER": CUDA_DEVICE_ORDER, "CUDA_VISIBLE_DEVICES": visible_devices(indices)}


class GpuSlots:
    """Which of the node's GPUs the running runs hold. Thread-safe.

    Built from the node's GPUs as `probe_gpus()` lists them: mappings with an `index` and a
    `memory_total_mb`. Without sharing a GPU belongs to one run at a time; with `sharing=True`
    a GPU may be handed to several runs at once, the least-used first, and the memory floor is
    checked against the GPU's total memory, not what the other runs leave free.
    """

    def __init__(self, gpus: Iterable[Mapping[str, Any]], *, sharing: bool = False) -> None:
        memory: dict[int, int] = {}
        for gpu in gpus:
            try:
                index, total = int(gpu["index"]), int(gpu["memory_total_mb"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"a GPU needs an integer index and memory_total_mb, got {gpu!r}") from error
            if index < 0 or total < 0:
                raise ValueError(f"a GPU's index and memory cannot be negative, got {gpu!r}")
            if index in memory:
                raise ValueError(f"GPU {index} is listed twice")
            memory[index] = total
        self.sharing = sharing
        self._memory = memory
        self._holders = dict.fromkeys(memory, 0)  # index -> how many runs hold it now
        self._lock = threading.Lock()

    @property
    def memory_mb(self) -> dict[int, int]:
        """Total memory of each GPU of the node, in MiB, by device index."""
        return dict(self._memory)

    def in_use(self) -> dict[int, int]:
        """How many runs hold each GPU right now, by device index (a copy)."""
        with self._lock:
            return dict(self._holders)

    def could_fit(self, count: int, min_memory_mb: int = 0) -> bool:
        """Whether the node could ever give a run `count` GPUs of `min_memory_mb` each (all free).

        False means waiting will not help: `acquire` with these arguments returns None forever.
        """
        _check_request(count, min_memory_mb)
        return count == 0 or sum(1 for total in self._memory.values() if total >= min_memory_mb) >= count

    def acquire(self, count: int, min_memory_mb: int = 0) -> list[int] | None:
        """`count` distinct GPUs of at least `min_memory_mb` MiB each, held until `release`, in
        ascending order; None when the node cannot give them now. `count == 0` gives [].

        Without sharing the smallest free GPUs that fit are chosen (ties: lowest index), so the big
        ones stay free for runs that need them; with sharing the least-used ones, then the smallest.
        """
        _check_request(count, min_memory_mb)
        if count == 0:
            return []
        with self._lock:
            fitting = [index for index, total in self._memory.items() if total >= min_memory_mb]
            if not self.sharing:
                fitting = [index for index in fitting if self._holders[index] == 0]
            if len(fitting) < count:
                return None
            fitting.sort(key=lambda index: (self._holders[index], self._memory[index], index))
            chosen = sorted(fitting[:count])
            for index in chosen:
                self._holders[index] += 1
            return chosen

    def release(self, indices: Iterable[int]) -> None:
        """Give back GPUs that `acquire` handed out (once per `acquire`; [] does nothing).

        Raises ValueError, and changes nothing, for an index that is not a GPU of this node or is
        not held that many times: a second release would otherwise free a GPU another run holds.
        """
        wanted = Counter(int(index) for index in indices)
        with self._lock:
            unknown = sorted(index for index in wanted if index not in self._holders)
            if unknown:
                raise ValueError(f"not GPUs of this node: {unknown}")
            unheld = sorted(index for index, times in wanted.items() if self._holders[index] < times)
            if unheld:
                raise ValueError(f"GPUs released more often than they are held: {unheld}")
            for index, times in wanted.items():
                self._holders[index] -= times


def _check_request(count: int, min_memory_mb: int) -> None:
    if count < 0:
        raise ValueError(f"a run cannot ask for {count} GPUs")
    if min_memory_mb < 0:
        raise ValueError(f"a run cannot ask for {min_memory_mb} MiB of GPU memory")


class _Nvml:
    """NVML, initialised at most once: the loaded `pynvml` module, or why there is none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tried = False
        self.module: Any = None
        self.error: str | None = None

    def get(self) -> Any:
        """The initialised `pynvml` module, or None. The first call initialises NVML; later calls
        (from any thread) reuse the outcome, a failure included: a driver does not appear while the
        agent runs, and every failed nvmlInit costs a library load."""
        with self._lock:  # a sample every few seconds: the lock costs nothing worth saving
            if not self._tried:
                self.module, self.error = _init_nvml()
                self._tried = True
            return self.module


def _init_nvml() -> tuple[Any, str | None]:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    except Exception as error:  # a broken install can fail with anything on import
        return None, _error_text(error)
    try:
        pynvml.nvmlInit()  # NVMLError without the library, a driver or a device
    except Exception as error:
        return None, _error_text(error)
    return pynvml, None


_PROCESS_NVML = _Nvml()  # one per process: every GpuSampler shares it


class GpuSampler:
    """Utilisation and memory of GPUs through NVML. Never raises.

    Samplers are cheap; NVML is initialised once per process, on the first sample that asks for a
    GPU, and shared by every sampler and thread (NVML calls are thread-safe).
    """

    def __init__(self) -> None:
        self._nvml = _PROCESS_NVML

    @property
    def error(self) -> str | None:
        """Why NVML is not there ("nvidia-ml-py is not installed", an NVMLError), or None when it
        is or has not been tried yet. For one log line, not for every sample."""
        return self._nvml.error

    def available(self) -> bool:
        """Whether NVML answers on this node (initialises it on the first call)."""
        return self._nvml.get() is not None

    def sample(self, indices: Iterable[int]) -> list[dict[str, Any]] | None:
        """One entry per readable GPU among `indices` (device indices of the node, not the run's
        renumbered ones): {"index", "name", "utilization_percent", "memory_used_mb",
        "memory_total_mb"}, in the order asked. None when NVML is not there; [] for no indices
        (without touching NVML). A GPU whose handle, name or memory cannot be read is left out;
        one that does not report utilisation (MIG, some older boards) gets None for it.
        """
        wanted = [int(index) for index in indices]
        if not wanted:
            return []
        nvml = self._nvml.get()
        if nvml is None:
            return None
        readings = []
        for index in wanted:
            reading = _read_device(nvml, index)
            if reading is not None:
                readings.append(reading)
        return readings


def _read_device(nvml: Any, index: int) -> dict[str, Any] | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        used_mb, total_mb = int(memory.used) // MIB, int(memory.total) // MIB
    except Exception:  # NVMLError (gone, lost, no permission), or an odd binding: leave it out
        return None
    utilization: int | None
    try:
        utilization = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # NVMLError_NotSupported on MIG instances and some boards
        utilization = None
    return {
        "index": index,
        "name": name,
        "utilization_percent": utilization,
        "memory_used_mb": used_mb,
        "memory_total_mb": total_mb,
    }
