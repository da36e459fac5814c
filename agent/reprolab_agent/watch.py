"""The watch over one executing run: it ends the run on a cancel, a timeout, a lost lease, the
agent's shutdown or a broken resource limit, and samples the run's resources into events.

What a run uses is summed over all its processes (a root agent's run uid, else the sandbox's PID
namespace, else the kernel's session; and the run process): proportional memory, CPU time and
processes, read from /proc, plus what it stored in its sandbox's memory-backed /tmp and /dev/shm;
the working directory's size and entries are read from the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import protocol
from .lease import RunContext
from .limits import MAX_ENTRIES, MIB, Limits, describe, folder_usage
from .resources import Sample, sample_pids, usage

log = logging.getLogger("reprolab_agent")

TICK_SECONDS = 0.05
LIMIT_SECONDS = 0.25  # how often memory, CPU time and processes are checked
FOLDER_SECONDS = 2.0  # how often the working directory is measured
RESOURCE_SECONDS = 2.0  # how often a `resources` event is sent
SHUTDOWN_KILL_SECONDS = 5.0  # after the agent's grace period, an interrupted run gets this long


class Watched(Protocol):
    """What the watch needs of a run (a pool slot)."""

    def interrupt(self) -> None: ...
    def kill(self) -> None: ...
    def members(self) -> list[int]: ...
    def tmpfs_bytes(self) -> int: ...


class EventSink(Protocol):
    def add(self, event: dict[str, Any]) -> None: ...


class RunWatch(threading.Thread):
    def __init__(
        self,
        ctx: RunContext,
        run: Watched,
        events: EventSink,
        *,
        limits: Limits,
        timeout: float,
        gpus: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> None:
        super().__init__(name=f"watch-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.target = run
        self.events = events
        self.limits = limits
        self.deadline = time.monotonic() + timeout
        self.gpus = gpus
        self.grace = float(ctx.claim.get(protocol.CLAIM_HEARTBEAT_SECONDS, 20))
        self._previous: Sample | None = None
        self._previous_at = 0.0

    def run(self) -> None:
        try:
            self._watch()
        except Exception:  # a run must never outlive its watch: end it, and say the watch failed
            log.exception("run %s: the watch failed; ending the run", self.ctx.run_id)
            self.ctx.stopped_for = self.ctx.stopped_for or "the agent's watch over the run failed"
            self.target.kill()

    def _watch(self) -> None:
        next_limit = next_folder = 0.0
        next_report = time.monotonic() + RESOURCE_SECONDS
        while not self.ctx.finished.wait(TICK_SECONDS):
            now = time.monotonic()
            if self.ctx.lease_lost.is_set():  # another node owns the run now: stop at once
                self.target.kill()
                return
            if self.ctx.shutdown.is_set():  # the agent's grace period is over: stop, then release
                self.ctx.stopped_for = "shutdown"
                self._interrupt_then_kill(SHUTDOWN_KILL_SECONDS)
                return
            if self.ctx.cancel.is_set() or now > self.deadline:
                self.ctx.timed_out = not self.ctx.cancel.is_set()
                self._interrupt_then_kill(self.grace)
                return
            if now >= next_limit:
                next_limit = now + LIMIT_SECONDS
                sample = self._sample()
                broken = self._broken(sample, check_folder=now >= next_folder)
                if now >= next_folder:
                    next_folder = now + FOLDER_SECONDS
                if broken:
                    self._end_for(broken)
                    return
                if sample is not None and self._previous is None:
                    self._previous, self._previous_at = sample, now
                elif sample is not None and self._previous is not None and now >= next_report:
                    next_report = now + RESOURCE_SECONDS
                    self._report(self._previous, sample, now)

    def _interrupt_then_kill(self, grace: float) -> None:
        """Interrupt, then kill if the run has not finished within `grace`."""
        self.target.interrupt()
        if not self.ctx.finished.wait(grace):
            self.target.kill()

    def _end_for(self, broken: str) -> None:
        cell = self.ctx.current_cell
        where = f" in cell {cell}" if cell is not None else ""
        self.ctx.stopped_for = f"{broken} exceeded{where}"
        log.info("run %s: %s; ending it", self.ctx.run_id, self.ctx.stopped_for)
        self.target.kill()

    def _sample(self) -> Sample | None:
        members = self.target.members()
        return sample_pids(members, pss=bool(self.limits.memory_mb)) if members else None

    def _broken(self, sample: Sample | None, *, check_folder: bool) -> str | None:
        limits = self.limits
        if sample is not None:  # processes first: a fork bomb's memory is a symptom of its count
            if limits.processes and sample.processes >= limits.processes:
                return describe("processes", limits)
            memory = sample.pss_bytes if sample.pss_bytes is not None else sample.rss_bytes
            if limits.memory_mb and memory + self.target.tmpfs_bytes() > limits.memory_mb * MIB:
                return describe("memory", limits)
            if limits.cpu_seconds and sample.cpu_seconds > limits.cpu_seconds:
                return describe("cpu", limits)
        if check_folder and limits.workdir_mb:
            ceiling = limits.workdir_mb * MIB
            size, entries = folder_usage(self.ctx.workdir, stop_above=ceiling)
            if size > ceiling:
                return describe("workdir", limits)
            if entries > MAX_ENTRIES:
                return describe("entries", limits)
        return None

    def _report(self, previous: Sample, sample: Sample, now: float) -> None:
        payload: dict[str, Any] = dict(usage(previous, sample, now - self._previous_at))
        gpus = self.gpus() if self.gpus is not None else None
        if gpus:
            payload["gpus"] = gpus
        self.events.add({"kind": protocol.RESOURCES, "payload": payload})
        self._previous, self._previous_at = sample, now
