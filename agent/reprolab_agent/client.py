"""HTTP to the site with the standard library only, retrying what is worth retrying.

Network errors, 5xx and 429 are retried with exponential backoff and full jitter (the site may
be restarting); other 4xx answers are returned to the caller, who knows what they mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("reprolab_agent")

RETRY_STATUSES = {429, 500, 502, 503, 504}
T = TypeVar("T")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class GaveUp(Exception):
    """The site stayed unreachable for longer than the caller allowed."""


class _Retry(Exception):
    """One attempt failed in a way worth retrying (network error, 5xx, 429)."""


def backoff_delays(base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


class Client:
    def __init__(self, server: str, token: str, *, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.server}{path}"

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}", "User-Agent": "reprolab-agent"}

    def _retrying(self, label: str, attempt: Callable[[], T], retry_for: float | None) -> T:
        """Run `attempt` until it returns, retrying on `_Retry` with backoff and full jitter for
        up to `retry_for` seconds (None: forever)."""
        started = time.monotonic()
        delays = backoff_delays()
        while True:
            try:
                return attempt()
            except _Retry as retry:
                problem = str(retry)
            delay = next(delays)
            if retry_for is not None and time.monotonic() - started + delay > retry_for:
                raise GaveUp(f"{label}: {problem}; gave up after {retry_for:.0f} s")
            log.warning("%s: %s; retrying in %.1f s", label, problem, delay)
            time.sleep(delay)

    def download(self, path: str, target: Path, *, token: str | None = None, retry_for: float | None = 300.0) -> str:
        """Stream a GET to `target` (never holding the body in memory); returns its sha256."""

        def attempt() -> str:
            request = urllib.request.Request(self.url(path), headers=self._headers(token))  # noqa: S310
            digest = hashlib.sha256()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response, target.open("wb") as sink:  # noqa: S310
                    while chunk := response.read(1024 * 1024):
                        digest.update(chunk)
                        sink.write(chunk)
            except urllib.error.HTTPError as error:
                if error.code in RETRY_STATUSES:
                    raise _Retry(f"HTTP {error.code}") from error
                raise RuntimeError(f"GET {path}: HTTP {error.code}") from error
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                raise _Retry(str(getattr(error, "reason", error))) from error
            return digest.hexdigest()

        return self._retrying(f"GET {path}", attempt, retry_for)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float | None = None,
        retry_for: float | None = 300.0,
    ) -> Reply:
        """One request, retried on network errors, 5xx and 429 for up to `retry_for` seconds
        (None: forever). Other HTTP errors are returned to the caller, who knows what they mean."""
        all_headers = self._headers(token)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})

        def attempt() -> Reply:
            request = urllib.request.Request(self.url(path), data=data, method=method, headers=all_headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:  # noqa: S310
                    return Reply(response.status, response.read(), dict(response.headers))
            except urllib.error.HTTPError as error:
                if error.code in RETRY_STATUSES:
                    raise _Retry(f"HTTP {error.code}") from error
                return Reply(error.code, error.read(), dict(error.headers))
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                raise _Retry(str(getattr(error, "reason", error))) from error

        return self._retrying(f"{method} {path}", attempt, retry_for)
