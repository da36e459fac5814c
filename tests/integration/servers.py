"""Real server processes for integration tests: daphne (ASGI) and a Celery worker.

They run as subprocesses against the test database (so tests using them need
`transactional_db`: data must be committed to be seen) and are stopped at the end.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """A DATABASE_URL naming the database this test run uses (pytest-django's test_* copy)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def server_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": test_database_url()}
    env["DJANGO_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env.update(extra)
    return env


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, process: subprocess.Popen | None = None
) -> None:
    """Poll a condition until it holds (a bounded wait on a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def stopping(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def daphne_server(**env: str) -> Iterator[str]:
    """Start daphne serving config.asgi; yields its base URL once /healthz answers."""
    port = free_port()
    log = open(ROOT / "var" / f"daphne-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=server_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    with stopping(process), log:
        wait_until(lambda: _answers(f"{base}/healthz"), timeout=30, what="daphne", process=process)
        yield base


@contextmanager
def celery_worker(*, beat: bool = False, **env: str) -> Iterator[subprocess.Popen]:
    """Start a real Celery worker (solo pool) on the test broker, with an embedded beat when
    asked; yields once it answers a ping."""
    from config.celery import app

    port = free_port()
    log = open(ROOT / "var" / f"celery-test-{port}.log", "wb")  # noqa: SIM115 - closed below
    beat_args = ["-B", "--schedule", str(ROOT / "var" / f"celerybeat-{port}")] if beat else []
    process = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "-n",
            f"test-{port}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            *beat_args,
        ],
        cwd=ROOT,
        env=server_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    with stopping(process), log:
        # Ping this worker by name: another run's worker on the same Redis must not answer for it.
        name = f"test-{port}@{socket.gethostname()}"
        wait_until(
            lambda: bool(app.control.ping(destination=[name], timeout=0.5)),
            timeout=60,
            what="celery worker",
            process=process,
        )
        yield process


def agent_process(
    server: str,
    token: str,
    work: Path,
    *,
    concurrency: int = 1,
    name: str = "agent",
    index_url: str | None = None,
    environments: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start a real node agent (`python -m reprolab_agent`) against a live server; its declared
    environments are built in `environments` (default: its own folder) from `index_url`; `env`
    adds to its environment (e.g. REPROLAB_RUN_MEMORY_MB)."""
    pythonpath = os.pathsep.join([str(ROOT / "agent"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, **(env or {}), "PYTHONPATH": pythonpath}
    log = open(ROOT / "var" / f"{name}-{free_port()}.log", "wb")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reprolab_agent",
            "--server",
            server,
            "--token",
            token,
            "--concurrency",
            str(concurrency),
            "--work-dir",
            str(work / "work"),
            "--cache-dir",
            str(work / "cache"),
            "--environments-dir",
            str(environments or work / "environments"),
            *(["--index-url", index_url] if index_url else []),
            "--wait",
            "5",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
