"""One claimed run's conversation with the site, under its lease: the run context, heartbeats on
their own thread (never behind the kernel), and numbered event batches on another."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol
from .client import Client, GaveUp, Reply

log = logging.getLogger("reprolab_agent")

EVENT_BATCH = 100
EVENT_FLUSH_SECONDS = 0.2


class LeaseLost(Exception):
    """The site answered 409: another attempt owns the run now. Stop and report nothing."""


@dataclass
class RunContext:
    claim: dict[str, Any]
    client: Client
    workdir: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    # The agent's grace period is over: interrupt the run and release it (shared by all runs).
    shutdown: threading.Event = field(default_factory=threading.Event)
    # Completing or releasing: the lease ends now, so a heartbeat's 409 is expected, not news.
    settled: threading.Event = field(default_factory=threading.Event)
    stopped_for: str = ""  # why the watch ended the run early: "shutdown", or a broken limit's words
    # The run's own process tree finished (its run process said `exit`, or its channel ended).
    finished: threading.Event = field(default_factory=threading.Event)
    current_cell: int | None = None  # the cell executing now, as its events said
    timed_out: bool = False  # the watch ended the run at its timeout_seconds
    # A grading run: what the grader observed of each test cell (GRADE payloads, with cell_index),
    # and the last execution's own word (its executed notebook, whether it finished).
    grades: list[dict[str, Any]] = field(default_factory=list)
    graded: dict[str, Any] | None = None

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.claim[protocol.CLAIM_RUN])

    @property
    def run_id(self) -> int:
        return int(self.claim[protocol.CLAIM_RUN]["id"])

    @property
    def lease_id(self) -> str:
        return str(self.claim[protocol.CLAIM_LEASE]["id"])

    @property
    def token(self) -> str:
        return str(self.claim[protocol.CLAIM_RUN_TOKEN])

    def url(self, name: str) -> str | None:
        return self.claim[protocol.CLAIM_URLS].get(name)

    def call(self, method: str, name: str, **kwargs: Any) -> Reply:
        reply = self.client.call(method, self.claim[protocol.CLAIM_URLS][name], token=self.token, **kwargs)
        if reply.status == 409 or reply.status == 401:
            # 409: stale lease; 401: the run token ended with it. Either way the run is not ours.
            self.lease_lost.set()
            raise LeaseLost(f"run {self.run_id}: {reply.json() if reply.body else reply.status}")
        if reply.status >= 400:
            raise RuntimeError(f"run {self.run_id} {name}: HTTP {reply.status} {reply.body[:300]!r}")
        return reply


class Heartbeat(threading.Thread):
    """Renews the lease every `heartbeat_seconds` (`wake` beats now). The site marks the run
    running on its first events, so starting it costs no round trip of its own."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(name=f"heartbeat-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.interval = float(ctx.claim.get(protocol.CLAIM_HEARTBEAT_SECONDS, 20))

    def beat(self) -> None:
        reply = self.ctx.call(
            "POST",
            protocol.URL_HEARTBEAT,
            json_body={"lease_id": self.ctx.lease_id, "running": self.ctx.started.is_set()},
            retry_for=self.interval,
        )
        if (reply.json() or {}).get("cancel_requested"):
            self.ctx.cancel.set()

    def tick(self) -> bool:
        """One heartbeat; False when there is nothing more to renew."""
        if self.ctx.settled.is_set():
            return False
        try:
            self.beat()
        except LeaseLost:
            if self.ctx.settled.is_set():  # this beat crossed our own complete or release
                log.debug("run %s: heartbeat after the lease ended", self.ctx.run_id)
            else:
                log.warning("run %s: lease lost; stopping", self.ctx.run_id)
            return False
        except (GaveUp, RuntimeError) as error:
            log.warning("run %s: heartbeat failed: %s", self.ctx.run_id, error)
        return True

    def run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stop.is_set() or not self.tick():
                return


class EventSender(threading.Thread):
    """Numbers events per attempt and posts them in batches from its own thread, at least every
    EVENT_FLUSH_SECONDS, so a finished cell is reported even while the next one is silent. A
    failed batch is resent as is (the site ignores sequence numbers it already has)."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(name=f"events-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.lock = threading.Lock()  # guards `pending`
        self.sending = threading.Lock()  # one POST at a time, so batches arrive in order
        self.done = threading.Event()

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.seq += 1
            self.pending.append(
                {
                    "seq": self.seq,
                    "kind": event["kind"],
                    "cell_index": event.get("cell_index"),
                    "payload": event.get("payload", {}),
                }
            )

    def flush(self) -> None:
        with self.sending:
            while True:
                with self.lock:
                    batch = self.pending[:EVENT_BATCH]
                if not batch:
                    return
                self.ctx.call(
                    "POST",
                    protocol.URL_EVENTS,
                    json_body={"lease_id": self.ctx.lease_id, "events": batch},
                    retry_for=120,
                )
                with self.lock:
                    del self.pending[: len(batch)]

    def run(self) -> None:
        while not self.done.wait(EVENT_FLUSH_SECONDS):
            try:
                self.flush()
            except LeaseLost:
                return  # the watchdog sees lease_lost and stops the run
            except (GaveUp, RuntimeError) as error:
                log.warning("run %s: sending events failed: %s", self.ctx.run_id, error)

    def close(self) -> None:
        """Stop the background flushing and send what is left."""
        self.done.set()
        self.join()
        self.flush()
