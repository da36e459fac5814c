"""Peer review end to end, with real parts: daphne, a Celery worker with beat (settling verdicts,
sending e-mails through Django's file backend), PostgreSQL, Redis and real node agents. The
reviewer's rerun runs on the reviewer's own node, and its verdict lands on the review."""

import io
import json

import pytest
from django.core.files.storage import default_storage

from apps.projects import services as projects
from apps.projects.models import Role
from apps.review.models import Notification, PublicationVersion
from tests.factories import make_token, make_user, upload_notebook

from .fabric import FINAL, wait_for_state
from .servers import agent_process, stopping, wait_until

pytestmark = pytest.mark.integration


def _ok(response: tuple[int, dict | bytes], status: int = 200) -> dict:
    code, body = response
    assert code == status, body
    assert isinstance(body, dict)
    return body


def _revise(notebook, user, source: str):
    """A new notebook version with the last code cell edited, cell ids kept (as Jupyter does)."""
    assert notebook.latest_version is not None
    with default_storage.open(notebook.latest_version.storage_name, "rb") as handle:
        document = json.load(handle)
    [*_, last] = [c for c in document["cells"] if c["cell_type"] == "code"]
    last["source"] = source
    content = io.BytesIO(json.dumps(document).encode())
    return projects.notebook_upload(project=notebook.project, path=notebook.path, content=content, uploader=user)


def test_publish_review_rerun_decide_with_real_runs(stack, tmp_path):
    owner = stack.user
    author = make_user("mo")  # an author who is not an editor: single-blind hides the reviewer from them
    projects.membership_set(project=stack.project, user=author, role=Role.MEMBER, actor_role=Role.OWNER)
    notebook = upload_notebook(stack.project, owner, "engine.ipynb", source="print('answer', 6 * 7)").notebook
    run_v1 = stack.submit(notebook)
    assert wait_for_state(run_v1, FINAL).state == "succeeded"
    authors = [{"given_names": "Ada", "family_names": "Lovelace", "orcid": "0000-0002-1825-0097"}]
    created = _ok(
        stack.api(
            "POST",
            "/api/v1/publications/",
            {
                "project": stack.project.slug,
                "notebook_version": notebook.latest_version_id,
                "run": run_v1,
                "title": "The answer, computed",
                "authors": authors,
                "license": "CC-BY-4.0",
                "review_mode": "single_blind",
            },
        ),
        201,
    )
    pub = created["id"]
    assert created["versions"][0]["status"] == "in_review"

    # The reviewer brings their own node: reruns they start may run there.
    reviewer = make_user("rhea")
    reviewer_token = make_token(reviewer)
    node_token = _ok(stack.api("POST", "/api/v1/nodes/", {"name": "rhea-laptop"}, token=reviewer_token), 201)["token"]
    review = _ok(stack.api("POST", f"/api/v1/publications/{pub}/reviewers/", {"reviewer": "rhea"}), 201)
    _ok(stack.api("POST", f"/api/v1/reviews/{review['id']}/accept/", token=reviewer_token))

    comments_url = f"/api/v1/reviews/{review['id']}/comments/"
    assert notebook.latest_version is not None
    with default_storage.open(notebook.latest_version.storage_name, "rb") as handle:
        code_cell = [c for c in json.load(handle)["cells"] if c["cell_type"] == "code"][-1]
    _ok(
        stack.api("POST", comments_url, {"body": "Is 42 right?", "cell_id": code_cell["id"]}, token=reviewer_token),
        201,
    )

    # The authors answer with version 2: the commented cell changed, so the comment is outdated.
    notebook_v2 = _revise(notebook, owner, "print('answer', 6 * 7, 'checked')").version
    run_v2 = stack.submit(notebook)  # the latest version: v2
    assert wait_for_state(run_v2, FINAL).state == "succeeded"
    metadata = {"title": "The answer, computed and checked", "authors": authors, "license": "CC-BY-4.0"}
    _ok(
        stack.api(
            "POST",
            f"/api/v1/publications/{pub}/versions/",
            {"notebook_version": notebook_v2.pk, "run": run_v2, **metadata},
        ),
        201,
    )
    [comment] = _ok(stack.api("GET", comments_url, token=reviewer_token))["comments"]
    assert comment["outdated"] is True
    assert "checked" in comment["current_source"]

    # The reviewer reruns version 2 on their node; the Celery worker settles the verdict.
    with stopping(agent_process(stack.url, node_token, tmp_path / "rhea", name="rhea-agent")):
        rerun = _ok(
            stack.api("POST", f"/api/v1/reviews/{review['id']}/rerun/", {"rtol": 1e-9}, token=reviewer_token), 201
        )
        wait_until(
            lambda: (
                _ok(stack.api("GET", f"/api/v1/reviews/{review['id']}/", token=reviewer_token))["reruns"][0]["verdict"]
                != "pending"
            ),
            timeout=120,
            what="the reviewer's rerun to be settled",
        )
    settled = _ok(stack.api("GET", f"/api/v1/reviews/{review['id']}/", token=reviewer_token))["reruns"][0]
    assert settled["id"] == rerun["id"]
    assert settled["verdict"] == "reproduced"
    assert settled["cells"], "the evidence (cell by cell) travels with the verdict"
    from apps.reproducibility.models import Reproduction

    reproduction = Reproduction.objects.get(pk=rerun["id"])
    assert {r.node.name if r.node else None for r in reproduction.reruns.all()} == {"rhea-laptop"}

    _ok(
        stack.api(
            "POST",
            f"/api/v1/reviews/{review['id']}/submit/",
            {"recommendation": "accept", "summary": "Reproduced on my own machine."},
            token=reviewer_token,
        )
    )
    decided = _ok(stack.api("POST", f"/api/v1/publications/{pub}/versions/2/decision/", {"decision": "accept"}))
    assert decided["status"] == "published"
    assert PublicationVersion.objects.get(publication_id=pub, number=1).status == "in_review"  # v1 unchanged

    # Everyone involved heard of it, in the site and by e-mail (sent by the Celery worker).
    kinds = set(Notification.objects.filter(user=reviewer).values_list("kind", flat=True))
    assert {"invitation", "version", "rerun_verdict", "decision"} <= kinds
    assert {"invitation_answer", "review_submitted"} <= set(
        Notification.objects.filter(user=owner).values_list("kind", flat=True)
    )
    expected = Notification.objects.filter(user__email__gt="").count()
    wait_until(lambda: len(stack.mails()) >= expected, timeout=90, what=f"{expected} notification e-mails")
    mails = stack.mails()
    to = {address: [m for m in mails if f"To: {address}" in m] for address in ("rhea@example.org", "mo@example.org")}
    assert any("invited to review" in m for m in to["rhea@example.org"]), mails
    assert any("Reviewer 1 submitted a review: accept" in m for m in to["mo@example.org"]), mails
    # Single-blind: no e-mail to an author names the reviewer (the owner, an editor, may know).
    assert not any("rhea" in m for m in to["mo@example.org"])
