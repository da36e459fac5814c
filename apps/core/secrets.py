"""Bearer secrets (API, node and run tokens): random, prefixed, stored as sha256 only."""

import hashlib
import secrets
from dataclasses import dataclass


def hash_secret(raw: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough (as GitHub does): a slow
    # password hash would only cost every request time.
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class NewSecret:
    raw: str  # shown once, never stored
    hash: str
    display_prefix: str


def new_secret(prefix: str) -> NewSecret:
    """A token such as `rlp_…`; the prefix lets secret scanners recognise a leaked one."""
    raw = prefix + secrets.token_urlsafe(32)
    return NewSecret(raw=raw, hash=hash_secret(raw), display_prefix=raw[: len(prefix) + 4])
