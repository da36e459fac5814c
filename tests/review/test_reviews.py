"""The review flow through the REST API and the review desk: inviting, who sees an unpublished
version, answering, cell-anchored comments and their threads, outdated anchors after a new
version, reviewer reruns (settled for real, without a node process), the recommendation, the
editor's decision, and notifications in the site and by e-mail."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.files.storage import default_storage

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Node, Run
from apps.projects.permissions import get_project_for
from apps.reproducibility import services as reproducibility
from apps.reproducibility.models import Reproduction
from apps.review import services
from apps.review.anchors import AnchorCell, source_sha256, version_cells
from apps.review.models import (
    Notification,
    PublicationVersion,
    Review,
    ReviewComment,
    ReviewState,
    VersionStatus,
)
from apps.review.tasks import send_notification_emails
from tests.factories import PASSWORD, make_user, upload_notebook
from tests.review.conftest import metadata, publish, revise, succeeded_run

# --- helpers ----------------------------------------------------------------------------------------


def cells_by_type(version: PublicationVersion) -> dict[str, list[AnchorCell]]:
    cells: dict[str, list[AnchorCell]] = {}
    for cell in version_cells(version):
        cells.setdefault(cell.cell_type, []).append(cell)
    return cells


def last_code_cell(version: PublicationVersion) -> AnchorCell:
    return cells_by_type(version)["code"][-1]


def parameters_cell(version: PublicationVersion) -> AnchorCell:
    return cells_by_type(version)["code"][0]


def markdown_cell(version: PublicationVersion) -> AnchorCell:
    return cells_by_type(version)["markdown"][0]


def invite(publication_id: int, inviter: User, who: str, client_for: Any) -> Any:
    return client_for(inviter).post(
        f"/api/v1/publications/{publication_id}/reviewers/", {"reviewer": who}, format="json"
    )


def accepted_review(version: PublicationVersion, inviter: User, reviewer: User) -> Review:
    review = services.review_invite(publication=version.publication, inviter=inviter, who=reviewer.username)
    return services.review_respond(review=review, user=reviewer, accept=True)


def run_reruns(reproduction: Reproduction, node: Node, environment: dict[str, Any] | None = None) -> Reproduction:
    """Play the node agent for every rerun of `reproduction`: claim it on `node`, start it,
    send its environment snapshot (when given), upload the very executed notebook the original
    run produced, complete it; then settle the check as the Celery task would."""
    original = reproduction.original
    with default_storage.open(original.output_storage_name, "rb") as handle:
        body = handle.read()
    rerun_ids = set(reproduction.reruns.values_list("pk", flat=True))
    for _ in rerun_ids:
        compute.node_seen(node=node)
        claim = compute.run_claim(node=node)
        assert claim is not None, "the reviewer's node should get the reviewer's rerun"
        assert claim.run.pk in rerun_ids
        compute.run_heartbeat(run=claim.run, lease_id=claim.lease_id, running=True)
        if environment is not None:
            reproducibility.environment_record(run=claim.run, lease_id=claim.lease_id, data=environment)
        compute.run_output_upload(
            run=claim.run, lease_id=claim.lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
        )
        compute.run_complete(run=claim.run, lease_id=claim.lease_id, state="succeeded")
    return reproducibility.reproduction_settle(reproduction_id=reproduction.pk)


def kinds_for(user: User) -> list[str]:
    return list(Notification.objects.filter(user=user).values_list("kind", flat=True))


@pytest.fixture
def accepted(in_review, team, reviewer) -> Review:
    """rhea has accepted the owner's invitation to review the open-mode publication."""
    return accepted_review(in_review, team["owner"], reviewer)


# --- inviting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["rhea", "RHEA", " Rhea "])
def test_invite_by_username_creates_the_invitation(in_review, team, reviewer, client_for, who):
    """An author names a reviewer by username (case-insensitive, trimmed): the invitation
    exists, is numbered, and tells the reviewer."""
    response = invite(in_review.publication_id, team["owner"], who, client_for)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["reviewer"] == "rhea"  # open mode: the identity is public
    assert body["state"] == ReviewState.INVITED
    assert body["publication"] == in_review.publication_id
    review = Review.objects.get(pk=body["id"])
    assert review.reviewer == reviewer
    assert review.number == 1
    assert review.invited_by == team["owner"]
    [note] = Notification.objects.filter(user=reviewer, kind="invitation")
    assert note.url == f"/reviews/{review.pk}/"


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("nobody", "No ReproLab account has the username 'nobody'."),
        ("nobody@", "'nobody@' is not an e-mail address."),
    ],
)
def test_invite_unknown_user_is_400_with_a_message(in_review, team, client_for, who, message):
    """An unknown username, or something that is not an address, is refused with a message."""
    response = invite(in_review.publication_id, team["owner"], who, client_for)
    assert response.status_code == 400
    assert response.json()["reviewer"] == [message]
    assert not Review.objects.exists()


def test_invite_inactive_user_is_400(in_review, team, client_for):
    """A deactivated account cannot be invited (it could never answer)."""
    gone = make_user("gone")
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    response = invite(in_review.publication_id, team["owner"], "gone", client_for)
    assert response.status_code == 400
    assert not Review.objects.exists()


@pytest.mark.parametrize("member", ["maintainer", "member", "viewer"])
def test_invite_project_member_is_400(in_review, team, client_for, member):
    """Authors cannot review their own work: any project member is refused as reviewer."""
    response = invite(in_review.publication_id, team["owner"], team[member].username, client_for)
    assert response.status_code == 400
    assert "member of the project" in response.json()["reviewer"][0]
    assert not Review.objects.exists()


def test_an_accounts_address_is_still_invited_through_a_link(in_review, team, reviewer, client_for):
    """Account addresses are not verified: inviting rhea's address must not hand the review to
    whichever account typed it in; it waits for whoever opens the e-mailed link."""
    response = invite(in_review.publication_id, team["owner"], "rhea@example.org", client_for)
    assert response.status_code == 201
    review = Review.objects.get(pk=response.json()["id"])
    assert (review.reviewer, review.invited_email) == (None, "rhea@example.org")
    assert not Notification.objects.filter(user=reviewer).exists()


def test_invite_twice_is_400(in_review, team, reviewer, client_for):
    """A second invitation of the same live reviewer is refused and creates nothing."""
    assert invite(in_review.publication_id, team["owner"], "rhea", client_for).status_code == 201
    again = invite(in_review.publication_id, team["maintainer"], "RHEA", client_for)
    assert again.status_code == 400
    assert "already invited" in again.json()["reviewer"][0]
    assert Review.objects.filter(reviewer=reviewer).count() == 1


def test_reinvite_after_declining_reopens_the_same_review(in_review, team, reviewer, client_for):
    """Someone who declined may be invited again: same review (same number), invited anew."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    services.review_respond(review=review, user=reviewer, accept=False)
    response = invite(in_review.publication_id, team["maintainer"], "rhea", client_for)
    assert response.status_code == 201, response.json()
    review.refresh_from_db()
    assert response.json()["id"] == review.pk
    assert review.state == ReviewState.INVITED
    assert review.number == 1
    assert review.invited_by == team["maintainer"]


def test_outsider_cannot_invite(in_review, team, reviewer, client_for):
    """An outsider cannot even see an in-review publication (404), and cannot invite to a
    published one they can see (403): only authors invite."""
    outsider = team["outsider"]
    assert invite(in_review.publication_id, outsider, "rhea", client_for).status_code == 404
    public = publish(in_review.publication.project, team["owner"], submit_for_review=False)
    assert client_for(outsider).get(f"/api/v1/publications/{public.publication_id}/").status_code == 200
    assert invite(public.publication_id, outsider, "rhea", client_for).status_code == 403
    assert invite(public.publication_id, reviewer, "otto", client_for).status_code == 403
    assert client_for(None).post(
        f"/api/v1/publications/{public.publication_id}/reviewers/", {"reviewer": "rhea"}, format="json"
    ).status_code in (401, 403)
    assert not Review.objects.exists()


# --- who sees an unpublished version --------------------------------------------------------------------


def test_reviewer_sees_the_unpublished_version_while_invited_only(in_review, team, reviewer, client_for, client):
    """An invited reviewer sees the version under review (API and page) and nothing else that
    is unpublished in the project; declining takes the access away again."""
    publication_id = in_review.publication_id
    api = client_for(reviewer)
    client.force_login(reviewer)
    assert api.get(f"/api/v1/publications/{publication_id}/").status_code == 404
    assert client.get(f"/pub/{publication_id}/v1").status_code == 404

    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    seen = api.get(f"/api/v1/publications/{publication_id}/")
    assert seen.status_code == 200
    assert [(v["number"], v["status"]) for v in seen.json()["versions"]] == [(1, VersionStatus.IN_REVIEW)]
    listed = api.get("/api/v1/publications/").json()["results"]
    assert [p["id"] for p in listed] == [publication_id]
    page = client.get(f"/pub/{publication_id}/v1")
    assert page.status_code == 200
    assert b"Not published" in page.content
    assert client.get(f"/pub/{publication_id}").status_code == 302

    # Another unpublished publication of the same project stays invisible, as does its review.
    other = publish(in_review.publication.project, team["owner"], title="Another study")
    someone = make_user("ravi")
    other_review = services.review_invite(publication=other.publication, inviter=team["owner"], who="ravi")
    services.review_respond(review=other_review, user=someone, accept=True)
    assert api.get(f"/api/v1/publications/{other.publication_id}/").status_code == 404
    assert other.publication_id not in [p["id"] for p in api.get("/api/v1/publications/").json()["results"]]
    assert client.get(f"/pub/{other.publication_id}/v1").status_code == 404
    assert client.get(f"/pub/{other.publication_id}/v1/render").status_code == 404
    assert client.get(f"/pub/{other.publication_id}/v1/notebook.ipynb").status_code == 404
    assert api.get(f"/api/v1/reviews/{other_review.pk}/").status_code == 404
    assert api.get(f"/api/v1/reviews/{other_review.pk}/comments/").status_code == 404
    assert client.get(f"/reviews/{other_review.pk}/").status_code == 404
    # ... and so does the project itself.
    assert api.get(f"/api/v1/projects/{in_review.publication.project.slug}/").status_code == 404

    services.review_respond(review=review, user=reviewer, accept=False)
    assert api.get(f"/api/v1/publications/{publication_id}/").status_code == 404
    assert api.get("/api/v1/publications/").json()["results"] == []
    assert client.get(f"/pub/{publication_id}/v1").status_code == 404
    assert client.get(f"/pub/{publication_id}/v1/notebook.ipynb").status_code == 404


# --- answering the invitation -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_only_the_reviewer_answers_and_only_once(in_review, team, reviewer, client_for, action):
    """Accepting or declining is the invited reviewer's alone (editors and authors: 403;
    outsiders do not see the review: 404), and an answered invitation stays answered."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    url = f"/api/v1/reviews/{review.pk}/{action}/"
    for role in ("owner", "maintainer", "member", "viewer"):
        assert client_for(team[role]).post(url).status_code == 403, role
    assert client_for(team["outsider"]).post(url).status_code == 404
    assert client_for(None).post(url).status_code in (401, 403)
    review.refresh_from_db()
    assert review.state == ReviewState.INVITED

    answered = client_for(reviewer).post(url)
    assert answered.status_code == 200, answered.json()
    expected = ReviewState.ACCEPTED if action == "accept" else ReviewState.DECLINED
    assert answered.json()["state"] == expected
    review.refresh_from_db()
    assert review.state == expected
    assert review.responded_at is not None
    # The editors hear of the answer (the owner invited, so once).
    assert kinds_for(team["owner"]).count("invitation_answer") == 1
    assert "invitation_answer" in kinds_for(team["maintainer"])
    assert "invitation_answer" not in kinds_for(team["member"])

    for again in ("accept", "decline"):
        second = client_for(reviewer).post(f"/api/v1/reviews/{review.pk}/{again}/")
        if action == "decline":  # a declined invitation is the editors' record: gone for its reviewer
            assert second.status_code == 404, again
        else:
            assert second.status_code == 400, again
            assert "already answered" in second.json()["state"][0]


def test_unknown_review_action_is_404(accepted, client_for, reviewer):
    """Only accept, decline, submit and rerun are actions."""
    assert client_for(reviewer).post(f"/api/v1/reviews/{accepted.pk}/approve/").status_code == 404


# --- comments -----------------------------------------------------------------------------------------


def comments_url(review: Review) -> str:
    return f"/api/v1/reviews/{review.pk}/comments/"


def test_root_comment_needs_an_accepted_invitation(in_review, team, reviewer, client_for):
    """An invited (not yet accepted) reviewer cannot open threads; nor can authors open one."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    cell = last_code_cell(in_review)
    response = client_for(reviewer).post(comments_url(review), {"body": "Hm.", "cell_id": cell.cell_id}, format="json")
    assert response.status_code == 400
    assert "Accept the invitation first" in response.json()["state"][0]
    services.review_respond(review=review, user=reviewer, accept=True)
    by_author = client_for(team["member"]).post(comments_url(review), {"body": "Hm."}, format="json")
    assert by_author.status_code == 403
    assert not ReviewComment.objects.exists()


@pytest.mark.parametrize(
    ("anchor", "field"),
    [
        ({"cell_id": "no-such-cell"}, "cell_id"),
        ({"cell": "code", "line_start": 1, "line_end": 2}, "line_start"),  # the cell has one line
        ({"cell": "code", "line_start": 2}, "line_start"),
        ({"cell": "parameters", "line_start": 2, "line_end": 1}, "line_start"),  # reversed
        ({"cell": "code", "output_index": 1}, "output_index"),  # one output, numbered 0
        ({"cell": "markdown", "output_index": 0}, "output_index"),  # markdown has no outputs
        ({"line_start": 1, "line_end": 1}, "cell_id"),  # lines without a cell
        ({"output_index": 0}, "cell_id"),  # an output without a cell
        ({"cell": "code", "line_start": 0}, "line_start"),  # lines count from 1
        ({"cell": "code", "version": 7}, "version"),
    ],
)
def test_comment_anchor_validation(in_review, accepted, reviewer, client_for, anchor, field):
    """Anchors must point at something the version has: a known cell, lines within it, an
    output it has; lines and outputs need a cell. Anything else is a 400 naming the field."""
    cells = {"code": last_code_cell(in_review), "parameters": parameters_cell(in_review)}
    cells["markdown"] = markdown_cell(in_review)
    payload = {"body": "Look here."} | {k: v for k, v in anchor.items() if k != "cell"}
    if "cell" in anchor:
        payload["cell_id"] = cells[anchor["cell"]].cell_id
    response = client_for(reviewer).post(comments_url(accepted), payload, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not ReviewComment.objects.exists()


def test_valid_anchor_stores_the_cell_and_its_source_hash(in_review, accepted, reviewer, client_for):
    """A comment on lines or an output of a cell stores the cell id and the sha256 of the
    cell's source in that version, which later versions compare against."""
    params = parameters_cell(in_review)
    assert params.line_count == 2
    api = client_for(reviewer)
    on_lines = api.post(
        comments_url(accepted),
        {"body": "Why 0.5?", "cell_id": params.cell_id, "line_start": 1, "line_end": 2},
        format="json",
    )
    assert on_lines.status_code == 201, on_lines.json()
    expected = {
        "parent": None,
        "author": "rhea",
        "body": "Why 0.5?",
        "version": 1,
        "cell_id": params.cell_id,
        "line_start": 1,
        "line_end": 2,
        "output_index": None,
        "resolved": False,
    }
    assert {key: on_lines.json().get(key) for key in expected} == expected
    stored = ReviewComment.objects.get(pk=on_lines.json()["id"])
    assert stored.cell_source_sha256 == source_sha256("alpha = 0.5\nsteps = 10") == params.source_sha256
    assert stored.version == in_review
    assert stored.author == reviewer

    code = last_code_cell(in_review)
    on_output = api.post(
        comments_url(accepted), {"body": "42?", "cell_id": code.cell_id, "output_index": 0}, format="json"
    )
    assert on_output.status_code == 201, on_output.json()
    assert on_output.json()["output_index"] == 0
    one_line = api.post(comments_url(accepted), {"body": "x", "cell_id": code.cell_id, "line_end": 1}, format="json")
    assert one_line.status_code == 201, one_line.json()
    assert (one_line.json()["line_start"], one_line.json()["line_end"]) == (1, 1)
    general = api.post(comments_url(accepted), {"body": "Overall fine."}, format="json")
    assert general.status_code == 201
    assert general.json()["cell_id"] == ""
    assert ReviewComment.objects.get(pk=general.json()["id"]).cell_source_sha256 == ""


def test_replies_join_the_root_thread(in_review, accepted, team, reviewer, client_for):
    """Authors reply in the reviewer's threads; a reply to a reply lands in the root's thread
    (one level); outsiders cannot reply (they do not see the review)."""
    code = last_code_cell(in_review)
    root = client_for(reviewer).post(comments_url(accepted), {"body": "Why?", "cell_id": code.cell_id}, format="json")
    root_id = root.json()["id"]

    reply = client_for(team["member"]).post(
        comments_url(accepted), {"body": "Because.", "parent": root_id}, format="json"
    )
    assert reply.status_code == 201, reply.json()
    assert reply.json()["parent"] == root_id
    assert reply.json()["author"] == "mo"
    assert reply.json()["cell_id"] == ""  # replies carry no anchor of their own

    nested = client_for(reviewer).post(
        comments_url(accepted), {"body": "Fair.", "parent": reply.json()["id"]}, format="json"
    )
    assert nested.status_code == 201, nested.json()
    assert nested.json()["parent"] == root_id
    by_viewer = client_for(team["viewer"]).post(
        comments_url(accepted), {"body": "+1", "parent": root_id}, format="json"
    )
    assert by_viewer.status_code == 403  # the viewer role reads

    outsider = client_for(team["outsider"]).post(
        comments_url(accepted), {"body": "Me too", "parent": root_id}, format="json"
    )
    assert outsider.status_code == 404
    missing = client_for(team["member"]).post(comments_url(accepted), {"body": "?", "parent": 999999}, format="json")
    assert missing.status_code == 400

    listed = client_for(team["member"]).get(comments_url(accepted)).json()["comments"]
    assert [(c["parent"], c["body"]) for c in listed] == [
        (None, "Why?"),
        (root_id, "Because."),
        (root_id, "Fair."),
    ]
    # The reviewer hears of the author's reply; the author of the thread's reply hears of the
    # reviewer's answer.
    assert "reply" in kinds_for(reviewer)
    assert "reply" in kinds_for(team["member"])


def test_reply_to_a_comment_of_another_review_is_400(in_review, accepted, team, client_for):
    """A parent must belong to the same review."""
    other_reviewer = make_user("ravi")
    other = accepted_review(in_review, team["owner"], other_reviewer)
    theirs = services.comment_add(review=other, user=other_reviewer, body="Elsewhere")
    response = client_for(team["member"]).post(
        comments_url(accepted), {"body": "Hi", "parent": theirs.pk}, format="json"
    )
    assert response.status_code == 400
    assert "parent" in response.json()


def test_resolve_and_reopen_a_thread(in_review, accepted, team, reviewer, client_for):
    """Authors (and the reviewer) resolve and reopen a thread by its first comment; a reply
    cannot be resolved on its own; outsiders get 404."""
    code = last_code_cell(in_review)
    root = services.comment_add(review=accepted, user=reviewer, body="Why?", cell_id=code.cell_id)
    reply = services.comment_add(review=accepted, user=team["member"], body="Because.", parent=root)
    base = f"/api/v1/reviews/{accepted.pk}/comments"

    resolved = client_for(team["member"]).post(f"{base}/{root.pk}/resolve/")
    assert resolved.status_code == 200, resolved.json()
    assert resolved.json()["resolved"] is True
    root.refresh_from_db()
    assert root.resolved_at is not None
    assert root.resolved_by == team["member"]
    listed = client_for(reviewer).get(comments_url(accepted)).json()["comments"]
    assert [c["resolved"] for c in listed if c["id"] == root.pk] == [True]

    reopened = client_for(reviewer).post(f"{base}/{root.pk}/reopen/")
    assert reopened.status_code == 200
    assert reopened.json()["resolved"] is False
    root.refresh_from_db()
    assert root.resolved_at is None
    assert root.resolved_by is None

    on_reply = client_for(team["member"]).post(f"{base}/{reply.pk}/resolve/")
    assert on_reply.status_code == 400
    assert "first comment" in on_reply.json()["comment"][0]
    assert client_for(team["outsider"]).post(f"{base}/{root.pk}/resolve/").status_code == 404
    assert client_for(team["member"]).post(f"{base}/{root.pk}/archive/").status_code == 404
    assert client_for(team["member"]).post(f"{base}/999999/resolve/").status_code == 404


# --- a new version outdates comments on changed cells -------------------------------------------------


def test_new_version_outdates_only_comments_on_changed_cells(in_review, accepted, team, reviewer, client_for):
    """After a new version changes a cell, a comment anchored to it is outdated when looked at
    against the new version (with the cell's new text beside it) and not against the version
    it was made on; comments on unchanged cells stay current."""
    code, params, markdown = last_code_cell(in_review), parameters_cell(in_review), markdown_cell(in_review)
    on_code = services.comment_add(review=accepted, user=reviewer, body="Why 42?", cell_id=code.cell_id)
    on_params = services.comment_add(review=accepted, user=reviewer, body="Why 0.5?", cell_id=params.cell_id)
    on_markdown = services.comment_add(review=accepted, user=reviewer, body="Title?", cell_id=markdown.cell_id)
    general = services.comment_add(review=accepted, user=reviewer, body="Overall.")
    reply = services.comment_add(review=accepted, user=team["member"], body="Fixed in v2.", parent=on_code)

    version, run = revise(in_review.notebook_version, team["owner"], source="print(6 * 9)")
    added = client_for(team["member"]).post(
        f"/api/v1/publications/{in_review.publication_id}/versions/",
        {
            "notebook_version": version.pk,
            "run": run.pk,
            "title": "Noise, revised",
            "authors": [{"family_names": "Lovelace"}],
            "license": "CC-BY-4.0",
        },
        format="json",
    )
    assert added.status_code == 201, added.json()
    assert added.json()["number"] == 2
    assert added.json()["status"] == VersionStatus.IN_REVIEW
    assert "version" in kinds_for(reviewer)  # an accepted reviewer hears of the new version

    latest = client_for(reviewer).get(comments_url(accepted)).json()
    assert latest["version"] == 2
    by_id = {c["id"]: c for c in latest["comments"]}
    assert by_id[on_code.pk]["outdated"] is True
    assert by_id[on_code.pk]["current_source"] == "print(6 * 9)"
    assert by_id[on_code.pk]["version"] == 1
    for unchanged in (on_params, on_markdown):
        assert by_id[unchanged.pk]["outdated"] is False
        assert by_id[unchanged.pk]["current_source"] is None
    assert "outdated" not in by_id[general.pk]  # not anchored: nothing to outdate
    assert "outdated" not in by_id[reply.pk]  # replies live in their root's thread

    first = client_for(team["member"]).get(f"{comments_url(accepted)}?version=1").json()
    assert first["version"] == 1
    assert {c["id"]: c.get("outdated") for c in first["comments"]} == {
        on_code.pk: False,
        on_params.pk: False,
        on_markdown.pk: False,
        general.pk: None,
        reply.pk: None,
    }
    assert client_for(reviewer).get(f"{comments_url(accepted)}?version=9").status_code == 404

    # New comments go on the latest version by default, or on the one named.
    on_v2 = client_for(reviewer).post(
        comments_url(accepted), {"body": "Better.", "cell_id": code.cell_id}, format="json"
    )
    assert on_v2.json()["version"] == 2
    assert ReviewComment.objects.get(pk=on_v2.json()["id"]).cell_source_sha256 == source_sha256("print(6 * 9)")
    on_v1 = client_for(reviewer).post(
        comments_url(accepted), {"body": "Was.", "cell_id": code.cell_id, "version": 1}, format="json"
    )
    assert on_v1.json()["version"] == 1
    assert ReviewComment.objects.get(pk=on_v1.json()["id"]).cell_source_sha256 == code.source_sha256


def test_only_members_with_upload_role_add_versions(in_review, team, client_for):
    """A viewer (an author without upload rights) cannot add a version: 403."""
    version, run = revise(in_review.notebook_version, team["owner"], source="print(1)")
    payload = {
        "notebook_version": version.pk,
        "run": run.pk,
        "title": "v2",
        "authors": [{"family_names": "Lovelace"}],
        "license": "CC-BY-4.0",
    }
    url = f"/api/v1/publications/{in_review.publication_id}/versions/"
    assert client_for(team["viewer"]).post(url, payload, format="json").status_code == 403
    assert client_for(team["outsider"]).post(url, payload, format="json").status_code == 404
    assert in_review.publication.versions.count() == 1


# --- reruns -------------------------------------------------------------------------------------------


def test_reviewer_rerun_starts_a_linked_reproduction(in_review, accepted, team, reviewer, client_for):
    """The accepted reviewer starts a reproduction check of the version's run: it is linked to
    the review, its reruns are the reviewer's (so they run on nodes the reviewer may use), and
    in open mode nothing about them is hidden."""
    url = f"/api/v1/reviews/{accepted.pk}/rerun/"
    response = client_for(reviewer).post(url, {"rtol": 1e-6, "repeats": 2}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["verdict"] == "pending"
    assert (body["rtol"], body["atol"], body["repeats"]) == (1e-6, 0.0, 2)
    assert body["cells"] == []
    reproduction = Reproduction.objects.get(pk=body["id"])
    assert list(accepted.reproductions.all()) == [reproduction]
    assert reproduction.original == in_review.run
    assert reproduction.created_by == reviewer
    assert reproduction.creator_hidden is False
    reruns = list(reproduction.reruns.all())
    assert len(reruns) == 2
    assert {(r.created_by, r.notebook_version, r.state, r.creator_hidden) for r in reruns} == {
        (reviewer, in_review.notebook_version, "queued", False)
    }
    assert all(r.reference_run == in_review.run for r in reruns)
    assert all(r.reference_tolerance == {"rtol": 1e-6, "atol": 0.0} for r in reruns)
    shown = client_for(team["member"]).get(f"/api/v1/reviews/{accepted.pk}/").json()
    assert [r["id"] for r in shown["reruns"]] == [reproduction.pk]


def test_rerun_is_the_accepted_reviewers_alone_and_bounded(in_review, team, reviewer, client_for):
    """Others cannot start a review's rerun (403; outsiders 404), an invited reviewer must
    accept first (400), and repeats are 1..10 (400 otherwise)."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    url = f"/api/v1/reviews/{review.pk}/rerun/"
    assert client_for(reviewer).post(url, {}, format="json").status_code == 400
    services.review_respond(review=review, user=reviewer, accept=True)
    for role in ("owner", "maintainer", "member", "viewer"):
        assert client_for(team[role]).post(url, {}, format="json").status_code == 403, role
    assert client_for(team["outsider"]).post(url, {}, format="json").status_code == 404
    for bad in ({"repeats": 11}, {"repeats": 0}, {"rtol": -1}, {"version": 5}):
        response = client_for(reviewer).post(url, bad, format="json")
        assert response.status_code == 400, bad
    assert not Reproduction.objects.exists()
    assert Run.objects.filter(created_by=reviewer).count() == 0


def test_rerun_settles_on_the_reviewers_node_and_reports_on_the_review(in_review, accepted, team, reviewer, client_for):
    """Reruns run on a node the reviewer owns; once they succeed with the original's output the
    check settles as reproduced, the review shows the verdict with cell-by-cell evidence, and
    the reviewer and the authors are told."""
    started = client_for(reviewer).post(
        f"/api/v1/reviews/{accepted.pk}/rerun/", {"rtol": 1e-6, "repeats": 2}, format="json"
    )
    reproduction = Reproduction.objects.get(pk=started.json()["id"])
    node = compute.node_register(owner=reviewer, name="rhea-laptop").node
    settled = run_reruns(reproduction, node)
    assert settled.verdict == "reproduced"
    assert set(reproduction.reruns.values_list("node__name", "state")) == {("rhea-laptop", "succeeded")}

    for viewer in (reviewer, team["member"], team["owner"]):
        review = client_for(viewer).get(f"/api/v1/reviews/{accepted.pk}/").json()
        [rerun] = review["reruns"]
        assert rerun["id"] == reproduction.pk
        assert rerun["verdict"] == "reproduced"
        assert rerun["finished_at"] is not None
        assert rerun["cells"], "the evidence lists the cells compared"
        assert {c["status"] for c in rerun["cells"]} == {"same"}
        assert rerun["reason"] == ""
        assert set(rerun) >= {"values", "artifacts", "environment_changes"}

    [note] = Notification.objects.filter(user=reviewer, kind="rerun_verdict")
    assert note.message == "The rerun requested by rhea settled: reproduced."
    assert note.url == f"/reviews/{accepted.pk}/"
    for role in ("owner", "maintainer", "member", "viewer"):
        assert "rerun_verdict" in kinds_for(team[role]), role
    # Settling again changes nothing and tells no one twice.
    reproducibility.reproduction_settle(reproduction_id=reproduction.pk)
    assert Notification.objects.filter(user=reviewer, kind="rerun_verdict").count() == 1


# --- the recommendation -----------------------------------------------------------------------------------


def test_submit_validates_and_notifies_the_authors(in_review, accepted, team, reviewer, client_for):
    """The reviewer submits a recommendation from the list with a non-empty summary; the review
    is then submitted (for the version reviewed) and every author and editor is told."""
    url = f"/api/v1/reviews/{accepted.pk}/submit/"
    api = client_for(reviewer)
    root = services.comment_add(review=accepted, user=reviewer, body="Seed?", cell_id=last_code_cell(in_review).cell_id)
    invalid = api.post(url, {"recommendation": "maybe", "summary": "Fine."}, format="json")
    assert invalid.status_code == 400
    assert "recommendation" in invalid.json()
    for summary in ("", "   "):
        empty = api.post(url, {"recommendation": "accept", "summary": summary}, format="json")
        assert empty.status_code == 400
        assert "summary" in empty.json()
    assert (
        client_for(team["owner"]).post(url, {"recommendation": "accept", "summary": "x"}, format="json").status_code
        == 403
    )
    accepted.refresh_from_db()
    assert accepted.state == ReviewState.ACCEPTED

    submitted = api.post(url, {"recommendation": "minor_revision", "summary": "Seed the RNG."}, format="json")
    assert submitted.status_code == 200, submitted.json()
    body = submitted.json()
    assert (body["state"], body["recommendation"], body["summary"]) == ("submitted", "minor_revision", "Seed the RNG.")
    assert body["submitted_version"] == 1
    assert body["submitted_at"] is not None
    accepted.refresh_from_db()
    assert accepted.submitted_version == in_review

    for role in ("owner", "maintainer", "member", "viewer"):
        notes = Notification.objects.filter(user=team[role], kind="review_submitted")
        assert [n.message for n in notes] == ["rhea submitted a review: minor revision."], role
        assert notes[0].url == f"/reviews/{accepted.pk}/"
    assert "review_submitted" not in kinds_for(reviewer)
    assert "review_submitted" not in kinds_for(team["outsider"])

    again = api.post(url, {"recommendation": "accept", "summary": "Changed my mind."}, format="json")
    assert again.status_code == 400
    # A submitted review takes no new threads, but its threads go on.
    assert api.post(comments_url(accepted), {"body": "Late."}, format="json").status_code == 400
    reply = client_for(team["member"]).post(
        comments_url(accepted), {"body": "Thanks", "parent": root.pk}, format="json"
    )
    assert reply.status_code == 201, reply.json()


# --- the editor's decision ----------------------------------------------------------------------------


def decision_url(version: PublicationVersion) -> str:
    return f"/api/v1/publications/{version.publication_id}/versions/{version.number}/decision/"


def test_only_editors_decide_and_accept_publishes(in_review, accepted, team, reviewer, client_for, client):
    """Authors without the editor role and reviewers cannot decide (403); an owner's or a
    maintainer's accept publishes the version at once, for everyone, and it is decided once."""
    url = decision_url(in_review)
    for user in (team["member"], team["viewer"], reviewer):
        assert client_for(user).post(url, {"decision": "accept"}, format="json").status_code == 403
    assert client_for(team["outsider"]).post(url, {"decision": "accept"}, format="json").status_code == 404
    assert client.get(f"/pub/{in_review.publication_id}/v1").status_code == 404
    assert client_for(team["maintainer"]).post(url, {"decision": "approve"}, format="json").status_code == 400

    decided = client_for(team["maintainer"]).post(url, {"decision": "accept", "note": "Well done."}, format="json")
    assert decided.status_code == 200, decided.json()
    assert decided.json()["status"] == VersionStatus.PUBLISHED
    assert decided.json()["decision"] == "accept"
    assert decided.json()["decision_note"] == "Well done."
    assert decided.json()["published_at"] is not None
    in_review.refresh_from_db()
    assert in_review.status == VersionStatus.PUBLISHED
    assert in_review.published_at is not None
    assert in_review.decided_by == team["maintainer"]

    page = client.get(f"/pub/{in_review.publication_id}/v1")
    assert page.status_code == 200
    assert b"Not published" not in page.content
    assert client_for(None).get(f"/api/v1/publications/{in_review.publication_id}/").status_code == 200
    assert client_for(team["outsider"]).get(f"/api/v1/publications/{in_review.publication_id}/").status_code == 200

    for role in ("owner", "member", "viewer"):
        assert "decision" in kinds_for(team[role]), role
    assert "decision" in kinds_for(reviewer)
    assert "decision" not in kinds_for(team["maintainer"])  # the one who decided knows

    twice = client_for(team["owner"]).post(url, {"decision": "reject"}, format="json")
    assert twice.status_code == 400
    assert "not in review" in twice.json()["decision"][0]
    in_review.refresh_from_db()
    assert in_review.status == VersionStatus.PUBLISHED


@pytest.mark.parametrize(
    ("decision", "status"),
    [
        ("minor_revision", VersionStatus.REVISION_REQUESTED),
        ("major_revision", VersionStatus.REVISION_REQUESTED),
        ("reject", VersionStatus.REJECTED),
    ],
)
def test_other_decisions_keep_the_version_unpublished(in_review, team, client_for, client, decision, status):
    """Revision requests and rejections record the decision and keep the version out of sight
    of everyone but its authors (and reviewers)."""
    response = client_for(team["owner"]).post(decision_url(in_review), {"decision": decision}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == status
    assert response.json()["published_at"] is None
    in_review.refresh_from_db()
    assert (in_review.status, in_review.decision, in_review.published_at) == (status, decision, None)
    assert client.get(f"/pub/{in_review.publication_id}/v1").status_code == 404
    assert client_for(team["viewer"]).get(f"/api/v1/publications/{in_review.publication_id}/").status_code == 200
    assert (
        client_for(team["owner"]).post(decision_url(in_review), {"decision": "accept"}, format="json").status_code
        == 400
    )


# --- notifications --------------------------------------------------------------------------------------


def test_notifications_api_lists_only_ones_own_and_marks_them_read(in_review, accepted, team, reviewer, client_for):
    """Each user lists their own notifications (newest first) and marks them read."""
    api = client_for(reviewer)
    mine = api.get("/api/v1/notifications/").json()
    assert [n["kind"] for n in mine] == ["invitation"]
    assert mine[0]["url"] == f"/reviews/{accepted.pk}/"
    assert mine[0]["read"] is False
    assert set(Notification.objects.filter(pk__in=[n["id"] for n in mine]).values_list("user", flat=True)) == {
        reviewer.pk
    }
    owners = client_for(team["owner"]).get("/api/v1/notifications/").json()
    assert [n["kind"] for n in owners] == ["invitation_answer"]
    assert owners[0]["message"] == "rhea accepted the invitation to review."
    assert client_for(team["outsider"]).get("/api/v1/notifications/").json() == []
    assert client_for(None).get("/api/v1/notifications/").status_code in (401, 403)

    marked = api.post("/api/v1/notifications/")
    assert marked.status_code == 200
    assert marked.json() == {"marked_read": 1}
    assert api.get("/api/v1/notifications/?unread=1").json() == []
    assert [n["read"] for n in api.get("/api/v1/notifications/").json()] == [True]
    assert api.post("/api/v1/notifications/").json() == {"marked_read": 0}
    # The owner's stay unread.
    assert [n["read"] for n in client_for(team["owner"]).get("/api/v1/notifications/?unread=true").json()] == [False]


def test_notification_emails_go_once_to_each_recipient(in_review, accepted, team, reviewer, mailoutbox, settings):
    """Each notification is e-mailed once to its recipient's address, with its message and an
    absolute link; sending the same batch again sends nothing; a user without an address is
    skipped without blocking the rest."""
    settings.REPROLAB_SITE_URL = "https://reprolab.example"
    team["viewer"].email = ""
    team["viewer"].save(update_fields=["email"])
    services.review_submit(review=accepted, user=reviewer, recommendation="accept", summary="Good.")
    notes = list(Notification.objects.select_related("user").order_by("pk"))
    with_address = [n for n in notes if n.user.email]
    assert len(with_address) < len(notes)  # the viewer has none

    sent = send_notification_emails([n.pk for n in notes])
    assert sent == len(with_address)
    assert len(mailoutbox) == len(with_address)
    assert sorted((m.to, m.subject, m.body) for m in mailoutbox) == sorted(
        ([n.user.email], f"[ReproLab] {n.message}", f"{n.message}\n\nhttps://reprolab.example{n.url}\n")
        for n in with_address
    )
    assert all(n.emailed_at is not None for n in Notification.objects.all())

    assert send_notification_emails([n.pk for n in notes]) == 0
    assert len(mailoutbox) == len(with_address)


def test_notifications_page_renders_and_marks_read(in_review, accepted, team, reviewer, client):
    """The notifications page lists the user's messages with their links, and marks them read."""
    client.force_login(reviewer)
    page = client.get("/notifications/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "You are invited to review “Noise in the Analytical Engine”." in text
    assert f'href="/reviews/{accepted.pk}/"' in text
    assert 'class="unread"' in text
    assert "accepted the invitation" not in text  # the owner's, not the reviewer's
    marked = client.post("/notifications/")
    assert marked.status_code == 302
    assert marked["Location"] == "/notifications/"
    assert not Notification.objects.filter(user=reviewer, read_at__isnull=True).exists()
    assert 'class="unread"' not in client.get("/notifications/").content.decode()


# --- the review desk -------------------------------------------------------------------------------------


@pytest.fixture
def script_publication(private_project, team) -> PublicationVersion:
    """A publication whose code cell's source is an HTML script tag."""
    owner = team["owner"]
    version = upload_notebook(private_project, owner, path="xss.ipynb", source="<script>alert(1)</script>").version
    run = succeeded_run(private_project, owner, version)
    return services.publication_create(
        project=get_project_for(owner, private_project.slug),
        user=owner,
        notebook_version=version,
        run=run,
        metadata=metadata(title="Scripts <b>in</b> cells"),
    )


def test_review_desk_shows_cell_sources_escaped(script_publication, team, reviewer, client):
    """The review desk shows each cell's source as text: markup in a notebook never runs."""
    review = services.review_invite(publication=script_publication.publication, inviter=team["owner"], who="rhea")
    client.force_login(reviewer)
    page = client.get(f"/reviews/{review.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert(1)" not in text
    assert "Scripts &lt;b&gt;in&lt;/b&gt; cells" in text
    assert "<b>in</b>" not in text
    for cell in version_cells(script_publication):
        assert f'data-cell-id="{cell.cell_id}"' in text
    assert 'id="respond"' in text  # invited: the accept/decline form


def test_review_desk_forms_drive_the_review(in_review, team, reviewer, client):
    """The review desk's forms accept, comment on a cell, rerun and submit, each redirecting
    back to the desk; a rejected form shows why and changes nothing."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    url = f"/reviews/{review.pk}/"
    client.force_login(reviewer)

    accepted = client.post(url, {"action": "accept"})
    assert accepted.status_code == 302
    assert accepted["Location"] == url
    review.refresh_from_db()
    assert review.state == ReviewState.ACCEPTED

    code = last_code_cell(in_review)
    commented = client.post(
        url, {"action": "comment", "cell_id": code.cell_id, "version": "1", "body": "Why 42?", "line_start": "1"}
    )
    assert commented.status_code == 302
    [comment] = ReviewComment.objects.filter(review=review)
    assert (comment.cell_id, comment.cell_source_sha256, comment.line_start, comment.line_end) == (
        code.cell_id,
        code.source_sha256,
        1,
        1,
    )
    bad = client.post(url, {"action": "comment", "cell_id": "nope", "body": "Keep this text."})
    assert bad.status_code == 400  # the desk again, with the reason and the text still typed
    assert "has no cell" in bad.content.decode()
    assert "Keep this text." in bad.content.decode()
    assert ReviewComment.objects.filter(review=review).count() == 1

    replied = client.post(url, {"action": "reply", "parent": str(comment.pk), "body": "Also line 1."})
    assert replied.status_code == 302
    assert ReviewComment.objects.filter(parent=comment).count() == 1

    rerun = client.post(url, {"action": "rerun", "rtol": "1e-6", "atol": "0", "repeats": "2"})
    assert rerun.status_code == 302
    [reproduction] = review.reproductions.all()
    assert (reproduction.rtol, reproduction.repeats, reproduction.created_by) == (1e-6, 2, reviewer)

    desk = client.get(url).content.decode()
    assert "Why 42?" in desk
    assert f'id="rerun-{reproduction.pk}"' in desk
    assert "pending" in desk

    submitted = client.post(url, {"action": "submit", "recommendation": "accept", "summary": "Convincing."})
    assert submitted.status_code == 302
    review.refresh_from_db()
    assert (review.state, review.recommendation, review.summary) == ("submitted", "accept", "Convincing.")
    after = client.get(url).content.decode()
    assert "Convincing." in after
    assert 'id="submit-form"' not in after


def test_review_desk_is_hidden_from_outsiders(in_review, team, reviewer, client):
    """Outsiders get 404 for a review's desk; anonymous visitors are sent to log in; authors
    can read it (and reply) but have no reviewer forms."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    url = f"/reviews/{review.pk}/"
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"]
    client.force_login(team["outsider"])
    assert client.get(url).status_code == 404
    assert client.post(url, {"action": "accept"}).status_code == 404
    client.force_login(team["member"])
    page = client.get(url)
    assert page.status_code == 200
    assert 'id="respond"' not in page.content.decode()
    client.post(url, {"action": "accept"})
    review.refresh_from_db()
    assert review.state == ReviewState.INVITED


# --- invitations to e-mail addresses without an account --------------------------------------------------
def _invitation_path(mailbox) -> str:
    """The path of the link in the (one) invitation e-mail."""
    [message] = [m for m in mailbox if "Invitation to review" in m.subject]
    found = re.search(r"http://\S+/reviews/invitation/rli_[^/\s]+/", message.body)
    assert found is not None, message.body
    return urlsplit(found.group(0)).path


def test_an_address_without_an_account_gets_a_link_that_the_person_takes_after_signing_up(
    in_review, team, client_for, client, mailoutbox
):
    """Journal-style: the editor invites an external expert by e-mail; they sign up through the
    link and become the reviewer (the link works once)."""
    from apps.review.tasks import send_reviewer_invitation

    response = invite(in_review.publication_id, team["owner"], "Expert@Example.org ", client_for)
    assert response.status_code == 201, response.json()
    review = Review.objects.get()
    assert (review.reviewer, review.invited_email, review.state) == (None, "expert@example.org", "invited")
    assert response.json()["reviewer"] == "Reviewer 1 (invited at expert@example.org)"  # the owner is an editor
    send_reviewer_invitation(review.pk)  # as the Celery worker does after the commit
    path = _invitation_path(mailoutbox)
    assert mailoutbox[-1].to == ["expert@example.org"]

    anonymous = client.get(path)
    assert anonymous.status_code == 200
    assert "Log in" in anonymous.content.decode()
    assert "Noise in the Analytical Engine" in anonymous.content.decode()

    signup = client.post(
        f"/accounts/signup/?next={path}",
        {
            "username": "expert",
            "email": "expert@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "next": path,
        },
    )
    assert signup.status_code == 302
    assert signup["Location"] == path
    taken = client.post(path, {"action": "accept"})
    assert taken.status_code == 302
    review.refresh_from_db()
    assert review.reviewer is not None
    assert (review.reviewer.username, review.state, review.invitation_token_hash) == ("expert", "accepted", "")
    assert client.get(f"/pub/{in_review.publication_id}/v1").status_code == 200  # the unpublished version
    assert client.get(path).status_code == 404  # used once


def test_an_invitation_link_is_refused_to_authors_and_a_new_link_replaces_the_old(
    in_review, team, client_for, client, mailoutbox
):
    from apps.review.tasks import send_reviewer_invitation

    invite(in_review.publication_id, team["owner"], "expert@example.org", client_for)
    review = Review.objects.get()
    send_reviewer_invitation(review.pk)
    first = _invitation_path(mailoutbox)
    mailoutbox.clear()
    assert invite(in_review.publication_id, team["owner"], "expert@example.org", client_for).status_code == 201
    assert Review.objects.count() == 1  # the same invitation, sent again
    send_reviewer_invitation(review.pk)
    second = _invitation_path(mailoutbox)
    assert first != second
    client.force_login(team["member"])
    assert client.get(first).status_code == 404  # replaced
    refused = client.post(second, {"action": "accept"}, follow=True)
    assert "authors cannot review their own work" in refused.content.decode()
    review.refresh_from_db()
    assert (review.reviewer, review.state) == (None, "invited")
    assert client.get("/reviews/invitation/rli_not-a-token/").status_code == 404
