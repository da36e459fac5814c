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


def stat_fields(pid: int | str, proc: Path = Path("/proc")) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): [0] state, [1] parent, [2] process group, [3] session, [11] utime, [12] stime;
    None when the process is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _members(field: int, value: int, proc: Path) -> list[int]:
    found = []
    for entry in os.listdir(proc):
        if entry.isdigit() and (fields := stat_fields(entry, proc)) and fields[field] == str(value):
            found.append(int(entry))
    return found


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of a process group."""
    return _members(2, pgid, proc)


def session_members(session_id: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of a session (a run's kernel leads one)."""
    return _members(3, session_id, proc)


def namespace_members(pid_namespace: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of every process in a PID namespace (by its inode): all of a sandbox's processes,
    wherever they moved (other sessions, other process groups)."""
    found = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(proc / entry / "ns" / "pid").st_ino == pid_namespace:
                    found.append(int(entry))
    return found


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
