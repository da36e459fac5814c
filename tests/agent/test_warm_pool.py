"""The warm pool (reprolab_agent.pool) on real processes of this machine: a slot's kernel is up
before the run arrives, serves one run and dies with it, nothing passes from one run to the next,
papermill's output is papermill's, another kernel starts cold and says so, and no process of a
slot outlives the agent that made it. Each at every isolation level that works here."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from reprolab_agent.limits import Limits

from tests.integration.processes import alive, wait_gone
from tests.integration.servers import ROOT as REPO
from tests.integration.servers import wait_until

from .slots import LINUX, ROOT, notebook, run_cells, sandbox_at, taken, warm_pool

pytestmark = pytest.mark.skipif(not LINUX, reason="Linux process isolation")
LEVELS = ["bwrap", "uid", "none"]


@pytest.fixture(params=LEVELS)
def level(request, site) -> str:
    if request.param == "uid" and not ROOT:
        pytest.skip("level uid needs a root agent")
    return request.param


def test_a_warm_slot_runs_a_parameterized_notebook(level, site):
    body = notebook("print(alpha * steps)", parameters="alpha = 1\nsteps = 2")
    with warm_pool(sandbox_at(level, site), site) as pool:
        outcome = run_cells(pool, body, parameters={"alpha": 3, "steps": 5})
    assert outcome.code == 0, outcome.events
    assert outcome.stdout == "15\n"
    injected = [c for c in outcome.notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1
    assert outcome.notebook["metadata"]["papermill"]["parameters"] == {"alpha": 3, "steps": 5}
    assert [e["kind"] for e in outcome.events if e["kind"] in ("cell_started", "cell_executed")] == [
        "cell_started",
        "cell_executed",
    ] * 3


def test_the_kernel_is_up_before_the_run_arrives(site):
    with warm_pool(sandbox_at("bwrap", site), site, spare=1) as pool:
        wait_until(lambda: len(pool._ready) == 2, timeout=60, what="two ready slots")
        with taken(pool) as slot:
            assert slot.kernel_pid is not None
            assert alive(slot.kernel_pid)  # the kernel exists before any job was given


def test_nothing_passes_from_one_run_to_the_next(level, site):
    leave = notebook(
        textwrap.dedent(
            """
            import os, sys
            secret = 'left-behind'
            os.environ['LEFT'] = 'behind'
            sys.modules['json'].LEFT = 'behind'
            open('left.txt', 'w').write('behind')
            open(os.path.join(os.environ['TMPDIR'], 'left.tmp'), 'w').write('behind')
            print(os.getpid(), os.getcwd())
            """
        )
    )
    look = notebook(
        textwrap.dedent(
            """
            import json, os
            print('secret' in globals(), 'LEFT' in os.environ, hasattr(json, 'LEFT'),
                  os.path.exists('left.txt'), os.path.exists(os.path.join(os.environ['TMPDIR'], 'left.tmp')))
            print(os.getpid(), os.getcwd())
            """
        )
    )
    with warm_pool(sandbox_at(level, site), site, spare=1) as pool:
        first = run_cells(pool, leave)
        second = run_cells(pool, look)
    assert first.code == second.code == 0, (first.events, second.events)
    state, place = second.stdout.splitlines()
    assert state == "False False False False False"
    assert first.workdir != second.workdir
    assert not first.workdir.exists()  # discarded with its slot
    if level != "bwrap":  # inside a PID namespace every kernel may get the same small pid
        assert first.stdout.split()[0] != place.split()[0]


def test_a_slot_serves_one_run_and_its_processes_end_with_it(level, site):
    with warm_pool(sandbox_at(level, site), site) as pool:
        outcome = run_cells(pool, notebook("import subprocess; subprocess.Popen(['sleep', '600']); print('ok')"))
    assert outcome.code == 0, outcome.events
    assert outcome.slot.kernel_pid is not None
    assert not wait_gone({outcome.slot.kernel_pid}, timeout=10)
    leftovers = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "a process the run started outlived its slot"


def test_the_pool_keeps_one_ready_slot_per_free_run_slot_plus_a_spare(site):
    with warm_pool(sandbox_at("bwrap", site), site, concurrency=2, spare=1) as pool:
        wait_until(lambda: len(pool._ready) == 3, timeout=90, what="three ready slots")
        with taken(pool):
            # One run slot busy: the filler has nothing to make once it sees two ready.
            wait_until(lambda: pool.idle and pool._starting == 0, timeout=90, what="the filler to rest")
            assert len(pool._ready) == 2
        wait_until(lambda: len(pool._ready) == 3, timeout=90, what="the pool refilled")


def test_an_interrupt_ends_a_long_cell_at_once(site):
    body = notebook("import time\nprint('start', flush=True)\ntime.sleep(600)")
    with warm_pool(sandbox_at("bwrap", site), site) as pool:
        slot = pool.take()
        (slot.workdir / "_input.ipynb").write_bytes(body)
        slot.start({"input": "_input.ipynb", "output": "_output.ipynb", "parameters": {}, "kernel": "python3"})
        started = None
        code = None
        for event in slot.lines():
            if event["kind"] == "stream" and started is None:
                started = time.monotonic()
                slot.interrupt()
            if event["kind"] == "exit":
                code = event["payload"]["code"]
        assert started is not None
        assert time.monotonic() - started < 15
        assert code == 3  # KeyboardInterrupt in the cell: the notebook's result, output written
        output = json.loads((slot.workdir / "_output.ipynb").read_text())
        assert any(o.get("ename") == "KeyboardInterrupt" for c in output["cells"] for o in c.get("outputs", []))
        pool.discard(slot)
        pool.remove(slot)
        pool.give_back()


def test_a_notebook_asking_for_another_kernel_runs_cold_and_says_so(site, tmp_path, monkeypatch):
    kernels = tmp_path / "jupyter" / "kernels" / "other-python"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Another Python",
                "language": "python",
                "env": {"ANOTHER": "yes"},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    body = notebook("import os; print(os.environ.get('ANOTHER'))", kernel="other-python")
    with warm_pool(sandbox_at("bwrap", site), site) as pool:
        outcome = run_cells(pool, body, kernel="other-python")
    assert outcome.code == 0, outcome.events
    assert outcome.stdout == "yes\n"
    cold = [e for e in outcome.events if e["kind"] == "log" and e["payload"].get("cold_kernel")]
    assert [e["payload"]["cold_kernel"] for e in cold] == ["other-python"]
    assert outcome.notebook["metadata"]["kernelspec"]["name"] == "other-python"


def normalised(nb: dict) -> dict:
    """A notebook without what differs between two executions: times, durations, ids, paths,
    execution counts of failed runs, and the kernel's version details."""
    nb = json.loads(json.dumps(nb))
    papermill = nb["metadata"]["papermill"]
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        papermill.pop(key, None)
    nb["metadata"].get("language_info", {}).pop("version", None)
    for cell in nb["cells"]:
        cell.pop("id", None)
        meta = cell.get("metadata", {})
        for key in ("start_time", "end_time", "duration"):
            meta.get("papermill", {}).pop(key, None)
        meta.pop("execution", None)
    return nb


@pytest.mark.parametrize(
    "sources",
    [
        ("print(alpha + 1)", "alpha * 2", "import sys; print('err', file=sys.stderr)"),
        ("x = alpha", "raise ValueError(f'bad {x}')", "print('never')"),
    ],
    ids=["succeeds", "raises"],
)
def test_the_output_is_papermills_own(site, tmp_path, sources):
    """What a warm kernel produces equals papermill.execute_notebook's output for the same
    notebook and parameters, once times and ids are set aside."""
    import papermill

    body = notebook(*sources, parameters="alpha = 1")
    source = tmp_path / "in.ipynb"
    source.write_bytes(body)
    expected_path = tmp_path / "expected.ipynb"
    with contextlib.suppress(papermill.PapermillExecutionError):  # the failing notebook's output is still written
        papermill.execute_notebook(str(source), str(expected_path), parameters={"alpha": 41}, progress_bar=False)
    expected = json.loads(expected_path.read_text())
    with warm_pool(sandbox_at("bwrap", site), site) as pool:
        outcome = run_cells(pool, body, parameters={"alpha": 41})
    assert outcome.output is not None
    assert normalised(outcome.output) == normalised(expected)
    nbformat.validate(nbformat.reads(json.dumps(outcome.output), as_version=4))


AGENT_LIKE = """
import json, sys, time
from pathlib import Path
from reprolab_agent.limits import Limits
from reprolab_agent.pool import WarmPool
from reprolab_agent.sandbox import detect
site = Path(sys.argv[1])
sandbox = detect(sys.argv[2], protect=[site], work_root=site / "var" / "local-node" / "work")
pool = WarmPool(sandbox, work_root=site / "var" / "local-node" / "work", limits=Limits(), concurrency=1, spare=1)
pool.start()
slot = pool.take()
(slot.workdir / "_input.ipynb").write_text(sys.argv[3])
slot.start({"input": "_input.ipynb", "output": "_output.ipynb", "parameters": {}, "kernel": "python3"})
for event in slot.lines():
    if event["kind"] == "stream":
        break
while len(pool._ready) < 1:
    time.sleep(0.05)
print(json.dumps({"template": pool.template.process.pid, "kernel": slot.kernel_pid,
                  "spare": pool._ready[0].kernel_pid}), flush=True)
time.sleep(600)
"""


def test_no_process_of_the_pool_outlives_an_agent_killed_with_sigkill(level, site):
    sandbox_at(level, site)  # skips where the level does not work
    body = notebook(
        "import subprocess\nsubprocess.Popen(['sleep', '900'])\nprint('busy', flush=True)\nwhile True: pass"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "agent")}
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_LIKE, str(site), level, body.decode()],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line, "the agent-like process did not get going"
        pids = list(json.loads(line).values())
        assert all(alive(pid) for pid in pids)
        sleepers = subprocess.run(["pgrep", "-f", "sleep 900"], capture_output=True, text=True).stdout.split()
        assert sleepers
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
        gone_too_late = wait_gone({*pids, *map(int, sleepers)}, timeout=20)
        assert not gone_too_late, f"outlived the agent: {gone_too_late}"
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()


def test_a_pool_with_limits_reports_them_to_its_runs(site):
    limits = Limits(memory_mb=1500, processes=100, output_mb=4, workdir_mb=200)
    with warm_pool(sandbox_at("bwrap", site), site, limits=limits) as pool:
        outcome = run_cells(
            pool,
            notebook(
                "import resource\n"
                "print(resource.getrlimit(resource.RLIMIT_DATA)[0] // 2**20,"
                " resource.getrlimit(resource.RLIMIT_NPROC)[0], resource.getrlimit(resource.RLIMIT_FSIZE)[0] // 2**20)"
            ),
        )
    assert outcome.stdout.split() == ["1500", str(100 * 4 + 64), "200"]


def _readable(path: Path) -> bool:
    return os.access(path, os.R_OK)


NON_ROOT_AGENT = """
import ctypes, json, sys
from pathlib import Path
from reprolab_agent.limits import Limits
from reprolab_agent.pool import WarmPool
from reprolab_agent.sandbox import detect
root = Path(sys.argv[1])
sandbox = detect("bwrap", protect=[root / "protected"], work_root=root / "work")
pool = WarmPool(sandbox, work_root=root / "work", limits=Limits(processes=64), concurrency=1, spare=0)
pool.start()
slot = pool.take()
(slot.workdir / "_input.ipynb").write_text(sys.argv[2])
slot.start({"input": "_input.ipynb", "output": "_output.ipynb", "parameters": {}, "kernel": "python3"})
text = "".join(e["payload"].get("text", "") for e in slot.lines() if e["kind"] == "stream")
pool.discard(slot)
pool.close()
print("RESULT " + text, flush=True)
"""
NON_ROOT_PROBE = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    network = "open"
except OSError as error:
    network = type(error).__name__
print(json.dumps({
    "uid": os.getuid(),
    "ppid": os.getppid(),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "capabilities": sorted({status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}),
    "new_user_namespace": libc.unshare(0x10000000),  # CLONE_NEWUSER: -1 when refused
    "protected": os.path.exists(PROTECTED),
    "network": network,
}))
"""


@pytest.mark.skipif(not ROOT, reason="needs root to run the agent as another user")
def test_a_non_root_agent_sandboxes_its_runs_in_a_user_namespace(site, tmp_path):
    """An agent without root (a lab server's, a Colab user's) gets the same sandbox through a user
    namespace: its kernel joins the namespaces bubblewrap nested, and keeps no capability."""
    sandbox_at("bwrap", site)
    if not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("unshare and setpriv (util-linux) are needed")
    home = Path(tempfile.mkdtemp(prefix="reprolab-nonroot-"))  # where `nobody` may write
    try:
        home.chmod(0o777)
        (home / "protected").mkdir()
        (home / "protected" / "secret").write_text("not for runs")
        probe = NON_ROOT_PROBE.replace("PROTECTED", repr(str(home / "protected" / "secret")))
        body = notebook(probe).decode()
        # The interpreter lives under /root, which `nobody` may not pass: in a mount namespace of
        # the test's own, /root is a bare folder holding only the Python installation.
        python = Path(os.path.realpath(sys.executable))
        pyenv = next(p for p in python.parents if p.parent == Path("/root"))
        view = home / "python"
        view.mkdir()
        script = (
            f"mount --bind {pyenv} {view} && mount -t tmpfs -o mode=755 tmpfs /root && mkdir {pyenv}"
            f" && mount --move {view} {pyenv} && exec setpriv --reuid=65534 --regid=65534 --clear-groups"
            f" env -i HOME={home} PATH=/usr/bin:/bin PYTHONPATH={REPO / 'agent'}"
            f' {sys.executable} -c "$0" "$1" "$2"'
        )
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, NON_ROOT_AGENT, str(home), body],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, result.stderr[-3000:]
        found = json.loads(lines[0].removeprefix("RESULT "))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert found["uid"] == 65534
    assert found["ppid"] == 0  # its parent is outside the sandbox's PID namespace
    assert found["processes"] == [1, 2, found["processes"][-1]]  # bubblewrap's init, the placeholder, itself
    assert found["capabilities"] == ["0000000000000000"]
    assert found["new_user_namespace"] == -1  # bubblewrap's --disable-userns holds for a joined process
    assert found["protected"] is False
    assert found["network"] == "ConnectionRefusedError"


KEYRING = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
SYS_ADD_KEY, SYS_KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
KEYCTL_SEARCH, USER_KEYRING = 10, -4
found = libc.syscall(SYS_KEYCTL, KEYCTL_SEARCH, USER_KEYRING, b"user", b"reprolab-left", 0)
print("found" if found > 0 else "absent")
added = libc.syscall(SYS_ADD_KEY, b"user", b"reprolab-left", b"secret", 6, USER_KEYRING)
print("added" if added > 0 else f"refused {ctypes.get_errno()}")
"""


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="keyctl numbers known here")
def test_a_run_uid_lent_again_finds_no_key_an_earlier_run_left(site):
    with warm_pool(sandbox_at("bwrap", site), site, spare=1) as pool:
        outcomes = [run_cells(pool, notebook(KEYRING)) for _ in range(3)]
    assert [o.stdout.split() for o in outcomes] == [["absent", "refused", "1"]] * 3  # EPERM: run code has no keyrings
