"""The node's input cache: files addressed by sha256, fetched once, verified on the way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .client import Client
from .hashing import HashCache


class FileCache:
    """Input files cached by sha256, so a node fetches each dataset file once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.hashes = HashCache(root / "hashes.json")

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def fetch(self, client: Client, url: str, sha256: str, token: str) -> Path:
        """The cached file for this digest, downloaded (streamed, hashed on the way) if missing
        or if the cached copy no longer matches (checked through the (path, size, mtime) cache,
        so an unchanged file is not read again)."""
        target = self.path(sha256)
        if target.exists() and self.hashes.sha256(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            partial = Path(tmp.name)
        try:
            if client.download(url, partial, token=token) != sha256:
                raise RuntimeError(f"input {sha256[:12]} arrived corrupted (sha256 mismatch)")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self.hashes.remember(target, sha256)
        self.hashes.save()
        return target
