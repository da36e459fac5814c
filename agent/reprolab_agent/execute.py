"""Execute one notebook with papermill and report progress as JSON lines on stdout.

Runs as a child process of the agent (`python -m reprolab_agent.execute`), in the run's own
working directory and process session, inside the node's sandbox (reprolab_agent.sandbox), so
the agent can interrupt or kill the whole run (kernel included) without touching itself, and its
heartbeats never wait on the kernel. If the agent dies, a watchdog ends this process group too:
no orphan keeps computing a run that the site has already handed to another node. The watchdog
reads a pipe whose other end only the agent holds (`--lifeline`): end of file means the agent is
gone, whatever the namespace (inside a PID namespace the agent's pid means nothing).

Exit codes: 0 succeeded, 3 the notebook raised, 4 papermill or the kernel failed, 5 the kernel
did not start (died or stayed silent before answering kernel_info: the node's failure, which the
agent releases for a retry, not the notebook's result), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any

EXIT_KERNEL_DID_NOT_START = 5
OUTPUT_TEXT_LIMIT = 4000  # characters of an output's text/plain kept in an event
SOURCE_PREVIEW = 300  # characters of a cell's source shown while it runs

_channel: IO[str]
_lock = threading.Lock()


def emit(kind: str, cell_index: int | None = None, **payload: Any) -> None:
    line = json.dumps({"kind": kind, "cell_index": cell_index, "payload": payload, "t": time.time()})
    with _lock:
        _channel.write(line + "\n")
        _channel.flush()


class StreamForwarder:
    """papermill writes cell stdout/stderr here as it arrives; forward it as stream events."""

    def __init__(self, name: str, progress: Progress) -> None:
        self.name = name
        self.progress = progress

    def write(self, text: str) -> int:
        if text:
            emit("stream", self.progress.current, name=self.name, text=text)
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
            "cell_started",
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
                emit("output", cell_index, output=_summarize(output))
        emit("cell_executed", cell_index, status=status, duration=round(duration, 4))


def _summarize(output: Any) -> dict[str, Any]:
    """A small, text-only view of an output for live display (the full one is in the notebook)."""
    if output.get("output_type") == "error":
        return {"type": "error", "ename": output.get("ename"), "evalue": str(output.get("evalue"))[:OUTPUT_TEXT_LIMIT]}
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else str(text)
    return {"type": output.get("output_type"), "mime_types": sorted(data), "text": text[:OUTPUT_TEXT_LIMIT]}


def _watch_lifeline(fd: int) -> None:
    while os.read(fd, 1):  # the agent never writes: this returns only at end of file
        pass
    os.kill(0, signal.SIGKILL)  # 0: every process of this process group


def main(argv: list[str] | None = None) -> int:
    global _channel
    parser = argparse.ArgumentParser(prog="reprolab_agent.execute")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--parameters", default="{}", help="JSON object")
    parser.add_argument("--kernel", default=None)
    parser.add_argument("--language", default=None, help="for notebooks that do not name theirs")
    parser.add_argument("--lifeline", type=int, default=None, help="fd that ends when the agent dies")
    args = parser.parse_args(argv)

    # Progress goes to the real stdout; anything else that prints (papermill, warnings) goes to
    # stderr so it cannot corrupt the JSON-lines channel.
    _channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    if args.lifeline is not None:
        threading.Thread(target=_watch_lifeline, args=(args.lifeline,), daemon=True).start()

    import papermill
    from papermill.exceptions import PapermillExecutionError

    progress = Progress()
    kernel_up = threading.Event()  # nbclient's on_notebook_start: the kernel answered kernel_info
    emit("log", message=f"papermill {papermill.__version__} starting")
    try:
        papermill.execute_notebook(
            args.input,
            args.output,
            parameters=json.loads(args.parameters),
            kernel_name=args.kernel or None,
            language=args.language or None,
            cwd=os.getcwd(),
            progress_bar=False,
            log_output=False,
            stdout_file=StreamForwarder("stdout", progress),
            stderr_file=StreamForwarder("stderr", progress),
            on_cell_start=progress.on_cell_start,
            on_cell_executed=progress.on_cell_executed,
            on_notebook_start=lambda **_: kernel_up.set(),
            # Kill the kernel at once at the end: a polite shutdown sometimes costs 2.5 s.
            shutdown_kernel="immediate",
        )
    except PapermillExecutionError as error:
        emit("log", message=f"{error.ename}: {error.evalue}", failed_cell=error.exec_count)
        return 3
    except KeyboardInterrupt:
        emit("log", message="interrupted")
        return 130
    except Exception as error:  # kernel died, bad notebook, missing kernel…
        emit("log", message=f"{type(error).__name__}: {error}")
        # nbclient raises RuntimeError when the kernel dies or times out before kernel_info; a
        # missing kernel (NoSuchKernel) or a bad notebook is not RuntimeError and fails for good.
        if isinstance(error, RuntimeError) and not kernel_up.is_set():
            return EXIT_KERNEL_DID_NOT_START
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
