"""Resource use of a run's processes (the papermill child and its kernel), read from /proc.

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


def sample_session(session_id: int, proc: Path = Path("/proc")) -> Sample | None:
    """Sum memory and CPU time over every process in a session (the run's own session)."""
    if not proc.is_dir():
        return None
    processes, rss, ticks = 0, 0, 0
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
            rss += int((entry / "statm").read_text().split()[1]) * PAGE_SIZE
            processes += 1
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return Sample(processes=processes, rss_bytes=rss, cpu_seconds=ticks / CLOCK_TICKS)


def usage(previous: Sample, current: Sample, seconds: float) -> dict[str, float | int]:
    """The payload of a `resources` event: memory now, CPU use since the previous sample."""
    busy = max(0.0, current.cpu_seconds - previous.cpu_seconds)
    return {
        "processes": current.processes,
        "rss_mb": round(current.rss_bytes / 2**20, 1),
        "cpu_percent": round(100.0 * busy / seconds, 1) if seconds > 0 else 0.0,
    }
