"""One claimed run, from lease to completion: take a warm slot, place the inputs, start the job on
the waiting kernel, stream its events, watch it, upload what it left, complete (or release).

Failures of the node rather than of the notebook (no slot could be made, the kernel did not start,
the site stayed unreachable for an upload) are released as "infrastructure": the site retries them
elsewhere, up to its max_attempts. A run interrupted by the agent's shutdown is released as
"shutdown", which costs it no attempt.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import protocol
from .cache import FileCache
from .client import Client, GaveUp
from .environment import KernelChoice, capture
from .envs import BuildFailed, BuildStopped, Environment, EnvironmentCache, EnvironmentSpec, missing_module_hint
from .execute import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_KERNEL_DID_NOT_START,
    EXIT_NOTEBOOK_RAISED,
    EXIT_SUCCEEDED,
    FAILED,
)
from .gpus import GpuSampler, GpuSlots
from .grading import GRADED
from .inputs import NOTEBOOK, OUTPUT, place_files, place_notebook
from .lease import EventSender, Heartbeat, LeaseLost, RunContext
from .limits import Limits, describe
from .pool import Slot, WarmPool
from .results import Results
from .sandbox import Sandbox, hand_over
from .watch import RunWatch

log = logging.getLogger("reprolab_agent")

EXIT_STATES = {EXIT_SUCCEEDED: protocol.SUCCEEDED, EXIT_NOTEBOOK_RAISED: protocol.FAILED, EXIT_FAILED: protocol.FAILED}
RELEASE_RETRY_SECONDS = 10.0  # a release is worth a few retries; then the lease expires instead


class SlotUnavailable(RuntimeError):
    """The node could not make a sandbox or a kernel for the run now (its failure, not the run's)."""


class RunExecutor:
    def __init__(
        self,
        client: Client,
        cache: FileCache,
        work_root: Path,
        *,
        pool: WarmPool | None = None,
        kernel: str | None = None,
        network: bool = False,
        gpus: GpuSlots | None = None,
        gpu_sampler: GpuSampler | None = None,
        environments: EnvironmentCache | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.work_root = work_root
        self.pool = pool
        self.kernel = kernel  # the node's kernel for every run (--kernel), else the notebook's
        self.network = network  # the node's owner lets runs that ask for it use the network
        self.gpus = gpus or GpuSlots([])
        self.gpu_sampler = gpu_sampler
        self.environments = environments  # builds declared environments (None: the node does not)
        self.results = Results(client, cache)
        self.shutdown = threading.Event()  # set by the Agent when its grace period ends

    @property
    def sandbox(self) -> Sandbox:
        return self.pool.sandbox if self.pool is not None else Sandbox("none")

    @property
    def limits(self) -> Limits:
        return self.pool.limits if self.pool is not None else Limits()

    # -- one run ------------------------------------------------------------------------------------
    def execute(self, claim: dict[str, Any]) -> str:
        """Run one claimed run to its end. Returns the final state reported (or 'lost',
        'released')."""
        ctx = RunContext(claim=claim, client=self.client, workdir=self.work_root, shutdown=self.shutdown)
        heartbeat = Heartbeat(ctx)
        heartbeat.start()
        try:
            return self._execute(ctx)
        except LeaseLost as error:
            log.warning("%s", error)
            return "lost"
        finally:
            heartbeat.stop.set()
            heartbeat.wake.set()

    def _execute(self, ctx: RunContext) -> str:
        requirements = ctx.run.get(protocol.RUN_REQUIREMENTS) or {}
        wanted = int(requirements.get(protocol.REQ_GPUS) or (1 if requirements.get(protocol.REQ_GPU) else 0))
        gpus = self.gpus.acquire(wanted, int(requirements.get(protocol.REQ_MIN_GPU_MEMORY_MB) or 0))
        if gpus is None:
            return self.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"no {wanted} free GPU(s) on this node now")
        network = bool(requirements.get(protocol.REQ_NETWORK)) and self.network
        events = EventSender(ctx)
        events.start()
        try:
            with contextlib.ExitStack() as held:
                try:
                    environment = self._environment(ctx, events, held)
                except BuildStopped:
                    return self._stopped_while_building(ctx)
                except BuildFailed as error:
                    return self.complete(ctx, protocol.FAILED, f"Could not build the run's environment: {error}")
                return self._on_pool(ctx, events, network=network, gpus=gpus, environment=environment)
        finally:
            self.gpus.release(gpus)
            events.close()

    def _environment(self, ctx: RunContext, events: EventSender, held: contextlib.ExitStack) -> Environment | None:
        """The run's declared environment, built here unless an earlier run built it, and held
        (not evicted) until `held` closes; None for the node's base environment."""
        spec = EnvironmentSpec.from_claim(ctx.run.get(protocol.RUN_ENVIRONMENT))
        if spec is None:
            return None
        if self.environments is None or not self.environments.available:
            raise BuildFailed("this node does not build declared environments (uv is not installed beside the agent)")

        def say(message: str) -> None:
            events.add({"kind": protocol.LOG, "payload": {"message": message, "environment": spec.sha256}})

        deadline = time.monotonic() + float(ctx.run["timeout_seconds"])

        def stop() -> str:
            if ctx.cancel.is_set():
                return "cancelled"
            if ctx.shutdown.is_set():
                return "the agent is stopping"
            if ctx.lease_lost.is_set():
                return "the lease was lost"
            if time.monotonic() > deadline:
                ctx.timed_out = True
                return "timed out"
            return ""

        return held.enter_context(self.environments.use(spec, say, stop))

    def _stopped_while_building(self, ctx: RunContext) -> str:
        """A build given up for the run's sake: settle it as the same stop during the run would."""
        if ctx.lease_lost.is_set():
            raise LeaseLost(f"run {ctx.run_id}: lease lost while its environment was building")
        if ctx.shutdown.is_set():
            return self.release(ctx, protocol.RELEASE_SHUTDOWN, "the agent stopped while the environment was building")
        if ctx.cancel.is_set():
            return self.complete(ctx, protocol.CANCELLED, "Cancelled on request (while its environment was building).")
        return self.complete(
            ctx,
            protocol.FAILED,
            f"Timed out after {ctx.run['timeout_seconds']} s (while its environment was building).",
        )

    def _on_pool(
        self,
        ctx: RunContext,
        events: EventSender,
        *,
        network: bool,
        gpus: Sequence[int],
        environment: Environment | None,
    ) -> str:
        if ctx.run.get(protocol.RUN_KIND) == protocol.KIND_GRADING:
            from .grading_run import GradingJob

            return GradingJob(self, ctx, events, gpus=gpus, environment=environment).run()
        try:
            with self.slot_for(ctx, network=network, gpus=gpus, environment=environment) as slot:
                return self._on_slot(ctx, slot, events, environment)
        except SlotUnavailable as error:
            return self.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not prepare the run: {error}")

    @contextlib.contextmanager
    def slot_for(
        self, ctx: RunContext, *, network: bool, gpus: Sequence[int], environment: Environment | None
    ) -> Iterator[Slot]:
        """A slot of the pool for the run, its working directory the run's; afterwards no process
        of it survives. SlotUnavailable when the node cannot make a sandbox or a kernel now."""
        try:
            if self.pool is None:
                raise RuntimeError("the agent has no warm pool")
            slot = self.pool.take(network=network, gpus=gpus, environment=environment)
        except Exception as error:
            raise SlotUnavailable(str(error)) from error
        try:
            ctx.workdir = slot.workdir
            yield slot
        finally:
            self.pool.discard(slot)
            self.pool.remove(slot)
            self.pool.give_back()

    def _on_slot(self, ctx: RunContext, slot: Slot, events: EventSender, environment: Environment | None) -> str:
        try:
            notebook, kernel = place_notebook(ctx, kernel_override=self.kernel)
            place_files(ctx, self.cache, copy=self.sandbox.level != "none" and slot.user is None)
            if slot.user is not None:  # folders the inputs brought are the run's to write in
                hand_over(slot.workdir, slot.user.uid, slot.user.gid)
        except GaveUp as error:  # the site stayed unreachable: not the notebook's fault
            return self.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not fetch the inputs: {error}")
        except RuntimeError as error:
            return self.complete(ctx, protocol.FAILED, f"Could not prepare the run: {error}")
        if ctx.shutdown.is_set():
            return self.release(ctx, protocol.RELEASE_SHUTDOWN, "the agent stopped before the run started")
        snapshot = threading.Thread(
            target=self._record_environment,
            args=(ctx, notebook.stat().st_size, kernel, slot, environment),
            daemon=True,
        )
        snapshot.start()  # sent while the run executes: nothing waits on it but `complete`
        try:
            code, last_log = self._run_job(ctx, slot, kernel, events, environment)
        finally:
            events.done.set()  # on any error too: no flusher thread outlives its run
        assert self.pool is not None  # it made the slot
        self.pool.discard(slot)  # every process of the run ends before its files are read back
        events.close()
        snapshot.join()
        return self._settle(ctx, code, last_log, environment)

    def _record_environment(
        self, ctx: RunContext, notebook_size: int, kernel: KernelChoice, slot: Slot, environment: Environment | None
    ) -> None:
        """The environment snapshot. The inputs' sha256 are the ones verified on fetch (the
        node's cache is content-addressed), so nothing is hashed twice."""
        run = ctx.run
        inputs = [{"role": "notebook", "path": run["notebook_path"], "sha256": run["notebook_sha256"]}]
        inputs[0]["size"] = notebook_size
        inputs += [
            {"role": "data", "path": f["path"], "sha256": f["sha256"], "size": f["size"], "dataset": f.get("dataset")}
            for f in run["files"]
        ]
        if ctx.url(protocol.URL_ENVIRONMENT) is None:
            return
        snapshot = capture(
            kernel_name=kernel.name, kernel_chosen=kernel.chosen, inputs=inputs, env=slot.env, environment=environment
        )
        with contextlib.suppress(LeaseLost, GaveUp, RuntimeError):  # the run's completion says what matters
            ctx.call("POST", protocol.URL_ENVIRONMENT, json_body={"lease_id": ctx.lease_id, "environment": snapshot})

    def _run_job(
        self,
        ctx: RunContext,
        slot: Slot,
        kernel: KernelChoice,
        events: EventSender,
        environment: Environment | None,
        *,
        job: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, str]:
        """Start the job on the slot's waiting kernel (by default: papermill on the run's
        notebook), forward its events until it ends, with the watch over it (for `timeout`, by
        default the run's). Returns the exit code and the last log message. A grading job's
        observations (GRADE) are also kept in `ctx.grades`, its executed notebook in
        `ctx.graded`."""
        message = f"{kernel.describe()}; isolation: {self.sandbox.level}"
        message += f"; environment {environment.spec.short}" if environment else "; the node's base environment"
        if slot.gpus:
            message += f"; GPUs {','.join(map(str, slot.gpus))}"
        events.add(
            {
                "kind": protocol.LOG,
                "payload": {"message": message, "kernel": kernel.name, "kernel_chosen": kernel.chosen},
            }
        )
        slot.start(
            job
            or {
                "input": NOTEBOOK,
                "output": OUTPUT,
                "parameters": ctx.run["parameters"],
                "kernel": kernel.name,
                "language": kernel.language,
                "environment": environment is not None,
            }
        )
        ctx.started.set()  # later heartbeats say so; its first events already do
        sampler = self.gpu_sampler
        watch = RunWatch(
            ctx,
            slot,
            events,
            limits=self.limits,
            timeout=float(ctx.run["timeout_seconds"]) if timeout is None else timeout,
            gpus=(lambda: sampler.sample(slot.gpus)) if sampler is not None and slot.gpus else None,
        )
        watch.start()
        ended_before = slot.killed
        last_log = ""
        try:
            for event in slot.follow():
                kind = event.get("kind")
                if kind in (protocol.LOG, FAILED):  # FAILED: the run process's own error, its last word
                    last_log = str((event.get("payload") or {}).get("message", ""))
                elif kind == protocol.CELL_STARTED:
                    ctx.current_cell = event.get("cell_index")
                elif kind == protocol.GRADE:
                    ctx.grades.append({**(event.get("payload") or {}), "cell_index": event.get("cell_index")})
                elif kind == GRADED:
                    ctx.graded = event.get("payload") or {}
                if kind in protocol.AGENT_EVENT_KINDS:
                    events.add(event)
        finally:
            ctx.finished.set()
            watch.join()
        if slot.exit_code is not None:
            return slot.exit_code, last_log
        return (EXIT_INTERRUPTED if ended_before else -1), last_log

    def _settle(self, ctx: RunContext, code: int, last_log: str, environment: Environment | None) -> str:
        if ctx.lease_lost.is_set():
            raise LeaseLost(f"run {ctx.run_id}: lease lost while running")
        if ctx.stopped_for == "shutdown":
            return self.release(
                ctx, protocol.RELEASE_SHUTDOWN, "the agent stopped; its grace period ended before the run did"
            )
        if code == EXIT_KERNEL_DID_NOT_START and not ctx.cancel.is_set():
            return self.release(ctx, protocol.RELEASE_INFRASTRUCTURE, last_log or "the kernel did not start")
        state = protocol.CANCELLED if ctx.cancel.is_set() else EXIT_STATES.get(code, protocol.FAILED)
        message = "" if state == protocol.SUCCEEDED and not ctx.stopped_for else self._error_text(code, ctx, last_log)
        if code == EXIT_NOTEBOOK_RAISED:
            message += missing_module_hint(last_log, declared=environment is not None)
        if ctx.stopped_for:
            state = protocol.FAILED
        output = ctx.workdir / OUTPUT
        try:
            if output.exists():
                self.results.upload(ctx, output)
            elif state == protocol.SUCCEEDED:
                state, message = protocol.FAILED, "papermill wrote no output notebook"
            self.results.upload_artifacts(ctx, compare=state == protocol.SUCCEEDED)
        except GaveUp as error:  # the site stayed unreachable through every retry
            return self.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not upload the results: {error}")
        except RuntimeError as error:  # the site refused the output (4xx): that is the result
            state, message = protocol.FAILED, f"The site refused the output notebook: {error}"
        return self.complete(ctx, state, message)

    def _error_text(self, code: int, ctx: RunContext, last_log: str) -> str:
        if ctx.stopped_for:  # a limit the run broke: "memory limit 2 GiB exceeded in cell 4"
            return ctx.stopped_for[0].upper() + ctx.stopped_for[1:] + "."
        if ctx.timed_out:
            return f"Timed out after {ctx.run['timeout_seconds']} s."
        if ctx.cancel.is_set():
            return "Cancelled on request."
        if code == EXIT_NOTEBOOK_RAISED and last_log.startswith("MemoryError") and self.limits.memory_mb:
            # The kernel refused the allocation at the run's limit (RLIMIT_DATA): say which.
            where = f" in cell {ctx.current_cell}" if ctx.current_cell is not None else ""
            return f"{describe('memory', self.limits).capitalize()} exceeded{where}: {last_log}"
        reason = {
            EXIT_NOTEBOOK_RAISED: "The notebook raised an error",
            EXIT_FAILED: "papermill or the kernel failed",
        }.get(code, f"exit code {code}")
        return f"{reason}: {last_log}" if last_log else f"{reason}."

    # -- ending a run ---------------------------------------------------------------------------------
    def complete(self, ctx: RunContext, state: str, error: str = "", **extra: Any) -> str:
        """Report the run's end (`extra`: what a run of another kind reports with it)."""
        ctx.settled.set()  # the heartbeat stops renewing: this call ends the lease
        body = {"lease_id": ctx.lease_id, "state": state, "error": error, **extra}
        ctx.call("POST", protocol.URL_COMPLETE, json_body=body)
        log.info("run %s: %s", ctx.run_id, state)
        return state

    def release(self, ctx: RunContext, reason: str, detail: str) -> str:
        """Hand the run back to the site, which requeues it at once (`shutdown` costs it no
        attempt). If the site cannot be told, the lease runs out and the sweeper requeues it."""
        ctx.settled.set()
        if ctx.url(protocol.URL_RELEASE) is None:  # a site older than the release endpoint
            log.warning("run %s: the site cannot take it back; its lease will run out", ctx.run_id)
            return "lost"
        try:
            ctx.call(
                "POST",
                protocol.URL_RELEASE,
                json_body={"lease_id": ctx.lease_id, "reason": reason, "detail": detail[:2000]},
                retry_for=RELEASE_RETRY_SECONDS,
            )
        except LeaseLost:
            log.info("run %s: its lease had already ended; nothing to release", ctx.run_id)
            return "lost"
        except (GaveUp, RuntimeError) as error:
            log.warning("run %s: could not release it (%s); its lease will run out", ctx.run_id, error)
            return "lost"
        log.info("run %s: released (%s): %s", ctx.run_id, reason, detail)
        return "released"

    def hand_back(self, claim: dict[str, Any]) -> str:
        """Release a run claimed just as the agent began to stop, without starting it."""
        ctx = RunContext(claim=claim, client=self.client, workdir=self.work_root, shutdown=self.shutdown)
        return self.release(ctx, protocol.RELEASE_SHUTDOWN, "claimed as the agent was stopping")
