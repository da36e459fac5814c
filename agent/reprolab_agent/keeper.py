"""The keeper: the one process of a run that lives inside every namespace of its sandbox and
starts the run's kernels there.

A process that joins a PID namespace with setns(2) may no longer create threads (the kernel refuses
CLONE_THREAD once a process's children belong to another PID namespace), and the run process
needs threads (ZMQ, nbclient). So the run process (reprolab_agent.runproc) forks the keeper first;
the keeper joins the sandbox's namespaces, stays single-threaded, and on request forks a kernel,
which lands in the sandbox's PID namespace, gives up every privilege, and then either becomes the
warm kernel (ipykernel is already imported: no boot) or executes another kernel's command (a cold
start). Each kernel comes back to the run process as a pidfd, so it can be watched and signalled
without any race on a recycled pid.

Requests (a SOCK_SEQPACKET socket with the run process): {"warm": {"connection_file"}} or
{"exec": {"argv", "env"}}, answered {"pid": N} with the pidfd attached, or {"error": "..."}. End of
file on that socket (the run process ended), or on the lifeline (the agent let go or died), kills
every kernel's session and ends the keeper.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from . import nsenter
from .kernel import become_warm_kernel
from .limits import Limits, apply_rlimits

EXIT_EXEC_FAILED = 71


@dataclass(frozen=True)
class Terms:
    """What every kernel of the run is given: its uid (a root agent's run uid), whether the keeper
    holds privileges to give up, its folder, environment and limits."""

    uid: int | None
    gid: int | None
    privileged: bool
    workdir: str
    env: dict[str, str]
    limits: Limits


def serve(channel: socket.socket, *, namespaces: list[int], terms: Terms, lifeline: int | None) -> NoReturn:
    """The keeper's whole life (never returns)."""
    code = 0
    try:
        nsenter.join(namespaces)
        os.chdir(terms.workdir)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped by the system
        _loop(channel, terms, lifeline)
    except BaseException as error:
        code = 1
        with contextlib.suppress(OSError):
            channel.send(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode())
    os._exit(code)


def _loop(channel: socket.socket, terms: Terms, lifeline: int | None) -> None:
    sessions: list[int] = []
    watched = [channel.fileno()] + ([lifeline] if lifeline is not None else [])
    try:
        while True:
            readable, _, _ = select.select(watched, [], [])
            if lifeline is not None and lifeline in readable and not os.read(lifeline, 1):
                return  # the agent let go of this run, or died
            if channel.fileno() not in readable:
                continue
            message = channel.recv(1 << 20)
            if not message:
                return  # the run process ended
            pid = _start(json.loads(message), terms, keep=watched)
            sessions.append(pid)
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # it died at once (and was reaped): say so
                channel.send(json.dumps({"error": "the kernel process ended as it started"}).encode())
                continue
            try:
                socket.send_fds(channel, [json.dumps({"pid": pid}).encode()], [pidfd])
            finally:
                os.close(pidfd)
    finally:
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _start(request: dict[str, Any], terms: Terms, *, keep: list[int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in keep:
            os.close(fd)
        _become_unprivileged(terms)
        nsenter.clear_keyrings()  # nothing of an earlier run with this uid
        nsenter.forbid_risky_syscalls()  # no user namespaces, no keyrings, for it and its children
        os.setsid()  # the kernel leads a session: it and what it starts are signalled together
        _plain_process()
        apply_rlimits(terms.limits)
        os.chdir(terms.workdir)
        if "warm" in request:
            os.environ.clear()
            os.environ.update(terms.env)
            become_warm_kernel(request["warm"]["connection_file"])
        else:
            command = request["exec"]
            argv = [str(a) for a in command["argv"]]
            extra = {str(k): str(v) for k, v in command.get("env", {}).items()}
            os.execvpe(argv[0], argv, {**terms.env, **extra})  # noqa: S606 - the kernelspec's own command
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.write(2, f"reprolab kernel: {type(error).__name__}: {error}\n".encode())
        code = EXIT_EXEC_FAILED
    os._exit(code)


def _become_unprivileged(terms: Terms) -> None:
    """The kernel gives up everything the keeper holds: root for a run uid, or the capabilities
    inside the sandbox's user namespace; and set-uid gains."""
    if terms.uid is not None:
        nsenter.drop_bounding_set()
        nsenter.become(terms.uid, terms.uid if terms.gid is None else terms.gid)
    elif terms.privileged:
        nsenter.drop_capabilities()
    nsenter.no_new_privs()


def _plain_process() -> None:
    """Standard streams on /dev/null (what a kernel writes outside its channels is nobody's),
    nothing inherited open beyond them, default signal handling."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 1 << 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as every Python process starts
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process's own streams
