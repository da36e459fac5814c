"""Declared environments end to end: the site resolves declarations with real uv against a real
package index (pypiserver on 127.0.0.1, tests/package_index.py), real agents build them with uv
and run notebooks on the environment's own kernel inside their sandbox."""

import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Node, Run, RunEvent
from apps.projects.models import Project
from apps.reproducibility.models import EnvironmentSnapshot, Reproduction
from tests.environments.conftest import package_index_url  # noqa: F401 - the session's index
from tests.factories import make_project, make_token, make_user, upload_notebook

from .fabric import FAST_LEASES, FINAL, wait_for_state
from .servers import agent_process, celery_worker, daphne_server, stopping, wait_until

pytestmark = pytest.mark.integration

UNREACHABLE_INDEX = "http://127.0.0.1:9/simple/"  # the discard port: nothing answers


@dataclass
class EnvStack:
    url: str
    token: str
    project_slug: str
    project: Project
    user: User
    tmp: Path
    index_url: str
    exits: ExitStack

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def declare(self, text: str, name: str = "requirements.txt") -> requests.Response:
        return requests.put(
            f"{self.url}/api/v1/projects/{self.project_slug}/environment/",
            files={"file": (name, text.encode())},
            headers=self.headers(),
            timeout=120,
        )

    def submit(self, notebook_id: int, node: str, **fields) -> int:
        body = {"project": self.project_slug, "notebook": notebook_id, "requirements": {"tags": [node]}, **fields}
        response = requests.post(f"{self.url}/api/v1/runs/", json=body, headers=self.headers(), timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def start_agent(self, name: str, *, concurrency: int = 1, index_url: str | None = None) -> None:
        registered = compute.node_register(owner=self.user, name=name, max_concurrency=concurrency)
        Node.objects.filter(pk=registered.node.pk).update(tags=[name])
        self.exits.enter_context(
            stopping(
                agent_process(
                    self.url,
                    registered.token,
                    self.tmp / name,
                    name=name,
                    concurrency=concurrency,
                    index_url=index_url or self.index_url,
                )
            )
        )
        wait_until(
            lambda: Node.objects.filter(pk=registered.node.pk, last_seen_at__isnull=False).exists(),
            timeout=30,
            what=f"agent {name} to say hello",
        )


@pytest.fixture
def env_stack(transactional_db, require_redis, tmp_path, package_index_url):  # noqa: F811
    owner = make_user("declarer")
    project = make_project(owner, slug="declared", visibility="private")
    site = {
        **FAST_LEASES,
        "REPROLAB_PACKAGE_INDEX_URL": package_index_url,
        "REPROLAB_UV_CACHE_DIR": str(tmp_path / "uv"),
    }
    with ExitStack() as exits:
        url = exits.enter_context(daphne_server(**site))
        exits.enter_context(celery_worker(beat=True, **site))
        yield EnvStack(url, make_token(owner), project.slug, project, owner, tmp_path, package_index_url, exits)


def _messages(run_id: int) -> list[str]:
    return [str(e.payload.get("message", "")) for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


def test_a_declared_environment_runs_what_the_base_environment_lacks(env_stack):
    env_stack.start_agent("alpha")
    source = "import tabulate\nprint(tabulate.tabulate([[1, 2]]))\nprint(tabulate.__file__)"
    notebook = upload_notebook(env_stack.project, env_stack.user, "table.ipynb", source=source).notebook

    bare = wait_for_state(env_stack.submit(notebook.pk, "alpha"), FINAL)
    assert bare.state == "failed"
    assert "No module named 'tabulate'" in bare.error
    assert "Declare the package that provides it (tabulate)" in bare.error
    assert EnvironmentSnapshot.objects.get(run=bare).data["environment"] == {"declared": False}

    declared = env_stack.declare("tabulate\n")
    assert declared.status_code == 200, declared.text
    lock = declared.json()
    assert {"name": "tabulate", "version": "0.10.0"} in lock["packages"]
    assert "--hash=sha256:" in lock["lock"]

    run = wait_for_state(env_stack.submit(notebook.pk, "alpha"), FINAL, timeout=180)
    assert run.state == "succeeded", run.error
    assert run.environment_lock is not None
    assert run.environment_lock.sha256 == lock["sha256"]
    messages = _messages(run.pk)
    assert any(m.startswith(f"building environment {lock['sha256'][:12]}") for m in messages), messages
    snapshot = EnvironmentSnapshot.objects.get(run=run).data
    assert snapshot["environment"]["sha256"] == lock["sha256"]
    assert snapshot["environment"]["matches_lock"] is True
    assert snapshot["packages"]["tabulate"] == "0.10.0"
    assert "django" not in snapshot["packages"]  # the environment's packages, not the agent's

    again = wait_for_state(env_stack.submit(notebook.pk, "alpha"), FINAL, timeout=120)
    assert again.state == "succeeded", again.error
    assert any("reused" in m for m in _messages(again.pk))
    assert not any(m.startswith("building environment") for m in _messages(again.pk))


def test_two_runs_at_once_share_one_build(env_stack):
    env_stack.start_agent("alpha", concurrency=2)
    assert env_stack.declare("toolz\nmore-itertools\n").status_code == 200
    source = "import toolz, more_itertools\nprint(toolz.__version__)"
    notebook = upload_notebook(env_stack.project, env_stack.user, "both.ipynb", source=source).notebook
    run_ids = [env_stack.submit(notebook.pk, "alpha") for _ in range(2)]
    runs = [wait_for_state(run_id, FINAL, timeout=180) for run_id in run_ids]
    assert [r.state for r in runs] == ["succeeded", "succeeded"], [r.error for r in runs]
    messages = [m for r in runs for m in _messages(r.pk)]
    assert sum(m.startswith("building environment") for m in messages) == 1, messages
    assert runs[0].environment_lock_id == runs[1].environment_lock_id


def test_a_rerun_on_another_agent_uses_the_same_lock_and_reproduces(env_stack):
    env_stack.start_agent("alpha")
    env_stack.start_agent("beta")
    assert env_stack.declare("humanize\n").status_code == 200
    source = "import humanize\nfrom reprolab_agent import record\nrecord('size', humanize.naturalsize(123456789))"
    notebook = upload_notebook(env_stack.project, env_stack.user, "size.ipynb", source=source).notebook
    original = wait_for_state(env_stack.submit(notebook.pk, "alpha"), FINAL, timeout=180)
    assert original.state == "succeeded", original.error

    response = requests.post(
        f"{env_stack.url}/api/v1/runs/{original.pk}/reproduce/",
        json={"requirements": {"tags": ["beta"]}},
        headers=env_stack.headers(),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    reproduction_id = response.json()["id"]
    wait_until(
        lambda: Reproduction.objects.get(pk=reproduction_id).verdict != "pending",
        timeout=180,
        what="the reproduction to settle",
    )
    reproduction = Reproduction.objects.get(pk=reproduction_id)
    rerun = reproduction.reruns.get()
    assert rerun.node is not None
    assert rerun.node.name == "beta"
    assert rerun.environment_lock_id == original.environment_lock_id
    assert reproduction.verdict == "reproduced", reproduction.report
    assert reproduction.report["environment_lock"]["same"] is True
    assert reproduction.report["environment_lock"]["changed_packages"] == []
    packages = reproduction.report["environment"]["packages"]
    assert not any(packages[k] for k in ("added", "removed", "changed")), packages
    assert any(m.startswith("building environment") for m in _messages(rerun.pk))  # beta built it itself


def test_a_node_that_cannot_reach_the_index_fails_the_run_with_the_installers_message(env_stack):
    env_stack.start_agent("gamma", index_url=UNREACHABLE_INDEX)
    assert env_stack.declare("termcolor\n").status_code == 200
    notebook = upload_notebook(env_stack.project, env_stack.user, "color.ipynb", source="import termcolor").notebook
    run = wait_for_state(env_stack.submit(notebook.pk, "gamma"), FINAL, timeout=180)
    assert run.state == "failed"
    assert run.error.startswith("Could not build the run's environment:"), run.error
    assert "could not reach the package index http://127.0.0.1:9/simple/" in run.error
    assert "Failed to fetch: http://127.0.0.1:9/simple/" in run.error  # the installer's own words
    assert Run.objects.get(pk=run.pk).attempt == 1  # a failed build is the run's result, not retried


def test_the_agent_leaves_nothing_running(env_stack):
    """The environment's kernels end with their runs: no interpreter of a built environment
    outlives the agent that started it."""
    env_stack.start_agent("alpha")
    assert env_stack.declare("tabulate\n").status_code == 200
    notebook = upload_notebook(env_stack.project, env_stack.user, "t.ipynb", source="import tabulate").notebook
    assert wait_for_state(env_stack.submit(notebook.pk, "alpha"), FINAL, timeout=180).state == "succeeded"
    env_stack.exits.close()  # stops the agent (SIGTERM), the worker and the server
    environments = str(env_stack.tmp / "alpha" / "environments")
    left = subprocess.run(["pgrep", "-f", environments], capture_output=True, text=True, check=False).stdout.split()
    assert left == []
