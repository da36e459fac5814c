"""The watch over one executing run: it ends the run on a cancel, a timeout, a lost lease, the
agent's shutdown or a broken resource limit, and samples the run's resources into events.

What a run uses is summed over its kernel's session (the kernel and everything it started that
did not leave the session): resident memory, CPU time and processes, read from /proc; the working
directory's size is read from the disk. A process that leaves the session (setsid) escapes the
sum, but not the per-process limits the kernel enforces on it (reprolab_agent.limits) nor the end
of the sandbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import protocol
from .lease import RunContext
from .limits import MIB, Limits, describe, folder_bytes
from .resources import Sample, sample_session, usage

log = logging.getLogger("reprolab_agent")

TICK_SECONDS = 0.05
LIMIT_SECONDS = 0.25  # how often memory, CPU time and processes are checked
FOLDER_SECONDS = 2.0  # how often the working directory is measured
RESOURCE_SECONDS = 2.0  # how often a `resources` event is sent
SHUTDOWN_KILL_SECONDS = 5.0  # after the agent's grace period, an interrupted run gets this long


class Stoppable(Protocol):
    def interrupt(self) -> None: ...
    def kill(self) -> None: ...


class EventSink(Protocol):
    def add(self, event: dict[str, Any]) -> None: ...


class RunWatch(threading.Thread):
    def __init__(
        self,
        ctx: RunContext,
        run: Stoppable,
        events: EventSink,
        *,
        limits: Limits,
        kernel_pid: int | None,
        timeout: float,
        gpus: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> None:
        super().__init__(name=f"watch-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.target = run
        self.events = events
        self.limits = limits
        self.kernel_pid = kernel_pid
        self.deadline = time.monotonic() + timeout
        self.gpus = gpus
        self.grace = float(ctx.claim.get(protocol.CLAIM_HEARTBEAT_SECONDS, 20))
        self._previous: Sample | None = None
        self._previous_at = 0.0

    def run(self) -> None:
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
                if not self.ctx.cancel.is_set():
                    self.ctx.claim["timed_out"] = True
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
                elif sample is not None and now >= next_report:
                    next_report = now + RESOURCE_SECONDS
                    self._report(sample, now)

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
        return sample_session(self.kernel_pid, pss=bool(self.limits.memory_mb)) if self.kernel_pid else None

    def _broken(self, sample: Sample | None, *, check_folder: bool) -> str | None:
        limits = self.limits
        if sample is not None:  # processes first: a fork bomb's memory is a symptom of its count
            if limits.processes and sample.processes >= limits.processes:
                return describe("processes", limits)
            memory = sample.pss_bytes if sample.pss_bytes is not None else sample.rss_bytes
            if limits.memory_mb and memory > limits.memory_mb * MIB:
                return describe("memory", limits)
            if limits.cpu_seconds and sample.cpu_seconds > limits.cpu_seconds:
                return describe("cpu", limits)
        if check_folder and limits.workdir_mb:
            ceiling = limits.workdir_mb * MIB
            if folder_bytes(self.ctx.workdir, stop_above=ceiling) > ceiling:
                return describe("workdir", limits)
        return None

    def _report(self, sample: Sample, now: float) -> None:
        if self._previous is not None:
            payload: dict[str, Any] = dict(usage(self._previous, sample, now - self._previous_at))
            gpus = self.gpus() if self.gpus is not None else None
            if gpus:
                payload["gpus"] = gpus
            self.events.add({"kind": protocol.RESOURCES, "payload": payload})
        self._previous, self._previous_at = sample, now
