"""Hostile notebooks on a warm slot, at the strongest isolation here (bubblewrap, which CI installs)
and at the fallbacks: no network, limits that end the run with a clear reason while the node goes
on, nothing to read or write outside the run's own folder."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from reprolab_agent.limits import Limits

from .slots import LINUX, ROOT, notebook, run_cells, sandbox_at, taken, warm_pool

pytestmark = pytest.mark.skipif(not LINUX, reason="Linux process isolation")
LIMITS = Limits(memory_mb=1024, processes=64, output_mb=8, workdir_mb=64, cpu_seconds=3)


@pytest.fixture(params=["bwrap", "uid"])
def level(request, site) -> str:
    """The levels that isolate."""
    if request.param == "uid" and not ROOT:
        pytest.skip("level uid needs a root agent")
    return request.param


@pytest.fixture(params=["bwrap", "uid", "none"])
def any_level(request, site) -> str:
    """Every level: where nothing isolates a run, its limits still hold (the fallback)."""
    if request.param == "uid" and not ROOT:
        pytest.skip("level uid needs a root agent")
    return request.param


def errors(outcome) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in outcome.outputs() if o.get("output_type") == "error"]


def test_a_socket_connect_fails_in_the_sandbox(site):
    body = notebook(
        textwrap.dedent(
            """
            import socket
            for host, port in [("127.0.0.1", 5432), ("127.0.0.1", 6379), ("1.1.1.1", 53)]:
                try:
                    socket.create_connection((host, port), timeout=2).close()
                    print("reached", host, port)
                except OSError as error:
                    print("refused", host, port, type(error).__name__)
            """
        )
    )
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body)
    assert outcome.code == 0, outcome.events
    assert "reached" not in outcome.stdout
    assert outcome.stdout.count("refused") == 3


def test_a_run_given_the_network_reaches_it(site):
    """A run that asked for the network on a node that allows it (the agent's decision) gets the
    host's: here, a listening socket on the host's loopback."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    body = notebook(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\nprint('reached')"
    )
    try:
        with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
            outcome = run_cells(pool, body, network=True)
    finally:
        server.close()
    assert outcome.stdout == "reached\n", outcome.events


def test_a_4_gib_allocation_ends_as_memory_exceeded(any_level, site):
    body = notebook("print('before', flush=True)", "x = bytearray(4 * 2**30)", "print('after')")
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body)
        after = run_cells(pool, notebook("print('the node goes on')"))  # the next run is unharmed
    assert outcome.code == 3
    assert errors(outcome) == ["MemoryError: "]
    assert "after" not in outcome.stdout
    assert after.stdout == "the node goes on\n"


def test_memory_spread_over_processes_ends_the_run_with_the_reason(any_level, site):
    """Each process stays under the per-process limit; together they pass the run's."""
    body = notebook(
        textwrap.dedent(
            """
            import subprocess, sys, time
            hog = "x = bytearray(400 * 2**20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\nimport time; time.sleep(600)"
            children = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(4)]
            time.sleep(600)
            """
        )
    )
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, timeout=120)
    assert outcome.stopped_for == "memory limit 1 GiB exceeded in cell 0"


def test_a_fork_bomb_ends_as_the_process_limit(any_level, site):
    body = notebook("import os\nwhile True:\n    os.fork()")
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, timeout=120)
        after = run_cells(pool, notebook("print('the node goes on')"))
    if any_level == "none" and not outcome.stopped_for:
        # The run shares the agent's uid, whose other processes count against RLIMIT_NPROC too:
        # forking may fail (in the kernel, or in its copies) before the run holds 64 processes.
        # It ends all the same, as a failure.
        assert outcome.code in (3, 4), outcome.events
    else:
        assert outcome.stopped_for == "process limit 64 exceeded in cell 0"
    assert after.stdout == "the node goes on\n"


def test_a_busy_loop_ends_as_the_cpu_time_limit(site):
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, notebook("while True:\n    pass"), timeout=120)
    assert outcome.stopped_for == "CPU time limit 3 s exceeded in cell 0"


def test_100_mb_to_stdout_is_capped(site):
    body = notebook("for _ in range(100):\n    print('x' * 2**20)", "print('still running')")
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, keep=True)
        size = (outcome.workdir / "_output.ipynb").stat().st_size
        pool.remove(outcome.slot)
    assert outcome.code == 0, outcome.events
    assert size < 9 * 2**20  # the notebook holds at most the 8 MiB limit (and a note)
    streamed = sum(len(e["payload"].get("text", "")) for e in outcome.events if e["kind"] == "stream")
    assert streamed <= 8 * 2**20
    notes = [o for o in outcome.outputs() if "past this run's limit" in str(o.get("text", ""))]
    assert len(notes) == 1
    assert [e["payload"].get("limit") for e in outcome.events if e["kind"] == "log" and e["payload"].get("limit")] == [
        "output"
    ]


def test_filling_the_working_directory_ends_as_its_limit(any_level, site):
    big = notebook("open('big.bin', 'wb').write(b'x' * 100 * 2**20)")
    many = notebook(
        "import time\nfor i in range(12):\n    open(f'part{i}.bin', 'wb').write(b'x' * 8 * 2**20)\ntime.sleep(60)"
    )
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        one_file = run_cells(pool, big)
        spread = run_cells(pool, many, timeout=120)
    assert errors(one_file) == ["OSError: [Errno 27] File too large"]
    assert spread.stopped_for == "working directory limit 64 MiB exceeded in cell 0"


def test_nothing_outside_the_working_directory_can_be_written(level, site):
    targets = ["/usr/reprolab-probe", "/etc/reprolab-probe", str(site / "var" / "probe"), str(site / "probe")]
    if level == "bwrap":  # its /tmp is its own; at level uid the host's /tmp is shared (documented)
        targets.append("/tmp/reprolab-probe-from-run")
    body = notebook(
        textwrap.dedent(
            f"""
            import json
            wrote = []
            for path in {targets!r}:
                try:
                    open(path, "w").write("x")
                    wrote.append(path)
                except OSError:
                    pass
            print(json.dumps(wrote))
            """
        )
    )
    with warm_pool(sandbox_at(level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body)
    written_in_sandbox = outcome.stdout.strip()
    if level == "bwrap":
        assert written_in_sandbox in ("[]", '["/tmp/reprolab-probe-from-run"]')
    else:
        assert written_in_sandbox == "[]"
    for path in targets:
        assert not Path(path).exists(), f"{path} was written on the node"


def test_the_agents_token_and_another_runs_files_cannot_be_read(level, site):
    with warm_pool(sandbox_at(level, site), site, limits=LIMITS, concurrency=2) as pool:
        first = run_cells(pool, notebook("open('secret.txt', 'w').write('first run only')"), keep=True)
        other = first.workdir / "secret.txt"
        assert other.exists()
        token = site / "var" / "local-node" / "token"
        body = notebook(
            textwrap.dedent(
                f"""
                import os
                for path in [{str(other)!r}, {str(token)!r}, {str(first.workdir)!r}, {str(site / "var" / "db.sqlite3")!r}]:
                    try:
                        print(path, open(path).read() if os.path.isfile(path) else os.listdir(path))
                    except OSError as error:
                        print(path, type(error).__name__)
                """
            )
        )
        second = run_cells(pool, body)
        pool.remove(first.slot)
    assert second.code == 0, second.events
    found = [line.rsplit(" ", 1)[1] for line in second.stdout.splitlines()]
    assert found == ["FileNotFoundError"] * 4, second.stdout  # none of it exists for the run
    assert os.path.exists(token)


def test_memory_in_processes_that_left_the_session_still_counts(any_level, site):
    body = notebook(
        textwrap.dedent(
            """
            import subprocess, sys, time
            hog = "x = bytearray(400 * 2**20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\nimport time; time.sleep(600)"
            children = [subprocess.Popen([sys.executable, "-c", hog], start_new_session=True) for _ in range(4)]
            time.sleep(600)
            """
        )
    )
    if any_level == "none":
        pytest.skip("at level none a run shares the agent's uid and namespaces: only its session is known")
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, timeout=120)
    assert outcome.stopped_for == "memory limit 1 GiB exceeded in cell 0"


def test_memory_kept_in_the_sandboxes_tmpfs_counts(site):
    body = notebook(
        "import time\nfor i in range(6):\n    open(f'/dev/shm/fill{i}', 'wb').write(b'x' * 200 * 2**20)\ntime.sleep(600)"
    )
    limits = Limits(memory_mb=1024, workdir_mb=2048, processes=64)
    with warm_pool(sandbox_at("bwrap", site), site, limits=limits) as pool:
        outcome = run_cells(pool, body, timeout=120)
    assert outcome.stopped_for == "memory limit 1 GiB exceeded in cell 0"


def test_a_cold_kernel_is_watched_like_a_warm_one(site):
    """jupyter_client finds kernels whatever the case of their name; the warm pool serves only
    `python3`, so PYTHON3 starts cold: its memory must count all the same."""
    hog = "x = bytearray(400 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\nimport time; time.sleep(600)"
    body = notebook(
        f"import subprocess, sys, time\nkids = [subprocess.Popen([sys.executable, '-c', {hog!r}]) for _ in range(4)]\n"
        "time.sleep(600)",
        kernel="PYTHON3",
    )
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, kernel="PYTHON3", timeout=120)
    assert [e for e in outcome.events if e["kind"] == "log" and e["payload"].get("cold_kernel")]
    assert outcome.stopped_for == "memory limit 1 GiB exceeded in cell 0"


def test_a_folder_nested_past_the_recursion_limit_neither_blinds_the_watch_nor_stops_the_cleanup(site):
    body = notebook(
        "import os, time\nos.mkdir('deep'); os.chdir('deep')\nfor _ in range(1500):\n    os.mkdir('d'); os.chdir('d')\n"
        "time.sleep(600)"
    )
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, timeout=8)
    assert outcome.code != 0
    assert not outcome.workdir.exists()  # removed with its slot, however deep


def test_metadata_and_widget_state_count_against_the_output_limit(site):
    body = notebook(
        "from IPython.display import publish_display_data\n"
        "for _ in range(4):\n    publish_display_data({'text/plain': 's'}, metadata={'pad': 'x' * 4 * 2**20})",
        textwrap.dedent(
            """
            from ipykernel.comm import Comm
            big = "y" * 4 * 2**20
            state = {"_model_name": "X", "_model_module": "m", "_model_module_version": "1"}
            c = Comm(target_name="jupyter.widget", data={"state": state, "buffer_paths": []})
            for i in range(6):
                c.send({"method": "update", "state": {f"p{i}": big}, "buffer_paths": []})
            """
        ),
    )
    with warm_pool(sandbox_at("bwrap", site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body, keep=True)
        size = (outcome.workdir / "_output.ipynb").stat().st_size
        pool.remove(outcome.slot)
    assert outcome.code == 0, outcome.events
    assert size < 10 * 2**20  # within the 8 MiB limit and its note, not the 40 MiB the run sent


def test_the_sandbox_placeholder_carries_none_of_the_agents_environment(site, monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "site-secret-in-the-agents-environment")
    with warm_pool(sandbox_at("bwrap", site), site) as pool, taken(pool) as slot:
        assert slot.placeholder is not None
        assert slot.sandbox_pid is not None
        for pid in (slot.placeholder.pid, slot.sandbox_pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"DJANGO_SECRET_KEY=site-secret-in-the-agents-environment" not in environ
            assert [v for v in environ if v and not v.startswith(b"PATH=")] == []


def test_run_code_cannot_make_a_user_namespace_to_mount_its_own_tmpfs(any_level, site):
    body = notebook(
        textwrap.dedent(
            """
            import ctypes, subprocess, threading
            libc = ctypes.CDLL(None, use_errno=True)
            print("unshare", libc.unshare(0x10000000), ctypes.get_errno())  # CLONE_NEWUSER
            found = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, text=True)
            print("command", found.returncode)
            done = []
            worker = threading.Thread(target=done.append, args=(1,))  # threads still start (clone3 -> clone)
            worker.start(); worker.join()
            print("threads", done)
            """
        )
    )
    with warm_pool(sandbox_at(any_level, site), site, limits=LIMITS) as pool:
        outcome = run_cells(pool, body)
    assert outcome.code == 0, outcome.events
    assert outcome.stdout.splitlines() == ["unshare -1 1", "command 1", "threads [1]"]
