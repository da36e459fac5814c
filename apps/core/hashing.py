"""Content addressing: stream a file through sha256 and store it under its digest.

Files are read in chunks and never loaded whole into memory, so a multi-gigabyte dataset file
costs a chunk of memory, not its size.
"""

import hashlib
from dataclasses import dataclass
from typing import IO

from django.core.files import File
from django.core.files.storage import Storage, default_storage

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    storage_name: str


def sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    """Return (hex digest, size in bytes) of a stream, read in chunks from its start."""
    digest = hashlib.sha256()
    size = 0
    stream.seek(0)
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def blob_name(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def store_blob(stream: IO[bytes], *, storage: Storage | None = None) -> StoredBlob:
    """Store a stream content-addressed. Identical content is stored once."""
    storage = storage or default_storage
    sha256, size = sha256_of(stream)
    name = blob_name(sha256)
    if not storage.exists(name):
        saved = storage.save(name, File(stream))
        if saved != name:  # lost a race with an identical upload: keep one copy
            storage.delete(saved)
    return StoredBlob(sha256=sha256, size=size, storage_name=name)
