"""The whole review flow through the services, as a first check that the pieces fit."""

from apps.review import services
from apps.review.models import ReviewState
from tests.review.conftest import revise


def test_invite_comment_new_version_outdates_decide(in_review, team, reviewer, client_for):
    owner = team["owner"]
    publication = in_review.publication
    review = services.review_invite(publication=publication, inviter=owner, who="rhea")
    services.review_respond(review=review, user=reviewer, accept=True)
    assert review.state == ReviewState.ACCEPTED
    client = client_for(reviewer)
    comments = client.get(f"/api/v1/reviews/{review.pk}/comments/").json()
    assert comments["comments"] == []
    from apps.review.anchors import version_cells

    code_cell = [c for c in version_cells(in_review) if c.cell_type == "code"][-1]
    made = client.post(
        f"/api/v1/reviews/{review.pk}/comments/",
        {"body": "Why 42?", "cell_id": code_cell.cell_id, "line_start": 1, "line_end": 1},
        format="json",
    )
    assert made.status_code == 201, made.json()
    version, run = revise(in_review.notebook_version, owner, source="print(6 * 9)")
    services.publication_add_version(
        publication=publication,
        user=owner,
        notebook_version=version,
        run=run,
        metadata=services.clean_metadata(
            title="Noise, revised", authors=[{"family_names": "Lovelace"}], license="CC-BY-4.0"
        ),
    )
    listed = client.get(f"/api/v1/reviews/{review.pk}/comments/").json()
    [comment] = listed["comments"]
    assert listed["version"] == 2
    assert comment["outdated"] is True, comment
    assert comment["current_source"] == "print(6 * 9)"
    assert client.get(f"/api/v1/reviews/{review.pk}/comments/?version=1").json()["comments"][0]["outdated"] is False
