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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("reprolab_agent")

RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class GaveUp(Exception):
    """The site stayed unreachable for longer than the caller allowed."""


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

    def download(self, path: str, target: Path, *, token: str | None = None, retry_for: float | None = 300.0) -> str:
        """Stream a GET to `target` (never holding the body in memory); returns its sha256."""
        started = time.monotonic()
        delays = backoff_delays()
        while True:
            request = urllib.request.Request(  # noqa: S310
                self.url(path),
                headers={"Authorization": f"Bearer {token or self.token}", "User-Agent": "reprolab-agent"},
            )
            try:
                digest = hashlib.sha256()
                with urllib.request.urlopen(request, timeout=self.timeout) as response, target.open("wb") as sink:  # noqa: S310
                    while chunk := response.read(1024 * 1024):
                        digest.update(chunk)
                        sink.write(chunk)
                return digest.hexdigest()
            except urllib.error.HTTPError as error:
                if error.code not in RETRY_STATUSES:
                    raise RuntimeError(f"GET {path}: HTTP {error.code}") from error
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                problem = str(getattr(error, "reason", error))
            delay = next(delays)
            if retry_for is not None and time.monotonic() - started + delay > retry_for:
                raise GaveUp(f"GET {path}: {problem}; gave up after {retry_for:.0f} s")
            log.warning("GET %s: %s; retrying in %.1f s", path, problem, delay)
            time.sleep(delay)

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
        (None: forever)."""
        all_headers = {"Authorization": f"Bearer {token or self.token}", "User-Agent": "reprolab-agent"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        started = time.monotonic()
        delays = backoff_delays()
        while True:
            request = urllib.request.Request(self.url(path), data=data, method=method, headers=all_headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:  # noqa: S310
                    return Reply(response.status, response.read(), dict(response.headers))
            except urllib.error.HTTPError as error:
                reply = Reply(error.code, error.read(), dict(error.headers))
                if error.code not in RETRY_STATUSES:
                    return reply
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                problem = str(getattr(error, "reason", error))
            delay = next(delays)
            if retry_for is not None and time.monotonic() - started + delay > retry_for:
                raise GaveUp(f"{method} {path}: {problem}; gave up after {retry_for:.0f} s")
            log.warning("%s %s: %s; retrying in %.1f s", method, path, problem, delay)
            time.sleep(delay)
