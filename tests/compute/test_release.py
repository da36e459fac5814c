"""Releasing a run (POST /api/v1/agent/runs/{id}/release/): an agent hands back the run it
holds, fenced by the current lease, and the run is requeued at once. A shutdown costs no
attempt; an infrastructure failure does, and after max_attempts the run is lost."""

import hashlib
import io

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node, Run, RunArtifact, RunEvent, RunState
from apps.projects.models import NotebookVersion, Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def node(owner: User) -> Node:
    registered = services.node_register(owner=owner, name="box", max_concurrency=2).node
    services.node_seen(node=registered)
    return registered


def submit(project: Project, version: NotebookVersion, **kwargs) -> Run:
    assert project.created_by is not None
    return services.run_submit(project=project, user=project.created_by, notebook_version=version, **kwargs)


def claim(node: Node) -> services.Claim:
    claimed = services.run_claim(node=node)
    assert claimed is not None
    return claimed


def release(claimed: services.Claim, body: dict | None = None, *, run_id: int | None = None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {claimed.run_token}")
    return client.post(
        f"/api/v1/agent/runs/{run_id or claimed.run.pk}/release/",
        {"lease_id": claimed.lease_id, "reason": "shutdown", **(body or {})},
        format="json",
    )


def add_artifact(claimed: services.Claim, data: bytes = b"partial") -> None:
    services.run_artifact_upload(
        run=claimed.run,
        lease_id=claimed.lease_id,
        path="out.txt",
        stream=io.BytesIO(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_a_shutdown_release_requeues_at_once_without_costing_an_attempt(project, version, node):
    run = submit(project, version)
    claimed = claim(node)
    add_artifact(claimed)

    response = release(claimed, {"detail": "SIGTERM; grace of 30 s over"})

    assert response.status_code == 200, response.content
    assert response.json() == {"state": "queued", "attempt": 2, "max_attempts": 4}
    run.refresh_from_db()
    assert (run.state, run.attempt, run.max_attempts) == (RunState.QUEUED, 2, 4)
    assert (run.node, run.lease_id, run.lease_expires_at, run.run_token_hash) == (None, None, None, "")
    assert not RunArtifact.objects.filter(run=run).exists()  # nothing of the released attempt is kept
    event = run.events.last()
    assert event is not None
    assert event.payload == {
        "state": "queued",
        "attempt": 2,
        "released": "shutdown",
        "detail": "SIGTERM; grace of 30 s over",
        "reason": "released by box: the node's agent stopped (SIGTERM; grace of 30 s over)",
    }


def test_a_released_run_is_claimed_again_at_once(project, version, node):
    run = submit(project, version)
    release(claim(node))
    again = claim(node)  # no waiting for the old lease to run out
    assert again.run.pk == run.pk
    assert again.run.attempt == 2


def test_shutdowns_never_make_a_run_lost(project, version, node, settings):
    run = submit(project, version)
    for _ in range(settings.REPROLAB_MAX_ATTEMPTS + 2):
        assert release(claim(node)).status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.QUEUED
    assert run.max_attempts - run.attempt == settings.REPROLAB_MAX_ATTEMPTS - 1  # the budget is untouched


def test_a_node_cannot_keep_a_run_forever_by_releasing_it_in_a_loop(project, version, node, settings):
    """Free shutdown releases are bounded; past the cap each one costs an attempt, so a node
    that claims and releases in a loop ends with the run lost, not held for ever."""
    settings.REPROLAB_MAX_FREE_RELEASES = 2
    run = submit(project, version)
    for _ in range(2):
        assert release(claim(node)).json()["max_attempts"] == run.max_attempts + _ + 1
    run.refresh_from_db()
    assert (run.attempt, run.max_attempts, run.free_releases) == (3, 5, 2)

    answers = [release(claim(node)).json() for _ in range(2)]

    assert [a["state"] for a in answers] == ["queued", "queued"]
    assert [a["max_attempts"] for a in answers] == [5, 5]  # charged now
    event = run.events.last()
    assert event is not None
    assert event.payload["released"] == "infrastructure"
    assert "charged as an attempt after 2 free releases" in event.payload["reason"]
    assert release(claim(node)).json()["state"] == "lost"
    run.refresh_from_db()
    assert run.state == RunState.LOST
    assert "Gave up after 5 attempts" in run.error


def test_an_infrastructure_release_costs_an_attempt(project, version, node):
    run = submit(project, version)
    response = release(
        claim(node), {"reason": "infrastructure", "detail": "Kernel died before replying to kernel_info"}
    )
    assert response.status_code == 200
    run.refresh_from_db()
    assert (run.state, run.attempt, run.max_attempts) == (RunState.QUEUED, 2, 3)
    event = run.events.last()
    assert event is not None
    assert event.payload["released"] == "infrastructure"


def test_infrastructure_failures_on_every_attempt_end_the_run_lost_with_the_reason(project, version, node):
    run = submit(project, version)
    dependent = submit(project, version, depends_on=[run])
    for _ in range(run.max_attempts):
        response = release(claim(node), {"reason": "infrastructure", "detail": "Kernel didn't respond in 60 seconds"})
        assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.LOST
    assert run.attempt == 3
    assert run.error == (
        "Gave up after 3 attempts; on the last, the node could not run it (Kernel didn't respond in 60 seconds)."
    )
    dependent.refresh_from_db()
    assert dependent.state == RunState.FAILED


def test_a_release_with_a_pending_cancel_ends_the_run_cancelled(project, version, node):
    run = submit(project, version)
    claimed = claim(node)
    services.run_cancel(run=run)
    assert release(claimed).json()["state"] == "cancelled"
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED


def test_a_stale_lease_gets_409_and_changes_nothing(project, version, node):
    run = submit(project, version)
    claimed = claim(node)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {claimed.run_token}")
    response = client.post(
        f"/api/v1/agent/runs/{run.pk}/release/",
        {"lease_id": "00000000-0000-4000-8000-000000000000", "reason": "shutdown"},
        format="json",
    )
    assert response.status_code == 409
    assert "not held under lease" in response.json()["detail"]
    run.refresh_from_db()
    assert (run.state, run.attempt, str(run.lease_id)) == (RunState.LEASED, 1, claimed.lease_id)


def test_the_run_token_dies_with_the_release(project, version, node):
    submit(project, version)
    claimed = claim(node)
    assert release(claimed).status_code == 200
    assert release(claimed).status_code == 401  # a second release, or anything else, with the old token


@pytest.mark.parametrize(
    "body",
    [{"reason": "bored"}, {"reason": ""}, {"reason": None}, {"lease_id": "not-a-uuid"}, {"detail": "x" * 2001}],
)
def test_a_malformed_release_is_400_and_stores_nothing(project, version, node, body):
    run = submit(project, version)
    claimed = claim(node)
    events = RunEvent.objects.filter(run=run).count()
    response = release(claimed, body)
    assert response.status_code == 400
    assert "detail" in response.json()
    run.refresh_from_db()
    assert (run.state, run.attempt) == (RunState.LEASED, 1)
    assert RunEvent.objects.filter(run=run).count() == events


def test_a_run_token_cannot_release_another_run(project, version, node):
    submit(project, version)
    other = submit(project, version)
    claimed = claim(node)
    claimed_other = claim(node)
    assert claimed_other.run.pk == other.pk
    response = release(claimed, {"lease_id": claimed_other.lease_id}, run_id=other.pk)
    assert response.status_code == 403
    other.refresh_from_db()
    assert other.state == RunState.LEASED
