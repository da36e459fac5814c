"""Per-run resource limits: what the node's owner allows one run to use, how the kernel enforces
each limit on its own (rlimits, set in the run's kernel process before any run code), and how
the agent watches the rest (the sum over the run's processes) and names the one a run broke.

- memory: RLIMIT_DATA per process (private writable memory: a 4 GiB allocation fails at once
  with MemoryError, while a GPU runtime's huge address-space reservations do not count), and the
  agent's watch over the resident memory of all the run's processes together;
- CPU time: RLIMIT_CPU per process, and the watch over the sum;
- processes: the watch, which ends the run when its session holds that many, and RLIMIT_NPROC
  as a backstop (a fork bomb stops forking);
- output: what the notebook prints or displays is cut at `output_mb` (reprolab_agent.kernel);
- working directory: RLIMIT_FSIZE per file (a write past it fails with "File too large") and the
  watch over the folder's total size.
Wall time is the run's own `timeout_seconds`, enforced by the agent.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CPU_BACKSTOP_SECONDS = 5
# RLIMIT_NPROC counts tasks (threads too) of the uid, the run process and keeper included: a kernel
# has several threads and a numerical library one per core. The watch counts processes.
THREADS_PER_PROCESS = 4
TASK_SLACK = 64


@dataclass(frozen=True)
class Limits:
    """0 means no limit."""

    memory_mb: int = 0
    cpu_seconds: int = 0
    processes: int = 0
    output_mb: int = 0
    workdir_mb: int = 0

    def as_capability(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        fields = cls.__dataclass_fields__
        if not isinstance(data, dict):
            return cls()
        return cls(**{k: int(v) for k, v in data.items() if k in fields and isinstance(v, int) and v >= 0})

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def default_limits(memory_total_mb: int | None) -> Limits:
    """What a node enforces unless its owner says otherwise: a run may not take the node's
    memory (three quarters of it), fork without bound, print without bound or fill its disk."""
    memory = int(memory_total_mb * 0.75) if memory_total_mb else 0
    return Limits(memory_mb=memory, processes=512, output_mb=64, workdir_mb=10 * 1024)


def apply_rlimits(limits: Limits) -> None:
    """In the run's kernel process, before any run code: the per-process half of each limit.
    Hard limits equal soft ones, so run code cannot raise them."""

    def cap(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    if limits.memory_mb:
        cap(resource.RLIMIT_DATA, limits.memory_mb * MIB)
    if limits.cpu_seconds:  # a backstop: the agent's watch ends the run first, and says why
        cap(resource.RLIMIT_CPU, limits.cpu_seconds + CPU_BACKSTOP_SECONDS)
    if limits.processes:  # a backstop too: it counts threads, and every task of the run's uid
        cap(resource.RLIMIT_NPROC, limits.processes * THREADS_PER_PROCESS + TASK_SLACK)
    if limits.workdir_mb:
        # A write past it fails with EFBIG ("File too large") instead of killing the kernel.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        cap(resource.RLIMIT_FSIZE, limits.workdir_mb * MIB)
    cap(resource.RLIMIT_CORE, 0)  # no core dumps of run code in the working directory


MAX_ENTRIES = 200_000  # files and folders in a run's working directory (inodes are a shared disk's)


def tree_entries(root: Path) -> Iterator[os.stat_result | None]:
    """Everything under `root` (not `root` itself), as lstat results (None for an entry that
    vanished before it could be read): never through links, walked iteratively (a run may nest
    folders past any recursion limit)."""
    stack = [str(root)]
    while stack:
        try:
            scanned = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in scanned:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                yield None
                continue
            yield info
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)


def folder_usage(root: Path, *, stop_above: int | None = None) -> tuple[int, int]:
    """(bytes, entries) under `root`: blocks of files and folders; stops early past
    `stop_above` bytes or MAX_ENTRIES entries."""
    total = entries = 0
    for info in tree_entries(root):
        entries += 1
        if info is None:
            continue
        total += info.st_blocks * 512 if info.st_blocks else info.st_size
        if (stop_above is not None and total > stop_above) or entries > MAX_ENTRIES:
            break
    return total, entries


def describe(what: str, limits: Limits) -> str:
    """The limit a run broke, in words: "memory limit 2 GiB"."""
    if what == "memory":
        return f"memory limit {_size(limits.memory_mb)}"
    if what == "cpu":
        return f"CPU time limit {limits.cpu_seconds} s"
    if what == "processes":
        return f"process limit {limits.processes}"
    if what == "output":
        return f"output limit {_size(limits.output_mb)}"
    if what == "workdir":
        return f"working directory limit {_size(limits.workdir_mb)}"
    if what == "entries":
        return f"working directory limit of {MAX_ENTRIES} files and folders"
    return what


def _size(mb: int) -> str:
    return f"{mb // 1024} GiB" if mb >= 1024 and mb % 1024 == 0 else f"{mb} MiB"
