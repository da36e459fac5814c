"""Execution through the platform against bare papermill, on this machine, in one run.

1. Latency of one trivial parameterized notebook: submit over the REST API -> output notebook
   stored (a real daphne server, a real agent process, SQLite), beside bare papermill on the
   same notebook (the `papermill` CLI, and `execute_notebook` inside a warm process).
2. Throughput of 20 small notebooks through two agents, beside a sequential papermill loop.

Run: `.venv/bin/python bench/execution_bench.py [repeats]` (about a minute). Prints medians.

Every process it starts has an owner (an ExitStack) that stops it on the way out, however the
bench ends: finished, failed, interrupted (Ctrl-C), terminated (SIGTERM) or past its time limit.
Agents get SIGTERM first (they stop claiming and release their runs), then SIGKILL.
"""

import contextlib
import faulthandler
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TMP = Path(tempfile.mkdtemp(prefix="reprolab-exec-bench-"))
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DATABASE_URL": f"sqlite:///{TMP / 'db.sqlite3'}",
    "DJANGO_MEDIA_ROOT": str(TMP / "media"),
    "DJANGO_DEBUG": "false",
    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "agent")]),
}
ENV.pop("REDIS_URL", None)
SOURCE = "result = alpha * steps\nprint(result)"
TIME_LIMIT = 240  # seconds; then the tracebacks are dumped and the bench stops (cleaning up)
STOP_SECONDS = 15  # a process that outlasts SIGTERM this long is killed


class Stopped(Exception):
    """SIGTERM (or the time limit) ended the bench."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Stopped(signal.Signals(signum).name)


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
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def setup_site() -> tuple[int, list[str], str]:
    """Migrate a fresh database; create a user, project, notebook, two nodes. Returns
    (notebook id, node tokens, API token)."""
    os.environ.update({k: v for k, v in ENV.items() if k != "PYTHONPATH"})
    sys.path[:0] = [str(ROOT), str(ROOT / "agent")]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.accounts.services import api_token_create, user_create
    from apps.compute.services import node_register
    from tests.factories import make_project, upload_notebook

    user = user_create(username="bench", password="bench-password-123")  # noqa: S106 - a throwaway bench db
    project = make_project(user, slug="bench")
    notebook = upload_notebook(project, user, "trivial.ipynb", source=SOURCE).notebook
    tokens = [node_register(owner=user, name=f"node{i}").token for i in range(2)]
    version = notebook.latest_version
    assert version is not None
    (TMP / "trivial.ipynb").write_bytes(Path(django.conf.settings.MEDIA_ROOT, version.storage_name).read_bytes())
    return notebook.pk, tokens, api_token_create(user=user, name="bench").raw


def api(base: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 - our own local server
        base + path,
        data=json.dumps(body).encode() if body else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own local server
        return json.loads(response.read())


def wait_all_done(base: str, token: str, run_ids: list[int]) -> None:
    pending = set(run_ids)
    while pending:
        for run_id in list(pending):
            run = api(base, token, "GET", f"/api/v1/runs/{run_id}/")
            if run["state"] in ("succeeded", "failed", "cancelled", "lost"):
                assert run["state"] == "succeeded", run
                assert run["output"], run
                pending.discard(run_id)
        time.sleep(0.01)


def phase(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A hung phase shows where (the tracebacks), then the bench stops through SIGTERM, so the
    # `finally` below still stops every process (faulthandler's own exit would skip it).
    faulthandler.dump_traceback_later(TIME_LIMIT)
    limit = threading.Timer(TIME_LIMIT + 1, os.kill, (os.getpid(), signal.SIGTERM))
    limit.daemon = True
    limit.start()
    try:
        with contextlib.ExitStack() as processes:
            figures = measure(processes)
    finally:
        limit.cancel()
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(TMP, ignore_errors=True)
    report(*figures)


def measure(processes: contextlib.ExitStack) -> tuple[int, list[float], list[float], list[float], int, float, float]:
    """Every process started here is entered into `processes`, which stops it on the way out."""
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    notebook_id, node_tokens, token = setup_site()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = processes.enter_context(
        owned(
            subprocess.Popen(
                [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
                cwd=ROOT,
                env=ENV,
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
            break
        except OSError:
            time.sleep(0.05)

    def start_agent(node_token: str, name: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reprolab_agent",
                "--server",
                base,
                "--work-dir",
                str(TMP / name / "work"),
                "--cache-dir",
                str(TMP / name / "cache"),
            ],
            cwd=ROOT,
            env={**ENV, "REPROLAB_NODE_TOKEN": node_token},  # not on the command line
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return processes.enter_context(owned(process))

    phase("latency through the platform")
    # --- latency: one agent, one run at a time -----------------------------------------
    start_agent(node_tokens[0], "a0")
    platform = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        run = api(
            base,
            token,
            "POST",
            "/api/v1/runs/",
            {"project": "bench", "notebook": notebook_id, "parameters": {"alpha": 1.5, "steps": i}},
        )
        wait_all_done(base, token, [run["id"]])
        if i:  # the first run warms the agent's imports
            platform.append(time.perf_counter() - start)

    phase("latency of the papermill CLI")
    notebook = str(TMP / "trivial.ipynb")
    cli = []
    for i in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "papermill"),
                notebook,
                str(TMP / "cli-out.ipynb"),
                "-p",
                "alpha",
                "1.5",
                "-p",
                "steps",
                str(i),
                "--no-progress-bar",
            ],
            check=True,
            capture_output=True,
            cwd=TMP,
        )
        cli.append(time.perf_counter() - start)

    phase("latency of papermill in process")
    import papermill

    papermill.execute_notebook(
        notebook, str(TMP / "warm.ipynb"), parameters={"alpha": 1.5, "steps": 0}, progress_bar=False
    )
    in_process = []
    for i in range(repeats):
        start = time.perf_counter()
        papermill.execute_notebook(
            notebook, str(TMP / "inproc.ipynb"), parameters={"alpha": 1.5, "steps": i}, progress_bar=False
        )
        in_process.append(time.perf_counter() - start)

    phase("throughput through two agents")
    # --- throughput: 20 notebooks, two agents ------------------------------------------
    start_agent(node_tokens[1], "a1")
    count = 20
    start = time.perf_counter()
    ids = [
        api(
            base,
            token,
            "POST",
            "/api/v1/runs/",
            {"project": "bench", "notebook": notebook_id, "parameters": {"alpha": 2.0, "steps": i}},
        )["id"]
        for i in range(count)
    ]
    wait_all_done(base, token, ids)
    through_platform = time.perf_counter() - start

    phase("throughput of a sequential papermill loop")
    start = time.perf_counter()
    for i in range(count):
        papermill.execute_notebook(
            notebook, str(TMP / "loop.ipynb"), parameters={"alpha": 2.0, "steps": i}, progress_bar=False
        )
    sequential = time.perf_counter() - start
    return repeats, platform, cli, in_process, count, through_platform, sequential


def report(
    repeats: int,
    platform: list[float],
    cli: list[float],
    in_process: list[float],
    count: int,
    through_platform: float,
    sequential: float,
) -> None:
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs; SQLite; {repeats} repeats, medians")
    print("latency, one trivial parameterized notebook:")
    print(f"  baseline  papermill CLI                          : {med(cli):6.2f} s")
    print(f"  baseline  papermill.execute_notebook, warm process: {med(in_process):6.2f} s")
    print(
        f"  ours      submit -> output stored (API, 1 agent) : {med(platform):6.2f} s  ({med(platform) / med(cli):.2f}x CLI)"
    )
    print(f"throughput, {count} small notebooks:")
    print(
        f"  baseline  sequential execute_notebook loop       : {sequential:6.2f} s  ({count / sequential:.2f} notebooks/s)"
    )
    print(
        f"  ours      two agents on this machine             : {through_platform:6.2f} s  ({count / through_platform:.2f} notebooks/s, {sequential / through_platform:.2f}x)"
    )


if __name__ == "__main__":
    try:
        main()
    except (Stopped, KeyboardInterrupt) as stop:
        sys.exit(f"stopped ({stop or 'interrupted'}); every process it started is stopped")
