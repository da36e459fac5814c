"""The run sandbox (reprolab_agent.sandbox) on real processes of this machine: what a run can
reach at each isolation level, and that the agent can still interrupt, kill, sample and outlive
it. bwrap tests need a working bubblewrap; uid tests need root."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from reprolab_agent.environment import run_environment
from reprolab_agent.resources import sample_session
from reprolab_agent.sandbox import (
    Sandbox,
    Unavailable,
    agent_pythonpath,
    close_to_others,
    detect,
    processes_of,
    read_regular,
    regular_files,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process isolation")
ROOT = os.geteuid() == 0
SYSTEM_PYTHON = Path("/usr/bin/python3")


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def bwrap(site: Path) -> Sandbox:
    try:
        return detect("bwrap", protect=[site], work_root=site / "var" / "local-node" / "work")
    except Unavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"bubblewrap must work under CI=true: {error}")
        pytest.skip(f"bubblewrap does not work here: {error}")


def workdir_in(site: Path, name: str = "run1") -> Path:
    path = site / "var" / "local-node" / "work" / name
    path.mkdir()
    (path / ".tmp").mkdir()
    return path


def start(sandbox: Sandbox, workdir: Path, code: str, *args: str, python: str = sys.executable, pass_fds=()):
    """Start `code` in the sandbox as a run would be (its environment, a run uid)."""
    user = sandbox.acquire()
    env = run_environment(os.environ, workdir=workdir, pythonpath=agent_pythonpath())
    child = sandbox.spawn(
        [python, "-c", textwrap.dedent(code), *args],
        workdir=workdir,
        env=env,
        user=user,
        pass_fds=pass_fds,
        stdout=subprocess.PIPE,
    )
    return child, user


def run(sandbox: Sandbox, workdir: Path, code: str, *args: str, **kwargs) -> tuple[int, str]:
    child, user = start(sandbox, workdir, code, *args, **kwargs)
    try:
        out, _ = child.communicate(timeout=60)
    finally:
        sandbox.finish(workdir, user)
    return child.returncode, out


PEEK = """
    import json, os, sys
    found = {}
    for path in json.loads(sys.argv[1]):
        try:
            found[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
        except OSError as error:
            found[path] = type(error).__name__
    print(json.dumps(found))
"""


def peek(sandbox: Sandbox, workdir: Path, paths: list[str]) -> dict[str, object]:
    """What the run finds at each path: a listing, a file's text, or the error's name."""
    code, out = run(sandbox, workdir, PEEK, json.dumps(paths))
    assert code == 0, out
    return json.loads(out)


# --- bwrap -------------------------------------------------------------------------------------
def test_a_run_under_bwrap_cannot_reach_the_sites_database_media_settings_or_the_nodes_token(bwrap, site):
    workdir = workdir_in(site)
    targets = [
        site / "var" / "db.sqlite3",
        site / "var" / "media" / "blob",
        site / "config" / "settings.py",
        site / "var" / "local-node" / "token",
        site / "var" / "local-node" / "cache",
    ]
    found = peek(bwrap, workdir, [*map(str, targets), "../../../db.sqlite3"])
    assert set(found.values()) == {"FileNotFoundError"}, found
    # Of the site's folder the run sees only the way to what it may use.
    listing = peek(bwrap, workdir, [str(site), str(site / "var" / "local-node" / "work")])
    assert listing[str(site)] == ["var"]
    assert listing[str(site / "var" / "local-node" / "work")] == ["run1"]


def test_a_run_under_bwrap_sees_only_its_own_processes(bwrap, site):
    code, out = run(
        bwrap,
        workdir_in(site),
        """
        import json, os
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        programs = sorted({open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode() for p in pids})
        print(json.dumps({"ppid": os.getppid(), "programs": programs}))
        """,
    )
    assert code == 0, out
    seen = json.loads(out)
    assert seen["ppid"] == 1  # its parent is bwrap's init: the agent is not in its namespace
    assert set(seen["programs"]) <= {bwrap.bwrap, sys.executable}, seen  # nothing of the host


def test_a_run_under_bwrap_writes_its_working_directory_and_the_agent_reads_it_back(bwrap, site):
    workdir = workdir_in(site)
    (workdir / "input.csv").write_text("x\n1\n")
    code, out = run(
        bwrap,
        workdir,
        """
        import os, tempfile
        data = open("input.csv").read()
        os.makedirs("out", exist_ok=True)
        open("out/result.txt", "w").write(data.upper())
        with tempfile.NamedTemporaryFile(dir=os.environ["TMPDIR"]) as scratch:
            scratch.write(b"scratch")
        print(os.getuid(), os.environ["HOME"] == os.getcwd())
        """,
    )
    assert code == 0, out
    uid, home_is_workdir = out.split()
    assert home_is_workdir == "True"
    assert (int(uid) != 0) if ROOT else (int(uid) == os.getuid())
    assert (workdir / "out" / "result.txt").read_text() == "X\n1\n"


def test_a_run_under_bwrap_cannot_write_the_system_or_the_python_environment(bwrap, site):
    code, out = run(
        bwrap,
        workdir_in(site),
        f"""
        import errno
        for path in ["/usr/reprolab-test", {sys.prefix + "/reprolab-test"!r}, "/etc/reprolab-test"]:
            try:
                open(path, "w")
            except OSError as error:
                print(errno.errorcode[error.errno])
        """,
    )
    assert code == 0, out
    assert len(out.split()) == 3
    assert set(out.split()) <= {"EROFS", "EACCES"}


def test_a_protected_path_inside_the_system_is_masked(site):
    doc = Path("/usr/share/doc")
    if not doc.is_dir() or not any(doc.iterdir()):
        pytest.skip("needs a non-empty /usr/share/doc")
    try:
        sandbox = detect("bwrap", protect=[site, doc], work_root=site / "var" / "local-node" / "work")
    except Unavailable as error:
        pytest.skip(f"bubblewrap does not work here: {error}")
    assert peek(sandbox, workdir_in(site), [str(doc)]) == {str(doc): []}


def test_interrupting_a_run_under_bwrap_reaches_it_without_killing_the_sandbox(bwrap, site):
    workdir = workdir_in(site)
    child, user = start(
        bwrap,
        workdir,
        """
        import time
        try:
            print("ready", flush=True)  # inside the try: the interrupt may come at once
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(130)
        """,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        bwrap.interrupt(child)
        assert child.stdout.readline().strip() == "interrupted"
        assert child.wait(timeout=30) == 130
    finally:
        bwrap.kill(child)
        child.wait()
        bwrap.finish(workdir, user)


def test_killing_a_run_under_bwrap_ends_every_process_it_started_even_in_another_session(bwrap, site):
    """As papermill's kernel does: a grandchild in a session of its own."""
    workdir = workdir_in(site)
    child, user = start(
        bwrap,
        workdir,
        """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        print("ready", flush=True)
        time.sleep(120)
        """,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    if user is not None:
        assert len(processes_of(user.uid)) == 2
    bwrap.kill(child)
    assert child.wait(timeout=30) != 0
    if user is not None:
        wait_for(lambda: not processes_of(user.uid), timeout=10, what="the grandchild to die with the sandbox")
    bwrap.finish(workdir, user)


def test_resources_of_a_run_under_bwrap_are_sampled_from_proc(bwrap, site):
    workdir = workdir_in(site)
    child, user = start(
        bwrap,
        workdir,
        """
        import time
        x = bytearray(40 * 2**20)
        print("ready", flush=True)
        time.sleep(120)
        """,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        sample = sample_session(child.pid)
        assert sample is not None
        assert sample.processes >= 2  # bwrap and the run's Python
        assert sample.rss_bytes > 40 * 2**20
    finally:
        bwrap.kill(child)
        child.wait()
        bwrap.finish(workdir, user)


def test_the_probe_refuses_a_sandbox_that_would_show_a_protected_path(site, monkeypatch):
    """A protected path inside what a run must read (here: the Python environment) shows."""
    try:
        detect("bwrap", protect=[], work_root=site / "var" / "local-node" / "work")
    except Unavailable as error:
        pytest.skip(f"bubblewrap does not work here: {error}")
    monkeypatch.setattr("reprolab_agent.sandbox._Layout.masks", lambda self, protect: [])
    with pytest.raises(Unavailable, match="readable from the sandbox"):
        detect("bwrap", protect=[Path(sys.prefix) / "bin"], work_root=site / "var" / "local-node" / "work")


# --- uid ---------------------------------------------------------------------------------------
@pytest.fixture
def uid_sandbox(site: Path) -> Sandbox:
    if not ROOT:
        pytest.skip("level uid needs a root agent")
    if not SYSTEM_PYTHON.exists():
        pytest.skip("needs /usr/bin/python3, which other users can run")
    sandbox = Sandbox("uid", protect=[site], work_root=site / "var" / "local-node" / "work")
    if not sandbox.setpriv:
        pytest.skip("needs setpriv (util-linux)")
    # What detect("uid") prepares, except the check that other users can pass through the
    # folders above: pytest's tmp folder is root's own. The run still reaches its working
    # directory (entered before the uid drops); the tests use relative paths from there.
    close_to_others([site], [site / "var" / "local-node" / "work"])
    os.chmod(site / "var" / "local-node" / "work", 0o711)  # noqa: S103 - what detect does
    return sandbox


def test_a_run_at_level_uid_runs_as_a_run_uid_without_privileges(uid_sandbox, site):
    code, out = run(
        uid_sandbox,
        workdir_in(site),
        """
        import os
        status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
        print(os.getuid(), os.getgid(), os.getgroups(), status["CapEff"].strip(), status["NoNewPrivs"].strip())
        """,
        python=str(SYSTEM_PYTHON),
    )
    assert code == 0, out
    uid, gid, groups, caps, no_new_privs = out.split(maxsplit=4)[:5]
    assert int(uid) == int(gid) >= 60100
    assert groups == "[]"
    assert int(caps, 16) == 0
    assert no_new_privs.strip() == "1"


def test_a_run_at_level_uid_cannot_read_the_site_or_the_agents_environment(uid_sandbox, site, monkeypatch):
    workdir = workdir_in(site)
    code, out = run(
        uid_sandbox,
        workdir,
        f"""
        import os
        for path in ["../../../db.sqlite3", "../../../media/blob", "../../../../config/settings.py",
                     "../../token", "../../cache", "..", "/proc/{os.getpid()}/environ"]:
            try:
                os.listdir(path) if os.path.isdir(path) else open(path).read()
                print("READ", path)
            except OSError as error:
                print(type(error).__name__)
        open("mine.txt", "w").write("ok")
        """,
        python=str(SYSTEM_PYTHON),
    )
    assert code == 0, out
    assert set(out.split()) == {"PermissionError"}, out
    assert (workdir / "mine.txt").read_text() == "ok"


def test_after_a_run_at_level_uid_nothing_of_its_uid_survives_and_its_files_are_the_agents(uid_sandbox, site):
    workdir = workdir_in(site)
    child, user = start(
        uid_sandbox,
        workdir,
        """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        open("left.txt", "w").write("x")
        """,
        python=str(SYSTEM_PYTHON),
    )
    assert child.wait(timeout=30) == 0
    assert user is not None
    assert processes_of(user.uid)  # the daemonised grandchild
    uid_sandbox.finish(workdir, user)
    assert not processes_of(user.uid)
    assert (workdir / "left.txt").stat().st_uid == os.geteuid()


def test_concurrent_runs_get_different_uids(uid_sandbox):
    first = uid_sandbox.acquire()
    second = uid_sandbox.acquire()
    assert first is not None
    assert second is not None
    try:
        assert first.uid != second.uid
    finally:
        first.lock.close()
        second.lock.close()


def test_close_to_others_keeps_only_the_way_to_what_runs_need(tmp_path):
    site = tmp_path / "site"
    (site / ".venv" / "lib").mkdir(parents=True)
    (site / "var").mkdir()
    (site / "var" / "db.sqlite3").write_text("x")
    (site / "settings.py").write_text("x")
    for path in [site, site / ".venv", site / "var"]:
        os.chmod(path, 0o755)  # noqa: S103 - open, so that closing shows
    close_to_others([site], [site / ".venv"])
    assert os.stat(site).st_mode & 0o007 == 0o001  # pass through, no listing
    assert os.stat(site / ".venv").st_mode & 0o007 == 0o005  # untouched
    assert os.stat(site / "var").st_mode & 0o007 == 0
    assert os.stat(site / "settings.py").st_mode & 0o007 == 0


# --- none --------------------------------------------------------------------------------------
def test_level_none_is_reported_and_runs_as_the_agent(site):
    sandbox = detect("none", protect=[site], work_root=site / "var" / "local-node" / "work")
    assert sandbox.level == "none"
    assert sandbox.acquire() is None
    code, out = run(sandbox, workdir_in(site), "import os; print(os.getuid())")
    assert (code, int(out)) == (0, os.getuid())


# --- what the agent takes back from a run's folder ---------------------------------------------
def test_the_agent_lists_only_regular_files_of_a_run_never_through_links(tmp_path):
    secret = tmp_path / "site" / "db.sqlite3"
    secret.parent.mkdir()
    secret.write_text("hashes")
    run = tmp_path / "run"
    (run / "out").mkdir(parents=True)
    (run / "out" / "result.csv").write_text("1")
    (run / "stolen.sqlite3").symlink_to(secret)
    (run / "site").symlink_to(secret.parent)
    assert regular_files(run) == [run / "out" / "result.csv"]


def test_the_agent_refuses_to_read_a_link_in_a_runs_folder(tmp_path):
    secret = tmp_path / "settings.py"
    secret.write_text("SECRET_KEY = 'x'")
    (tmp_path / "_output.ipynb").symlink_to(secret)
    with pytest.raises(OSError, match=r"symbolic links|Too many levels"):  # ELOOP from O_NOFOLLOW
        read_regular(tmp_path / "_output.ipynb")
    assert read_regular(secret) == b"SECRET_KEY = 'x'"


def test_sandboxed_never_falls_back_to_no_isolation(site, monkeypatch):
    """`--isolation sandboxed` (what make run's shared local node asks for) takes bwrap or uid, and
    refuses to start where neither works rather than run everyone's notebooks unisolated."""

    def unavailable(level: str, sandbox) -> None:
        if level != "none":
            raise Unavailable(f"{level} does not work here")

    monkeypatch.setattr("reprolab_agent.sandbox._prepare", unavailable)
    work = site / "var" / "local-node" / "work"
    assert detect("auto", protect=[site], work_root=work).level == "none"
    with pytest.raises(Unavailable, match="bwrap: bwrap does not work here; uid: uid does not work here"):
        detect("sandboxed", protect=[site], work_root=work)


def test_make_runs_local_node_asks_for_a_sandbox(settings):
    from apps.compute.management.commands.run_embedded import Command

    argv = Command().agent_command(8000, 1)
    assert argv[argv.index("--isolation") + 1] == settings.REPROLAB_LOCAL_NODE_ISOLATION == "sandboxed"
