"""`make run` as a real process: `manage.py run_embedded` with the embedded settings in a
temporary var folder. SIGTERM and Ctrl-C stop it cleanly (the agent first, which releases its
runs, then the server) and leave no process behind; a local agent killed with SIGKILL is
restarted and its run still completes; the lease sweeper (no Celery beat here) requeues runs
whose lease ran out."""

import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import timezone

from apps.compute import services
from apps.compute.management.commands.run_embedded import sweep_leases
from apps.compute.models import Run, RunState
from tests.factories import make_project, make_user, upload_notebook

from .processes import alive, command_line, descendants, wait_gone
from .servers import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

EMBEDDED = {
    "DJANGO_SETTINGS_MODULE": "config.settings.local",
    "DJANGO_DEBUG": "false",
    "REPROLAB_LEASE_SECONDS": "4",
    "REPROLAB_HEARTBEAT_SECONDS": "1",
    "REPROLAB_SWEEP_SECONDS": "1",
    "REPROLAB_NODE_ACTIVE_SECONDS": "5",
    "REPROLAB_GRACE_SECONDS": "2",
}
# What the test run exports for its own database and servers; the embedded mode must not see it.
NOT_EMBEDDED = ("DATABASE_URL", "DJANGO_MEDIA_ROOT", "REDIS_URL", "EMAIL_FILE_PATH", "EMAIL_BACKEND")
PREPARE = """
import json, sys
import django
django.setup()
from django.core.management import call_command
from apps.accounts.models import User
from apps.accounts.services import api_token_create
from apps.projects.models import Project
from tests.factories import upload_notebook
call_command("migrate", verbosity=0)
call_command("seed_demo", verbosity=0)
demo = User.objects.get(username="demo")
source = "import time\\nfor i in range(16):\\n    time.sleep(0.5)\\n    print('tick', i, flush=True)"
notebook = upload_notebook(Project.objects.get(slug="demo"), demo, "slow.ipynb", source=source).notebook
json.dump({"notebook": notebook.pk, "token": api_token_create(user=demo, name="test").raw}, sys.stdout)
"""


def embedded_env(var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    return {**env, **EMBEDDED, "REPROLAB_VAR_DIR": str(var), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    """A var folder with the database migrated, the demo data, a slow notebook and a token for
    demo; each test gets a copy (one Django start-up instead of one per test)."""
    var = tmp_path_factory.mktemp("embedded-var")
    done = subprocess.run(
        [sys.executable, "-c", PREPARE], cwd=ROOT, env=embedded_env(var), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return var, json.loads(done.stdout.strip().splitlines()[-1])  # seed_demo prints a line first


@dataclass
class Embedded:
    process: subprocess.Popen
    url: str
    var: Path
    log: Path
    token: str
    notebook: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def run_row(self, run_id: int) -> tuple[str, int, int]:
        with sqlite3.connect(self.var / "db.sqlite3", timeout=30) as db:
            return db.execute("select state, attempt, max_attempts from compute_run where id = ?", (run_id,)).fetchone()

    def agent_pids(self) -> set[int]:
        return {p for p in descendants(self.process.pid) if "-m reprolab_agent " in command_line(p) and alive(p)}

    def stop(self, sig: int, *, timeout: float = 120) -> float:
        """Send `sig`; returns the seconds it took to exit (fails past `timeout`)."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run_embedded did not exit within {timeout} s:\n{self.text()[-3000:]}")
        assert code == 0, self.text()[-3000:]
        return time.monotonic() - sent


@pytest.fixture
def embedded(prepared, tmp_path) -> Iterator[Embedded]:
    source, data = prepared
    var = tmp_path / "var"
    shutil.copytree(source, var)
    log = tmp_path / "run_embedded.log"
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_embedded", "--port", str(port), "--concurrency", "1"],
            cwd=ROOT,
            env=embedded_env(var),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that the cleanup below can end everything it started
        )
    stack = Embedded(process, f"http://127.0.0.1:{port}", var, log, data["token"], data["notebook"])
    try:
        # The site answers (the agent's hello went through it) and the agent is up.
        wait_until(lambda: "node local on" in stack.text(), timeout=300, what="the local node", process=process)
        yield stack
    finally:
        if process.poll() is None:
            left = descendants(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
            for pid in left:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            process.wait()


def leftovers(var: Path, before: set[int]) -> set[int]:
    """Processes still alive: those that ran under run_embedded before it stopped, and any that
    names the var folder (one that escaped the tree by a double fork)."""
    mine = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and str(var) in command_line(int(p.name))}
    return wait_gone(before | mine, timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_stops_the_agent_and_the_server_and_leaves_nothing(embedded, sig):
    children = descendants(embedded.process.pid)
    assert len(children) >= 2  # the server and the agent
    assert embedded.stop(sig) < 90
    assert not leftovers(embedded.var, children)
    text = embedded.text()
    assert text.index("the local node's agent") < text.index("the server (pid")  # the agent first
    assert "Traceback" not in text


def test_a_run_in_flight_is_released_before_the_server_stops(embedded):
    run = embedded.api("POST", "/api/v1/runs/", {"project": "demo", "notebook": embedded.notebook})
    wait_until(
        lambda: embedded.run_row(run["id"])[0] == "running",
        timeout=180,
        what="the run to start",
        process=embedded.process,
    )
    children = descendants(embedded.process.pid)
    embedded.stop(signal.SIGTERM)
    # The grace (2 s) ran out before the run's 8 s: released, requeued, no attempt charged.
    assert embedded.run_row(run["id"]) == ("queued", 2, 4)
    assert not leftovers(embedded.var, children)
    assert "released (shutdown)" in embedded.text()


def test_a_killed_local_agent_is_restarted_and_its_run_still_completes(embedded):
    (first,) = embedded.agent_pids()
    run = embedded.api("POST", "/api/v1/runs/", {"project": "demo", "notebook": embedded.notebook})
    wait_until(
        lambda: embedded.run_row(run["id"])[0] == "running",
        timeout=180,
        what="the run to start",
        process=embedded.process,
    )
    os.kill(first, signal.SIGKILL)

    wait_until(
        lambda: re.search(r"Local node 'local' restarted \(pid (\d+)\)", embedded.text()) is not None,
        timeout=60,
        what="the agent to be restarted",
        process=embedded.process,
    )
    assert "The local node's agent exited with -9" in embedded.text()
    wait_until(
        lambda: embedded.run_row(run["id"])[0] in ("succeeded", "failed", "lost", "cancelled"),
        timeout=240,
        what="the run to end",
        process=embedded.process,
    )
    state, attempt, _ = embedded.run_row(run["id"])
    assert (state, attempt) == ("succeeded", 2)  # requeued when its lease ran out, then run again
    (second,) = embedded.agent_pids()
    assert second != first
    children = descendants(embedded.process.pid)
    embedded.stop(signal.SIGTERM)
    assert not leftovers(embedded.var, children)


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_requeues_a_run_whose_lease_ran_out():
    owner = make_user("sweeper")
    project = make_project(owner, slug="sweep")
    version = upload_notebook(project, owner).version
    run = services.run_submit(project=project, user=owner, notebook_version=version)
    node = services.node_register(owner=owner, name="gone").node
    services.node_seen(node=node)
    assert services.run_claim(node=node) is not None
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))  # its agent died

    stop = threading.Event()
    sweeper = threading.Thread(target=sweep_leases, args=(stop, 0.05))
    sweeper.start()
    try:
        wait_until(lambda: Run.objects.get(pk=run.pk).state == RunState.QUEUED, timeout=30, what="the sweep")
    finally:
        stop.set()
        sweeper.join(timeout=30)
    assert not sweeper.is_alive()
    run.refresh_from_db()
    assert (run.attempt, run.node) == (2, None)


def test_the_execution_bench_stops_everything_it_started_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    log = tmp_path / "bench.log"
    with log.open("wb") as sink:
        bench = subprocess.Popen(
            [sys.executable, "bench/execution_bench.py", "1"],
            cwd=ROOT,
            env={**env, "TMPDIR": str(tmp_path)},  # its scratch folder lands here
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Its daphne and first agent are up once it measures through the platform.
        wait_until(
            lambda: "latency through the platform" in log.read_text(), timeout=300, what="the bench", process=bench
        )
        children = descendants(bench.pid)
        assert len(children) >= 2
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) != 0  # it says it was stopped
        assert not wait_gone(children, timeout=20)
        assert "every process it started is stopped" in log.read_text()
        assert not list(tmp_path.glob("reprolab-exec-bench-*"))
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
