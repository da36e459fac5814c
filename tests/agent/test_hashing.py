"""Node-side hashing: streaming, cached by (path, size, mtime), parallel."""

import hashlib
import os

from reprolab_agent.hashing import HashCache, hash_files, sha256_file


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_unchanged_files_are_not_hashed_again_and_changed_ones_are(tmp_path):
    cache = HashCache(tmp_path / "cache.json")
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n")
    first = cache.sha256(path)
    assert cache.sha256(path) == first
    assert (cache.hits, cache.misses) == (1, 1)

    path.write_bytes(b"a,b\n1,3\n")  # same size, new content and mtime
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert cache.sha256(path) == hashlib.sha256(b"a,b\n1,3\n").hexdigest()
    assert cache.misses == 2


def test_the_cache_persists_between_agent_starts(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"x")
    first = HashCache(tmp_path / "cache.json")
    first.sha256(path)
    first.save()
    second = HashCache(tmp_path / "cache.json")
    assert second.sha256(path) == hashlib.sha256(b"x").hexdigest()
    assert (second.hits, second.misses) == (1, 0)


def test_hash_files_hashes_many_files_in_parallel(tmp_path):
    files = []
    for i in range(50):
        path = tmp_path / f"f{i}"
        path.write_bytes(str(i).encode() * 1000)
        files.append(path)
    digests = hash_files(files, workers=2)
    assert digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
