"""The run process: forked from the warm template (reprolab_agent.warm) for one run, ahead of
the run, so that when a claim arrives a kernel is already waiting.

While it is still single-threaded and privileged, it
1. forks the run's keeper (reprolab_agent.keeper), which joins every namespace of the run's
   sandbox and starts the kernels inside its PID namespace: run code can neither see nor signal
   the run process, which watches it from outside;
2. joins the sandbox's user and mount namespaces itself (it sees the run's files as the run does,
   and nothing the sandbox hides), then gives up every privilege (reprolab_agent.nsenter): a run
   uid for a root agent, no capabilities, no set-uid gains;
3. takes the run's environment and working directory;
then it has the keeper fork the warm kernel (or, in a declared environment, boot the environment's
own Python as the kernel), connects to it, says `ready` on its event channel
and waits for the job. The job runs through papermill on the warm kernel, or, for a notebook that
asks for another kernel, on that kernel started by the keeper (a cold start, said in the events).

Channels (pipes the agent passed through the template): `events`, JSON lines to the agent, the
last one {"kind": "exit", "payload": {"code": N}}; `job`, JSON lines from the agent: the job,
then possibly {"interrupt": true}. End of file on `job` means the agent let go: everything ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any, NoReturn

from . import execute, keeper, nsenter, protocol
from .kernel import (
    ENGINE,
    KERNEL_FOLDER,
    ForkedKernel,
    capped_client,
    cold_command,
    connect,
    register_engine,
    serves_warm,
    write_connection_file,
)
from .limits import Limits

READY_TIMEOUT = 60.0
# The namespaces the run process itself joins: enough to see the run's files as the run does.
OWN_NAMESPACES = ("user", "mnt")


def serve(spec: dict[str, Any], fds: dict[str, Any]) -> NoReturn:
    """The whole life of a run process (never returns)."""
    code = execute.EXIT_FAILED
    try:
        execute.open_channel(fds["events"])
        code = _serve(spec, fds)
    except BaseException as error:  # setting up failed: say why; the agent discards this slot
        execute.emit(execute.FAILED, message=f"{type(error).__name__}: {error}")
    execute.emit(execute.EXIT, code=code)
    os._exit(code)


def _serve(spec: dict[str, Any], fds: dict[str, Any]) -> int:
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # papermill and its logging use stderr, the agent's log; events have their own pipe
    os.close(null)
    namespaces: list[tuple[str, int]] = fds["namespaces"]
    limits = Limits.from_json(spec.get("limits"))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:  # the keeper
        ours.close()
        for name in ("events", "job"):
            os.close(fds[name])
        in_user_namespace = any(name == "user" for name, _ in namespaces)
        terms = keeper.Terms(
            uid=spec.get("uid"),
            gid=spec.get("gid"),
            privileged=in_user_namespace or os.geteuid() == 0,
            workdir=spec["workdir"],
            env=spec["env"],
            limits=limits,
        )
        keeper.serve(theirs, namespaces=[fd for _, fd in namespaces], terms=terms, lifeline=fds.get("lifeline"))
    theirs.close()
    if fds.get("lifeline") is not None:
        os.close(fds["lifeline"])
    for name, fd in namespaces:
        if name not in OWN_NAMESPACES:
            os.close(fd)
    nsenter.enter([fd for name, fd in namespaces if name in OWN_NAMESPACES], uid=spec.get("uid"), gid=spec.get("gid"))
    os.chdir(spec["workdir"])
    os.environ.clear()
    os.environ.update(spec["env"])
    connection_file = write_connection_file(Path(spec["workdir"]) / KERNEL_FOLDER)
    if spec.get("kernel_python"):  # a declared environment: its own Python boots the kernel
        argv = [spec["kernel_python"], "-m", "ipykernel_launcher", "-f", connection_file]
        request = {"exec": {"argv": [*argv, "--HistoryManager.hist_file=:memory:"], "env": {}}}
        kernel = _start_kernel(ours, request)
    else:
        kernel = _start_kernel(ours, {"warm": {"connection_file": connection_file}})
    client = connect(connection_file, kernel, timeout=READY_TIMEOUT)
    execute.emit(execute.READY, kernel=kernel.kernel_name, kernel_pid=kernel.pid)
    job_channel = os.fdopen(fds["job"], "r")
    line = job_channel.readline()
    if not line:  # the agent never needed this slot
        kernel.shutdown_kernel()
        return 0
    job = json.loads(line)
    runner = _JobRunner(ours, kernel, client, limits, kernel_python=spec.get("kernel_python") or "")
    threading.Thread(target=_follow_job_channel, args=(job_channel, runner), daemon=True).start()
    return runner.run(job)


def _start_kernel(channel: socket.socket, request: dict[str, Any], name: str = "python3") -> ForkedKernel:
    channel.send(json.dumps(request).encode())
    message, fds, _flags, _address = socket.recv_fds(channel, 1 << 16, 1)
    reply = json.loads(message or b"{}")
    if "pid" not in reply or not fds:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(f"the keeper could not start the kernel: {reply.get('error', 'it ended')}")
    return ForkedKernel(int(reply["pid"]), fds[0], kernel_name=name)


def _report_grade(observation: dict[str, Any]) -> None:
    execute.emit(protocol.GRADE, observation.pop("index"), **observation)


def _follow_job_channel(channel: Any, runner: _JobRunner) -> None:
    """After the job: {"interrupt": true} interrupts the kernel (and what it started); end of
    file means the agent let go of the run, so everything ends now."""
    for line in channel:
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(line).get("interrupt"):
                runner.kernel.interrupt_kernel()
    runner.kernel.shutdown_kernel()
    os._exit(execute.EXIT_INTERRUPTED)


class _JobRunner:
    def __init__(
        self, keeper_channel: socket.socket, kernel: ForkedKernel, client: Any, limits: Limits, *, kernel_python: str
    ):
        self.keeper = keeper_channel
        self.kernel = kernel
        self.client = client
        self.limits = limits
        self.kernel_python = kernel_python  # a declared environment's Python ("": the warm kernel)

    def run(self, job: dict[str, Any]) -> int:
        if job.get("kind") == protocol.KIND_GRADING:
            return self.grade(job)
        name = job.get("kernel") or None
        try:
            # In a declared environment, the environment's kernel serves the notebook's (Python) kernel.
            if name and not job.get("environment") and not serves_warm(name):
                self._go_cold(name)
        except RuntimeError as error:  # the cold kernel died or stayed silent: the node's failure
            execute.emit(protocol.LOG, message=str(error))
            return execute.EXIT_KERNEL_DID_NOT_START
        except Exception as error:  # no such kernel here: the run's own problem
            execute.emit(protocol.LOG, message=f"{type(error).__name__}: {error}")
            return execute.EXIT_FAILED

        def cut(cell_index: int) -> None:
            execute.emit(protocol.LOG, cell_index, message="output past the run's limit was dropped", limit="output")

        register_engine(self.kernel, self.client, output_bytes=self.limits.output_mb * 2**20, on_cut=cut)
        try:
            return execute.run_papermill(
                execute.Progress(),
                input_path=job["input"],
                output_path=job["output"],
                parameters=job.get("parameters") or {},
                kernel_name=name,
                language=job.get("language"),
                engine=ENGINE,
            )
        finally:
            with contextlib.suppress(Exception):
                self.client.stop_channels()
            self.kernel.shutdown_kernel()

    def grade(self, job: dict[str, Any]) -> int:
        """One execution of a grading run (reprolab_agent.grading): `phase` "feedback" (the
        notebook without hidden tests, as the student would run it) or "graded" (every cell,
        test cells guarded and observed). The executed notebook is the last event, never a file:
        the run's folder is the student code's to write in."""
        import nbformat
        from jupyter_core.utils import run_sync
        from nbclient import NotebookClient

        from . import grading

        name = job.get("kernel") or None
        try:
            if name and not job.get("environment") and not serves_warm(name):
                self._go_cold(name)
        except RuntimeError as error:
            execute.emit(protocol.LOG, message=str(error))
            return execute.EXIT_KERNEL_DID_NOT_START
        except Exception as error:
            execute.emit(protocol.LOG, message=f"{type(error).__name__}: {error}")
            return execute.EXIT_FAILED
        nb = nbformat.from_dict(job["notebook"])
        for cell in nb.cells:  # nbclient reads each source as one string; files may hold lists of lines
            cell.source = grading.source_of(cell)
        graded = job.get("phase") == "graded"

        def cut(cell_index: int) -> None:
            execute.emit(protocol.LOG, cell_index, message="output past the run's limit was dropped", limit="output")

        capped = capped_client(NotebookClient, output_bytes=self.limits.output_mb * 2**20, on_cut=cut)
        execution = grading.Execution(
            grading.observing_client(capped),
            nb,
            self.kernel,
            self.client,
            cell_timeout=int(job.get("cell_timeout") or 30),
        )
        try:
            if graded:
                finished = run_sync(grading.graded_execution)(execution, execute.Progress(), _report_grade)
                note = "" if finished else "the grading stopped early"
            else:
                note = run_sync(grading.feedback_execution)(execution)
                finished = not note
        finally:
            with contextlib.suppress(Exception):
                self.client.stop_channels()
            self.kernel.shutdown_kernel()
        execute.emit(grading.GRADED, notebook=nb, finished=finished, note=note)
        return execute.EXIT_SUCCEEDED

    def _go_cold(self, name: str) -> None:
        """Replace the warm kernel by the one the notebook asks for."""
        execute.emit(protocol.LOG, message=f"cold kernel: {name} is not kept warm on this node", cold_kernel=name)
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        self.kernel.shutdown_kernel()
        connection_file = write_connection_file(Path.cwd() / KERNEL_FOLDER, name="cold")
        argv, env = cold_command(name, connection_file)
        self.kernel = _start_kernel(self.keeper, {"exec": {"argv": argv, "env": env}}, name=name)
        execute.emit(execute.KERNEL, kernel_pid=self.kernel.pid)  # the agent watches this one now
        self.client = connect(connection_file, self.kernel, timeout=READY_TIMEOUT)
