"""The compute stack for end-to-end tests: daphne (ASGI), a Celery worker with beat, PostgreSQL
and Redis, and two real node agents, with short leases so faults resolve in seconds."""

import json
import subprocess
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Node, Run, RunState
from apps.projects.models import Notebook, Project
from tests.factories import make_project, make_token, make_user

from .servers import agent_process, celery_worker, daphne_server, stopping, wait_until

FAST_LEASES = {
    "REPROLAB_LEASE_SECONDS": "3",
    "REPROLAB_HEARTBEAT_SECONDS": "1",
    "REPROLAB_SWEEP_SECONDS": "1",
    "REPROLAB_CLAIM_MAX_WAIT_SECONDS": "5",
    "REPROLAB_NODE_ACTIVE_SECONDS": "4",
}
FINAL: set[str] = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST}


@dataclass
class Stack:
    url: str
    user: User
    token: str
    project: Project
    nodes: dict[str, Node]
    agents: dict[str, subprocess.Popen]
    mail_dir: Path  # e-mails the Celery worker sends land here (Django's file backend)

    def mails(self) -> list[str]:
        """Every message sent so far (the file backend writes a file per connection, messages
        separated by a line of dashes)."""
        separator = "\n" + "-" * 79 + "\n"
        texts = [path.read_text() for path in sorted(self.mail_dir.glob("*.log"))]
        return [m for text in texts for m in text.split(separator) if m.strip()]

    def api(
        self, method: str, path: str, body: dict | None = None, *, token: str | None = None
    ) -> tuple[int, dict | bytes]:
        """Call the API as the stack's user, or as whoever `token` belongs to."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def submit(self, notebook: Notebook, **fields) -> int:
        status, body = self.api(
            "POST", "/api/v1/runs/", {"project": self.project.slug, "notebook": notebook.pk, **fields}
        )
        assert status == 201, body
        assert isinstance(body, dict)
        return body["id"]


def wait_for_state(run_id: int, states: set[str], timeout: float = 60) -> Run:
    wait_until(
        lambda: Run.objects.get(pk=run_id).state in states, timeout=timeout, what=f"run {run_id} to reach {states}"
    )
    return Run.objects.get(pk=run_id)


@pytest.fixture
def stack(transactional_db, require_redis, tmp_path):
    owner = make_user("runner")
    project = make_project(owner, slug="fabric", visibility="private")
    nodes = {name: compute.node_register(owner=owner, name=name, max_concurrency=1) for name in ("alpha", "beta")}
    with ExitStack() as stack:
        url = stack.enter_context(daphne_server(**FAST_LEASES))
        mail_dir = tmp_path / "mail"
        stack.enter_context(
            celery_worker(
                beat=True,
                EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
                EMAIL_FILE_PATH=str(mail_dir),
                **FAST_LEASES,
            )
        )
        agents = {}
        for name, registered in nodes.items():
            agents[name] = stack.enter_context(
                stopping(agent_process(url, registered.token, tmp_path / name, name=name))
            )
        wait_until(
            lambda: Node.objects.filter(last_seen_at__isnull=False).count() == 2,
            timeout=30,
            what="both agents to say hello",
        )
        yield Stack(url, owner, make_token(owner), project, {n: r.node for n, r in nodes.items()}, agents, mail_dir)
