"""Comparing two large `.npy` arrays within rtol/atol, against the obvious baseline, in one run:

- ours: reprolab_agent.arrays.compare_npy (memory-mapped, chunk by chunk, with evidence: count
  outside tolerance, largest absolute and relative differences), as nodes and the site run it;
- baseline: `numpy.allclose(numpy.load(a), numpy.load(b))`, loading both arrays whole.

Each contender runs in a fresh child process. "Heap" is the peak of allocated memory (NumPy
reports its buffers to tracemalloc); peak RSS also counts the memory-mapped file pages, which
are the page cache's and reclaimable, so for the memory-mapped contender it overstates.
On a GPU node the same comparison through CuPy is added when CuPy sees a device.

Run: `.venv/bin/python bench/array_bench.py [size_mib_per_array]` (default 512).
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time, tracemalloc
sys.path.insert(0, {agent!r})
import numpy as np
from reprolab_agent import arrays
a, b, how = sys.argv[1], sys.argv[2], sys.argv[3]
tracemalloc.start()  # NumPy reports its buffers to tracemalloc: this is the arrays' own memory
start = time.perf_counter()
if how == "baseline":
    answer = bool(np.allclose(np.load(a), np.load(b), rtol=1e-9, atol=0))
elif how == "gpu":
    import cupy
    answer = arrays.compare_npy(a, b, rtol=1e-9, atol=0, xp=cupy, device="cuda:0")["status"]
else:
    answer = arrays.compare_npy(a, b, rtol=1e-9, atol=0, xp=np)["status"]
seconds = time.perf_counter() - start
print(json.dumps({{"answer": answer, "seconds": seconds, "heap_mib": tracemalloc.get_traced_memory()[1] / 2**20,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def contender(a: Path, b: Path, how: str) -> dict:
    code = CHILD.format(agent=str(ROOT / "agent"))
    done = subprocess.run([sys.executable, "-c", code, str(a), str(b), how], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def gpu_present() -> bool:
    sys.path.insert(0, str(ROOT / "agent"))
    from reprolab_agent.probe import probe_gpus

    return bool(probe_gpus()[0])


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    elements = size_mib * 2**20 // 8
    with tempfile.TemporaryDirectory() as workdir:
        a, b = Path(workdir) / "original.npy", Path(workdir) / "rerun.npy"
        original = np.lib.format.open_memmap(a, mode="w+", dtype=np.float64, shape=(elements,))
        rerun = np.lib.format.open_memmap(b, mode="w+", dtype=np.float64, shape=(elements,))
        step = 1 << 22
        for start in range(0, elements, step):  # written in pieces: the bench itself stays small
            piece = np.linspace(start, start + step, step, endpoint=False)[: elements - start]
            original[start : start + step] = piece
            rerun[start : start + step] = piece * (1 + 1e-12)
        original.flush()
        rerun.flush()
        del original, rerun
        contender(a, b, "ours")  # warm the page cache: every contender reads from memory

        print(f"Two {size_mib} MiB float64 arrays ({elements:,} elements), rerun = original * (1 + 1e-12), rtol 1e-9")
        rows = [("numpy.allclose on loaded arrays (baseline)", "baseline"), ("ReproLab compare_npy, NumPy", "ours")]
        if gpu_present():
            rows.append(("ReproLab compare_npy, CuPy on the GPU", "gpu"))
        for label, how in rows:
            started = time.perf_counter()
            result = contender(a, b, how)
            total = time.perf_counter() - started
            print(
                f"  {label:45s} {result['seconds']:6.2f} s  ({total:5.2f} s with start-up)  "
                f"heap peak {result['heap_mib']:7.1f} MiB  peak RSS {result['rss_mib']:6.0f} MiB  -> {result['answer']}"
            )


if __name__ == "__main__":
    main()
