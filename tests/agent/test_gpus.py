"""reprolab_agent.gpus: GPU slots held by runs, and NVML readings through a fake `pynvml` (this
machine has no GPU; test_gpu_smoke.py reads a real one where there is)."""

import random
import sys
import threading
import time
import types
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reprolab_agent import gpus
from reprolab_agent.gpus import GpuSampler, GpuSlots, gpu_environment, visible_devices

MIB = 2**20

# --- a fake pynvml ---------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml(types.ModuleType):
    """The calls gpus.py makes, over a table of devices: index -> (name, util %, used MiB, total MiB)."""

    NVMLError = NVMLError

    def __init__(self, devices, *, init_error=None, init_delay=0.0):
        super().__init__("pynvml")
        self.devices = devices
        self.init_error = init_error
        self.init_delay = init_delay
        self.inits = 0
        self.broken = set()  # indices whose memory read fails
        self.no_utilization = set()  # indices that do not report utilisation

    def nvmlInit(self):
        time.sleep(self.init_delay)  # widens the window in which a second thread could init too
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlDeviceGetHandleByIndex(self, index):
        if index not in self.devices:
            raise NVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle[1]][0].encode()  # bytes, as nvidia-ml-py before 11.5 returns

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle[1] in self.no_utilization:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=self.devices[handle[1]][1], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        if handle[1] in self.broken:
            raise NVMLError("GPU is lost")
        _, _, used, total = self.devices[handle[1]]
        return types.SimpleNamespace(used=used * MIB, total=total * MIB, free=(total - used) * MIB)


DEVICES = {0: ("NVIDIA H100 80GB HBM3", 87, 30_000, 81_559), 1: ("NVIDIA A10", 0, 1, 22_731)}


def read(indices) -> list[dict[str, Any]]:
    """A sample that NVML answered."""
    readings = GpuSampler().sample(indices)
    assert readings is not None
    return readings


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch):
    """Every test starts in a process that has not tried NVML yet."""
    monkeypatch.setattr(gpus, "_PROCESS_NVML", gpus._Nvml())


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNvml(dict(DEVICES))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


# --- NVML sampling ---------------------------------------------------------------------------------


def test_utilisation_and_memory_are_reported_per_gpu(fake_nvml):
    assert GpuSampler().sample([1, 0]) == [
        {
            "index": 1,
            "name": "NVIDIA A10",
            "utilization_percent": 0,
            "memory_used_mb": 1,
            "memory_total_mb": 22_731,
        },
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "utilization_percent": 87,
            "memory_used_mb": 30_000,
            "memory_total_mb": 81_559,
        },
    ]


def test_memory_is_whole_mib_rounded_down(fake_nvml):
    fake_nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=MIB - 1, total=3 * MIB + 5)
    [reading] = read([0])
    assert (reading["memory_used_mb"], reading["memory_total_mb"]) == (0, 3)


def test_no_indices_need_no_nvml(fake_nvml):
    assert GpuSampler().sample([]) == []
    assert fake_nvml.inits == 0


def test_without_pynvml_there_is_no_sample(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    sampler = GpuSampler()
    assert sampler.sample([0]) is None
    assert not sampler.available()
    assert sampler.error == "nvidia-ml-py is not installed"


@pytest.mark.parametrize(
    "error",
    [NVMLError("NVML Shared Library Not Found"), NVMLError("Driver Not Loaded"), OSError("libnvidia-ml.so.1")],
)
def test_a_failing_nvml_init_gives_none_and_never_raises(monkeypatch, error):
    fake = FakeNvml(dict(DEVICES), init_error=error)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = GpuSampler()
    assert sampler.sample([0, 1]) is None
    assert sampler.sample([0]) is None
    assert sampler.error == f"{type(error).__name__}: {error}"
    assert fake.inits == 1  # a failure is remembered, not retried on every sample


def test_a_pynvml_that_breaks_on_import_gives_none(monkeypatch, tmp_path):
    (tmp_path / "pynvml.py").write_text("raise RuntimeError('half-installed')\n")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    sampler = GpuSampler()
    assert sampler.sample([0]) is None
    assert sampler.error == "RuntimeError: half-installed"


def test_a_failing_device_is_left_out_and_the_others_reported(fake_nvml):
    fake_nvml.broken.add(0)
    assert [reading["index"] for reading in read([0, 1, 7])] == [1]  # 7: no such device
    fake_nvml.broken.clear()
    assert [reading["index"] for reading in read([0, 1, 7])] == [0, 1]


def test_every_device_failing_gives_an_empty_list_not_none(fake_nvml):
    fake_nvml.broken.update({0, 1})
    assert GpuSampler().sample([0, 1]) == []


def test_a_gpu_without_utilisation_still_reports_memory(fake_nvml):
    fake_nvml.no_utilization.add(0)
    [reading] = read([0])
    assert reading["utilization_percent"] is None
    assert reading["memory_used_mb"] == 30_000


def test_nvml_is_initialised_once_across_samples_samplers_and_threads(fake_nvml):
    fake_nvml.init_delay = 0.05
    barrier = threading.Barrier(16)
    results, errors = [], []

    def work():
        try:
            barrier.wait()
            for _ in range(20):
                results.append(GpuSampler().sample([0, 1]))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 16 * 20
    assert all(result is not None and len(result) == 2 for result in results)
    assert fake_nvml.inits == 1


def test_available_initialises_nvml_once(fake_nvml):
    sampler = GpuSampler()
    assert sampler.error is None
    assert sampler.available()
    assert sampler.available()
    assert sampler.sample([0]) is not None
    assert fake_nvml.inits == 1
    assert sampler.error is None


# --- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------------


def test_visible_devices():
    assert visible_devices([0]) == "0"
    assert visible_devices([3, 1]) == "3,1"  # the run's cuda:0 is the first one named
    assert visible_devices([]) == ""  # every GPU hidden, not "all of them"


def test_gpu_environment_orders_devices_by_pci_bus():
    assert gpu_environment([2]) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2"}
    assert gpu_environment([]) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ""}


# --- GPU slots -------------------------------------------------------------------------------------


def node(*memory_mb, sharing=False):
    return GpuSlots([{"index": i, "memory_total_mb": mb} for i, mb in enumerate(memory_mb)], sharing=sharing)


def test_slots_take_probe_output_as_it_is():
    probed = [
        {"index": 0, "name": "NVIDIA H100", "memory_total_mb": 81_559, "compute_capability": "9.0"},
        {"index": 1, "name": "NVIDIA A10", "memory_total_mb": 22_731, "compute_capability": "8.6"},
    ]
    slots = GpuSlots(probed)
    assert slots.memory_mb == {0: 81_559, 1: 22_731}
    assert slots.in_use() == {0: 0, 1: 0}
    assert not slots.sharing


@pytest.mark.parametrize(
    "gpus_",
    [
        [{"index": 0}],
        [{"memory_total_mb": 10}],
        [{"index": "x", "memory_total_mb": 10}],
        [{"index": -1, "memory_total_mb": 10}],
        [{"index": 0, "memory_total_mb": 10}, {"index": 0, "memory_total_mb": 20}],
    ],
)
def test_malformed_gpu_lists_are_refused(gpus_):
    with pytest.raises(ValueError, match="GPU"):
        GpuSlots(gpus_)


def test_asking_for_no_gpu_always_succeeds():
    assert node().acquire(0) == []
    assert node().acquire(0, min_memory_mb=10**9) == []
    busy = node(100)
    assert busy.acquire(1) == [0]
    assert busy.acquire(0) == []


def test_a_cpu_only_node_gives_no_gpu():
    slots = node()
    assert slots.acquire(1) is None
    assert not slots.could_fit(1)
    assert slots.could_fit(0)


@pytest.mark.parametrize(("count", "min_memory_mb"), [(-1, 0), (1, -1)])
def test_negative_requests_are_refused(count, min_memory_mb):
    with pytest.raises(ValueError, match="cannot ask"):
        node(100).acquire(count, min_memory_mb)


def test_each_gpu_goes_to_one_run_at_a_time():
    slots = node(100, 100)
    first, second = slots.acquire(1), slots.acquire(1)
    assert sorted(first + second) == [0, 1]
    assert slots.acquire(1) is None
    slots.release(first)
    assert slots.acquire(1) == first


def test_the_memory_floor_is_respected():
    slots = node(16_000, 80_000, 24_000)
    assert slots.acquire(1, min_memory_mb=30_000) == [1]
    assert slots.acquire(1, min_memory_mb=30_000) is None  # the only big one is taken
    assert slots.acquire(2, min_memory_mb=20_000) is None  # one GPU of 24 GB left that fits
    assert slots.acquire(1, min_memory_mb=24_000) == [2]  # the floor is inclusive
    assert slots.acquire(1, min_memory_mb=24_001) is None
    assert slots.could_fit(1, min_memory_mb=80_000)
    assert not slots.could_fit(1, min_memory_mb=80_001)
    assert not slots.could_fit(2, min_memory_mb=30_000)


def test_the_smallest_gpus_that_fit_are_chosen_so_big_ones_stay_free():
    slots = node(80_000, 16_000, 40_000, 16_000)
    assert slots.acquire(1) == [1]  # smallest; between equals the lowest index
    assert slots.acquire(1, min_memory_mb=20_000) == [2]
    assert slots.acquire(1) == [3]
    assert slots.acquire(1) == [0]  # only the big one was left
    slots.release([0, 1, 2, 3])
    assert slots.acquire(2) == [1, 3]
    assert slots.acquire(2) == [0, 2]  # ascending, whatever the order of choice


def test_choices_are_deterministic():
    def run():
        slots = node(40, 10, 30, 10, 20, 40)
        return [slots.acquire(n, m) for n, m in [(1, 0), (2, 15), (1, 35), (1, 0), (2, 0), (1, 0)]]

    assert run() == run() == [[1], [2, 4], [0], [3], None, [5]]


def test_sharing_hands_a_gpu_to_several_runs_least_used_first():
    slots = node(100, 200, sharing=True)
    assert slots.acquire(1) == [0]  # the smaller, both unused
    assert slots.acquire(1) == [1]  # the least used
    assert slots.acquire(1) == [0]
    assert slots.acquire(2) == [0, 1]
    assert slots.in_use() == {0: 3, 1: 2}
    assert slots.acquire(1, min_memory_mb=150) == [1]  # the floor still holds: only GPU 1 fits
    assert slots.acquire(3) is None  # two GPUs: a run never gets one GPU twice
    slots.release([0, 0, 0])
    assert slots.in_use() == {0: 0, 1: 3}
    assert slots.acquire(1) == [0]


def test_release_of_what_is_not_held_raises_and_changes_nothing():
    slots = node(100, 100)
    held = slots.acquire(1)
    with pytest.raises(ValueError, match=r"not GPUs of this node: \[5\]"):
        slots.release([*held, 5])
    with pytest.raises(ValueError, match=r"released more often than they are held: \[1\]"):
        slots.release([1])
    with pytest.raises(ValueError, match="more often"):
        slots.release(held * 2)
    assert slots.in_use() == {0: 1, 1: 0}  # the failed calls released nothing
    slots.release(held)
    slots.release([])
    with pytest.raises(ValueError, match="more often"):
        slots.release(held)  # a second release is a bug: it could free another run's GPU
    assert slots.in_use() == {0: 0, 1: 0}


@settings(max_examples=200, deadline=None)
@given(
    memory=st.lists(st.integers(0, 4), max_size=5),
    sharing=st.booleans(),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 4), st.integers(0, 10)), max_size=40),
)
def test_slots_agree_with_a_simple_model(memory, sharing, steps):
    """Against a reference model: acquire gives what the rules say, release returns it."""
    slots = GpuSlots([{"index": i, "memory_total_mb": mb} for i, mb in enumerate(memory)], sharing=sharing)
    holders: Counter[int] = Counter()
    held: list[list[int]] = []  # what each successful acquire returned, not yet released
    for is_acquire, count, floor, pick in steps:
        if is_acquire or not held:
            fitting = [i for i, mb in enumerate(memory) if mb >= floor and (sharing or holders[i] == 0)]
            fitting.sort(key=lambda i: (holders[i], memory[i], i))
            expected = sorted(fitting[:count]) if len(fitting) >= count else None
            got = slots.acquire(count, floor)
            assert got == expected
            if got is not None:
                assert all(memory[i] >= floor for i in got)
                assert len(set(got)) == count
                holders.update(got)
                held.append(got)
        else:
            got = held.pop(pick % len(held))
            slots.release(got)
            holders.subtract(got)
        assert slots.in_use() == {i: holders[i] for i in range(len(memory))}
        if not sharing:
            assert all(n <= 1 for n in slots.in_use().values())


@pytest.mark.parametrize("sharing", [False, True])
def test_never_oversubscribed_under_many_threads(sharing):
    """Threads acquire and release at random; a shadow count of holders, kept by the threads
    themselves, must never show a GPU held twice (exclusive) nor disagree with the slots."""
    memory = [8, 16, 16, 24, 32, 48, 80, 80]
    slots = GpuSlots([{"index": i, "memory_total_mb": mb} for i, mb in enumerate(memory)], sharing=sharing)
    shadow: Counter[int] = Counter()
    shadow_lock = threading.Lock()
    violations: list[tuple[Any, ...]] = []
    errors: list[Exception] = []
    granted: Counter[int] = Counter()
    barrier = threading.Barrier(24)

    def work(seed):
        rng = random.Random(seed)
        mine: list[list[int]] = []
        try:
            barrier.wait()
            for _ in range(400):
                if mine and (rng.random() < 0.5 or len(mine) > 3):
                    got = mine.pop(rng.randrange(len(mine)))
                    with shadow_lock:  # before release: once released another thread may take it
                        shadow.subtract(got)
                    slots.release(got)
                    continue
                count, floor = rng.choice([0, 1, 1, 1, 2, 3]), rng.choice([0, 0, 10, 20, 40, 64])
                grant = slots.acquire(count, floor)
                if grant is None:
                    continue
                got = grant
                if len(set(got)) != count or any(memory[i] < floor for i in got):
                    violations.append(("bad grant", count, floor, got))
                with shadow_lock:
                    shadow.update(got)
                    granted.update(got)
                    if not sharing and any(shadow[i] > 1 for i in got):
                        violations.append(("held twice", got, dict(shadow)))
                mine.append(got)
            for got in mine:
                with shadow_lock:
                    shadow.subtract(got)
                slots.release(got)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not violations, violations[:5]
    assert slots.in_use() == dict.fromkeys(range(len(memory)), 0)
    assert set(granted) == set(range(len(memory)))  # every GPU was used at some point
