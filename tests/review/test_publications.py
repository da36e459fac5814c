"""Publications end to end: creating them through the API and the publish form, what bad input
is refused with, immutability of versions, who sees which version where, the landing page's
machine-readable metadata (Signposting, JSON-LD, DataCite, citations), hostile metadata on the
landing page, and the diff between two versions.

API calls use a Bearer token (`client_for`); pages use a session (`web`)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from datacite import schema45
from django.db import transaction
from django.test import Client
from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.models import Run
from apps.projects.models import NotebookVersion, Project
from apps.reproducibility import tasks as reproducibility_tasks
from apps.review import services
from apps.review.models import ImmutableVersion, Publication, PublicationVersion, VersionStatus
from tests.factories import make_project, upload_notebook
from tests.review.conftest import AUTHORS, metadata, publish, revise, succeeded_run

API = "/api/v1/publications/"
CFF_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "citation-cff-1.2.0.schema.json"
# Every URL of one version, relative to /pub/<id>/v<n> (the landing page itself is "").
VERSION_SUFFIXES = [
    "",
    "/render",
    "/notebook.ipynb",
    "/crate.zip",
    "/report",
    "/datacite.json",
    "/cite.bib",
    "/CITATION.cff",
    "/cite.txt",
]
# The authors as stored: every key present, blanks as "".
STORED_AUTHORS = [
    {"given_names": "Ada", "family_names": "Lovelace", "orcid": "0000-0002-1825-0097", "affiliation": "Analytical"},
    {"given_names": "Charles", "family_names": "Babbage", "orcid": "", "affiliation": ""},
]


# --- helpers ------------------------------------------------------------------------------------------
def web(user: User | None) -> Client:
    """A browser session, logged in as `user` (None: anonymous)."""
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def ready_version(project: Project, user: User, path: str = "analysis.ipynb") -> tuple[NotebookVersion, Run]:
    """A freshly uploaded notebook version with a succeeded run, ready to publish."""
    version = upload_notebook(project, user, path=path, source="print(6 * 7)").version
    return version, succeeded_run(project, user, version)


def create_payload(project: Project, version: NotebookVersion, run: Run, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "project": project.slug,
        "notebook_version": version.pk,
        "run": run.pk,
        "title": "Noise in the Analytical Engine",
        "authors": [dict(a) for a in AUTHORS],
        "abstract": "We measure how the engine's results vary between runs.",
        "keywords": ["reproducibility", "engines"],
        "license": "CC-BY-4.0",
        "submit_for_review": True,
    }
    payload.update(overrides)
    return payload


def add_version(
    first: PublicationVersion, user: User, *, source: str = "print(6 * 9)", submit_for_review: bool = True
) -> PublicationVersion:
    """The next version of `first`'s publication, with the last code cell changed to `source`."""
    notebook_version, run = revise(first.notebook_version, user, source=source)
    return services.publication_add_version(
        publication=first.publication,
        user=user,
        notebook_version=notebook_version,
        run=run,
        metadata=metadata(title="Noise in the Analytical Engine, revised"),
        submit_for_review=submit_for_review,
    )


def counts() -> tuple[int, int]:
    return Publication.objects.count(), PublicationVersion.objects.count()


def ld_json_blocks(html: str) -> list[str]:
    """The text of every <script type="application/ld+json"> element, up to the first </script>
    (where a browser ends it)."""
    return re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.DOTALL)


def parse_links(header: str) -> list[tuple[str, dict[str, str]]]:
    """An RFC 8288 Link header as [(target, {param: value})]."""
    links = []
    for target, params in re.findall(r"<([^>]*)>((?:\s*;\s*[a-z-]+=\"[^\"]*\")*)", header):
        links.append((target, dict(re.findall(r'([a-z-]+)="([^"]*)"', params))))
    return links


class _Iframes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.iframes: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.iframes.append(dict(attrs))


def iframes(html: str) -> list[dict[str, str | None]]:
    parser = _Iframes()
    parser.feed(html)
    return parser.iframes


def make_report(version: PublicationVersion) -> None:
    """Build the run's FAIR report now (the Celery task, called in-process), so /report is a 200."""
    assert reproducibility_tasks.build_run_report(version.run_id) is True


# --- 1. creating a publication through the API ------------------------------------------------------
@pytest.mark.parametrize(("role", "submit", "status"), [("owner", True, "in_review"), ("member", False, "published")])
def test_api_creates_publication_with_version_1(client_for, team, private_project, role, submit, status):
    """POST /publications/ stores a publication and its v1, and answers with the whole record:
    the status follows submit_for_review, the metadata is the cleaned metadata, the notebook
    version and run are pinned, and the citation links are absolute."""
    user = team[role]
    version, run = ready_version(private_project, user)
    response = client_for(user).post(
        API, create_payload(private_project, version, run, submit_for_review=submit), format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    publication = Publication.objects.get()
    assert body["id"] == publication.pk
    assert body["project"] == "secret-lab"
    assert body["notebook"] == "analysis.ipynb"
    assert body["review_mode"] == "open"
    [v1] = body["versions"]
    base = f"http://testserver/pub/{publication.pk}/v1"
    assert v1["number"] == 1
    assert v1["url"] == base
    assert v1["status"] == status
    assert v1["title"] == "Noise in the Analytical Engine"
    assert v1["authors"] == STORED_AUTHORS
    assert v1["license"] == "CC-BY-4.0"
    assert v1["keywords"] == ["reproducibility", "engines"]
    assert v1["notebook_version"] == version.number
    assert v1["notebook_sha256"] == version.sha256
    assert v1["run"] == run.pk
    assert (v1["published_at"] is not None) is (not submit)
    assert v1["citation"] == {
        "bibtex": f"{base}/cite.bib",
        "cff": f"{base}/CITATION.cff",
        "apa": f"{base}/cite.txt",
        "datacite": f"{base}/datacite.json",
    }
    stored = PublicationVersion.objects.get()
    assert (stored.publication_id, stored.number, stored.status) == (publication.pk, 1, status)
    assert (stored.notebook_version_id, stored.run_id, stored.created_by) == (version.pk, run.pk, user)


def test_api_picks_the_latest_succeeded_run_when_none_is_given(client_for, team, private_project):
    """Without `run`, v1 shows the notebook version's latest succeeded run."""
    owner = team["owner"]
    version, _ = ready_version(private_project, owner)
    latest = succeeded_run(private_project, owner, version)
    payload = create_payload(private_project, version, latest)
    del payload["run"]
    response = client_for(owner).post(API, payload, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["versions"][0]["run"] == latest.pk


# --- 2. what bad input is refused with ---------------------------------------------------------------
def _without_license(payload: dict[str, Any], project: Project, user: User) -> None:
    del payload["license"]


def _bad_spdx(payload: dict[str, Any], project: Project, user: User) -> None:
    payload["license"] = "not a license!"


def _no_authors(payload: dict[str, Any], project: Project, user: User) -> None:
    payload["authors"] = []


def _author_without_family_names(payload: dict[str, Any], project: Project, user: User) -> None:
    payload["authors"] = [{"given_names": "Ada"}]


def _orcid_with_bad_checksum(payload: dict[str, Any], project: Project, user: User) -> None:
    payload["authors"] = [{"given_names": "Ada", "family_names": "Lovelace", "orcid": "0000-0002-1825-0098"}]


def _run_of_another_notebook_version(payload: dict[str, Any], project: Project, user: User) -> None:
    _, other_run = ready_version(project, user, path="other.ipynb")
    payload["run"] = other_run.pk


def _queued_run(payload: dict[str, Any], project: Project, user: User) -> None:
    version = NotebookVersion.objects.get(pk=payload["notebook_version"])
    payload["run"] = compute.run_submit(project=project, user=user, notebook_version=version).pk


def _notebook_version_of_another_project(payload: dict[str, Any], project: Project, user: User) -> None:
    elsewhere = make_project(user, slug="elsewhere")
    payload["notebook_version"] = upload_notebook(elsewhere, user).version.pk


def _unknown_dataset(payload: dict[str, Any], project: Project, user: User) -> None:
    payload["datasets"] = [987654]


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (_without_license, "license"),
        (_bad_spdx, "license"),
        (_no_authors, "authors"),
        (_author_without_family_names, "authors"),
        (_orcid_with_bad_checksum, "authors"),
        (_run_of_another_notebook_version, "run"),
        (_queued_run, "run"),
        (_notebook_version_of_another_project, "notebook_version"),
        (_unknown_dataset, "datasets"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else value,
)
def test_api_refuses_bad_input_and_stores_nothing(
    client_for, team, private_project, spoil: Callable[[dict[str, Any], Project, User], None], field
):
    """Each kind of bad input is a 400 whose body names the field at fault, and neither a
    publication nor a version is left behind (no half-created publication)."""
    owner = team["owner"]
    version, run = ready_version(private_project, owner)
    payload = create_payload(private_project, version, run)
    spoil(payload, private_project, owner)
    before = counts()
    response = client_for(owner).post(API, payload, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert field in body["detail"], body
    assert counts() == before


def test_api_error_messages_say_what_is_wrong(client_for, team, private_project):
    """The messages explain the problem, not just the field: SPDX and ORCID are named."""
    owner = team["owner"]
    version, run = ready_version(private_project, owner)
    client = client_for(owner)
    spdx = client.post(API, create_payload(private_project, version, run, license="not a license!"), format="json")
    assert "SPDX" in spdx.json()["detail"]
    orcid = client.post(
        API,
        create_payload(
            private_project, version, run, authors=[{"family_names": "Lovelace", "orcid": "0000-0002-1825-0098"}]
        ),
        format="json",
    )
    assert "0000-0002-1825-0098" in orcid.json()["detail"]
    assert "ORCID" in orcid.json()["detail"]


@pytest.mark.parametrize(("role", "statuses"), [("viewer", {403}), ("outsider", {404}), ("anonymous", {401, 403})])
def test_api_create_needs_the_member_role(client_for, team, private_project, role, statuses):
    """Only members (or higher) publish: a viewer is refused, an outsider does not even see the
    project, an anonymous request is unauthenticated. Nothing is stored."""
    version, run = ready_version(private_project, team["owner"])
    before = counts()
    response = client_for(team[role]).post(API, create_payload(private_project, version, run), format="json")
    assert response.status_code in statuses, (response.status_code, response.content)
    assert counts() == before


# --- 3. immutability -------------------------------------------------------------------------------------
def test_version_content_cannot_be_saved_again(published):
    """PublicationVersion.save() on an existing row refuses any change outside MUTABLE_FIELDS
    (whether update_fields is omitted, names a content field, or mixes both); the stored row
    keeps its content."""
    version = PublicationVersion.objects.get(pk=published.pk)
    version.title = "Rewritten history"
    with pytest.raises(ImmutableVersion):
        version.save()
    with pytest.raises(ImmutableVersion):
        version.save(update_fields=["title"])
    with pytest.raises(ImmutableVersion):
        version.save(update_fields=["status", "title"])
    version.authors = [{"family_names": "Mallory"}]
    with pytest.raises(ImmutableVersion):
        version.save(update_fields=["authors"])
    stored = PublicationVersion.objects.get(pk=published.pk)
    assert stored.title == "Noise in the Analytical Engine"
    assert stored.authors == STORED_AUTHORS


def test_review_outcome_fields_stay_mutable(in_review):
    """The review outcome (MUTABLE_FIELDS) can still be recorded on an existing version."""
    version = PublicationVersion.objects.get(pk=in_review.pk)
    version.status = VersionStatus.REJECTED
    version.decision_note = "Not reproducible."
    version.save(update_fields=["status", "decision_note"])
    stored = PublicationVersion.objects.get(pk=in_review.pk)
    assert (stored.status, stored.decision_note) == ("rejected", "Not reproducible.")
    assert stored.title == "Noise in the Analytical Engine"


def test_a_new_instance_with_an_existing_pk_cannot_overwrite_a_version(published):
    """A fresh instance carrying an existing version's pk is still a save on an existing row:
    it must not silently rewrite the published record."""
    forged = PublicationVersion(
        pk=published.pk,
        publication=published.publication,
        number=1,
        notebook_version=published.notebook_version,
        run=published.run,
        title="Forged",
        license="MIT",
        authors=[{"family_names": "Mallory"}],
        status=VersionStatus.PUBLISHED,
        created_at=published.created_at,
    )
    refused: Exception | None = None
    try:
        with transaction.atomic():
            forged.save()
    except ImmutableVersion as error:
        refused = error
    stored = PublicationVersion.objects.get(pk=published.pk)
    assert (stored.title, stored.license, stored.authors) == (
        "Noise in the Analytical Engine",
        "CC-BY-4.0",
        STORED_AUTHORS,
    ), "the published record was overwritten"
    assert isinstance(refused, ImmutableVersion)


def test_api_new_version_leaves_version_1_unchanged(client_for, team, in_review):
    """POST /publications/{id}/versions/ adds v2 (of the same notebook, in review by default);
    v1 as the API shows it is exactly what it was before."""
    owner = team["owner"]
    publication = in_review.publication
    client = client_for(owner)
    before = client.get(f"{API}{publication.pk}/").json()["versions"]
    assert [v["number"] for v in before] == [1]
    notebook_version, run = revise(in_review.notebook_version, owner, source="print(6 * 9)")
    response = client.post(
        f"{API}{publication.pk}/versions/",
        {
            "notebook_version": notebook_version.pk,
            "run": run.pk,
            "title": "Noise, revised",
            "authors": [{"family_names": "Lovelace"}],
            "license": "MIT",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    v2 = response.json()
    assert (v2["number"], v2["status"], v2["title"], v2["license"]) == (2, "in_review", "Noise, revised", "MIT")
    assert v2["notebook_sha256"] == notebook_version.sha256
    assert v2["run"] == run.pk
    after = client.get(f"{API}{publication.pk}/").json()["versions"]
    assert [v["number"] for v in after] == [1, 2]
    assert after[0] == before[0]
    for key in ("title", "authors", "notebook_sha256", "run", "license", "status", "created_at"):
        assert after[0][key] == before[0][key], key
    assert after[0]["notebook_sha256"] != after[1]["notebook_sha256"]


def test_api_new_version_refuses_other_notebooks_and_viewers(client_for, team, private_project, in_review):
    """A new version must be of the publication's notebook (400), and adding one needs the member
    role (a viewer gets 403); either way nothing is stored."""
    owner = team["owner"]
    url = f"{API}{in_review.publication_id}/versions/"
    other, other_run = ready_version(private_project, owner, path="other.ipynb")
    body = {
        "notebook_version": other.pk,
        "run": other_run.pk,
        "title": "Another notebook",
        "authors": [{"family_names": "Lovelace"}],
        "license": "MIT",
    }
    before = counts()
    wrong = client_for(owner).post(url, body, format="json")
    assert wrong.status_code == 400
    assert "notebook_version" in wrong.json()
    revised, run = revise(in_review.notebook_version, owner, source="print(1)")
    viewer = client_for(team["viewer"]).post(
        url, {**body, "notebook_version": revised.pk, "run": run.pk}, format="json"
    )
    assert viewer.status_code == 403
    outsider = client_for(team["outsider"]).post(
        url, {**body, "notebook_version": revised.pk, "run": run.pk}, format="json"
    )
    assert outsider.status_code == 404
    assert counts() == before


def test_outsiders_cannot_probe_a_private_project_through_the_versions_api(client_for, team, published):
    """A published publication of a private project is readable by anyone, but adding a version
    is for members only: an outsider's POST is refused the same way whether the ids it names
    exist in the private project or not (no oracle for the project's notebook versions)."""
    url = f"{API}{published.publication_id}/versions/"
    body = {"title": "Probe", "authors": [{"family_names": "Mallory"}], "license": "MIT"}
    client = client_for(team["outsider"])
    real = client.post(url, {**body, "notebook_version": published.notebook_version_id}, format="json")
    bogus = client.post(url, {**body, "notebook_version": 987654}, format="json")
    assert real.status_code in (403, 404)
    assert bogus.status_code == real.status_code, (bogus.status_code, bogus.json())
    assert "notebook_version" not in bogus.json()


# --- 4. who sees what ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["anonymous", "outsider"])
def test_published_version_of_a_private_project_is_public(client_for, team, published, role):
    """Publishing is the act of making a version public: anyone reads its page and its API
    record, even though the project is private."""
    publication_id = published.publication_id
    page = web(team[role]).get(f"/pub/{publication_id}/v1")
    assert page.status_code == 200
    assert "Noise in the Analytical Engine" in page.content.decode()
    api = client_for(team[role]).get(f"{API}{publication_id}/")
    assert api.status_code == 200
    assert [v["number"] for v in api.json()["versions"]] == [1]
    listed = client_for(team[role]).get(API).json()
    assert publication_id in [p["id"] for p in listed["results"]]


@pytest.mark.parametrize("role", ["anonymous", "outsider"])
def test_in_review_version_is_404_for_outsiders_everywhere(client_for, team, in_review, role):
    """An unpublished version is private to the authors and reviewers: every URL of it (page,
    render, downloads, report, metadata, citations, diff, the latest-version redirect and the
    API) is a 404 for anyone else, as if it did not exist."""
    publication_id = in_review.publication_id
    user = team[role]
    browser = web(user)
    urls = [f"/pub/{publication_id}/v1{suffix}" for suffix in VERSION_SUFFIXES]
    urls += [f"/pub/{publication_id}", f"/pub/{publication_id}/diff?from=1&to=1"]
    for url in urls:
        assert browser.get(url).status_code == 404, url
    api = client_for(user)
    assert api.get(f"{API}{publication_id}/").status_code == 404
    assert publication_id not in [p["id"] for p in api.get(API).json()["results"]]


@pytest.mark.parametrize("role", ["owner", "member", "viewer"])
def test_in_review_version_is_visible_to_project_members(client_for, team, in_review, role):
    """Every member of the project (the authors) reads every URL of an unpublished version (the
    render, which takes a child process, is checked for the lowest role only)."""
    make_report(in_review)
    publication_id = in_review.publication_id
    browser = web(team[role])
    for suffix in VERSION_SUFFIXES if role == "viewer" else [s for s in VERSION_SUFFIXES if s != "/render"]:
        url = f"/pub/{publication_id}/v1{suffix}"
        assert browser.get(url).status_code == 200, url
    assert browser.get(f"/pub/{publication_id}/diff?from=1&to=1").status_code == 200
    landing = browser.get(f"/pub/{publication_id}/v1").content.decode()
    assert 'id="status-banner"' in landing
    api = client_for(team[role]).get(f"{API}{publication_id}/")
    assert api.status_code == 200
    assert [(v["number"], v["status"]) for v in api.json()["versions"]] == [(1, "in_review")]


def test_invited_reviewer_sees_the_version_until_declining(team, in_review, reviewer):
    """A reviewer with a live invitation reads the unpublished version; after declining it is
    a 404 again."""
    review = services.review_invite(publication=in_review.publication, inviter=team["owner"], who="rhea")
    url = f"/pub/{in_review.publication_id}/v1"
    assert web(reviewer).get(url).status_code == 200
    services.review_respond(review=review, user=reviewer, accept=False)
    assert web(reviewer).get(url).status_code == 404


def test_latest_redirect_and_versions_list_hide_unpublished_versions(client_for, team, published):
    """With a published v1 and v2 in review: /pub/<id> sends anonymous readers to v1 and the
    authors to v2; the API lists only v1 to the public; every v2 URL is a 404 to the public and
    v1's page does not link to v2."""
    add_version(published, team["owner"])
    publication_id = published.publication_id
    anonymous, member = web(None), web(team["member"])

    assert anonymous.get(f"/pub/{publication_id}")["Location"] == f"/pub/{publication_id}/v1"
    assert member.get(f"/pub/{publication_id}")["Location"] == f"/pub/{publication_id}/v2"

    public = client_for(None).get(f"{API}{publication_id}/").json()
    assert [(v["number"], v["status"]) for v in public["versions"]] == [(1, "published")]
    authors = client_for(team["member"]).get(f"{API}{publication_id}/").json()
    assert [(v["number"], v["status"]) for v in authors["versions"]] == [(1, "published"), (2, "in_review")]

    for suffix in VERSION_SUFFIXES:
        url = f"/pub/{publication_id}/v2{suffix}"
        assert anonymous.get(url).status_code == 404, url
    assert member.get(f"/pub/{publication_id}/v2").status_code == 200
    v1_page = anonymous.get(f"/pub/{publication_id}/v1").content.decode()
    assert f"/pub/{publication_id}/v2" not in v1_page
    assert "revised" not in v1_page


# --- 5. the landing page's metadata ---------------------------------------------------------------------------
def test_published_landing_page_has_signposting_links(team, published):
    """The Link header (FAIR Signposting) gives machines the citable URL, the DataCite
    metadata, the license and the content items."""
    response = web(None).get(f"/pub/{published.publication_id}/v1")
    assert response.status_code == 200
    landing = f"http://testserver/pub/{published.publication_id}/v1"
    links = parse_links(response["Link"])
    rels: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for target, params in links:
        rels.setdefault(params["rel"], []).append((target, params))
    assert [target for target, _ in rels["cite-as"]] == [landing]
    assert (f"{landing}/datacite.json", "application/vnd.datacite.datacite+json") in [
        (target, params.get("type")) for target, params in rels["describedby"]
    ]
    assert [target for target, _ in rels["license"]] == ["https://spdx.org/licenses/CC-BY-4.0"]
    items = {target: params.get("type") for target, params in rels["item"]}
    assert items[f"{landing}/notebook.ipynb"] == "application/x-ipynb+json"
    assert f"https://orcid.org/{AUTHORS[0]['orcid']}" in [target for target, _ in rels["author"]]


def test_published_landing_page_embeds_schema_org_json_ld(team, published):
    """One JSON-LD block describes the version as schema.org SoftwareSourceCode."""
    html = web(None).get(f"/pub/{published.publication_id}/v1").content.decode()
    [block] = ld_json_blocks(html)
    data = json.loads(block)
    landing = f"http://testserver/pub/{published.publication_id}/v1"
    assert data["@context"] == "https://schema.org"
    assert data["@type"] == "SoftwareSourceCode"
    assert data["name"] == "Noise in the Analytical Engine"
    assert data["license"] == "https://spdx.org/licenses/CC-BY-4.0"
    assert data["url"] == landing
    assert data["version"] == "1"
    assert data["creator"][0] == {
        "@type": "Person",
        "name": "Ada Lovelace",
        "@id": "https://orcid.org/0000-0002-1825-0097",
    }


def test_unpublished_landing_page_has_no_link_header_nor_json_ld(team, in_review):
    """An unpublished version is not citable: no Signposting, no structured data for crawlers."""
    response = web(team["owner"]).get(f"/pub/{in_review.publication_id}/v1")
    assert response.status_code == 200
    assert "Link" not in response
    assert ld_json_blocks(response.content.decode()) == []
    assert "application/ld+json" not in response.content.decode()


def test_notebook_is_shown_in_a_sandbox(team, published):
    """The executed notebook is untrusted HTML: the page frames it with a sandbox that never
    grants allow-same-origin, and the framed document carries a sandboxing CSP itself."""
    publication_id = published.publication_id
    browser = web(None)
    html = browser.get(f"/pub/{publication_id}/v1").content.decode()
    [frame] = iframes(html)
    assert frame["src"] == f"/pub/{publication_id}/v1/render"
    assert frame.get("sandbox") is not None
    assert "allow-same-origin" not in (frame["sandbox"] or "").split()
    rendered = browser.get(f"/pub/{publication_id}/v1/render")
    assert rendered.status_code == 200
    assert rendered["Content-Security-Policy"].startswith("sandbox")
    assert "allow-same-origin" not in rendered["Content-Security-Policy"]
    assert "42" in rendered.content.decode()


# --- 6. hostile metadata ------------------------------------------------------------------------------------------
HOSTILE_TITLE = "</script><script>alert(1)</script>"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def test_hostile_title_and_author_are_escaped_on_the_landing_page(team, private_project):
    """Metadata is user input: on the landing page it is escaped in HTML, and inside the JSON-LD
    block it cannot close the script element early."""
    version = publish(
        private_project,
        team["owner"],
        submit_for_review=False,
        title=HOSTILE_TITLE,
        authors=[{"given_names": HOSTILE_NAME, "family_names": "Lovelace"}],
    )
    html = web(None).get(f"/pub/{version.publication_id}/v1").content.decode()
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    [block] = ld_json_blocks(html)
    assert "</script" not in block.lower()
    data = json.loads(block)  # the whole block, intact: it was not cut short by the title
    assert data["name"] == HOSTILE_TITLE
    assert data["creator"][0]["name"] == f"{HOSTILE_NAME} Lovelace"
    # Exactly one closing tag follows the JSON-LD: the block's own.
    start = html.index('<script type="application/ld+json">')
    assert html[start:].count("</script>") == html.count("</script>") - html[:start].count("</script>")
    assert html.count("<script") == html.count("</script>")


# --- 7. citations ---------------------------------------------------------------------------------------------------
def test_bibtex_citation(team, published):
    """cite.bib is a biblatex @software entry with the title, the authors as "Family, Given" and
    the landing URL."""
    response = web(None).get(f"/pub/{published.publication_id}/v1/cite.bib")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-bibtex")
    text = response.content.decode()
    assert text.startswith("@software{")
    assert "Noise in the Analytical Engine" in text
    assert "Lovelace, Ada and Babbage, Charles" in text
    assert f"http://testserver/pub/{published.publication_id}/v1" in text


def test_citation_cff_validates_against_the_schema(team, published):
    """CITATION.cff parses as YAML and is valid CFF 1.2.0, for version "1" of this publication."""
    response = web(None).get(f"/pub/{published.publication_id}/v1/CITATION.cff")
    assert response.status_code == 200
    data = yaml.safe_load(response.content.decode())
    validator = Draft7Validator(json.loads(CFF_SCHEMA.read_text(encoding="utf-8")), format_checker=FormatChecker())
    assert [error.message for error in validator.iter_errors(data)] == []
    assert data["version"] == "1"
    assert data["title"] == "Noise in the Analytical Engine"
    assert data["authors"][0]["orcid"] == "https://orcid.org/0000-0002-1825-0097"
    assert data["url"] == f"http://testserver/pub/{published.publication_id}/v1"
    assert data["license"] == "CC-BY-4.0"


def test_an_accepted_license_gives_a_valid_citation_cff(client_for, team, private_project):
    """Whatever license id the API accepts must give a CITATION.cff that is valid CFF 1.2.0
    (whose `license` is an SPDX list id): "Made-Up-1.0" is either refused or harmless."""
    owner = team["owner"]
    version, run = ready_version(private_project, owner)
    payload = create_payload(private_project, version, run, license="Made-Up-1.0", submit_for_review=False)
    response = client_for(owner).post(API, payload, format="json")
    if response.status_code == 400:
        assert "license" in response.json()
        return
    assert response.status_code == 201, response.json()
    cff = web(None).get(f"/pub/{response.json()['id']}/v1/CITATION.cff")
    validator = Draft7Validator(json.loads(CFF_SCHEMA.read_text(encoding="utf-8")), format_checker=FormatChecker())
    assert [error.message for error in validator.iter_errors(yaml.safe_load(cff.content.decode()))] == []


def test_apa_citation(team, published):
    """cite.txt is an APA 7 reference: "Family, I., & Family, I. (year). Title (Version n)"."""
    response = web(None).get(f"/pub/{published.publication_id}/v1/cite.txt")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert text.startswith("Lovelace, A., & Babbage, C.")
    assert "Noise in the Analytical Engine (Version 1)" in text
    assert text.rstrip().endswith(f"http://testserver/pub/{published.publication_id}/v1")


# --- 8. DataCite ------------------------------------------------------------------------------------------------------
def test_datacite_json_validates_and_names_creators_by_orcid(team, published):
    """datacite.json is valid DataCite 4.5, a ComputationalNotebook, with ORCID name identifiers."""
    response = web(None).get(f"/pub/{published.publication_id}/v1/datacite.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.datacite.datacite+json"
    data = json.loads(response.content)
    assert schema45.validate(data)
    assert data["types"]["resourceTypeGeneral"] == "ComputationalNotebook"
    assert data["url"] == f"http://testserver/pub/{published.publication_id}/v1"
    assert data["version"] == "1"
    ada = data["creators"][0]
    assert (ada["familyName"], ada["givenName"]) == ("Lovelace", "Ada")
    assert ada["nameIdentifiers"] == [
        {
            "nameIdentifier": "https://orcid.org/0000-0002-1825-0097",
            "nameIdentifierScheme": "ORCID",
            "schemeUri": "https://orcid.org",
        }
    ]
    assert "nameIdentifiers" not in data["creators"][1]
    assert data["rightsList"][0]["rightsIdentifier"] == "CC-BY-4.0"
    assert "relatedIdentifiers" not in data


def test_datacite_of_v2_is_a_new_version_of_published_v1(team, published):
    """v2's DataCite record points back at the published v1 with IsNewVersionOf."""
    second = add_version(published, team["owner"], submit_for_review=False)
    data = json.loads(web(None).get(f"/pub/{published.publication_id}/v{second.number}/datacite.json").content)
    assert schema45.validate(data)
    assert {
        "relatedIdentifier": f"http://testserver/pub/{published.publication_id}/v1",
        "relatedIdentifierType": "URL",
        "relationType": "IsNewVersionOf",
    } in data["relatedIdentifiers"]
    assert data["version"] == "2"


def test_datacite_does_not_point_at_an_unpublished_v1(team, in_review):
    """IsNewVersionOf only names a published earlier version (an unpublished one has no public
    URL to point at)."""
    add_version(in_review, team["owner"])
    data = json.loads(web(team["owner"]).get(f"/pub/{in_review.publication_id}/v2/datacite.json").content)
    assert schema45.validate(data)
    assert "relatedIdentifiers" not in data


# --- 9. the diff page -------------------------------------------------------------------------------------------------
def test_diff_shows_the_changed_lines_escaped(team, in_review):
    """/pub/<id>/diff?from=1&to=2 shows the removed and the added line of the changed cell, in
    nbdiff markup, with notebook text escaped."""
    add_version(in_review, team["owner"], source='print("<b>6 * 9</b>")')
    response = web(team["owner"]).get(f"/pub/{in_review.publication_id}/diff?from=1&to=2")
    assert response.status_code == 200
    html = response.content.decode()
    removed = re.findall(r'<del class="nbdiff-line nbdiff-removed">(.*?)</del>', html, re.DOTALL)
    added = re.findall(r'<ins class="nbdiff-line nbdiff-added">(.*?)</ins>', html, re.DOTALL)
    assert any("print(6 * 7)" in line for line in removed), removed
    assert any("print(&quot;&lt;b&gt;6 * 9&lt;/b&gt;&quot;)" in line for line in added), added
    assert "<b>6 * 9</b>" not in html
    assert "nbdiff-modified" in html


@pytest.mark.parametrize("query", ["from=abc&to=2", "from=1", "to=2", "from=1&to=9", "from=&to="])
def test_diff_with_bad_parameters_is_a_400(team, in_review, query):
    """Parameters that do not name two versions get the version picker with a 400, not a 500."""
    add_version(in_review, team["owner"])
    response = web(team["owner"]).get(f"/pub/{in_review.publication_id}/diff?{query}")
    assert response.status_code == 400
    assert "Pick two versions" in response.content.decode()


def test_diff_without_parameters_shows_the_picker(team, in_review):
    """The bare diff URL is the version picker (200)."""
    response = web(team["owner"]).get(f"/pub/{in_review.publication_id}/diff")
    assert response.status_code == 200
    assert "Pick two versions" in response.content.decode()


def test_diff_treats_versions_the_reader_cannot_see_as_missing(team, published):
    """With v2 in review, the public cannot diff against it: 400 as for a missing version, and
    nothing of v2 (its source, its number in the picker) leaks."""
    add_version(published, team["owner"], source="print('secret revision')")
    publication_id = published.publication_id
    for who in (None, team["outsider"]):
        response = web(who).get(f"/pub/{publication_id}/diff?from=1&to=2")
        assert response.status_code == 400
        html = response.content.decode()
        assert "secret revision" not in html
        assert 'value="2"' not in html
    member = web(team["member"]).get(f"/pub/{publication_id}/diff?from=1&to=2")
    assert member.status_code == 200
    assert "secret revision" in member.content.decode()


# --- 10. the publish form -----------------------------------------------------------------------------------------------
def publish_url(project: Project, path: str = "analysis.ipynb") -> str:
    return f"/p/{project.slug}/publish/{path}"


def form_data(version: NotebookVersion, run: Run, **overrides: str) -> dict[str, str]:
    data = {
        "notebook_version": str(version.pk),
        "run": str(run.pk),
        "title": "Noise in the Analytical Engine",
        "authors": "Ada | Lovelace | 0000-0002-1825-0097\nCharles | Babbage",
        "abstract": "",
        "keywords": "reproducibility, engines",
        "license": "CC-BY-4.0",
        "review_mode": "open",
    }
    data.update(overrides)
    return data


def test_publish_form_is_shown_to_members(team, private_project):
    """A member opens the publish form of a notebook."""
    ready_version(private_project, team["owner"])
    response = web(team["member"]).get(publish_url(private_project))
    assert response.status_code == 200
    assert 'id="publish-form"' in response.content.decode()


def test_publish_form_publishes_and_redirects_to_version_1(team, private_project):
    """A valid POST (authors one per line, "Given | Family | ORCID") publishes v1 at once (the
    review box unticked) and redirects to its landing page."""
    version, run = ready_version(private_project, team["owner"])
    response = web(team["member"]).post(publish_url(private_project), form_data(version, run))
    stored = PublicationVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/pub/{stored.publication_id}/v1"
    assert stored.status == VersionStatus.PUBLISHED
    assert (stored.notebook_version_id, stored.run_id) == (version.pk, run.pk)
    assert stored.authors == [
        {"given_names": "Ada", "family_names": "Lovelace", "orcid": "0000-0002-1825-0097", "affiliation": ""},
        {"given_names": "Charles", "family_names": "Babbage", "orcid": "", "affiliation": ""},
    ]
    assert stored.keywords == ["reproducibility", "engines"]


def test_publish_form_can_submit_for_review(team, private_project):
    """Ticking "submit for review" keeps v1 unpublished."""
    version, run = ready_version(private_project, team["owner"])
    response = web(team["member"]).post(publish_url(private_project), form_data(version, run, submit_for_review="on"))
    assert response.status_code == 302
    assert PublicationVersion.objects.get().status == VersionStatus.IN_REVIEW


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"license": ""}, "This field is required."),
        ({"license": "not a license!"}, "is not an SPDX license id"),
        ({"authors": "Ada | Lovelace | 0000-0002-1825-0098"}, "is not a valid ORCID iD"),
        ({"authors": "Ada |  | "}, "needs family_names"),
    ],
    ids=["missing-license", "bad-license", "bad-orcid", "no-family-name"],
)
def test_publish_form_rerenders_errors_with_400(team, private_project, overrides, message):
    """An invalid POST re-renders the form with a 400 and says what is wrong; nothing is stored."""
    version, run = ready_version(private_project, team["owner"])
    before = counts()
    response = web(team["member"]).post(publish_url(private_project), form_data(version, run, **overrides))
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="publish-form"' in html
    assert message in html
    assert counts() == before


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("outsider", 404)])
def test_publish_form_needs_the_member_role(team, private_project, role, status):
    """A viewer may not publish (403); an outsider does not see the project (404); a POST by
    either stores nothing."""
    version, run = ready_version(private_project, team["owner"])
    browser = web(team[role])
    assert browser.get(publish_url(private_project)).status_code == status
    before = counts()
    assert browser.post(publish_url(private_project), form_data(version, run)).status_code == status
    assert counts() == before


def test_publish_form_asks_anonymous_visitors_to_log_in(private_project):
    response = web(None).get(publish_url(private_project))
    assert response.status_code == 302
    assert "/login" in response["Location"]


def test_publish_form_with_a_non_numeric_publication_is_not_a_server_error(team, published):
    """?publication= is user input: a non-number is a client error, not a 500."""
    browser = web(team["owner"])
    browser.raise_request_exception = False
    response = browser.get(f"{publish_url(published.publication.project)}?publication=abc")
    assert response.status_code in (400, 404)


def test_publish_form_new_version_of_an_existing_publication(team, published):
    """With ?publication=N the form adds the next version to that publication."""
    owner = team["owner"]
    notebook_version, run = revise(published.notebook_version, owner, source="print(6 * 9)")
    url = f"{publish_url(published.publication.project)}?publication={published.publication_id}"
    form = form_data(notebook_version, run, title="Revised")
    del form["review_mode"]
    response = web(owner).post(url, form)
    assert response.status_code == 302
    assert response["Location"] == f"/pub/{published.publication_id}/v2"
    assert Publication.objects.count() == 1
    assert PublicationVersion.objects.get(number=2).title == "Revised"
    assert PublicationVersion.objects.get(number=1).title == "Noise in the Analytical Engine"


def test_a_versions_related_datasets_cannot_change_after_it_is_created(published, private_project, team):
    """The related datasets are part of the citable record, like the title."""
    from apps.projects import services as projects

    dataset = projects.dataset_create(project=private_project, name="extra", creator=team["owner"])
    stream = io.BytesIO(b"a,b\n")
    stream.name = "x.csv"
    version, _ = projects.dataset_add_files(
        dataset=dataset, files=[projects.IncomingFile(path="x.csv", content=stream)], uploader=team["owner"]
    )
    with pytest.raises(ImmutableVersion), transaction.atomic():
        published.datasets.add(version)
    with pytest.raises(ImmutableVersion), transaction.atomic():
        version.publication_versions.add(published)
    with pytest.raises(ImmutableVersion), transaction.atomic():
        published.datasets.clear()
    assert list(published.datasets.all()) == []
