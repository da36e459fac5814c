"""Hashing on nodes and on the site, against named baselines, in one run on this machine:

1. one large file: our streaming sha256 (site: apps.core.hashing.sha256_of; node:
   reprolab_agent.hashing.sha256_file) beside `openssl dgst -sha256` (OpenSSL's SHA-NI path, the
   real limit here) and beside reading the whole file into memory (peak memory);
2. a 1,000-file dataset on one thread and on every core;
3. re-hashing the unchanged dataset through the (path, size, mtime) cache.

Run: `.venv/bin/python bench/hash_bench.py [size_mib]` (default 1024).
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent")]

from reprolab_agent.hashing import HashCache, hash_files, sha256_file  # noqa: E402

from apps.core.hashing import sha256_of  # noqa: E402

T = TypeVar("T")


def measure(action: Callable[[], T]) -> tuple[T, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """Wall time only: tracemalloc would slow the Python side of many small files several-fold."""
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 2**30:5.2f} GiB/s"


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        big = work / "big.bin"
        block = os.urandom(2**20)
        with big.open("wb") as handle:
            for _ in range(size_mib):
                handle.write(block)
        size = big.stat().st_size
        sha256_file(big)  # warm the page cache so every contender reads from memory

        start = time.perf_counter()
        openssl = subprocess.run(
            ["openssl", "dgst", "-sha256", "-r", str(big)], capture_output=True, text=True, check=True
        )
        t_openssl = time.perf_counter() - start
        node_digest, t_node, m_node = measure(lambda: sha256_file(big))
        with big.open("rb") as handle:
            (site_digest, _), t_site, m_site = measure(lambda: sha256_of(handle))
        with big.open("rb") as handle:
            whole, t_whole, m_whole = measure(lambda: hashlib.sha256(handle.read()).hexdigest())
        assert node_digest == site_digest == whole == openssl.stdout.split()[0]

        dataset = work / "dataset"
        dataset.mkdir()
        files = []
        for i in range(1000):
            path = dataset / f"part-{i:04d}.bin"
            path.write_bytes(block[: 256 * 1024] + i.to_bytes(4, "big"))
            files.append(path)
        total = sum(p.stat().st_size for p in files)
        _, t_one = timed(lambda: hash_files(files, workers=1))
        cores = len(os.sched_getaffinity(0))
        cache = HashCache(work / "hashes.json")
        _, t_all = timed(lambda: hash_files(files, cache=cache, workers=cores))
        _, t_again = timed(lambda: hash_files(files, cache=cache, workers=cores))
        assert cache.hits == len(files)

    print(f"one file of {size_mib} MiB (in the page cache):")
    print(f"  baseline  openssl dgst -sha256             : {t_openssl:6.2f} s  {rate(size, t_openssl)}")
    print(
        f"  ours      node sha256_file (1 MiB chunks)  : {t_node:6.2f} s  {rate(size, t_node)}, peak {m_node / 2**20:6.1f} MiB"
    )
    print(
        f"  ours      site sha256_of (upload streams)  : {t_site:6.2f} s  {rate(size, t_site)}, peak {m_site / 2**20:6.1f} MiB"
    )
    print(
        f"  baseline  read whole file + sha256         : {t_whole:6.2f} s  {rate(size, t_whole)}, peak {m_whole / 2**20:6.1f} MiB"
    )
    print(f"a dataset of 1,000 files ({total / 2**20:.0f} MiB):")
    print(f"  ours      one thread                       : {t_one:6.2f} s  {rate(total, t_one)}")
    print(
        f"  ours      {cores} threads (every core)          : {t_all:6.2f} s  {rate(total, t_all)}  ({t_one / t_all:.2f}x)"
    )
    print(
        f"  ours      re-hash, unchanged (cache)       : {t_again:6.3f} s  ({t_all / t_again:.0f}x faster than hashing)"
    )


if __name__ == "__main__":
    main()
