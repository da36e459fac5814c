"""The agent loop: claim runs with `concurrency` worker threads and execute each on a warm slot.

Stopping (SIGTERM or SIGINT, like a CI runner): no new claims (a waiting long-poll ends at once);
runs in flight get a grace period to finish, then they are interrupted and released, so the site
requeues them at once and charges no attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from .cache import FileCache
from .client import Client, Interrupted
from .pool import WarmPool
from .run import RunExecutor

log = logging.getLogger("reprolab_agent")

SETTLE_SECONDS = 15.0  # after the grace period, how long the runs get to be released
DEFAULT_GRACE_SECONDS = 30.0


class Agent:
    """Claims and executes runs with `concurrency` worker threads until stopped (`stop`)."""

    def __init__(
        self,
        client: Client,
        *,
        concurrency: int = 1,
        work_root: Path,
        cache_root: Path,
        wait: float = 25.0,
        grace: float = DEFAULT_GRACE_SECONDS,
        pool: WarmPool | None = None,
        **executor_options: Any,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.pool = pool
        self.executor = RunExecutor(client, FileCache(cache_root), work_root, pool=pool, **executor_options)
        self.wait = wait
        self.grace = grace
        self.stopping = threading.Event()
        # Re-entrant: stop() runs in signal handlers, and a second signal may land inside the first.
        self._lock = threading.RLock()
        self._grace_timer: threading.Timer | None = None
        self._settle_by: float | None = None  # past this, serve() returns even if runs have not settled
        work_root.mkdir(parents=True, exist_ok=True)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming at once (a waiting claim ends now). Runs in flight get `grace` seconds
        to finish (none with `now`, or on a second call with `now`), then they are interrupted
        and released."""
        with self._lock:
            first = not self.stopping.is_set()
            self.stopping.set()
            self.client.interrupt()
            if now or self.grace <= 0:
                if self._grace_timer is not None:
                    self._grace_timer.cancel()
                self._end_grace()
            elif first:
                self._grace_timer = threading.Timer(self.grace, self._end_grace)
                self._grace_timer.daemon = True
                self._grace_timer.start()

    def _end_grace(self) -> None:
        with self._lock:
            if self.executor.shutdown.is_set():
                return
            self._settle_by = time.monotonic() + SETTLE_SECONDS
            self.executor.shutdown.set()
        log.info("grace period over: interrupting and releasing the runs in flight")

    def hello(self, capabilities: dict[str, Any]) -> dict[str, Any]:
        """Raises Interrupted when the agent is stopped while the site does not answer yet."""
        reply = self.client.call(
            "POST", "/api/v1/agent/hello/", json_body={"capabilities": capabilities}, retry_for=None, interruptible=True
        )
        if reply.status != 200:
            raise SystemExit(f"The site refused this node (HTTP {reply.status}): {reply.body[:300]!r}")
        return reply.json() or {}

    def claim(self) -> dict[str, Any] | None:
        try:
            reply = self.client.call(
                "POST",
                f"/api/v1/agent/claim/?wait={self.wait:g}",
                json_body={},
                timeout=self.wait + 30,
                retry_for=None,
                interruptible=True,  # stopping ends a waiting long-poll at once
            )
        except Interrupted:
            return None
        if reply.status == 204:
            return None
        if reply.status != 200:
            log.error("claim refused: HTTP %s %r", reply.status, reply.body[:300])
            self.stopping.wait(5)
            return None
        return reply.json()

    def worker(self, max_runs: int | None) -> None:
        done = 0
        while not self.stopping.is_set() and (max_runs is None or done < max_runs):
            claim = self.claim()
            if claim is None:
                continue
            if self.stopping.is_set():  # the claim was answered just as we began to stop
                self.executor.hand_back(claim)
                return
            log.info("run %s (attempt %s): claimed", claim["run"]["id"], claim["run"]["attempt"])
            try:
                self.executor.execute(claim)
            except Exception:
                log.exception("run %s: agent error", claim["run"]["id"])
            done += 1

    def serve(self, max_runs: int | None = None) -> None:
        """Work until stopped (or `max_runs` per worker). Returns once every run in flight has
        settled, or SETTLE_SECONDS after the grace period at the latest (the workers are daemon
        threads; a run's processes end with the agent: its slot lives on a pipe only the agent holds)."""
        threads = [
            threading.Thread(target=self.worker, args=(max_runs,), name=f"worker-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # short joins: the main thread stays free for signals
                if self._settle_by is not None and time.monotonic() > self._settle_by:
                    log.warning("runs still settling %.0f s after the grace period; exiting", SETTLE_SECONDS)
                    return
        if self.stopping.is_set():
            log.info("stopped")
