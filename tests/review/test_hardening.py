"""Holes a security review found in publication and review, each closed, each kept closed here."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.compute import services as compute
from apps.compute.models import Node, Run
from apps.projects import services as projects
from apps.projects.models import Role
from apps.projects.permissions import get_project_for
from apps.review import services
from apps.review.models import Review, ReviewState
from tests.factories import make_user, upload_notebook
from tests.review.conftest import metadata, publish, succeeded_run
from tests.review.test_reviews import accepted_review, invite, run_reruns


def rerun_by(review: Review, reviewer) -> Run:
    reproduction = services.review_rerun(review=review, user=reviewer)
    node = compute.node_register(owner=reviewer, name="reviewer-box").node
    run_reruns(reproduction, node)
    return reproduction.reruns.get()


def test_a_reviewers_rerun_cannot_become_the_published_result(blind, team, reviewer, client_for):
    """A reviewer's rerun names the reviewer (creator, node, environment): neither the default
    (the latest succeeded run) nor an explicit choice may publish it."""
    review = accepted_review(blind, team["owner"], reviewer)
    rerun = rerun_by(review, reviewer)
    assert rerun.state == "succeeded"
    body = {
        "notebook_version": blind.notebook_version_id,
        "title": "v2",
        "authors": [{"family_names": "Lovelace"}],
        "license": "MIT",
    }
    url = f"/api/v1/publications/{blind.publication_id}/versions/"
    chosen = client_for(team["member"]).post(url, {**body, "run": rerun.pk}, format="json")
    assert chosen.status_code == 400
    assert "not the authors' result" in chosen.json()["run"][0]
    default = client_for(team["member"]).post(url, body, format="json")
    assert default.status_code == 201
    assert default.json()["run"] == blind.run_id  # the authors' own run, not the newer rerun


def test_blind_evidence_keeps_the_authors_text_untouched(blind, team, reviewer, client_for):
    """Redacting names out of evidence would answer "is it X?" when X is in the authors' own
    code; the authors' view carries no text from the rerun, and theirs unchanged."""
    review = accepted_review(blind, team["owner"], reviewer)
    rerun_by(review, reviewer)
    shown = client_for(team["member"]).get(f"/api/v1/reviews/{review.pk}/").json()["reruns"][0]
    assert "withheld" in shown
    assert "[reviewer]" not in str(shown)
    assert all("rerun" not in cell for cell in shown["cells"])
    full = client_for(team["owner"]).get(f"/api/v1/reviews/{review.pk}/").json()["reruns"][0]
    assert "withheld" not in full


def test_a_reviewers_rerun_never_runs_on_the_authors_nodes(in_review, team, reviewer, private_project):
    """Independent checks: the project's node and a shared node a member owns get nothing; a
    shared node of someone else, or the reviewer's own node, may run it."""
    review = accepted_review(in_review, team["owner"], reviewer)
    services.review_rerun(review=review, user=reviewer)
    lab = compute.node_register(owner=team["owner"], name="lab", projects=[private_project]).node
    team["member"].is_staff = True  # staff may share nodes, but not with their own project's proof
    team["member"].save()
    members_shared = compute.node_register(owner=team["member"], name="member-shared", shared=True).node
    for node in (lab, members_shared):
        compute.node_seen(node=node)
        assert compute.run_claim(node=node) is None, node.name
    stranger = compute.node_register(owner=make_user("stranger", staff=True), name="campus", shared=True).node
    compute.node_seen(node=stranger)
    claim = compute.run_claim(node=stranger)
    assert claim is not None
    assert claim.run.independent


def test_a_removed_member_loses_the_runs_they_started(private_project, team, client_for):
    owner, member = team["owner"], team["member"]
    version = upload_notebook(private_project, member, source="print(1)").version
    run = succeeded_run(private_project, member, version)
    assert client_for(member).get(f"/api/v1/runs/{run.pk}/").status_code == 200
    membership = private_project.memberships.get(user=member)
    projects.membership_remove(membership=membership, actor_role=Role.OWNER)
    for path in (f"/api/v1/runs/{run.pk}/", f"/api/v1/runs/{run.pk}/crate.zip"):
        assert client_for(member).get(path).status_code == 404, path
    assert client_for(owner).get(f"/api/v1/runs/{run.pk}/").status_code == 200


def test_who_declined_no_longer_sees_the_work(in_review, team, reviewer, client):
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    services.review_respond(review=review, user=reviewer, accept=False)
    client.force_login(reviewer)
    assert client.get(f"/reviews/{review.pk}/").status_code == 404
    assert client.get(f"/pub/{in_review.publication_id}/v1").status_code == 404
    client.force_login(team["owner"])
    assert client.get(f"/reviews/{review.pk}/").status_code == 200  # the editors' record


@pytest.mark.parametrize("rtol", ["nan", "inf", "1e400", "-1", "abc"])
def test_bad_tolerances_on_the_desk_are_400_and_start_nothing(accepted_blind_desk, rtol):
    client, review = accepted_blind_desk
    response = client.post(f"/reviews/{review.pk}/", {"action": "rerun", "rtol": rtol})
    assert response.status_code == 400
    assert not review.reproductions.exists()


@pytest.fixture
def accepted_blind_desk(blind, team, reviewer, client):
    review = accepted_review(blind, team["owner"], reviewer)
    client.force_login(reviewer)
    return client, review


def test_bad_query_values_are_4xx_not_500(accepted, in_review, team, client_for, client):
    assert client_for(team["member"]).get(f"/api/v1/reviews/{accepted.pk}/comments/?version=abc").status_code == 400
    client.force_login(team["member"])
    for value in ("²", "abc", "-1"):
        response = client.get(f"/p/{in_review.publication.project.slug}/publish/analysis.ipynb?publication={value}")
        assert response.status_code == 404, value


@pytest.fixture
def accepted(in_review, team, reviewer) -> Review:
    return accepted_review(in_review, team["owner"], reviewer)


def test_a_title_is_one_line(private_project, team):
    """Titles go into e-mail subjects (a newline there would stop every e-mail) and citations."""
    version = publish(private_project, team["owner"], title="Noise\r\n in the\tEngine")
    assert version.title == "Noise in the Engine"


def test_a_second_round_keeps_the_first(accepted, in_review, team, reviewer, client_for):
    services.review_submit(review=accepted, user=reviewer, recommendation="major_revision", summary="Seed it.")
    again = invite(in_review.publication_id, team["owner"], "rhea", client_for)
    assert again.status_code == 201, again.json()
    accepted.refresh_from_db()
    assert accepted.state == ReviewState.INVITED
    assert (accepted.recommendation, accepted.summary) == ("", "")
    assert [(r["version"], r["recommendation"], r["summary"]) for r in accepted.rounds] == [
        (1, "major_revision", "Seed it.")
    ]
    assert client_for(reviewer).get(f"/api/v1/reviews/{accepted.pk}/").json()["rounds"][0]["summary"] == "Seed it."


def test_viewers_read_but_do_not_invite(in_review, team, client_for):
    response = invite(in_review.publication_id, team["viewer"], "rhea", client_for)
    assert response.status_code == 403
    assert not Review.objects.exists()


def test_the_invite_form_redirects_only_into_the_site(in_review, team, reviewer, client):
    client.force_login(team["owner"])
    response = client.post(
        f"/pub/{in_review.publication_id}/invite", {"reviewer": "rhea", "next": "https://evil.example/x"}
    )
    assert response.status_code == 302
    assert response["Location"] == f"/pub/{in_review.publication_id}"


def test_an_invitation_link_needs_an_explicit_answer(in_review, team, client, mailoutbox):
    from apps.review.tasks import send_reviewer_invitation

    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="x@uni.example")
    send_reviewer_invitation(review.pk)
    path = "/reviews/invitation/" + mailoutbox[-1].body.split("/reviews/invitation/", 1)[1].split("/", 1)[0] + "/"
    client.force_login(make_user("x"))
    assert client.post(path, {}).status_code == 400
    review.refresh_from_db()
    assert (review.reviewer, review.state) == (None, "invited")


def test_list_endpoints_cost_the_same_for_many_rows(private_project, team, client_for):
    """Reviews and publications lists: a constant number of queries, not one per row."""
    owner = team["owner"]

    def costs() -> tuple[int, int]:
        client = client_for(owner)
        with CaptureQueriesContext(connection) as reviews:
            assert client.get("/api/v1/reviews/").status_code == 200
        with CaptureQueriesContext(connection) as publications:
            assert client.get("/api/v1/publications/").status_code == 200
        return len(reviews), len(publications)

    def one_more(name: str) -> None:
        version = upload_notebook(private_project, owner, path=f"{name}.ipynb", source=f"print('{name}')").version
        published = services.publication_create(
            project=get_project_for(owner, private_project.slug),
            user=owner,
            notebook_version=version,
            run=succeeded_run(private_project, owner, version),
            metadata=metadata(),
        )
        accepted_review(published, owner, make_user(f"referee-{name}"))

    one_more("a")
    few = costs()
    for name in ("b", "c", "d", "e"):
        one_more(name)
    assert costs() == few


def test_an_invitation_e_mail_lost_with_the_broker_is_sent_by_the_sweep(in_review, team, mailoutbox):
    """The invitation row is the record: if its e-mail never went out (broker down at commit),
    the beat sweep sends it, once."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.review.tasks import send_pending_emails

    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="x@uni.example")
    assert send_pending_emails() == 0  # too fresh: its own task may still be on the way
    Review.objects.filter(pk=review.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert send_pending_emails() == 1
    assert [m.to for m in mailoutbox] == [["x@uni.example"]]
    assert send_pending_emails() == 0


def test_the_badge_prefers_a_reviewers_check(accepted, in_review, team, reviewer, client):
    """An author's own lax check (rtol 1) must not speak over the reviewer's independent one."""
    from apps.reproducibility import services as reproducibility

    rerun_by(accepted, reviewer)
    own = reproducibility.reproduction_start(original=in_review.run, user=team["owner"], rtol=1.0)
    run_reruns(own, Node.objects.get(owner=team["owner"]))  # the authors' lab node ran their run
    assert own.__class__.objects.get(pk=own.pk).finished_at is not None
    badge = services.badge_for(in_review)
    assert badge is not None
    assert (badge.check.pk, badge.by_reviewer) == (accepted.reproductions.get().pk, True)
    client.force_login(team["member"])
    assert "by a reviewer" in client.get(f"/pub/{in_review.publication_id}/v1").content.decode()


def test_a_run_is_published_by_its_id_alone(private_project, team, client_for):
    """Scripts know run ids (the runs API gives them): naming the run names the version too;
    naming neither is a 400 that says what to send."""
    owner = team["owner"]
    version = upload_notebook(private_project, owner, source="print('run me')").version
    run = succeeded_run(private_project, owner, version)
    body = {"project": private_project.slug, "title": "By run", "authors": [{"family_names": "Lovelace"}]}
    client = client_for(owner)
    neither = client.post("/api/v1/publications/", {**body, "license": "MIT"}, format="json")
    assert neither.status_code == 400
    assert "Name the run" in neither.json()["run"][0]
    created = client.post("/api/v1/publications/", {**body, "license": "MIT", "run": run.pk}, format="json")
    assert created.status_code == 201, created.json()
    [v1] = created.json()["versions"]
    assert (v1["run"], v1["notebook_sha256"]) == (run.pk, version.sha256)
    listed = client.get(f"/api/v1/projects/{private_project.slug}/notebooks/{version.notebook_id}/versions/").json()
    ids = [v["id"] for v in (listed["results"] if isinstance(listed, dict) else listed)]
    assert version.pk in ids  # the versions API gives the id `notebook_version` takes


HUGE = 2**70
DEEP: list = []
for _ in range(300):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "rerun", "repeats": str(HUGE)},
        {"action": "rerun", "repeats": "²"},
        {"action": "comment", "body": "Hm.", "version": str(HUGE)},
        {"action": "comment", "body": "Hm.", "line_start": str(HUGE)},
        {"action": "reply", "body": "Hm.", "parent": str(HUGE)},
        {"action": "resolve", "comment": "٣"},
    ],
)
def test_huge_or_unicode_numbers_on_the_desk_are_400_and_store_nothing(accepted_blind_desk, fields):
    client, review = accepted_blind_desk
    response = client.post(f"/reviews/{review.pk}/", fields)
    assert response.status_code in (400, 404)
    assert not review.reproductions.exists()
    assert not review.comments.exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("rerun/", {"version": HUGE}),
        ("rerun/", {"requirements": DEEP}),
        ("rerun/", {"requirements": {"gpus": 65}}),
        ("rerun/", {"requirements": {"isolation": "vm", "network": True}}),
        ("comments/", {"body": "Hm.", "version": HUGE}),
        ("comments/", {"body": "Hm.", "line_start": HUGE}),
        ("comments/", {"body": "Hm.", "output_index": HUGE}),
        ("comments/", {"body": "Hm.", "parent": HUGE}),
    ],
)
def test_huge_numbers_in_the_review_api_are_400(accepted, reviewer, client_for, path, body):
    response = client_for(reviewer).post(f"/api/v1/reviews/{accepted.pk}/{path}", body, format="json")
    assert response.status_code == 400
    assert not accepted.reproductions.exists()
    assert not accepted.comments.exists()


@pytest.mark.parametrize("field", ["run", "notebook_version", "datasets"])
def test_huge_ids_when_publishing_are_400(private_project, team, client_for, field):
    value = [HUGE] if field == "datasets" else HUGE
    body = {"project": private_project.slug, "title": "T", "authors": [{"given": "A", "family": "B"}]}
    body |= {"license": "CC-BY-4.0", field: value}
    response = client_for(team["owner"]).post("/api/v1/publications/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
