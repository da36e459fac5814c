"""A run's folder as the agent handles it: handing it to a run uid and back, listing what the run
left and reading it back, and closing protected paths to other users (level uid).

What a run leaves is hostile: links to what it could not read, FIFOs that block whoever opens
them, sparse files far larger than their blocks, folders nested thousands deep. So every walk
here is iterative (no recursion limit to hit), never follows a link, and every read is of a
regular file only, opened without blocking and bounded in size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import Unavailable


def walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under `root` (folder, entry), depth first, iteratively, never through links."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            yield folder, entry
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def hand_over(workdir: Path, uid: int, gid: int, *, files: bool = False) -> None:
    """Give the working directory (and every folder in it; with `files`, every file too) to
    `uid`. Inputs stay the agent's, readable and not writable by the run."""
    os.chown(workdir, uid, gid)
    os.chmod(workdir, 0o700)
    for _, entry in walk(workdir):
        with contextlib.suppress(OSError):
            if files or entry.is_dir(follow_symlinks=False):
                os.lchown(entry.path, uid, gid)


def regular_files(root: Path) -> list[Path]:
    """The regular files under a run's folder, never through a link: what a run leaves there is
    read by the agent, which must not follow a link the run made to what it could not read."""
    found = []
    for _, entry in walk(root):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found)


class TooLarge(OSError):
    """A file of the run's folder is larger than the agent will read."""


def read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """A regular file of a run's folder, refusing a link, a FIFO or a device (OSError), even one
    swapped in since it was listed; opened without blocking (a FIFO with no writer would hang
    an ordinary open), and refused past `limit` bytes (a sparse file is large without filling
    the disk)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if limit is not None and info.st_size > limit:
            raise TooLarge(f"{path.name} is {info.st_size} bytes, over the {limit} the agent reads")
        return handle.read(limit + 1 if limit is not None else -1)


def remove_tree(path: Path) -> None:
    """Remove a run's folder, however deep it nests (shutil.rmtree recurses, and a run can
    nest folders past Python's recursion limit)."""
    if shutil.which("rm"):
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False, timeout=600)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def close_to_others(protect: Iterable[Path], keep: Iterable[Path]) -> None:
    """For level uid: take the protected paths away from "others" (the run uids). A protected
    folder that leads to something kept (the Python environment, the working directories) keeps
    only the right to pass through it (no listing); everything else in it is closed."""
    kept = [Path(os.path.realpath(k)) for k in keep]

    def close(path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode) or path in kept:
            return
        mode = stat.S_IMODE(info.st_mode) & ~0o007
        leads = [k for k in kept if k.is_relative_to(path)]
        if not leads or not stat.S_ISDIR(info.st_mode):
            os.chmod(path, mode)
            return
        os.chmod(path, mode | 0o001)
        for entry in os.scandir(path):
            close(Path(entry.path))

    for path in protect:
        close(Path(os.path.realpath(path)))


def check_passable(paths: Iterable[Path]) -> None:
    """Other users must be able to pass through every folder above these (level uid)."""
    for path in paths:
        for parent in Path(os.path.realpath(path)).parents:
            if not parent.stat().st_mode & 0o001:
                raise Unavailable(f"{parent} cannot be passed by other users, so runs cannot reach {path}")
