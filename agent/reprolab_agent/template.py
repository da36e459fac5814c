"""The agent's side of the warm template (reprolab_agent.warm): starting it, asking it for a run
process over its control channel (passing pipes and namespaces as file descriptors), stopping it.
One request at a time; a template that does not answer in time is stopped and started again."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("reprolab_agent")

TEMPLATE_START_SECONDS = 120.0
FORK_SECONDS = 30.0


class TemplateFailed(RuntimeError):
    """The warm template could not start, or could not fork a run process."""


class Template:
    """The warm template process (reprolab_agent.warm), owned by the agent."""

    def __init__(self, *, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.hello: dict[str, Any] = {}
        self._lock = threading.Lock()  # one request at a time on the channel

    def start(self) -> dict[str, Any]:
        with self._lock:
            return self._start()

    def ensure(self) -> None:
        """Start the template again if it is gone (once, whoever notices first)."""
        with self._lock:
            if not self.alive():
                log.warning("warm template is gone; starting it again")
                self._start()

    def _start(self) -> dict[str, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reprolab_agent.warm", "--control", str(theirs.fileno())],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a Ctrl-C at the agent's terminal is the agent's to handle
            )
        finally:
            theirs.close()
        self.channel = ours
        ours.settimeout(TEMPLATE_START_SECONDS)
        try:
            reply = json.loads(ours.recv(1 << 16) or b"{}")
        except (OSError, ValueError) as error:
            self._stop()
            raise TemplateFailed(f"the warm template did not start: {error}") from error
        ours.settimeout(None)
        if "hello" not in reply:
            self._stop()
            raise TemplateFailed(f"the warm template did not start: {reply.get('error', 'it exited')}")
        self.hello = reply["hello"]
        return self.hello

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def fork(self, spec: dict[str, Any], fds: Sequence[tuple[str, int]]) -> int:
        """Ask for a run process; returns its pid. A template that does not answer in time is
        stopped (the next slot starts a new one)."""
        with self._lock:
            if self.channel is None or not self.alive():
                raise TemplateFailed("the warm template is not running")
            message = json.dumps({"spec": spec, "fds": [name for name, _ in fds]}).encode()
            try:
                self.channel.settimeout(FORK_SECONDS)
                socket.send_fds(self.channel, [message], [fd for _, fd in fds])
                reply = json.loads(self.channel.recv(1 << 16) or b"{}")
            except (OSError, ValueError) as error:  # a timeout is an OSError too
                self._stop()
                raise TemplateFailed(f"the warm template failed: {error}") from error
        if "pid" not in reply:
            raise TemplateFailed(f"the warm template refused: {reply.get('error', 'it exited')}")
        return int(reply["pid"])

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self.channel is not None:
            self.channel.close()  # end of file: the template exits
            self.channel = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
