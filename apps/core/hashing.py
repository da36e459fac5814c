"""Content addressing: stream a file through sha256 and store it under its digest.

Files are read in chunks and never loaded whole into memory, so a multi-gigabyte dataset file
costs a chunk of memory, not its size.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from django.core.exceptions import ValidationError
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


def verify_sha256(stream: IO[bytes], expected: str) -> tuple[str, int]:
    """(sha256, size) of the stream when it is the `expected` digest; else ValidationError. Run it
    on the spooled upload before anything is stored: a corrupted upload leaves no blob behind."""
    sha256, size = sha256_of(stream)
    if sha256 != expected.strip().lower():
        raise ValidationError({"sha256": f"The upload's sha256 is {sha256}, not {expected}: resend it."})
    return sha256, size


def _store(stream: IO[bytes], storage: Storage) -> tuple[StoredBlob, bool]:
    """Store a stream content-addressed: (the blob, whether this call created its file)."""
    sha256, size = sha256_of(stream)
    name = blob_name(sha256)
    created = False
    if not storage.exists(name):
        saved = storage.save(name, File(stream))
        if saved != name:  # lost a race with an identical upload: keep one copy
            storage.delete(saved)
        else:
            created = True
    return StoredBlob(sha256=sha256, size=size, storage_name=name), created


def store_blob(stream: IO[bytes], *, storage: Storage | None = None) -> StoredBlob:
    """Store a stream content-addressed. Identical content is stored once."""
    return _store(stream, storage or default_storage)[0]


@contextmanager
def blob_for_row(stream: IO[bytes], *, storage: Storage | None = None) -> Iterator[StoredBlob]:
    """Store a stream for the row that the with-block writes. When the block fails (a stale lease,
    a refused row, a database error), the blob is removed again if this call created it: an
    identical blob that was already there belongs to other rows and stays."""
    storage = storage or default_storage
    blob, created = _store(stream, storage)
    try:
        yield blob
    except BaseException:
        if created:
            storage.delete(blob.storage_name)
        raise
