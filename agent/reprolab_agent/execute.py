"""Execute one notebook with papermill and report progress as JSON lines on the run's event
channel. Runs inside the run process (reprolab_agent.runproc), in the run's working directory,
inside the node's sandbox.

Exit codes: 0 succeeded, 3 the notebook raised, 4 papermill or the kernel failed, 5 the kernel
did not start (died or stayed silent before answering kernel_info: the node's failure, which the
agent releases for a retry, not the notebook's result), 130 interrupted.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO, Any

from . import protocol

# What the run process says to the agent on its event channel besides the run's own events
# (protocol.AGENT_EVENT_KINDS): its kernel is up, a kernel started for the job (a cold start),
# setting up failed, and its exit code, always last.
READY = "ready"
KERNEL = "kernel"
FAILED = "failed"
EXIT = "exit"

EXIT_SUCCEEDED = 0
EXIT_NOTEBOOK_RAISED = 3
EXIT_FAILED = 4
EXIT_KERNEL_DID_NOT_START = 5
EXIT_INTERRUPTED = 130
OUTPUT_TEXT_LIMIT = 4000  # characters of an output's text/plain kept in an event
SOURCE_PREVIEW = 300  # characters of a cell's source shown while it runs

_channel: IO[str] | None = None
_lock = threading.Lock()


def open_channel(fd: int) -> None:
    """Events go to this file descriptor (a pipe the agent reads), one JSON object per line."""
    global _channel
    _channel = os.fdopen(fd, "w", buffering=1)


def emit(kind: str, cell_index: int | None = None, **payload: Any) -> None:
    line = json.dumps({"kind": kind, "cell_index": cell_index, "payload": payload, "t": time.time()})
    with _lock:
        if _channel is None:
            return
        try:
            _channel.write(line + "\n")
            _channel.flush()
        except (BrokenPipeError, ValueError):  # the agent let go of this run: nobody listens
            pass


class StreamForwarder:
    """papermill writes cell stdout/stderr here as it arrives; forward it as stream events."""

    def __init__(self, name: str, progress: Progress) -> None:
        self.name = name
        self.progress = progress

    def write(self, text: str) -> int:
        if text:
            emit(protocol.STREAM, self.progress.current, name=self.name, text=text)
        return len(text)

    def flush(self) -> None:
        pass


class Progress:
    """nbclient hooks: `on_cell_start` before a cell runs, `on_cell_executed` once its execute
    reply is in (not `on_cell_complete`, which fires when the request is merely sent)."""

    def __init__(self) -> None:
        self.current: int | None = None
        self.started: dict[int, float] = {}

    def on_cell_start(self, cell: Any, cell_index: int) -> None:
        if cell.get("cell_type") != "code":
            return
        self.current = cell_index
        self.started[cell_index] = time.monotonic()
        tags = cell.get("metadata", {}).get("tags", [])
        source = cell.get("source", "")
        emit(
            protocol.CELL_STARTED,
            cell_index,
            cell_id=cell.get("id"),
            source=(source if isinstance(source, str) else "".join(source))[:SOURCE_PREVIEW],
            injected="injected-parameters" in tags,
        )

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        status = (execute_reply or {}).get("content", {}).get("status", "ok")
        duration = time.monotonic() - self.started.get(cell_index, time.monotonic())
        for output in cell.get("outputs", []):
            if output.get("output_type") in ("execute_result", "display_data", "error"):
                emit(protocol.OUTPUT, cell_index, output=_summarize(output))
        emit(protocol.CELL_EXECUTED, cell_index, status=status, duration=round(duration, 4))


def _summarize(output: Any) -> dict[str, Any]:
    """A small, text-only view of an output for live display (the full one is in the notebook)."""
    if output.get("output_type") == "error":
        return {"type": "error", "ename": output.get("ename"), "evalue": str(output.get("evalue"))[:OUTPUT_TEXT_LIMIT]}
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else str(text)
    return {"type": output.get("output_type"), "mime_types": sorted(data), "text": text[:OUTPUT_TEXT_LIMIT]}


def run_papermill(
    progress: Progress,
    *,
    input_path: str,
    output_path: str,
    parameters: dict[str, Any],
    kernel_name: str | None,
    language: str | None,
    engine: str,
) -> int:
    """papermill.execute_notebook with progress events, on a kernel that already answered
    kernel_info (a kernel that does not start is the run process's to report); the exit code."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    emit(protocol.LOG, message=f"papermill {papermill.__version__} starting")
    try:
        papermill.execute_notebook(
            input_path,
            output_path,
            parameters=parameters,
            kernel_name=kernel_name or None,
            language=language or None,
            engine_name=engine,
            cwd=os.getcwd(),
            progress_bar=False,
            log_output=False,
            stdout_file=StreamForwarder("stdout", progress),
            stderr_file=StreamForwarder("stderr", progress),
            on_cell_start=progress.on_cell_start,
            on_cell_executed=progress.on_cell_executed,
            # Kill the kernel at once at the end: a polite shutdown sometimes costs 2.5 s.
            shutdown_kernel="immediate",
        )
    except PapermillExecutionError as error:
        emit(protocol.LOG, message=f"{error.ename}: {error.evalue}", failed_cell=error.exec_count, ename=error.ename)
        return EXIT_NOTEBOOK_RAISED
    except KeyboardInterrupt:
        emit(protocol.LOG, message="interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # the kernel died, a bad notebook…
        emit(protocol.LOG, message=f"{type(error).__name__}: {error}")
        return EXIT_FAILED
    return EXIT_SUCCEEDED
