"""The warm template: a long-lived process with papermill, nbclient, jupyter_client, ipykernel and
IPython imported once, that forks one run process per run ahead of the run
(reprolab_agent.runproc). A fork costs milliseconds where a fresh interpreter importing all that
costs over a second here, and the kernel forked from it is ready in a fraction of a kernel boot.

It holds nothing a run may not see: it is started with the run environment's allowlist (never the
node token), owns no socket but its control channel to the agent (which every fork closes
first), and stays single-threaded with no ZMQ context, which forking requires.

Control channel (a SOCK_SEQPACKET socket pair with the agent): the template says
{"hello": {...}} once; then each request {"spec": {...}, "fds": [names]} carries file
descriptors (SCM_RIGHTS) in the order of `fds`, and is answered {"pid": N} or {"error": "..."}.
End of file on the channel (the agent stopped or died) ends the template; run processes already
forked live on until their own channels end.

`python -m reprolab_agent.warm --control FD`
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 16
# What a run process and its kernel use, imported here once. (The kernel app, its shell and the
# sockets are made after the fork, per run.)
PRELOAD = (
    "papermill",
    "papermill.clientwrap",
    "papermill.engines",
    "papermill.iorw",
    "nbclient",
    "nbformat",
    "jupyter_client.asynchronous",
    "jupyter_client.manager",
    "jupyter_core.utils",
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "IPython.core.interactiveshell",
    "IPython.core.completer",
    "reprolab_agent.runproc",
)


def preload() -> list[str]:
    """Import what runs need; returns the modules that could not be imported (the cold path
    still works without them, slower)."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def hello(missing: list[str], started: float) -> dict[str, Any]:
    from .kernel import WARM_KERNEL, serves_warm

    return {
        "pid": os.getpid(),
        "warm_kernels": [WARM_KERNEL] if serves_warm(WARM_KERNEL) and not missing else [],
        "missing": missing,
        "threads": threading.active_count(),
        "import_seconds": round(time.monotonic() - started, 3),
    }


def serve(channel: socket.socket) -> int:
    """Fork a run process per request until the channel ends."""
    from . import runproc

    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, MAX_MESSAGE, MAX_FDS)
        except InterruptedError:
            continue
        if not message:
            return 0
        try:
            request = json.loads(message)
            names = list(request["fds"])
            if len(names) != len(fds):
                raise ValueError(f"{len(names)} descriptors named, {len(fds)} received")
        except (ValueError, KeyError, TypeError) as error:
            for fd in fds:
                os.close(fd)
            channel.send(json.dumps({"error": f"bad request: {error}"}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            channel.close()  # a run process must never be able to ask for more
            given: dict[str, Any] = {"namespaces": []}
            for name, fd in zip(names, fds, strict=True):
                if name.startswith("ns:"):  # in join order (reprolab_agent.nsenter.NAMESPACES)
                    given["namespaces"].append((name[3:], fd))
                else:
                    given[name] = fd
            runproc.serve(request["spec"], given)
        for fd in fds:
            os.close(fd)
        channel.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reprolab_agent.warm")
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    channel = socket.socket(fileno=args.control)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us by closing the channel
    # Run processes are reaped by the kernel; each restores SIGCHLD before forking its kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    missing = preload()
    greeting = hello(missing, started)
    if threading.active_count() != 1:  # forking a threaded process would copy held locks
        channel.send(json.dumps({"error": f"{threading.active_count()} threads after imports"}).encode())
        return 1
    channel.send(json.dumps({"hello": greeting}).encode())
    return serve(channel)


if __name__ == "__main__":
    sys.exit(main())
