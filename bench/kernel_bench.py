"""How fast a ready kernel is made, in one run on this machine: booting one (what plain
pre-starting pays per kernel: `jupyter_client.manager.start_new_kernel`) against a warm slot of
the agent's pool (a fork of the pre-imported template, at isolation none and in a bubblewrap
sandbox), until the kernel answers kernel_info. Wall time, and the CPU time the kernel's
processes spent to get there (what bounds throughput when kernels are made back to back).

Run: `.venv/bin/python bench/kernel_bench.py [count]` (default 10). Prints medians.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent")]

from reprolab_agent.limits import Limits  # noqa: E402
from reprolab_agent.pool import WarmPool  # noqa: E402
from reprolab_agent.sandbox import Unavailable, detect  # noqa: E402

from tests.integration.processes import descendants  # noqa: E402

TICKS = 100.0


def cpu_of(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def booted(count: int) -> tuple[list[float], list[float]]:
    from jupyter_client.manager import start_new_kernel

    walls, cpus = [], []
    for _ in range(count):
        start = time.perf_counter()
        manager, client = start_new_kernel(kernel_name="python3")
        walls.append(time.perf_counter() - start)
        pid = getattr(manager.provisioner, "pid", None)
        assert isinstance(pid, int)
        cpus.append(cpu_of({pid}))
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return walls, cpus


def forked(level: str, count: int, root: Path) -> tuple[list[float], list[float]]:
    sandbox = detect(level, protect=[], work_root=root / level)
    pool = WarmPool(sandbox, work_root=root / level, limits=Limits(), concurrency=1, spare=0)
    pool.start(fill=False)  # slots are made here, one at a time, not in the background
    walls, cpus = [], []
    try:
        for _ in range(count):
            before = descendants(os.getpid())  # the template and the sandboxes are below it
            start = time.perf_counter()
            slot = pool.make()
            walls.append(time.perf_counter() - start)
            new = descendants(os.getpid()) - before
            cpus.append(cpu_of(new))
            pool.discard(slot)
            pool.remove(slot)
    finally:
        pool.close()
    return walls, cpus


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    root = Path(tempfile.mkdtemp(prefix="reprolab-kernel-bench-"))
    med = statistics.median
    try:
        rows = [("baseline  boot a kernel (jupyter_client)", *booted(count))]
        for level in ("none", "bwrap"):
            try:
                rows.append((f"ours      warm slot, isolation {level:5}", *forked(level, count, root)))
            except Unavailable as error:
                print(f"(isolation {level} not measured: {error})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"a ready kernel, {count} each, medians (wall until kernel_info answers; CPU of its processes):")
    base_cpu = med(rows[0][2])
    for label, walls, cpus in rows:
        print(
            f"{label}: {med(walls) * 1000:6.0f} ms wall, {med(cpus) * 1000:5.0f} ms CPU ({med(cpus) / base_cpu:.2f}x)"
        )


if __name__ == "__main__":
    main()
