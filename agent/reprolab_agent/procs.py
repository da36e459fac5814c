"""Processes as Linux's /proc shows them: a process group's members, a uid's processes, and
reaping every process of a run uid."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import time
from pathlib import Path


def _unassigned(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        try:
            grp.getgrgid(uid)
        except KeyError:
            return True
    return False


def _proc_stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    """The pids of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(entry)) and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def processes_of(uid: int) -> list[int]:
    """The live (not zombie) pids whose real uid is `uid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines() if ":" in line
            )
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                found.append(int(entry))
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return found


def reap(uid: int, *, timeout: float = 10.0) -> None:
    """SIGKILL every process of a run uid until none is left (a fork bomb loses the race)."""
    deadline = time.monotonic() + timeout
    while pids := processes_of(uid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of run uid {uid} survive SIGKILL: {pids[:10]}")
        time.sleep(0.01)  # let the kernel finish the kills before looking again
