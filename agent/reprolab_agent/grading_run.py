"""A grading run on the agent's side: the site's graded notebook (reprolab_agent.grading says how
it is executed and observed) in one or two slots of the pool, each a fresh sandbox.

With hidden tests, the feedback execution (without them) runs first in a slot of its own, which
is then discarded with every process in it; the graded execution gets a fresh slot. So nothing
that ran with the students' view of the notebook ever shares a sandbox with the hidden tests, and
nothing of the graded execution reaches the students' feedback.

The notebook reaches the run process inside its job (never as a file in the run's folder); the
executed notebooks come back as the run process's last event, never read from the run's folder
(the student's code could have rewritten any file there). The graded notebook is uploaded as the
run's output (instructors see it), the feedback notebook as the artifact FEEDBACK_ARTIFACT, and
the observations go with the completion; no other file of the run is uploaded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import grading, protocol
from .client import GaveUp
from .environment import KernelChoice, choose_kernel
from .envs import Environment
from .execute import EXIT_KERNEL_DID_NOT_START, EXIT_SUCCEEDED
from .inputs import notebook_body, place_files
from .lease import EventSender, LeaseLost, RunContext
from .sandbox import hand_over

if TYPE_CHECKING:
    from .run import RunExecutor

log = logging.getLogger("reprolab_agent")

FEEDBACK = "feedback"
GRADED = "graded"
DEFAULT_CELL_TIMEOUT = 30  # seconds, nbgrader's


def notebook_bytes(nb: dict[str, Any]) -> bytes:
    """An executed notebook as UTF-8 JSON, whatever its outputs hold: text a student's code made
    that is not Unicode (a lone surrogate) becomes '?'."""
    return json.dumps(nb, ensure_ascii=False).encode("utf-8", "replace")


class GradingJob:
    def __init__(
        self,
        executor: RunExecutor,
        ctx: RunContext,
        events: EventSender,
        *,
        gpus: Sequence[int],
        environment: Environment | None,
    ) -> None:
        self.executor = executor
        self.ctx = ctx
        self.events = events
        self.gpus = gpus
        self.environment = environment
        self.deadline = time.monotonic() + float(ctx.run["timeout_seconds"])
        settings = ctx.run.get(protocol.RUN_GRADING) or {}
        self.cell_timeout = int(settings.get("cell_timeout") or DEFAULT_CELL_TIMEOUT)
        self.feedback: dict[str, Any] | None = None

    def run(self) -> str:
        from .run import SlotUnavailable

        ctx, executor = self.ctx, self.executor
        try:
            nb = json.loads(notebook_body(ctx))
            if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
                raise ValueError("no cells")
        except GaveUp as error:
            return executor.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not fetch the notebook: {error}")
        except (ValueError, RecursionError, RuntimeError) as error:  # RuntimeError: it arrived corrupted
            return executor.complete(ctx, protocol.FAILED, f"The graded notebook is not readable: {error}")
        metadata = nb.get("metadata")
        kernel = choose_kernel(metadata if isinstance(metadata, dict) else {}, override=executor.kernel)
        phases = (FEEDBACK, GRADED) if grading.has_hidden_tests(nb) else (GRADED,)
        code, last_log = EXIT_SUCCEEDED, ""
        try:
            for phase in phases:
                code, last_log = self._phase(phase, nb, kernel)
                if code != EXIT_SUCCEEDED or ctx.stopped_for or ctx.cancel.is_set():
                    break
                if phase == FEEDBACK:
                    self.feedback = (ctx.graded or {}).get("notebook")
                    ctx.graded = None
        except SlotUnavailable as error:
            return executor.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not prepare the run: {error}")
        except GaveUp as error:
            return executor.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not fetch the inputs: {error}")
        except RuntimeError as error:
            return executor.complete(ctx, protocol.FAILED, f"Could not prepare the run: {error}")
        finally:
            self.events.done.set()
        self.events.close()
        return self._settle(code, last_log)

    def _phase(self, phase: str, nb: dict[str, Any], kernel: KernelChoice) -> tuple[int, str]:
        """One execution in a fresh slot; its exit code and last log message."""
        ctx, executor = self.ctx, self.executor
        if ctx.shutdown.is_set():
            ctx.stopped_for = "shutdown"
            return EXIT_SUCCEEDED, ""
        with executor.slot_for(ctx, network=False, gpus=self.gpus, environment=self.environment) as slot:
            sandboxed = executor.sandbox.level != "none"
            place_files(ctx, executor.cache, copy=sandboxed and slot.user is None)
            if slot.user is not None:
                hand_over(slot.workdir, slot.user.uid, slot.user.gid)
            self.events.add(
                {"kind": protocol.LOG, "payload": {"message": f"{phase} execution", "grading_phase": phase}}
            )
            job = {
                "kind": protocol.KIND_GRADING,
                "phase": phase,
                "notebook": nb if phase == GRADED else grading.without_hidden_tests(nb),
                "cell_timeout": self.cell_timeout,
                "kernel": kernel.name,
                "language": kernel.language,
                "environment": self.environment is not None,
            }
            left = max(self.deadline - time.monotonic(), 1.0)
            return executor._run_job(ctx, slot, kernel, self.events, self.environment, job=job, timeout=left)

    def _settle(self, code: int, last_log: str) -> str:
        ctx, executor = self.ctx, self.executor
        if ctx.lease_lost.is_set():
            raise LeaseLost(f"run {ctx.run_id}: lease lost while grading")
        if ctx.stopped_for == "shutdown":
            return executor.release(ctx, protocol.RELEASE_SHUTDOWN, "the agent stopped before the grading ended")
        if code == EXIT_KERNEL_DID_NOT_START and not ctx.cancel.is_set():
            return executor.release(ctx, protocol.RELEASE_INFRASTRUCTURE, last_log or "the kernel did not start")
        if ctx.cancel.is_set():
            return executor.complete(ctx, protocol.CANCELLED, "Cancelled on request.")
        graded = ctx.graded or {}
        finished = bool(graded.get("finished")) and code == EXIT_SUCCEEDED and not ctx.stopped_for
        if code == EXIT_SUCCEEDED and not ctx.stopped_for and graded:
            state, message = protocol.SUCCEEDED, str(graded.get("note") or "")
        else:
            state, message = protocol.FAILED, executor._error_text(code, ctx, last_log)
        try:
            results = executor.results
            if graded.get("notebook"):
                results.upload_notebook(ctx, notebook_bytes(graded["notebook"]))
            feedback = self.feedback if self.feedback is not None else graded.get("notebook")
            if feedback:
                body = notebook_bytes(feedback)
                results.put_artifact(ctx, protocol.FEEDBACK_ARTIFACT, body, content_type="application/x-ipynb+json")
        except GaveUp as error:
            return executor.release(ctx, protocol.RELEASE_INFRASTRUCTURE, f"could not upload the results: {error}")
        except LeaseLost:
            raise
        except Exception as error:  # refused, or a notebook the site cannot take: the report still counts
            state, message = protocol.FAILED, f"Could not upload the graded notebook: {type(error).__name__}: {error}"
        report = {"cells": ctx.grades, "finished": finished}
        return executor.complete(ctx, state, message, **{protocol.COMPLETE_GRADING: report})
