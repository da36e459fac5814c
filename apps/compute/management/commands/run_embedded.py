"""`make run`: the site and one local compute node, side by side, in the embedded mode.

The local node is an ordinary agent process talking to the site over HTTP, exactly like a lab
server or a Colab runtime would: one code path for local and remote execution. Its token is
rotated at every start and handed over in the environment (never on the command line).

This command supervises both as child processes:
- Each runs in a process group of its own, so a Ctrl-C in the terminal reaches this command
  only, and the shutdown (SIGTERM or SIGINT) keeps its order: first the agent (it stops
  claiming, lets its runs finish within its grace period and releases the rest), then the
  server; each is killed if it outlasts its timeout. Nothing is left running. A second signal
  hurries: the agent releases its runs at once.
- The embedded mode has no Celery beat, so a thread here sweeps expired leases every
  REPROLAB_SWEEP_SECONDS: the run of an agent that died is requeued, not left "running".
- An agent that dies is restarted, with exponential backoff.
"""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection, transaction

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node

logger = logging.getLogger(__name__)

LOCAL_NODE_OWNER = "local-node"
LOCAL_NODE_NAME = "local"
SERVER_STOP_SECONDS = 10.0
# The agent's own grace period (--grace-seconds, REPROLAB_GRACE_SECONDS) plus the time it may
# take to release its runs afterwards, plus a margin: then it is killed.
AGENT_STOP_MARGIN_SECONDS = 25.0
RESTART_MIN_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0  # an agent that ran this long starts the backoff afresh


@transaction.atomic
def local_node_token(concurrency: int) -> str:
    # A system account, staff because only staff may share a node with everyone; nobody can log
    # in to it. An account of that name with a password is a person's (someone signed up with the
    # name before the first start): never make it staff.
    owner, created = User.objects.get_or_create(
        username=LOCAL_NODE_OWNER, defaults={"is_active": True, "is_staff": True}
    )
    if created:
        owner.set_unusable_password()
        owner.save()
    elif owner.has_usable_password():
        raise CommandError(
            f"The account '{LOCAL_NODE_OWNER}' is a person's account (it has a password); the local node"
            " needs it as a system account: rename that user, then start again."
        )
    elif not owner.is_staff:  # made by an earlier version, before shared nodes were staff-only
        owner.is_staff = True
        owner.save(update_fields=["is_staff"])
    node = Node.objects.filter(owner=owner, name=LOCAL_NODE_NAME).first()
    if node is None:
        # Shared: in the embedded mode the one local node runs everybody's runs.
        return services.node_register(
            owner=owner, name=LOCAL_NODE_NAME, tags=["local"], max_concurrency=concurrency, shared=True
        ).token
    Node.objects.filter(pk=node.pk).update(max_concurrency=concurrency, shared=True)
    return services.node_rotate_token(node=node)


def site_paths() -> list[Path]:
    """The site's own files, which the local node's runs must not reach."""
    paths = [Path(settings.BASE_DIR), Path(settings.VAR_DIR), Path(settings.MEDIA_ROOT)]
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and database["NAME"]:
        paths.append(Path(database["NAME"]))
    return paths


def sweep_leases(stop: threading.Event, interval: float) -> None:
    """Until `stop`: every `interval` seconds, requeue the runs whose lease ran out (what Celery
    beat does outside the embedded mode)."""
    try:
        while not stop.wait(interval):
            close_old_connections()
            try:
                services.expire_leases()
            except Exception:  # SQLite busy, or the database went away: the next sweep retries
                logger.exception("Lease sweep failed")
    finally:
        connection.close()


class Child:
    """One supervised process, in a process group of its own."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> int:
        self.process = subprocess.Popen(self.command, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        return self.process.pid

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float, hurry: threading.Event | None = None) -> None:
        """SIGTERM, then SIGKILL to its whole group after `timeout`; always reaped. Once `hurry`
        is set, a second SIGTERM goes out (the agent then releases its runs at once) and the
        wait shortens to AGENT_STOP_MARGIN_SECONDS."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        hurried = False
        while self.process.poll() is None and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set() and not hurried:
                hurried = True
                self.signal(signal.SIGTERM)
                deadline = min(deadline, time.monotonic() + AGENT_STOP_MARGIN_SECONDS)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.2)
        if self.process.poll() is None:  # not reaped yet, so its pid is still its group's id
            logger.warning("%s (pid %s) did not stop in time; killing it", self.name, self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # and whatever else is in its group
        code = self.process.wait()
        logger.info("%s (pid %s) stopped with %s", self.name, self.process.pid, code)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local server
            return bool(response.status == 200)
    except OSError:
        return False


class Command(BaseCommand):
    help = "Serve the site and start the local compute node beside it (embedded mode only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=max(1, min(4, os.cpu_count() or 1)))

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REPROLAB_DEMO_ALLOWED:
            raise CommandError("run_embedded is for the embedded mode (config.settings.local); refusing.")
        port, concurrency = options["port"], options["concurrency"]
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        server = Child("the server", self.server_command(port), dict(os.environ))
        agent = Child("the local node's agent", self.agent_command(port, concurrency), self.agent_env(concurrency))
        sweeper = threading.Thread(
            target=sweep_leases, args=(self.stopping, settings.REPROLAB_SWEEP_SECONDS), name="lease-sweeper"
        )
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.start()
            self.wait_for_server(server, port)
            sweeper.start()
            if not self.stopping.is_set():
                pid = agent.start()
                self.stdout.write(f"Local node '{LOCAL_NODE_NAME}' started (pid {pid}, {concurrency} at a time).")
            self.supervise(server, agent)
        finally:
            self.stopping.set()
            agent.stop(timeout=self.agent_stop_seconds(), hurry=self.hurry)
            server.stop(timeout=SERVER_STOP_SECONDS)
            if sweeper.is_alive():
                sweeper.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Stopped: the local node and the server are down.")

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            self.hurry.set()  # a second Ctrl-C: the agent releases its runs now
            self.stdout.write("Hurrying: the local node releases its runs now.")
        else:
            self.stdout.write(f"{signal.Signals(signum).name}: stopping the local node, then the server…")
        self.stopping.set()

    def agent_stop_seconds(self) -> float:
        return float(os.environ.get("REPROLAB_GRACE_SECONDS", 30)) + AGENT_STOP_MARGIN_SECONDS

    def server_command(self, port: int) -> list[str]:
        manage = Path(settings.BASE_DIR) / "manage.py"
        return [sys.executable, str(manage), "runserver", f"127.0.0.1:{port}", "--noreload"]

    def agent_env(self, concurrency: int) -> dict[str, str]:
        agent_dir = Path(settings.BASE_DIR) / "agent"
        return {
            **os.environ,
            "REPROLAB_NODE_TOKEN": local_node_token(concurrency),
            "PYTHONPATH": os.pathsep.join(p for p in (str(agent_dir), os.environ.get("PYTHONPATH", "")) if p),
        }

    def agent_command(self, port: int, concurrency: int) -> list[str]:
        state = Path(settings.VAR_DIR) / "local-node"
        return [
            sys.executable,
            "-m",
            "reprolab_agent",
            "--server",
            f"http://127.0.0.1:{port}",
            "--concurrency",
            str(concurrency),
            "--work-dir",
            str(state / "work"),
            "--cache-dir",
            str(state / "cache"),
            "--environments-dir",
            str(state / "environments"),
            *(["--index-url", settings.REPROLAB_PACKAGE_INDEX_URL] if settings.REPROLAB_PACKAGE_INDEX_URL else []),
            # The runs are anyone's notebooks: they must never reach the site's files (code,
            # settings, database, media), wherever those live. The agent sandboxes its runs.
            *(arg for path in site_paths() for arg in ("--protect", str(path))),
            # The local node is shared: with no sandbox here it would hand every user the site's
            # database, so it refuses to start rather than fall back to `none`, unless the operator
            # says otherwise (a single-user machine: REPROLAB_LOCAL_NODE_ISOLATION=none).
            "--isolation",
            settings.REPROLAB_LOCAL_NODE_ISOLATION,
        ]

    def wait_for_server(self, server: Child, port: int) -> None:
        url = f"http://127.0.0.1:{port}/healthz"
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and not _answers(url):
            if server.exit_code() is not None:
                raise CommandError(f"The server exited with {server.exit_code()} (is port {port} taken?).")
            if time.monotonic() > deadline:
                raise CommandError(f"The server did not answer {url} within 120 s.")
            self.stopping.wait(0.2)

    def supervise(self, server: Child, agent: Child) -> None:
        """Until a signal or the server's end: restart the agent whenever it dies."""
        restarts = 0
        restart_at: float | None = None
        while not self.stopping.wait(0.2):
            if (code := server.exit_code()) is not None:
                self.stderr.write(f"The server exited with {code}; stopping the local node.")
                return
            if restart_at is None and (code := agent.exit_code()) is not None:
                lived = time.monotonic() - agent.started_at
                restarts = 0 if lived > RESTART_RESET_SECONDS else restarts
                delay = min(RESTART_MAX_SECONDS, RESTART_MIN_SECONDS * 2**restarts)
                restarts += 1
                restart_at = time.monotonic() + delay
                self.stderr.write(
                    f"The local node's agent exited with {code} after {lived:.0f} s; restarting it in {delay:.0f} s."
                )
            if restart_at is not None and time.monotonic() >= restart_at:
                restart_at = None
                self.stdout.write(f"Local node '{LOCAL_NODE_NAME}' restarted (pid {agent.start()}).")
