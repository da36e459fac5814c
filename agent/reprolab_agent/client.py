"""HTTP to the site with the standard library only, retrying what is worth retrying.

Network errors, 5xx and 429 are retried with exponential backoff and full jitter (the site may
be restarting); other 4xx answers are returned to the caller, who knows what they mean.

Calls made `interruptible` (the claim long-poll) end at once when the agent stops: `interrupt()`
shuts their sockets down and cuts their backoff short, while the calls of runs in flight
(heartbeats, events, uploads) carry on through the grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
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


class Interrupted(Exception):
    """An interruptible call was cut short by `Client.interrupt()`: the agent is stopping."""


class _Retry(Exception):
    """One attempt failed in a way worth retrying (network error, 5xx, 429)."""


def backoff_delays(base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


class _Sockets:
    """The sockets of interruptible calls in flight, so that `interrupt()` can shut them down
    from another thread (a blocked read then ends at once)."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        # Re-entrant: interrupt() runs in a signal handler, maybe while this thread is in add().
        self._lock = threading.RLock()
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # a finished call's socket goes

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._open.add(sock)
            if self.interrupted.is_set():  # interrupted while this call was connecting
                _shutdown(sock)

    def interrupt(self) -> None:
        self.interrupted.set()
        with self._lock:
            for sock in list(self._open):
                _shutdown(sock)

    def connection(self, http_class: Any) -> Callable[..., http.client.HTTPConnection]:
        """A factory of `http_class` connections that register their socket once connected."""

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = http_class(host, **kwargs)
            connect = conn.connect

            def tracked_connect() -> None:
                connect()
                self.add(conn.sock)

            conn.connect = tracked_connect
            return conn

        return make


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _TrackedHTTP(urllib.request.HTTPHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self.sockets = sockets

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(self.sockets.connection(http_class), req, **kwargs)


class _TrackedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self.sockets = sockets

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(self.sockets.connection(http_class), req, **kwargs)


class Client:
    def __init__(self, server: str, token: str, *, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._sockets = _Sockets()
        self._interruptible = urllib.request.build_opener(_TrackedHTTP(self._sockets), _TrackedHTTPS(self._sockets))

    def interrupt(self) -> None:
        """End interruptible calls now, and refuse new ones (they raise Interrupted)."""
        self._sockets.interrupt()

    @property
    def interrupted(self) -> bool:
        return self._sockets.interrupted.is_set()

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.server}{path}"

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}", "User-Agent": "reprolab-agent"}

    def _retrying(
        self, label: str, attempt: Callable[[], T], retry_for: float | None, *, interruptible: bool = False
    ) -> T:
        """Run `attempt` until it returns, retrying on `_Retry` with backoff and full jitter for
        up to `retry_for` seconds (None: forever). An interruptible call raises Interrupted as
        soon as the client is interrupted, also in the middle of its backoff."""
        started = time.monotonic()
        delays = backoff_delays()
        while True:
            if interruptible and self.interrupted:
                raise Interrupted(label)
            try:
                return attempt()
            except _Retry as retry:
                problem = str(retry)
            if interruptible and self.interrupted:
                raise Interrupted(label)
            delay = next(delays)
            if retry_for is not None and time.monotonic() - started + delay > retry_for:
                raise GaveUp(f"{label}: {problem}; gave up after {retry_for:.0f} s")
            log.warning("%s: %s; retrying in %.1f s", label, problem, delay)
            if interruptible:
                self._sockets.interrupted.wait(delay)
            else:
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
        interruptible: bool = False,
    ) -> Reply:
        """One request, retried on network errors, 5xx and 429 for up to `retry_for` seconds
        (None: forever). Other HTTP errors are returned to the caller, who knows what they mean.
        `interruptible`: `interrupt()` ends it at once (Interrupted)."""
        all_headers = self._headers(token)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})

        open_url = self._interruptible.open if interruptible else urllib.request.urlopen

        def attempt() -> Reply:
            request = urllib.request.Request(self.url(path), data=data, method=method, headers=all_headers)  # noqa: S310
            try:
                with open_url(request, timeout=timeout or self.timeout) as response:
                    return Reply(response.status, response.read(), dict(response.headers))
            except urllib.error.HTTPError as error:
                if error.code in RETRY_STATUSES:
                    raise _Retry(f"HTTP {error.code}") from error
                return Reply(error.code, error.read(), dict(error.headers))
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                raise _Retry(str(getattr(error, "reason", error))) from error

        return self._retrying(f"{method} {path}", attempt, retry_for, interruptible=interruptible)
