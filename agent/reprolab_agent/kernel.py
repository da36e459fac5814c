"""Warm kernels: a kernel forked from the pre-imported template instead of booted, and the
papermill engine that runs a notebook on it.

The run's keeper (reprolab_agent.keeper, forked from the template with ipykernel, IPython and
papermill already imported, and single-threaded) forks the kernel; the child makes its own sockets
and kernel app, as `python -m ipykernel_launcher` would, on IPC sockets inside the run's own
folder (never TCP: a run on the host network could otherwise reach another run's kernel). A
notebook that asks for another kernel gets that kernel's own command, executed the same way (a
cold start). Each kernel serves exactly one run and dies with it.

papermill's semantics are kept by running papermill itself (`execute_notebook`: parameters
injected, its metadata, the error cell, per-cell timing); only its engine differs, handing nbclient
the running kernel and an already-connected client instead of starting them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import protocol

WARM_KERNEL = "python3"
ENGINE = "reprolab-warm"
KERNEL_FOLDER = protocol.KERNEL_FOLDER  # in the run's working directory; hidden, so never an artifact


def serves_warm(kernel_name: str | None) -> bool:
    """Whether the warm kernel can run a notebook asking for `kernel_name`: it must name the
    python3 kernel, and python3 must be this interpreter's own ipykernel here (an operator's
    kernel spec of that name pointing elsewhere runs cold, as it asks)."""
    if kernel_name != WARM_KERNEL:
        return False
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(WARM_KERNEL)
    except Exception:  # no kernelspec machinery or no such kernel: nothing is warm
        return False
    argv = list(spec.argv)
    if len(argv) < 3 or argv[1:3] != ["-m", "ipykernel_launcher"]:
        return False
    # jupyter_client runs a spec's bare "python" as the interpreter it runs in (this one).
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return argv[0] in bare or os.path.realpath(argv[0]) == os.path.realpath(sys.executable)


def become_warm_kernel(connection_file: str) -> None:
    """Turn this freshly forked process into the run's kernel, as `python -m ipykernel_launcher
    -f FILE` would, minus the imports the template already made. Never returns."""
    from ipykernel import kernelapp

    launcher = Path(kernelapp.__file__).parent.parent / "ipykernel_launcher.py"
    sys.argv = [str(launcher), "-f", connection_file]  # what a notebook sees in a booted kernel
    app = kernelapp.IPKernelApp.instance()
    app.initialize(["-f", connection_file, "--HistoryManager.hist_file=:memory:"])
    app.start()


def cold_command(kernel_name: str, connection_file: str) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment of an installed kernel (a cold start), as
    jupyter_client would launch it; NoSuchKernel when it is not installed here."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    argv = [
        str(a).replace("{connection_file}", connection_file).replace("{resource_dir}", spec.resource_dir)
        for a in spec.argv
    ]
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if argv and argv[0] in bare:
        argv[0] = sys.executable
    if "ipykernel_launcher" in argv:
        argv.append("--HistoryManager.hist_file=:memory:")
    return argv, {str(k): str(v) for k, v in (spec.env or {}).items()}


class ForkedKernel:
    """A kernel the run's keeper started, known by a pidfd (no race with a recycled pid), shaped
    like the parts of a jupyter_client kernel manager that nbclient uses when it is handed a
    running kernel (it starts nothing and, not owning the manager, shuts nothing down: that is
    ours to do)."""

    has_kernel = True

    def __init__(self, pid: int, pidfd: int, kernel_name: str = WARM_KERNEL) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.kernel_name = kernel_name
        self.ipykernel = kernel_name == WARM_KERNEL

    def is_alive(self) -> bool:
        if self.pidfd < 0:
            return False
        readable, _, _ = select.select([self.pidfd], [], [], 0)
        return not readable  # a pidfd turns readable when its process ends

    def interrupt_kernel(self) -> None:
        """SIGINT to the kernel's session (the kernel and what it started), as a terminal would."""
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGINT)

    def shutdown_kernel(self, now: bool = True, restart: bool = False) -> None:
        if self.pidfd < 0:
            return
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        os.close(self.pidfd)
        self.pidfd = -1


def write_connection_file(folder: Path, name: str = "warm") -> str:
    """A connection file for IPC sockets in `folder` (relative paths: both ends run in the run's
    working directory, and a Unix socket path must stay short)."""
    from jupyter_client.connect import write_connection_file as write

    folder.mkdir(mode=0o700, exist_ok=True)
    path = f"{KERNEL_FOLDER}/{name}.json"
    write(path, transport="ipc", ip=f"{KERNEL_FOLDER}/{name}")
    return path


def connect(connection_file: str, kernel: ForkedKernel, *, timeout: float = 60.0) -> Any:
    """An asynchronous client connected to the kernel and ready (kernel_info answered and IOPub
    delivering), on the event loop that nbclient uses later in this thread. Fails as soon as the
    kernel dies, rather than at the timeout."""
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_core.utils import run_sync

    client = AsyncKernelClient()
    client.load_connection_file(connection_file)
    client.start_channels()
    deadline = time.monotonic() + timeout

    async def ready() -> None:
        while True:
            if not kernel.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} s")
            client.kernel_info()
            try:
                reply = await client.shell_channel.get_msg(timeout=0.5)
            except Empty:
                continue
            if reply["msg_type"] != "kernel_info_reply":
                continue
            try:  # a message on IOPub (the reply's status) shows the subscription is live
                await client.iopub_channel.get_msg(timeout=0.2)
            except Empty:
                continue
            return

    run_sync(ready)()
    client.allow_stdin = False
    return client


def capped_client(base: Any, *, output_bytes: int, on_cut: Any = None) -> Any:
    """`base` (an nbclient NotebookClient class) keeping what a run displays within
    `output_bytes` (0: no cap): past it, outputs and widget state are dropped (and not streamed
    either), with one note in the notebook saying so. A subclass may exempt messages (`exempt`)."""

    budget = _Budget()

    class CappedClient(base):
        def exempt(self, msg: dict[str, Any], cell_index: int) -> bool:
            return False

        def over_budget(self, outs: Any, msg: dict[str, Any], cell_index: int) -> bool:
            if not output_bytes or self.exempt(msg, cell_index):
                return False
            budget.spent += message_bytes(msg)
            if budget.spent <= output_bytes:
                return False
            if not budget.noted:
                budget.noted = True
                if on_cut is not None:
                    on_cut(cell_index)
                from nbformat.v4 import new_output

                note = f"[ReproLab: output past this run's limit of {output_bytes // 2**20} MiB was dropped]\n"
                outs.append(new_output("stream", name="stderr", text=note))
            return True

        def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
            if msg.get("msg_type") in OUTPUT_MESSAGES and self.over_budget(outs, msg, cell_index):
                return None
            return super().output(outs, msg, display_id, cell_index)

        def handle_comm_msg(self, outs: Any, msg: dict[str, Any], cell_index: int) -> None:
            # Widget state is kept for the notebook's metadata: it counts like output.
            if self.over_budget(outs, msg, cell_index):
                return
            super().handle_comm_msg(outs, msg, cell_index)

    return CappedClient


def register_engine(kernel: ForkedKernel, client: Any, *, output_bytes: int, on_cut: Any = None) -> None:
    """Make papermill's engine `ENGINE` run on `kernel` through `client`, already connected,
    keeping what the run displays within `output_bytes` (0: no cap)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    CappedClient = capped_client(PapermillNotebookClient, output_bytes=output_bytes, on_cut=on_cut)

    class WarmEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            # The same arguments as papermill's own NBClientEngine makes of them.
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            notebook_client = CappedClient(nb_man, km=kernel, **final_kwargs)
            notebook_client.kc = client  # nbclient drops a kc given to its constructor
            return notebook_client.execute()

    papermill_engines.register(ENGINE, WarmEngine)


OUTPUT_MESSAGES = frozenset({"stream", "display_data", "execute_result", "error", "update_display_data"})


class _Budget:
    spent = 0
    noted = False


def message_bytes(msg: dict[str, Any]) -> int:
    """About how much of the notebook one output or comm message takes: its text, data (display
    data or widget state), metadata and traceback."""
    content = msg.get("content") or {}
    size = len(str(content.get("text", "")))
    data = content.get("data") or {}
    values = data.values() if isinstance(data, dict) else [data]
    for value in values:
        size += len(value) if isinstance(value, str) else len(json.dumps(value, default=str))
    if content.get("metadata"):
        size += len(json.dumps(content["metadata"], default=str))
    for line in content.get("traceback") or []:
        size += len(str(line))
    return size
