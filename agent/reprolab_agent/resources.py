"""Resource use of a run's processes (its kernel and what the kernel started), read from /proc.

Linux only; elsewhere `sample_session` returns None and no resource events are sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .procs import session_members, stat_fields

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Sample:
    processes: int
    rss_bytes: int
    cpu_seconds: float
    # Proportional set size: shared pages split between the processes that share them. Forked
    # processes (a kernel and its forks) share most of their pages, which RSS counts once each.
    pss_bytes: int | None = None


def _pss(entry: Path) -> int | None:
    try:
        for line in (entry / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def sample_pids(pids: list[int], proc: Path = Path("/proc"), *, pss: bool = False) -> Sample:
    """Sum memory and CPU time over these processes; with `pss`, the proportional set size too
    (dearer to read). Processes that ended meanwhile count nothing."""
    processes, rss, ticks = 0, 0, 0
    proportional: int | None = 0 if pss else None
    for pid in set(pids):
        entry = proc / str(pid)
        fields = stat_fields(pid, proc)
        if fields is None or fields[0] == "Z":  # gone, or a zombie: it uses nothing
            continue
        try:
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
            resident = int((entry / "statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        rss += resident
        processes += 1
        if proportional is not None:
            share = _pss(entry)
            proportional += resident if share is None else share
    return Sample(processes=processes, rss_bytes=rss, cpu_seconds=ticks / CLOCK_TICKS, pss_bytes=proportional)


def sample_session(session_id: int, proc: Path = Path("/proc"), *, pss: bool = False) -> Sample | None:
    """Sum memory and CPU time over every process in a session (a run's kernel leads one)."""
    if not proc.is_dir():
        return None
    return sample_pids(session_members(session_id, proc), proc, pss=pss)


def usage(previous: Sample, current: Sample, seconds: float) -> dict[str, float | int]:
    """The payload of a `resources` event: memory now, CPU use since the previous sample."""
    busy = max(0.0, current.cpu_seconds - previous.cpu_seconds)
    return {
        "processes": current.processes,
        "rss_mb": round(current.rss_bytes / 2**20, 1),
        "cpu_percent": round(100.0 * busy / seconds, 1) if seconds > 0 else 0.0,
    }
