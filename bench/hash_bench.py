"""Streaming sha256 of uploads (apps.core.hashing.sha256_of) against the baseline of hashing the
whole file read into memory: time and peak Python memory.

Run: `.venv/bin/python bench/hash_bench.py [size_mib]`.
"""

import hashlib
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.core.hashing import sha256_of

T = TypeVar("T")


def measure(action: Callable[[], T]) -> tuple[T, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    with tempfile.NamedTemporaryFile() as handle:
        block = bytes(range(256)) * 4096
        for _ in range(size_mib):
            handle.write(block)
        handle.flush()
        with open(handle.name, "rb") as f:
            whole, t_whole, m_whole = measure(lambda: hashlib.sha256(f.read()).hexdigest())
        with open(handle.name, "rb") as f:
            (streamed, _), t_stream, m_stream = measure(lambda: sha256_of(f))
    assert whole == streamed
    print(f"file: {size_mib} MiB")
    print(f"  baseline  read whole + sha256 : {t_whole:6.2f} s, peak {m_whole / 2**20:8.1f} MiB")
    print(f"  ours      streaming sha256_of : {t_stream:6.2f} s, peak {m_stream / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
