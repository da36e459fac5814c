"""What the benchmarks that run the whole platform share: a fresh embedded site (SQLite, no Redis)
served by a real daphne, real agents, and owners for every process they start.

Every process goes into an ExitStack through `owned`, which stops it on the way out however the
bench ends: finished, failed, interrupted (Ctrl-C), terminated (SIGTERM: `Stopped`) or past its
time limit (`run_limited`). A process gets SIGTERM, then SIGKILL with its session.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOP_SECONDS = 15  # a process that outlasts SIGTERM this long is killed
T = TypeVar("T")


class Stopped(Exception):
    """SIGTERM (or the time limit) ended the bench."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Stopped(signal.Signals(signum).name)


def site_env(tmp: Path) -> dict[str, str]:
    """The embedded site's settings on a fresh SQLite database and media folder under `tmp`."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "DJANGO_MEDIA_ROOT": str(tmp / "media"),
        "DJANGO_DEBUG": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "agent")]),
    }
    env.pop("REDIS_URL", None)
    return env


def setup_django(env: dict[str, str]) -> None:
    """This process becomes the site (for setting it up): its settings, migrated."""
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    sys.path[:0] = [str(ROOT), str(ROOT / "agent")]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def owned(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Stop `process` (and its session) on the way out: SIGTERM, then SIGKILL; always reaped."""
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def api(base: str, token: str, method: str, path: str, body: dict | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - our own local server
        base + path,
        data=json.dumps(body).encode() if body else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own local server
        return json.loads(response.read())


def phase(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


def serve(processes: contextlib.ExitStack, env: dict[str, str]) -> str:
    """A daphne serving the site, owned by `processes`; its base URL once it answers."""
    base = f"http://127.0.0.1:{free_port()}"
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", base.rsplit(":", 1)[1], "config.asgi:application"]
    server = processes.enter_context(
        owned(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    )
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"daphne exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310
            return base
        except OSError:
            time.sleep(0.05)


def start_agent(
    processes: contextlib.ExitStack, env: dict[str, str], base: str, token: str, folder: Path, *extra: str
) -> subprocess.Popen:
    """An agent owned by `processes`, once it said hello (its warm pool is then up)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "agent.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "reprolab_agent", "--server", base),
                *("--work-dir", str(folder / "work"), "--cache-dir", str(folder / "cache")),
                *("--grace-seconds", "5", *extra),
            ],
            cwd=ROOT,
            env={**env, "REPROLAB_NODE_TOKEN": token},  # not on the command line
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.enter_context(owned(process))
    while not re.search(r"INFO \S+ node \S+ on http", log.read_text(errors="replace")):
        if process.poll() is not None:
            raise RuntimeError(f"agent exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return process


def run_limited(measure: Callable[[contextlib.ExitStack], T], *, time_limit: float, tmp: Path) -> T:
    """`measure(processes)` under a time limit, every process it enters into `processes` stopped
    on the way out and `tmp` removed. A hung phase shows where (the tracebacks), then the bench
    stops through SIGTERM, so the cleanup still runs (faulthandler's own exit would skip it)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.dump_traceback_later(time_limit)
    limit = threading.Timer(time_limit + 1, os.kill, (os.getpid(), signal.SIGTERM))
    limit.daemon = True
    limit.start()
    try:
        with contextlib.ExitStack() as processes:
            return measure(processes)
    finally:
        limit.cancel()
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(tmp, ignore_errors=True)
