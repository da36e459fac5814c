"""Resource use of a run's processes (its kernel and what the kernel started), read from /proc.

Linux only; elsewhere `sample_session` returns None and no resource events are sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


def sample_session(session_id: int, proc: Path = Path("/proc"), *, pss: bool = False) -> Sample | None:
    """Sum memory and CPU time over every process in a session (the run's own session); with
    `pss`, the proportional set size too (dearer to read)."""
    if not proc.is_dir():
        return None
    processes, rss, ticks = 0, 0, 0
    proportional: int | None = 0 if pss else None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != session_id:  # field 6 of stat: session id
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
            resident = int((entry / "statm").read_text().split()[1]) * PAGE_SIZE
            rss += resident
            processes += 1
            if proportional is not None:
                share = _pss(entry)
                proportional += resident if share is None else share
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return Sample(processes=processes, rss_bytes=rss, cpu_seconds=ticks / CLOCK_TICKS, pss_bytes=proportional)


def usage(previous: Sample, current: Sample, seconds: float) -> dict[str, float | int]:
    """The payload of a `resources` event: memory now, CPU use since the previous sample."""
    busy = max(0.0, current.cpu_seconds - previous.cpu_seconds)
    return {
        "processes": current.processes,
        "rss_mb": round(current.rss_bytes / 2**20, 1),
        "cpu_percent": round(100.0 * busy / seconds, 1) if seconds > 0 else 0.0,
    }
