"""GPU runs end to end on a machine without a GPU: a real site and a real agent whose CuPy and NVML
are fakes (the edge of the world here), put on the agent's path only. The agent offers the GPUs
the fake CuPy reports as slots, the scheduler counts them, each GPU run gets its own device through
CUDA_VISIBLE_DEVICES, and its resources events carry what the fake NVML reads."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunEvent, RunState
from apps.projects.models import Project
from tests.factories import make_project, upload_notebook

from .servers import ROOT, daphne_server, wait_until

pytestmark = pytest.mark.integration

FAKE_CUPY = """
__version__ = "13.0.0+fake"


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 2

    @staticmethod
    def runtimeGetVersion():
        return 12040

    @staticmethod
    def driverGetVersion():
        return 12040

    @staticmethod
    def getDeviceProperties(index):
        return {"name": b"Fake H100", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0}


class cuda:
    runtime = _Runtime
"""
FAKE_PYNVML = """
def nvmlInit():
    pass


class _Memory:
    used = 3 * 2**30
    total = 80 * 2**30


class _Rates:
    gpu = 87


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetName(handle):
    return b"Fake H100"


def nvmlDeviceGetMemoryInfo(handle):
    return _Memory()


def nvmlDeviceGetUtilizationRates(handle):
    return _Rates()
"""
FINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST}
SHOW = "import os, time\nprint(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), flush=True)\ntime.sleep(seconds)"


@pytest.fixture
def lab(owner: User) -> Project:
    return make_project(owner, slug="gpu-lab")


@pytest.fixture
def gpu_agent(transactional_db, owner: User, tmp_path: Path) -> Iterator[Node]:
    fakes = tmp_path / "fakes"
    (fakes / "cupy").mkdir(parents=True)
    (fakes / "cupy" / "__init__.py").write_text(FAKE_CUPY)
    (fakes / "pynvml.py").write_text(FAKE_PYNVML)
    registered = services.node_register(owner=owner, name="gpubox", max_concurrency=2)
    log = tmp_path / "agent.log"
    with daphne_server(REPROLAB_HEARTBEAT_SECONDS="1") as url, log.open("wb") as sink:
        agent = subprocess.Popen(
            [
                *(sys.executable, "-m", "reprolab_agent", "--server", url, "--concurrency", "2", "--wait", "5"),
                *("--work-dir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache")),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(fakes), str(ROOT / "agent")]),
                "REPROLAB_NODE_TOKEN": registered.token,
            },
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: "node gpubox on" in log.read_text(), timeout=90, what="the agent's hello", process=agent)
            yield Node.objects.get(pk=registered.node.pk)
        finally:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def submit(lab: Project, seconds: float, **requirements) -> Run:
    assert lab.created_by is not None
    version = upload_notebook(
        lab, lab.created_by, f"gpu-{seconds}.ipynb", source=SHOW, parameters=f"seconds = {seconds}"
    )
    return services.run_submit(
        project=lab,
        user=lab.created_by,
        notebook_version=version.version,
        parameters={"seconds": seconds},
        requirements=requirements or None,
    )


def final(run: Run, timeout: float = 120) -> Run:
    wait_until(lambda: Run.objects.get(pk=run.pk).state in FINAL, timeout=timeout, what=f"run {run.pk} to end")
    return Run.objects.get(pk=run.pk)


def printed(run: Run) -> str:
    return "".join(e.payload.get("text", "") for e in RunEvent.objects.filter(run=run, kind="stream").order_by("seq"))


def test_the_agent_offers_its_gpus_and_each_gpu_run_gets_one_of_its_own(gpu_agent, lab):
    assert [g["name"] for g in gpu_agent.capabilities["gpus"]] == ["Fake H100", "Fake H100"]
    first, second = submit(lab, 4.0, gpus=1), submit(lab, 4.0, gpus=1)
    first, second = final(first), final(second)
    assert (first.state, second.state) == (RunState.SUCCEEDED, RunState.SUCCEEDED), (first.error, second.error)
    devices = {printed(first).strip(), printed(second).strip()}
    assert devices == {"'0'", "'1'"}, devices  # side by side, never the same GPU


def test_a_gpu_run_reports_its_gpus_utilisation_and_memory(gpu_agent, lab):
    run = final(submit(lab, 5.0, gpus=1))
    assert run.state == RunState.SUCCEEDED, run.error
    samples = [e.payload for e in RunEvent.objects.filter(run=run, kind="resources")]
    with_gpus = [s["gpus"] for s in samples if "gpus" in s]
    assert with_gpus, samples
    assert with_gpus[0] == [
        {"index": int(printed(run).strip().strip("'")), "name": "Fake H100", "utilization_percent": 87}
        | {"memory_used_mb": 3072, "memory_total_mb": 81920}
    ]


def test_a_run_that_asked_for_no_gpu_sees_none(gpu_agent, lab):
    run = final(submit(lab, 2.5))
    assert run.state == RunState.SUCCEEDED, run.error
    assert printed(run).strip() == "''"
    assert not [e for e in RunEvent.objects.filter(run=run, kind="resources") if "gpus" in e.payload]


def test_a_run_asking_for_more_gpus_than_are_free_waits_for_them(gpu_agent, lab):
    both = submit(lab, 4.0, gpus=2)
    wait_until(
        lambda: Run.objects.get(pk=both.pk).state == RunState.RUNNING, timeout=60, what="the two-GPU run to start"
    )
    one = submit(lab, 0.5, gpus=1)
    both = final(both)
    one = final(one)
    assert (both.state, one.state) == (RunState.SUCCEEDED, RunState.SUCCEEDED), (both.error, one.error)
    assert printed(both).strip() == "'0,1'"
    assert one.started_at is not None
    assert both.finished_at is not None
    assert one.started_at >= both.finished_at  # it waited: both GPUs were held
