"""A notebook against its node, end to end: a real daphne, a real agent laid out as `make run`
lays out its local node (state under the site's var/, the site's folder protected), real
papermill runs. The notebooks try what an attacker's would: print the environment, read the
node's token and state, open the site's database, media and settings."""

import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from apps.compute import services as compute
from apps.compute.models import Node, RunEvent
from apps.projects import services as project_services
from apps.projects.models import Notebook
from tests.factories import make_project, make_token, make_user

from .fabric import FINAL, Stack, wait_for_state
from .servers import ROOT, daphne_server, free_port, stopping, wait_until

pytestmark = pytest.mark.integration

SITE_SECRET = "django-insecure-site-secret"


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A site's folder: its settings, an SQLite database with a password hash, media."""
    site = tmp_path / "site"
    (site / "config").mkdir(parents=True)
    (site / "config" / "settings.py").write_text(f"SECRET_KEY = {SITE_SECRET!r}\n")
    (site / "var" / "media").mkdir(parents=True)
    (site / "var" / "media" / "private.csv").write_text("someone's unpublished data\n")
    with sqlite3.connect(site / "var" / "db.sqlite3") as db:
        db.execute("create table accounts_user (username text, password text)")
        db.execute("insert into accounts_user values ('alice', 'pbkdf2_sha256$hash')")
    return site


@contextmanager
def local_node(url: str, token: str, site: Path) -> Iterator[subprocess.Popen]:
    """The agent as run_embedded starts it: token in the environment beside the site's own
    secrets, state under the site's var/, the site's folder protected."""
    state = site / "var" / "local-node"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "agent"), os.environ.get("PYTHONPATH", "")]),
        "REPROLAB_NODE_TOKEN": token,
        "DJANGO_SECRET_KEY": SITE_SECRET,
        "DATABASE_URL": f"sqlite:///{site / 'var' / 'db.sqlite3'}",
    }
    command = [sys.executable, "-m", "reprolab_agent", "--server", url, "--wait", "5"]
    command += ["--work-dir", str(state / "work"), "--cache-dir", str(state / "cache"), "--protect", str(site)]
    log = open(ROOT / "var" / f"isolation-agent-{free_port()}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    with stopping(process), log:
        yield process


@pytest.fixture
def node_stack(transactional_db, site_dir: Path) -> Iterator[tuple[Stack, subprocess.Popen, str]]:
    owner = make_user("researcher")
    project = make_project(owner, slug="iso", visibility="private")
    registered = compute.node_register(owner=owner, name="local", max_concurrency=1)
    with daphne_server() as url, local_node(url, registered.token, site_dir) as agent:
        wait_until(
            lambda: Node.objects.filter(last_seen_at__isnull=False).exists(),
            timeout=60,
            what="the agent to say hello",
            process=agent,
        )
        stack = Stack(url, owner, make_token(owner), project, {"local": registered.node}, {"local": agent}, Path())
        yield stack, agent, registered.token


def upload(stack: Stack, path: str, *sources: str, kernelspec: bool = True) -> Notebook:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    if kernelspec:
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    content = io.BytesIO(nbformat.writes(nb).encode())
    return project_services.notebook_upload(
        project=stack.project, path=path, content=content, uploader=stack.user
    ).notebook


def printed(run_id: int) -> str:
    return "".join(e.payload.get("text", "") for e in RunEvent.objects.filter(run_id=run_id, kind="stream"))


def tagged(run_id: int, tag: str) -> dict:
    line = next(line for line in printed(run_id).splitlines() if line.startswith(tag + " "))
    return json.loads(line[len(tag) + 1 :])


def isolation_of(agent_node: Node) -> str:
    agent_node.refresh_from_db()
    return str(agent_node.capabilities.get("isolation"))


def test_a_notebook_that_prints_its_environment_shows_no_token_and_no_site_secret(node_stack, site_dir):
    stack, _, token = node_stack
    notebook = upload(stack, "env.ipynb", "import json, os\nprint('ENV', json.dumps(dict(os.environ)))")
    run = wait_for_state(stack.submit(notebook), FINAL, timeout=120)
    assert run.state == "succeeded", run.error
    env = tagged(run.pk, "ENV")
    assert token not in json.dumps(env)
    assert SITE_SECRET not in json.dumps(env)
    assert not [name for name in env if name.startswith(("REPROLAB_", "DJANGO_")) or name == "DATABASE_URL"]
    assert env["HOME"].startswith(str(site_dir / "var" / "local-node" / "work" / "run"))  # its own folder


PROBE = r"""
import glob, json, os
site = {site!r}
state = os.path.join(site, "var", "local-node")
targets = {{
    "database": os.path.join(site, "var", "db.sqlite3"),
    "database (relative)": "../../../db.sqlite3",
    "media": os.path.join(site, "var", "media", "private.csv"),
    "settings": os.path.join(site, "config", "settings.py"),
    "cache": os.path.join(state, "cache"),
    "other runs": os.path.join(state, "work"),
}}
found = {{}}
for name, path in targets.items():
    try:
        if os.path.isdir(path):
            found[name] = sorted(os.listdir(path))
        else:
            found[name] = open(path, "rb").read().decode(errors="replace")[:200]
    except OSError as error:
        found[name] = type(error).__name__
token_prefix = "rln" + "_"
# The kernel's parent (the run's keeper) is outside the sandbox's PID namespace (ppid 0) where
# there is one; elsewhere its environment is the run's own: readable, and scrubbed.
parent = os.getppid()
found["parent pid"] = parent
found["parent environ"] = open(f"/proc/{{parent}}/environ", "rb").read().decode().split("\0") if parent else []
found["token anywhere in /proc"] = [
    p for p in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")
    if os.access(p, os.R_OK) and token_prefix.encode() in open(p, "rb").read()
]
print("PROBE", json.dumps(found))
"""


def test_a_notebook_cannot_read_the_sites_database_media_settings_nor_the_nodes_state(node_stack, site_dir):
    stack, _, token = node_stack
    if isolation_of(stack.nodes["local"]) == "none":
        pytest.skip("this machine gives the node no isolation (no bubblewrap, not root)")
    notebook = upload(
        stack,
        "attack.ipynb",
        PROBE.format(site=str(site_dir)),
        "total = sum(range(10))\nprint('total', total)\nopen('result.txt', 'w').write(str(total))",
    )
    run = wait_for_state(stack.submit(notebook), FINAL, timeout=120)
    assert run.state == "succeeded", run.error
    found = tagged(run.pk, "PROBE")
    for name in ("database", "database (relative)", "media", "settings", "cache"):
        assert found[name] in ("FileNotFoundError", "PermissionError"), (name, found[name])
    if isolation_of(stack.nodes["local"]) == "bwrap":
        assert found["parent pid"] == 0  # nothing outside its sandbox exists for the run
    parent = "\n".join(found["parent environ"])
    assert token not in parent
    assert SITE_SECRET not in parent
    assert "REPROLAB_NODE_TOKEN" not in parent
    # Of the node's work folder a run sees its own folder at most, never another run's.
    assert found["other runs"] in ("FileNotFoundError", "PermissionError") or len(found["other runs"]) == 1
    assert found["token anywhere in /proc"] == []
    # And its ordinary cells ran: output and artifact came back to the site.
    assert "total 45" in printed(run.pk)
    status, artifacts = stack.api("GET", f"/api/v1/runs/{run.pk}/artifacts/")
    assert status == 200
    assert "result.txt" in json.dumps(artifacts)
    logs = [e.payload.get("message", "") for e in RunEvent.objects.filter(run_id=run.pk, kind="log")]
    assert "isolation: " + isolation_of(stack.nodes["local"]) in "\n".join(logs)


def test_the_agents_own_proc_entries_hold_no_token(node_stack):
    _, agent, token = node_stack
    assert token.encode() not in Path(f"/proc/{agent.pid}/environ").read_bytes()
    assert token.encode() not in Path(f"/proc/{agent.pid}/cmdline").read_bytes()


def test_a_notebook_without_a_kernelspec_runs_on_python3_and_the_run_says_so(node_stack):
    stack, _, _ = node_stack
    notebook = upload(stack, "plain.ipynb", "print('answer', 6 * 7)", kernelspec=False)
    assert notebook.latest_version is not None
    assert notebook.latest_version.kernel_name == ""  # the notebook names none
    run = wait_for_state(stack.submit(notebook), FINAL, timeout=120)
    assert run.state == "succeeded", run.error
    assert "answer 42" in printed(run.pk)
    status, snapshot = stack.api("GET", f"/api/v1/runs/{run.pk}/environment/")
    assert status == 200
    assert isinstance(snapshot, dict)
    assert snapshot["environment"]["kernel"]["name"] == "python3"
    assert snapshot["environment"]["kernel"]["chosen"] == "default"
    chosen = RunEvent.objects.filter(run_id=run.pk, kind="log", payload__kernel_chosen="default")
    assert chosen.exists()
    assert "chosen by default" in chosen.get().payload["message"]


def test_files_a_notebook_links_to_outside_its_folder_are_not_collected_for_it(node_stack, site_dir):
    """The sandbox keeps the database from the run; the agent must not fetch it for the run by
    following a link the notebook left in its folder (as an artifact or as the output)."""
    stack, _, _ = node_stack
    database = site_dir / "var" / "db.sqlite3"
    notebook = upload(
        stack,
        "links.ipynb",
        f"import os\nos.symlink({str(database)!r}, 'stolen.sqlite3')\nos.symlink({str(site_dir / 'var')!r}, 'var')\n"
        "open('honest.txt', 'w').write('mine')",
    )
    run = wait_for_state(stack.submit(notebook), FINAL, timeout=120)
    assert run.state == "succeeded", run.error
    status, artifacts = stack.api("GET", f"/api/v1/runs/{run.pk}/artifacts/")
    assert status == 200
    listed = json.dumps(artifacts)
    assert "honest.txt" in listed
    assert "stolen" not in listed
    assert "db.sqlite3" not in listed
    assert "private.csv" not in listed
