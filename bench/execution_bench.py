"""Execution through the platform against bare papermill, on this machine, in one run.

Baselines, measured here in the same run: the `papermill` CLI, `papermill.execute_notebook` in a
warm process, and a sequential loop of it.
- P1, latency: one trivial parameterized notebook, submit over the REST API -> output notebook
  stored (a real daphne server, one real agent, SQLite). Target: <= 0.25x the papermill CLI.
- P2, throughput: 20 small notebooks through two agents. Target: >= 3x the sequential loop.
- The cost of isolation: P1 and P2 with runs sandboxed (bubblewrap) and with isolation `none`.
- Memory of an idle agent with its warm pool (the agent, its template and ready slots).

Run: `.venv/bin/python bench/execution_bench.py [repeats]` (about two minutes). Prints medians.

Every process it starts has an owner (an ExitStack) that stops it on the way out, however the
bench ends: finished, failed, interrupted (Ctrl-C), terminated (SIGTERM) or past its time limit.
Agents get SIGTERM first (they stop claiming and release their runs), then SIGKILL; what an agent
started (its warm template and slots) ends with it.
"""

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import BIN, STOP_SECONDS, Stopped, api, phase, run_limited, serve, setup_django, site_env, start_agent

TMP = Path(tempfile.mkdtemp(prefix="reprolab-exec-bench-"))
ENV = site_env(TMP)
SOURCE = "result = alpha * steps\nprint(result)"
COUNT = 20  # notebooks of P2
TIME_LIMIT = 480  # seconds; then the tracebacks are dumped and the bench stops (cleaning up)
FINAL = ("succeeded", "failed", "cancelled", "lost")


def setup_site() -> tuple[int, list[str], str]:
    """Migrate a fresh database; create a user, project, notebook, four nodes. Returns
    (notebook id, node tokens, API token)."""
    setup_django(ENV)
    import django

    from apps.accounts.services import api_token_create, user_create
    from apps.compute.services import node_register
    from tests.factories import make_project, upload_notebook

    user = user_create(username="bench", password="bench-password-123")  # noqa: S106 - a throwaway bench db
    project = make_project(user, slug="bench")
    notebook = upload_notebook(project, user, "trivial.ipynb", source=SOURCE).notebook
    tokens = [node_register(owner=user, name=f"node{i}").token for i in range(4)]
    version = notebook.latest_version
    assert version is not None
    (TMP / "trivial.ipynb").write_bytes(Path(django.conf.settings.MEDIA_ROOT, version.storage_name).read_bytes())
    return notebook.pk, tokens, api_token_create(user=user, name="bench").raw


def check(run: dict) -> None:
    if run["state"] != "succeeded" or not run["output"]:
        raise RuntimeError(f"run {run['id']} ended {run['state']}: {run.get('error')}")


def wait_one(base: str, token: str, run_id: int) -> None:
    """Until the run is final; a light poll (one small request every 5 ms)."""
    while True:
        run = api(base, token, "GET", f"/api/v1/runs/{run_id}/")
        if run["state"] in FINAL:
            check(run)
            return
        time.sleep(0.005)


def wait_all(base: str, token: str, run_ids: list[int]) -> None:
    """Until every run is final: one list request every 50 ms (not one per run)."""
    pending = set(run_ids)
    while pending:
        page = api(base, token, "GET", "/api/v1/runs/?project__slug=bench&page_size=200")
        for run in page["results"]:
            if run["id"] in pending and run["state"] in FINAL:
                check(run)
                pending.discard(run["id"])
        if pending:
            time.sleep(0.05)


def memory_of_tree(pid: int) -> tuple[float, float, int]:
    """(PSS MiB, RSS MiB, processes) of a process and all its descendants, from /proc."""
    from tests.integration.processes import descendants

    tree = {pid, *descendants(pid)}
    pss = rss = 0
    for member in tree:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
    return pss / 1024, rss / 1024, len(tree)


@dataclass
class Pass:
    """The platform's figures at one isolation level."""

    isolation: str
    latency: list[float] = field(default_factory=list)
    throughput: float = 0.0
    memory: tuple[float, float, int] = (0.0, 0.0, 0)
    note: str = ""


class Platform:
    """A daphne on a fresh SQLite database, and agents started on demand; every process entered
    into `processes`, which stops it on the way out."""

    def __init__(self, processes: contextlib.ExitStack) -> None:
        self.processes = processes
        self.notebook_id, self.node_tokens, self.token = setup_site()
        self.base = serve(processes, ENV)

    def agent(self, index: int, isolation: str) -> tuple[subprocess.Popen, Path]:
        """Start an agent and wait until it said hello (its warm pool is then up)."""
        name = f"a{index}-{isolation}"
        folder = TMP / name
        process = start_agent(self.processes, ENV, self.base, self.node_tokens[index], folder, "--isolation", isolation)
        return process, folder / "agent.log"

    def submit(self, i: int, alpha: float) -> int:
        body = {"project": "bench", "notebook": self.notebook_id, "parameters": {"alpha": alpha, "steps": i}}
        return int(api(self.base, self.token, "POST", "/api/v1/runs/", body)["id"])


def stop_agent(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def settle(pid: int, seconds: float = 1.0, limit: float = 60.0) -> None:
    """Until the agent's process tree stops changing for `seconds` (its pool refilled)."""
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        count = memory_of_tree(pid)[2]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.1)


def through_platform(platform: Platform, isolation: str, repeats: int) -> Pass:
    figures = Pass(isolation)
    phase("latency through the platform" + ("" if isolation == "bwrap" else f" (isolation {isolation})"))
    first, _ = platform.agent(0 if isolation == "bwrap" else 2, isolation)
    for i in range(repeats + 1):
        settle(first.pid)  # a run arrives at an idle agent, as a single user's would
        start = time.perf_counter()
        wait_one(platform.base, platform.token, platform.submit(i, 1.5))
        if i:  # the first run warms the site's caches
            figures.latency.append(time.perf_counter() - start)
    settle(first.pid)
    figures.memory = memory_of_tree(first.pid)
    phase(f"throughput through two agents (isolation {isolation})")
    second, _ = platform.agent(1 if isolation == "bwrap" else 3, isolation)
    settle(second.pid)
    start = time.perf_counter()
    wait_all(platform.base, platform.token, [platform.submit(i, 2.0) for i in range(COUNT)])
    figures.throughput = time.perf_counter() - start
    stop_agent(first)
    stop_agent(second)
    return figures


def baselines(repeats: int) -> tuple[list[float], list[float], list[float]]:
    notebook = str(TMP / "trivial.ipynb")
    phase("latency of the papermill CLI")
    cli = []
    command = [str(BIN / "papermill"), notebook, str(TMP / "cli-out.ipynb"), "--no-progress-bar", "-p", "alpha", "1.5"]
    for i in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [*command, "-p", "steps", str(i)],
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
    phase("throughput of a sequential papermill loop")
    loops = []
    for shutdown in ("graceful", "immediate"):  # papermill's default, and the faster kernel stop we use
        start = time.perf_counter()
        for i in range(COUNT):
            papermill.execute_notebook(
                notebook,
                str(TMP / "loop.ipynb"),
                parameters={"alpha": 2.0, "steps": i},
                progress_bar=False,
                shutdown_kernel=shutdown,
            )
        loops.append(time.perf_counter() - start)
    return cli, in_process, loops


def booted_kernel_memory() -> tuple[float, float]:
    """(PSS, RSS) in MiB of one idle kernel started the usual way (jupyter_client), for scale."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        pid = getattr(manager.provisioner, "pid", None)  # the local provisioner's process
        assert isinstance(pid, int)
        pss, rss, _ = memory_of_tree(pid)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return pss, rss


def sandbox_works() -> str:
    """'' when bubblewrap works here, else why not."""
    from reprolab_agent.sandbox import Unavailable, detect

    try:
        detect("bwrap", protect=[], work_root=TMP / "probe")
    except Unavailable as error:
        return str(error)
    return ""


def measure(
    processes: contextlib.ExitStack,
) -> tuple[int, list[float], list[float], list[float], list[Pass], tuple[float, float]]:
    """Every process started here is entered into `processes`, which stops it on the way out."""
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    platform = Platform(processes)
    passes = []
    why_not = sandbox_works()
    if why_not:
        passes.append(Pass("bwrap", note=f"not measured: {why_not}"))
    else:
        passes.append(through_platform(platform, "bwrap", repeats))
    passes.append(through_platform(platform, "none", repeats))
    cli, in_process, loops = baselines(repeats)
    return repeats, cli, in_process, loops, passes, booted_kernel_memory()


def report(
    repeats: int,
    cli: list[float],
    in_process: list[float],
    loops: list[float],
    passes: list[Pass],
    kernel: tuple[float, float],
) -> None:
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs; SQLite; {repeats} repeats, medians")
    print("P1 latency, one trivial parameterized notebook:")
    print(f"  baseline  papermill CLI                               : {med(cli):6.3f} s")
    print(f"  baseline  papermill.execute_notebook, warm process    : {med(in_process):6.3f} s")
    for figures in passes:
        label = "sandboxed (bwrap)" if figures.isolation == "bwrap" else f"isolation {figures.isolation}"
        if figures.note:
            print(f"  ours      submit -> output stored, {label:18}: {figures.note}")
            continue
        latency = med(figures.latency)
        print(
            f"  ours      submit -> output stored, {label:18}: {latency:6.3f} s"
            f"  ({latency / med(cli):.2f}x CLI, {latency / med(in_process):.2f}x in-process)"
        )
    sequential, immediate = loops
    print(f"P2 throughput, {COUNT} small notebooks:")
    print(
        f"  baseline  sequential execute_notebook loop            : {sequential:6.2f} s  ({COUNT / sequential:.2f}/s)"
    )
    print(f"  baseline  the same, shutdown_kernel='immediate'       : {immediate:6.2f} s  ({COUNT / immediate:.2f}/s)")
    for figures in passes:
        if figures.note:
            continue
        label = "sandboxed (bwrap)" if figures.isolation == "bwrap" else f"isolation {figures.isolation}"
        print(
            f"  ours      two agents, {label:27}: {figures.throughput:6.2f} s  ({COUNT / figures.throughput:.2f}/s,"
            f" {sequential / figures.throughput:.2f}x the loop, {immediate / figures.throughput:.2f}x the faster one)"
        )
    print("memory of an idle agent (concurrency 1) with its warm pool (2 ready kernels):")
    print(
        f"  baseline  one idle kernel started by jupyter_client  : PSS {kernel[0]:6.1f} MiB  (RSS {kernel[1]:6.1f} MiB)"
    )
    for figures in passes:
        if not figures.note:
            pss, rss, count = figures.memory
            print(
                f"  ours      agent, template and slots, {figures.isolation:5}: PSS {pss:6.1f} MiB"
                f"  (RSS {rss:6.1f} MiB summed over {count} processes)"
            )


def main() -> None:
    report(*run_limited(measure, time_limit=TIME_LIMIT, tmp=TMP))


if __name__ == "__main__":
    try:
        main()
    except (Stopped, KeyboardInterrupt) as why:
        sys.exit(f"stopped ({why or 'interrupted'}); every process it started is stopped")
