"""The agent's lifecycle, with real agent processes against a real site (daphne on the test
database): SIGTERM and SIGINT stop it like a CI runner (no new claims, a waiting claim ends at
once, runs in flight get a grace period, then they are released and requeued without costing
an attempt); a kernel that dies before kernel_info is the node's failure, retried and bounded;
the heartbeat says nothing about the lease its own completion ended; the client's interruptible
calls end at once."""

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from reprolab_agent.client import Client, Interrupted
from reprolab_agent.lease import Heartbeat, RunContext
from reprolab_agent.run import RunExecutor

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Run, RunEvent, RunState
from apps.projects.models import Notebook, Project
from tests.factories import make_project, upload_notebook
from tests.integration.processes import alive, connections_to, descendants, wait_gone
from tests.integration.servers import ROOT, daphne_server, wait_until

pytestmark = pytest.mark.integration

SITE = {"REPROLAB_LEASE_SECONDS": "20", "REPROLAB_HEARTBEAT_SECONDS": "1", "REPROLAB_CLAIM_MAX_WAIT_SECONDS": "30"}
FINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST}


@dataclass
class AgentProcess:
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> float:
        """Send `sig`; returns when it was sent (monotonic)."""
        self.process.send_signal(sig)
        return time.monotonic()

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the agent did not exit within {timeout} s:\n{self.text()[-3000:]}")


@pytest.fixture
def site(transactional_db) -> Iterator[str]:
    with daphne_server(**SITE) as url:
        yield url


@pytest.fixture
def lab(owner: User) -> Project:
    return make_project(owner, slug="lifecycle")


@pytest.fixture
def node(owner: User) -> services.RegisteredNode:
    return services.node_register(owner=owner, name="box", max_concurrency=1)


@contextmanager
def agent(site: str, token: str, work: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[AgentProcess]:
    """A real agent process; killed with its whole session at the end if it is still there."""
    log = work / "agent.log"
    work.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "agent"), os.environ.get("PYTHONPATH", "")]),
        "REPROLAB_NODE_TOKEN": token,
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reprolab_agent",
                "--server",
                site,
                "--work-dir",
                str(work / "work"),
                "--cache-dir",
                str(work / "cache"),
                "--wait",
                "25",
                *args,
            ],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = AgentProcess(process, log)
    try:
        wait_until(lambda: "node box on" in handle.text(), timeout=60, what="the agent's hello", process=process)
        yield handle
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ticking_notebook(lab: Project, owner: User, path: str, *, ticks: int, seconds: float) -> Notebook:
    source = f"import time\nfor i in range({ticks}):\n    time.sleep({seconds})\n    print('tick', i, flush=True)"
    return upload_notebook(lab, owner, path, source=source).notebook


def submit(lab: Project, notebook: Notebook) -> Run:
    assert notebook.latest_version is not None
    assert lab.created_by is not None
    return services.run_submit(project=lab, user=lab.created_by, notebook_version=notebook.latest_version)


def wait_printing(run: Run, process: subprocess.Popen) -> None:
    wait_until(
        lambda: RunEvent.objects.filter(run=run, kind="stream").exists(),
        timeout=90,
        what="the run to print",
        process=process,
    )


def final(run: Run, timeout: float = 90) -> Run:
    wait_until(lambda: Run.objects.get(pk=run.pk).state in FINAL, timeout=timeout, what=f"run {run.pk} to end")
    return Run.objects.get(pk=run.pk)


# --- stopping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_the_waiting_claim_at_once(site, node, tmp_path, sig):
    port = int(site.rsplit(":", 1)[1])
    with agent(site, node.token, tmp_path / "a") as box:
        # Nothing is queued: the agent sits in a 25 s claim long-poll on an open connection.
        wait_until(lambda: connections_to(box.pid, port) == 1, timeout=30, what="the claim long-poll")
        sent = box.signal(sig)
        assert box.wait_exit(timeout=10) == 0
        assert time.monotonic() - sent < 3, "the claim long-poll held the agent"
    assert "no new runs" in box.text()
    assert "Traceback" not in box.text()


def test_a_run_in_flight_finishes_within_the_grace_and_nothing_new_is_claimed(site, node, lab, owner, tmp_path):
    notebook = ticking_notebook(lab, owner, "steady.ipynb", ticks=6, seconds=0.5)
    first, second = submit(lab, notebook), submit(lab, notebook)
    with agent(site, node.token, tmp_path / "a", "--grace-seconds", "60") as box:
        wait_printing(first, box.process)
        box.signal(signal.SIGTERM)
        assert box.wait_exit(timeout=60) == 0
    first.refresh_from_db()
    assert (first.state, first.attempt) == (RunState.SUCCEEDED, 1)
    second.refresh_from_db()
    assert (second.state, second.attempt, second.node) == (RunState.QUEUED, 1, None)  # never claimed
    assert "lease lost" not in box.text()


@pytest.mark.parametrize(
    ("grace", "signals"),
    [("1", [signal.SIGTERM]), ("600", [signal.SIGTERM, signal.SIGINT])],
    ids=["the-grace-runs-out", "a-second-signal"],
)
def test_a_run_stopped_by_the_agent_is_released_and_requeued_without_costing_an_attempt(
    site, node, lab, owner, tmp_path, grace, signals
):
    notebook = ticking_notebook(lab, owner, "long.ipynb", ticks=600, seconds=0.1)
    run = submit(lab, notebook)
    with agent(site, node.token, tmp_path / "a", "--grace-seconds", grace) as box:
        wait_printing(run, box.process)
        children = descendants(box.pid)  # papermill and its kernel
        assert children
        sent = box.signal(signals[0])
        for sig in signals[1:]:
            wait_until(lambda: "no new runs" in box.text(), timeout=10, what="the first signal to land")
            box.signal(sig)
        assert box.wait_exit(timeout=30) == 0
        assert time.monotonic() - sent < 20
    run.refresh_from_db()
    assert (run.state, run.attempt, run.max_attempts) == (RunState.QUEUED, 2, 4)
    assert (run.node, run.lease_id) == (None, None)
    requeued = run.events.filter(kind="state").last()
    assert requeued is not None
    assert requeued.payload["released"] == "shutdown"
    assert not wait_gone(children, timeout=15), "the run's processes outlived the agent"
    assert "released (shutdown)" in box.text()


# --- infrastructure or notebook ------------------------------------------------------------------
def test_a_kernel_that_dies_before_kernel_info_is_retried_then_lost(site, node, lab, owner, tmp_path):
    kernels = tmp_path / "jupyter" / "kernels" / "dying"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", "import sys; sys.exit(1)", "{connection_file}"],
                "display_name": "Dies at start",
                "language": "python",
            }
        )
    )
    notebook = upload_notebook(
        lab, owner, "dies.ipynb", kernelspec={"name": "dying", "display_name": "Dies at start", "language": "python"}
    ).notebook
    run = submit(lab, notebook)
    with agent(site, node.token, tmp_path / "a", env={"JUPYTER_PATH": str(tmp_path / "jupyter")}) as box:
        run = final(run, timeout=120)
    assert run.state == RunState.LOST
    assert run.attempt == run.max_attempts == 3
    assert "Kernel died before replying to kernel_info" in run.error
    requeued = run.events.filter(kind="state", payload__state="queued", attempt__gt=1)
    released = [e.payload.get("released") for e in requeued]
    assert released == ["infrastructure", "infrastructure"]
    assert "Traceback" not in box.text()


def test_a_cell_that_raises_is_the_notebook_result_and_not_retried(site, node, lab, owner, tmp_path):
    notebook = upload_notebook(lab, owner, "raises.ipynb", source="raise ValueError('bad data')").notebook
    run = submit(lab, notebook)
    with agent(site, node.token, tmp_path / "a"):
        run = final(run)
    assert (run.state, run.attempt) == (RunState.FAILED, 1)
    assert "ValueError: bad data" in run.error


# --- honest logs ------------------------------------------------------------------------------
def _claim(site: str, token: str, tmp_path: Path) -> tuple[RunExecutor, RunContext]:
    client = Client(site, token)
    reply = client.call("POST", "/api/v1/agent/claim/?wait=5", json_body={})
    assert reply.status == 200, reply.body
    executor = RunExecutor(client, cache=None, work_root=tmp_path)  # type: ignore[arg-type]  # no inputs to fetch
    return executor, RunContext(claim=reply.json(), client=client, workdir=tmp_path)


def test_the_heartbeat_says_nothing_of_the_lease_its_own_completion_ended(site, node, lab, owner, tmp_path, caplog):
    run = submit(lab, upload_notebook(lab, owner).notebook)
    executor, ctx = _claim(site, node.token, tmp_path)
    heartbeat = Heartbeat(ctx)
    assert heartbeat.tick()  # renews while the run is ours
    executor.complete(ctx, "failed", "given up by hand")
    with caplog.at_level(logging.DEBUG, logger="reprolab_agent"):
        assert not heartbeat.tick()  # a beat due after the completion: nothing more to renew
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert Run.objects.get(pk=run.pk).state == RunState.FAILED


def test_the_heartbeat_still_reports_a_lease_really_lost(site, node, lab, owner, tmp_path, caplog):
    run = submit(lab, upload_notebook(lab, owner).notebook)
    _, ctx = _claim(site, node.token, tmp_path)
    Run.objects.filter(pk=run.pk).update(lease_id=None)  # another attempt owns the run now
    with caplog.at_level(logging.WARNING, logger="reprolab_agent"):
        assert not Heartbeat(ctx).tick()
    assert any("lease lost" in r.getMessage() for r in caplog.records)
    assert ctx.lease_lost.is_set()


# --- the client --------------------------------------------------------------------------------
class Silent(http.server.BaseHTTPRequestHandler):
    """Never answers (a long-poll with nothing to hand out), or always 503 on /busy."""

    release = threading.Event()
    seen = threading.Event()  # a request arrived

    def do_POST(self) -> None:
        Silent.seen.set()
        if self.path == "/busy":
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/ok":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
            return
        Silent.release.wait(30)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def silent_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    Silent.release.set()
    httpd.shutdown()
    Silent.release.clear()
    Silent.seen.clear()


def _in_thread(call) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, raised


@pytest.mark.parametrize("path", ["/wait", "/busy"], ids=["waiting-for-an-answer", "in-its-backoff"])
def test_interrupt_ends_an_interruptible_call_at_once(silent_server, path):
    client = Client(silent_server, "rln_test", timeout=60)
    thread, raised = _in_thread(lambda: client.call("POST", path, json_body={}, retry_for=None, interruptible=True))
    assert Silent.seen.wait(10)  # it is connected and waiting (or backing off after a 503)
    started = time.monotonic()
    client.interrupt()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert [type(e) for e in raised] == [Interrupted]
    with pytest.raises(Interrupted):  # and no new interruptible call starts
        client.call("POST", "/ok", json_body={}, interruptible=True)
    assert client.call("POST", "/ok", json_body={}).status == 200  # the runs' own calls carry on


def test_a_run_process_tree_is_inspected_by_pid():
    assert alive(os.getpid())
    assert not alive(2**22 + 4321)
