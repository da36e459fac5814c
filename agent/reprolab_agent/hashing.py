"""Streaming sha256 for node-side files, with a cache keyed by (path, size, mtime) so unchanged
files are never hashed twice, and parallel hashing of many files (hashlib releases the GIL on
large updates, so threads use every core).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 1024 * 1024  # 1 MiB reads keep memory flat at full speed (mmap would look resident)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """sha256 by (path, size, mtime_ns), persisted as JSON. A file whose size or mtime changed is
    hashed again; one that did not is trusted, as rsync and git do."""

    def __init__(self, location: Path | None = None) -> None:
        self.location = location
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        if location is not None and location.exists():
            try:
                self._entries = json.loads(location.read_text())
            except (OSError, ValueError):
                self._entries = {}  # a damaged cache only costs a re-hash
        self.hits = 0
        self.misses = 0

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
                self.hits += 1
                return str(entry[2])
        digest = sha256_file(path)
        with self._lock:
            self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
            self.misses += 1
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Record a digest computed elsewhere (while downloading), so it is not read again."""
        stat = path.stat()
        with self._lock:
            self._entries[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns, digest]

    def save(self) -> None:
        if self.location is None:
            return
        self.location.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.location.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(json.dumps(self._entries))
        os.replace(tmp, self.location)


def hash_files(paths: Iterable[Path], *, cache: HashCache | None = None, workers: int | None = None) -> dict[Path, str]:
    """sha256 of many files, on `workers` threads (default: every CPU this process may use)."""
    cache = cache or HashCache()
    files = list(paths)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = workers or usable
    with ThreadPoolExecutor(max_workers=max(1, count)) as pool:
        return dict(zip(files, pool.map(cache.sha256, files), strict=True))
