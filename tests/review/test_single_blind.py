"""Single-blind review leaks no reviewer identity to the authors, through any endpoint or page.

A reviewer with a distinctive username ("zelda-secret-reviewer"), e-mail address and node
("zelda-secret-node", whose agent reported the host "zelda-secret-laptop") is invited, accepts,
comments on a cell, takes part in the thread, reruns the notebook on that node (the rerun is
claimed, run and settled for real, with an environment snapshot naming the reviewer's home
directory), submits, and the editor decides. Then every surface of the site that could mention
the review -- each URL of the project is either listed in SURFACES / POST_PROBES below or
explained in NOT_REVIEW_SURFACES, and a test keeps that list complete -- is fetched as each
author role that is not an editor (member, viewer), and as outsiders, and none may contain
"zelda" or the reviewer's address. Authors see "Reviewer 1" instead. The editors (owner,
maintainer) and the reviewer do see the name, and in open mode so do the authors: the masking
is by role and mode, not a blanket removal.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.core import mail
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services as compute
from apps.compute.consumers import RunEventsConsumer
from apps.compute.models import Run
from apps.compute.selectors import runs_visible_to
from apps.projects.models import Project
from apps.reproducibility import services as reproducibility
from apps.reproducibility.diff import fingerprint
from apps.reproducibility.models import EnvironmentSnapshot, Reproduction
from apps.reproducibility.tasks import build_run_report
from apps.review import services
from apps.review.models import Notification, PublicationVersion, Review, ReviewComment
from apps.review.tasks import send_notification_emails, send_reviewer_invitation
from tests.factories import make_user
from tests.review.conftest import publish
from tests.review.test_reviews import last_code_cell, run_reruns

SECRET = "zelda"  # in the reviewer's username, node name and host name: must never reach an author
REVIEWER_NAME = "zelda-secret-reviewer"
REVIEWER_EMAIL = "hidden.referee@uni.example"  # no "zelda" in it: checked on its own
NODE_NAME = "zelda-secret-node"
ALIAS = "Reviewer 1"
AUTHOR_ROLES = ("member", "viewer")  # authors who are not editors
EDITOR_ROLES = ("owner", "maintainer")


def environment(*, home: str, python: str, numpy: str, system: str = "Linux") -> dict[str, Any]:
    """An environment snapshot shaped as the agent captures it."""
    return {
        "python": {"version": python, "implementation": "CPython", "executable": f"{home}/.venv/bin/python3"},
        "packages": {"numpy": numpy, "papermill": "2.6.0"},
        "os": {"system": system, "release": "6.8.0", "version": "#1 SMP", "machine": "x86_64", "libc": "glibc 2.39"},
        "cpu": {"model": "AMD EPYC 9654", "count": 8, "count_total": 16},
        "memory_mb": 65536,
        "gpus": [],
        "cuda": {},
        "kernel": {"name": "python3", "argv": [f"{home}/.venv/bin/python3", "-m", "ipykernel_launcher"]},
        "env": {"LANG": "C.UTF-8"},
        "inputs": [{"role": "notebook", "path": "analysis.ipynb", "sha256": "0" * 64, "size": 1}],
        "agent_version": "0.4.0",
    }


AUTHORS_ENVIRONMENT = environment(home="/home/olivia", python="3.11.9", numpy="1.26.4")
REVIEWERS_ENVIRONMENT = environment(home=f"/home/{REVIEWER_NAME}", python="3.12.3", numpy="2.0.0", system="FreeBSD")
# The reviewer's machine as its snapshot describes it. Its OS (and CPU) never reach the authors:
# the README promises it, the evidence withholds it. Outsiders see nothing of the reruns at all,
# not even the Python version the authors' evidence shows (their badge once said "Python 3.12.3,
# FreeBSD, CPU only").
MACHINE_HIDDEN_FROM_AUTHORS = ("freebsd",)
MACHINE_HIDDEN_FROM_OUTSIDERS = ("freebsd", "3.12.3")
REVIEWERS_NODE_CAPABILITIES = {"hostname": "zelda-secret-laptop", "cpu_count": 8, "python_version": "3.12.3"}


@dataclass
class Reviewed:
    """The ids of everything the single-blind review produced."""

    version: PublicationVersion
    review: Review
    reviewer: User
    reproduction: Reproduction
    reruns: list[Run]
    root_comment: ReviewComment
    project: Project

    def ids(self) -> dict[str, Any]:
        notebook = self.version.notebook_version.notebook
        return {
            "pub": self.version.publication_id,
            "review": self.review.pk,
            "comment": self.root_comment.pk,
            "run": self.version.run_id,
            "rerun": self.reruns[0].pk,
            "rerun2": self.reruns[1].pk,
            "repro": self.reproduction.pk,
            "slug": self.project.slug,
            "notebook": notebook.pk,
            "path": notebook.path,
            "nbversion": self.version.notebook_version_id,
        }


def review_it(version: PublicationVersion, team: dict[str, Any], client_for: Any) -> Reviewed:
    """The whole review, through the API as each person would do it."""
    owner = team["owner"]
    reviewer = make_user(REVIEWER_NAME)
    reviewer.email = REVIEWER_EMAIL
    reviewer.save(update_fields=["email"])
    # The authors' run ran somewhere too: its environment is theirs to see.
    EnvironmentSnapshot.objects.create(
        run=version.run, attempt=1, data=AUTHORS_ENVIRONMENT, fingerprint=fingerprint(AUTHORS_ENVIRONMENT)
    )
    publication_id = version.publication_id
    editor, as_reviewer, member = client_for(owner), client_for(reviewer), client_for(team["member"])

    # Invited by address: the e-mailed one-time link, opened signed in, makes them the reviewer.
    invited = editor.post(f"/api/v1/publications/{publication_id}/reviewers/", {"reviewer": REVIEWER_EMAIL})
    assert invited.status_code == 201, invited.json()
    review = Review.objects.get(pk=invited.json()["id"])
    send_reviewer_invitation(review.pk)  # what the Celery worker does once the invitation commits
    [letter] = [m for m in mail.outbox if m.to == [REVIEWER_EMAIL]]
    link = re.search(r"http\S+/reviews/invitation/rli_\S+/", str(letter.body))
    assert link is not None, letter.body
    browser = Client()
    browser.force_login(reviewer)
    assert browser.post(urlsplit(link.group(0)).path, {"action": "accept"}).status_code == 302
    review.refresh_from_db()
    assert (review.reviewer, review.state) == (reviewer, "accepted")

    cell = last_code_cell(version)
    comments = f"/api/v1/reviews/{review.pk}/comments/"
    root = as_reviewer.post(
        comments, {"body": "Why 42?", "cell_id": cell.cell_id, "line_start": 1, "line_end": 1}, format="json"
    )
    assert root.status_code == 201, root.json()
    root_id = root.json()["id"]
    assert member.post(comments, {"body": "It is the answer.", "parent": root_id}, format="json").status_code == 201
    assert as_reviewer.post(comments, {"body": "Cite it.", "parent": root_id}, format="json").status_code == 201
    assert as_reviewer.post(comments, {"body": "Overall sound."}, format="json").status_code == 201

    started = as_reviewer.post(f"/api/v1/reviews/{review.pk}/rerun/", {"rtol": 1e-6, "repeats": 2}, format="json")
    assert started.status_code == 201, started.json()
    reproduction = Reproduction.objects.get(pk=started.json()["id"])
    node = compute.node_register(owner=reviewer, name=NODE_NAME).node
    compute.node_seen(node=node, capabilities=REVIEWERS_NODE_CAPABILITIES)  # as the agent's hello does
    settled = run_reruns(reproduction, node, environment=REVIEWERS_ENVIRONMENT)
    assert settled.verdict == "reproduced"
    reruns = list(reproduction.reruns.order_by("pk"))
    blind = version.publication.review_mode == "single_blind"
    assert all(r.creator_hidden == blind and r.created_by == reviewer and r.node == node for r in reruns)

    submitted = as_reviewer.post(
        f"/api/v1/reviews/{review.pk}/submit/",
        {"recommendation": "accept", "summary": "Reproduced on my machine."},
        format="json",
    )
    assert submitted.status_code == 200, submitted.json()
    decided = editor.post(
        f"/api/v1/publications/{publication_id}/versions/1/decision/",
        {"decision": "accept", "note": "Thanks to the reviewer."},
        format="json",
    )
    assert decided.status_code == 200, decided.json()
    # The reports the report pages show (built by Celery when a run ends).
    for run_id in (version.run_id, *(r.pk for r in reruns)):
        assert build_run_report(run_id)
    version.refresh_from_db()
    return Reviewed(
        version=version,
        review=review,
        reviewer=reviewer,
        reproduction=reproduction,
        reruns=reruns,
        root_comment=ReviewComment.objects.get(pk=root_id),
        project=version.publication.project,
    )


@pytest.fixture
def reviewed(blind, team, client_for) -> Reviewed:
    return review_it(blind, team, client_for)


# --- the surfaces -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surface:
    name: str  # the URL name, as config/urls.py and the apps' urls.py / api_urls.py give it
    url: str  # with {pub}, {review}, {run}, {rerun}, ... from Reviewed.ids()
    author_status: int  # what a member or viewer gets
    api: bool  # True: REST API with a Bearer token; False: a page with a session

    def path(self, ids: dict[str, Any]) -> str:
        return self.url.format(**ids)


def api(name: str, url: str, status: int = 200) -> Surface:
    return Surface(name, url, status, api=True)


def page(name: str, url: str, status: int = 200) -> Surface:
    return Surface(name, url, status, api=False)


HIDDEN_RUNS = ("{rerun}", "{rerun2}")

SURFACES: list[Surface] = [
    # review API
    api("api-publications", "/api/v1/publications/"),
    api("api-publication", "/api/v1/publications/{pub}/"),
    api("api-reviews", "/api/v1/reviews/"),
    api("api-review", "/api/v1/reviews/{review}/"),
    api("api-review-comments", "/api/v1/reviews/{review}/comments/"),
    api("api-review-comments", "/api/v1/reviews/{review}/comments/?version=1"),
    api("api-notifications", "/api/v1/notifications/"),
    # runs: the published run is the authors'; the reviewer's reruns do not exist for them
    api("api-run-list", "/api/v1/runs/"),
    api("api-run-list", "/api/v1/runs/?project__slug={slug}"),
    api("api-run-detail", "/api/v1/runs/{run}/"),
    api("api-run-events", "/api/v1/runs/{run}/events/"),
    api("api-run-artifacts", "/api/v1/runs/{run}/artifacts/"),
    api("api-run-output", "/api/v1/runs/{run}/output/"),
    api("api-run-crate", "/api/v1/runs/{run}/crate.zip"),
    api("api-run-lineage", "/api/v1/runs/{run}/lineage/"),
    api("api-run-lineage", "/api/v1/runs/{run}/lineage/?as=prov"),
    api("api-run-environment", "/api/v1/runs/{run}/environment/"),
    api("api-run-environment-diff", "/api/v1/runs/{run}/environment/diff/?against={rerun}", 404),
    *[
        surface
        for rerun in HIDDEN_RUNS
        for surface in (
            api("api-run-detail", f"/api/v1/runs/{rerun}/", 404),
            api("api-run-events", f"/api/v1/runs/{rerun}/events/", 404),
            api("api-run-artifacts", f"/api/v1/runs/{rerun}/artifacts/", 404),
            api("api-run-artifact", f"/api/v1/runs/{rerun}/artifact/?path=out.npy", 404),
            api("api-run-output", f"/api/v1/runs/{rerun}/output/", 404),
            api("api-run-crate", f"/api/v1/runs/{rerun}/crate.zip", 404),
            api("api-run-lineage", f"/api/v1/runs/{rerun}/lineage/", 404),
            api("api-run-lineage", f"/api/v1/runs/{rerun}/lineage/?as=prov", 404),
            api("api-run-environment", f"/api/v1/runs/{rerun}/environment/", 404),
            api("api-run-environment-diff", f"/api/v1/runs/{rerun}/environment/diff/?against={{run}}", 404),
        )
    ],
    api("api-reproduction", "/api/v1/reproductions/{repro}/", 404),
    api("api-metrics", "/api/v1/metrics/"),
    api("api-node-list", "/api/v1/nodes/"),
    # the project the publication comes from
    api("api-project-list", "/api/v1/projects/"),
    api("api-project-detail", "/api/v1/projects/{slug}/"),
    api("api-member-list", "/api/v1/projects/{slug}/members/"),
    api("api-notebook-list", "/api/v1/projects/{slug}/notebooks/"),
    api("api-notebook-detail", "/api/v1/projects/{slug}/notebooks/{notebook}/"),
    api("api-notebook-versions", "/api/v1/projects/{slug}/notebooks/{notebook}/versions/"),
    api("api-notebook-version-detail", "/api/v1/projects/{slug}/notebooks/{notebook}/versions/1/"),
    api("api-notebook-version-datacite", "/api/v1/projects/{slug}/notebooks/{notebook}/versions/1/datacite/"),
    api("api-notebook-version-download", "/api/v1/projects/{slug}/notebooks/{notebook}/versions/1/download/"),
    api("api-dataset-list", "/api/v1/projects/{slug}/datasets/"),
    # publication pages
    page("review:latest", "/pub/{pub}", 302),
    page("review:landing", "/pub/{pub}/v1"),
    page("review:render", "/pub/{pub}/v1/render"),
    page("review:notebook", "/pub/{pub}/v1/notebook.ipynb"),
    page("review:crate", "/pub/{pub}/v1/crate.zip"),
    page("review:report", "/pub/{pub}/v1/report"),
    page("review:datacite", "/pub/{pub}/v1/datacite.json"),
    page("review:bibtex", "/pub/{pub}/v1/cite.bib"),
    page("review:cff", "/pub/{pub}/v1/CITATION.cff"),
    page("review:apa", "/pub/{pub}/v1/cite.txt"),
    page("review:diff", "/pub/{pub}/diff"),
    page("review:my-reviews", "/reviews/"),
    page("review:review", "/reviews/{review}/"),
    page("review:notifications", "/notifications/"),
    # run pages
    page("compute:runs", "/runs/"),
    page("compute:runs", "/runs/?project={slug}"),
    page("compute:run", "/runs/{run}/"),
    page("compute:run-render", "/runs/{run}/render/"),
    page("compute:nodes", "/nodes/"),
    page("reproducibility:environment", "/runs/{run}/environment/"),
    page("reproducibility:environment-diff", "/runs/{run}/environment/diff/?against={rerun}", 404),
    page("reproducibility:report", "/runs/{run}/report/"),
    page("reproducibility:lineage-svg", "/runs/{run}/lineage.svg"),
    *[
        surface
        for rerun in HIDDEN_RUNS
        for surface in (
            page("compute:run", f"/runs/{rerun}/", 404),
            page("compute:run-render", f"/runs/{rerun}/render/", 404),
            page("reproducibility:environment", f"/runs/{rerun}/environment/", 404),
            page("reproducibility:environment-diff", f"/runs/{rerun}/environment/diff/?against={{run}}", 404),
            page("reproducibility:report", f"/runs/{rerun}/report/", 404),
            page("reproducibility:lineage-svg", f"/runs/{rerun}/lineage.svg", 404),
        )
    ],
    page("reproducibility:reproduction", "/reproductions/{repro}/", 404),
    # project pages
    page("projects:list", "/"),
    page("projects:detail", "/p/{slug}/"),
    page("projects:notebook", "/p/{slug}/notebooks/{path}"),
    page("projects:notebook-render", "/p/{slug}/-/render/{nbversion}/"),
    page("projects:notebook-download", "/p/{slug}/-/download/{nbversion}/"),
    page("accounts:tokens", "/accounts/tokens/"),
    # Prometheus: site-wide node names; outside the embedded mode, staff and scrapers only
    page("metrics", "/metrics", 404),
]


@dataclass(frozen=True)
class Probe:
    """A POST an author might send about the review or its reruns."""

    name: str
    url: str
    author_status: int
    api: bool
    data: dict[str, Any]
    viewer_status: int | None = None  # when a viewer (read-only author) is answered otherwise


POST_PROBES: list[Probe] = [
    *[
        probe
        for rerun in HIDDEN_RUNS
        for probe in (
            Probe("api-run-cancel", f"/api/v1/runs/{rerun}/cancel/", 404, True, {}),
            Probe("api-run-reproduce", f"/api/v1/runs/{rerun}/reproduce/", 404, True, {}),
            Probe("compute:run-cancel", f"/runs/{rerun}/cancel/", 404, False, {}),
            Probe("reproducibility:reproduce", f"/runs/{rerun}/reproduce/", 404, False, {}),
        )
    ],
    Probe("api-review-comment-action", "/api/v1/reviews/{review}/comments/{comment}/resolve/", 200, True, {}, 403),
    Probe("api-review-comment-action", "/api/v1/reviews/{review}/comments/{comment}/reopen/", 200, True, {}, 403),
    Probe(
        "api-review-comments",
        "/api/v1/reviews/{review}/comments/",
        201,
        True,
        {"body": "Done.", "parent": "{comment}"},
        403,
    ),
    Probe("api-review-action", "/api/v1/reviews/{review}/rerun/", 403, True, {}),
    Probe(
        "api-review-action", "/api/v1/reviews/{review}/submit/", 403, True, {"recommendation": "accept", "summary": "x"}
    ),
    Probe("api-review-action", "/api/v1/reviews/{review}/accept/", 403, True, {}),
    Probe(
        "api-publication-decision", "/api/v1/publications/{pub}/versions/1/decision/", 403, True, {"decision": "reject"}
    ),
    Probe(
        "review:review",
        "/reviews/{review}/",
        302,
        False,
        {"action": "reply", "parent": "{comment}", "body": "Ok."},
        403,
    ),
    Probe("review:decide", "/pub/{pub}/v1/decision", 403, False, {"decision": "reject"}),
]

# Every other URL of the site, and why it cannot mention a review or its reviewer.
NOT_REVIEW_SURFACES: dict[str, str] = {
    "healthz": "a liveness probe: 'ok'",
    "api-course-list": "courses: no review in them; their only runs grade submissions (created by nobody)",
    "courses:list": "courses",
    "courses:join": "courses",
    "courses:join-page": "courses",
    "courses:detail": "courses",
    "courses:assignment": "courses",
    "api-course-join": "courses",
    "api-course-detail": "courses",
    "api-course-members": "courses",
    "api-course-member-detail": "courses",
    "api-course-roster": "courses",
    "api-course-invites": "courses",
    "api-course-invite-detail": "courses",
    "api-course-assignments": "courses",
    "api-course-assignment-detail": "courses",
    "api-course-assignment-release": "courses",
    "api-course-extensions": "courses",
    "api-course-submissions": "courses",
    "api-course-submission-detail": "courses",
    "api-course-submission-feedback": "courses",
    "api-course-submission-regrade": "courses",
    "api-course-cell-grade": "courses",
    "api-course-gradebook": "courses",
    "api-course-grades-release": "courses",
    "api-course-grading-queue": "courses",
    "api-course-regrade-answer": "courses",
    "api-course-regrade-ask": "courses",
    "api-course-regrades": "courses",
    "courses:cell-grade": "courses",
    "courses:gradebook": "courses",
    "courses:grading-queue": "courses",
    "courses:release": "courses",
    "courses:submission": "courses",
    "courses:submission-feedback": "courses",
    "courses:submission-regrade": "courses",
    "courses:submit": "courses",
    "api-project-environment": "the project's declared packages: no run, node or reviewer in it",
    "projects:environment": "declaring the project's environment (a POST for its editors)",
    "api-schema": "the OpenAPI schema: no data",
    "api-docs": "Swagger UI: no data",
    "api-token-obtain": "exchanges one's own password for a token",
    "api-token-list": "one's own API tokens",
    "api-token-detail": "one's own API token",
    "api-member-detail": "a project member (reviewers are never members)",
    "api-dataset-detail": "datasets: the project has none, and reviews never touch them",
    "api-dataset-versions": "datasets",
    "api-dataset-version-detail": "datasets",
    "api-dataset-file-download": "datasets",
    "api-node-detail": "someone's own node: 404 to anyone else",
    "api-node-rotate-token": "someone's own node",
    "agent-hello": "node-token protocol: only the node's agent",
    "agent-claim": "node-token protocol",
    "agent-run-notebook": "run-token protocol: only the agent holding the lease",
    "agent-run-file": "run-token protocol",
    "agent-run-heartbeat": "run-token protocol",
    "agent-run-events": "run-token protocol",
    "agent-run-output": "run-token protocol",
    "agent-run-artifact": "run-token protocol",
    "agent-run-complete": "run-token protocol",
    "agent-run-release": "run-token protocol",
    "agent-run-environment": "run-token protocol",
    "agent-index": "the agent wheel's index",
    "agent-wheel": "the agent wheel",
    "api-publication-versions": "POST only: adds a version (answers with the version, no reviews)",
    "api-publication-invite": "POST only: see test_authors_cannot_probe_who_reviews_by_inviting",
    "accounts:login": "login form",
    "accounts:logout": "logout",
    "accounts:signup": "signup form",
    "accounts:token-revoke": "POST only: revokes one's own token",
    "compute:node-create": "registers one's own node",
    "compute:node": "someone's own node page: 404 to anyone else",
    "compute:node-rotate-token": "someone's own node",
    "compute:node-revoke": "someone's own node",
    "compute:run-submit": "POST only: submits one's own run",
    "review:invite": "POST only: the form behind api-publication-invite (redirects)",
    "review:publish": "the publish form: notebook versions and runs of the project",
    "review:invitation": "an e-mail invitation's link: needs its secret token, shows only the title",
    "projects:create": "the new-project form",
    "projects:notebook-upload": "POST only: uploads a notebook",
    "projects:dataset-create": "POST only: creates a dataset",
    "projects:member-add": "POST only: manages members",
    "projects:member-remove": "POST only: manages members",
    "projects:dataset": "datasets: the project has none",
    "projects:dataset-file": "datasets",
}


def _url_names(patterns: list[Any], namespace: str | None = None) -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.app_name == "admin":
                continue
            names |= _url_names(pattern.url_patterns, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)
    return names


def test_every_url_of_the_site_is_checked_or_explained():
    """The sweep covers the whole site: each URL name is fetched below or explained in
    NOT_REVIEW_SURFACES, so a new endpoint cannot slip past the single-blind check."""
    covered = {s.name for s in SURFACES} | {p.name for p in POST_PROBES}
    names = _url_names(get_resolver().url_patterns)
    assert sorted(names - covered - NOT_REVIEW_SURFACES.keys()) == []
    assert sorted((covered | NOT_REVIEW_SURFACES.keys()) - names) == []
    assert not covered & NOT_REVIEW_SURFACES.keys()


def test_surface_urls_resolve_to_their_names():
    """Each listed URL is the endpoint it is named after (no typo silently hits another)."""
    ids: dict[str, Any] = {"slug": "lab", "path": "analysis.ipynb"}
    ids |= {key: 1 for key in ("pub", "review", "comment", "run", "rerun", "rerun2", "repro", "notebook", "nbversion")}
    items: list[Surface | Probe] = [*SURFACES, *POST_PROBES]
    for item in items:
        path = item.url.format(**ids).split("?")[0]
        match = resolve(path)
        assert match.view_name == item.name, (item.url, match.view_name)


# --- fetching -----------------------------------------------------------------------------------------
def text_of(response: Any) -> str:
    """The whole response as text; a zip (RO-Crate) as the text of all its members."""
    data = b"".join(response.streaming_content) if response.streaming else response.content
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "\n".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist())
    return str(data.decode("utf-8", "replace"))


def assert_anonymous(text: str, where: str) -> None:
    lowered = text.lower()
    assert SECRET not in lowered, f"{where} names the single-blind reviewer: {_around(lowered, SECRET)}"
    assert REVIEWER_EMAIL not in lowered, f"{where} gives the reviewer's address: {_around(lowered, REVIEWER_EMAIL)}"


def machine_leaks(text: str, markers: tuple[str, ...]) -> list[str]:
    """What the text tells of the reviewer's machine (their snapshot's facts), with context."""
    lowered = text.lower()
    return [f"{marker!r} …{_around(lowered, marker)}…" for marker in markers if marker in lowered]


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return " ".join(text[max(at - 150, 0) : at + 150].split())


def clients(user: User | None, client_for: Any) -> tuple[APIClient, Client]:
    page_client = Client()
    if user is not None:
        page_client.force_login(user)
    return client_for(user), page_client


def fetch(surface: Surface, ids: dict[str, Any], api_client: APIClient, page_client: Client) -> tuple[int, str]:
    client: Any = api_client if surface.api else page_client
    response = client.get(surface.path(ids))
    return response.status_code, text_of(response)


@pytest.fixture
def production_metrics(settings):
    """Prometheus metrics as outside the embedded mode (the test settings allow the demo)."""
    settings.REPROLAB_DEMO_ALLOWED = False
    settings.DEBUG = False


# --- authors see "Reviewer 1" and nothing more -------------------------------------------------------------
@pytest.mark.parametrize("role", AUTHOR_ROLES)
def test_authors_never_see_the_reviewer_on_any_surface(reviewed, team, client_for, role, production_metrics):
    """As a member or a viewer of the project, every GET surface answers as expected and none
    names the reviewer, their address, their node or their host."""
    ids = reviewed.ids()
    api_client, page_client = clients(team[role], client_for)
    failures = []
    for surface in SURFACES:
        status, text = fetch(surface, ids, api_client, page_client)
        where = f"{surface.name} {surface.path(ids)} as {role}"
        if status != surface.author_status:
            failures.append(f"{where}: status {status}, expected {surface.author_status}")
        lowered = text.lower()
        if SECRET in lowered or REVIEWER_EMAIL in lowered:
            failures.append(f"{where}: LEAK …{_around(lowered, SECRET if SECRET in lowered else REVIEWER_EMAIL)}…")
        failures += [
            f"{where}: the reviewer's machine: {leak}" for leak in machine_leaks(text, MACHINE_HIDDEN_FROM_AUTHORS)
        ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", AUTHOR_ROLES)
def test_authors_see_reviewer_1_instead(reviewed, team, client_for, role):
    """Where the reviewer appears to an author, it is as "Reviewer 1": review, comments (the
    reviewer's, not the authors' own), the landing page, the review desk, notifications."""
    ids = reviewed.ids()
    api_client, page_client = clients(team[role], client_for)
    assert api_client.get(f"/api/v1/reviews/{ids['review']}/").json()["reviewer"] == ALIAS
    assert [r["reviewer"] for r in api_client.get("/api/v1/reviews/").json()] == [ALIAS]
    authors = [
        (c["body"], c["author"])
        for c in api_client.get(f"/api/v1/reviews/{ids['review']}/comments/").json()["comments"]
    ]
    assert authors == [
        ("Why 42?", ALIAS),
        ("It is the answer.", "mo"),
        ("Cite it.", ALIAS),
        ("Overall sound.", ALIAS),
    ]
    review = api_client.get(f"/api/v1/reviews/{ids['review']}/").json()
    assert [r["verdict"] for r in review["reruns"]] == ["reproduced"]
    assert review["reruns"][0]["environment_changes"]["packages"]["changed"] == {"numpy": ["1.26.4", "2.0.0"]}
    landing = page_client.get(f"/pub/{ids['pub']}/v1").content.decode()
    assert ALIAS in landing
    assert "Reproduced" in landing
    assert f"Review by {ALIAS}" in page_client.get(f"/reviews/{ids['review']}/").content.decode()
    messages = [n["message"] for n in api_client.get("/api/v1/notifications/").json()]
    assert f"{ALIAS} submitted a review: accept." in messages
    assert f"The rerun requested by {ALIAS} settled: reproduced." in messages
    assert ALIAS in page_client.get("/notifications/").content.decode()
    if role == "member":
        assert f"{ALIAS} replied in a review thread." in messages


@pytest.mark.parametrize("role", AUTHOR_ROLES)
def test_hidden_reruns_stay_out_of_listings_and_live_events(reviewed, team, client_for, role, monkeypatch):
    """The reviewer's reruns are absent from run listings (also when filtering by the node's
    name), and the live-event socket (ws/runs/<id>/) for them is refused like one for a
    missing run."""
    # The consumer's database calls close "old" connections, which would close the test's.
    monkeypatch.setattr("channels.db.close_old_connections", lambda: None)
    ids = reviewed.ids()
    user = team[role]
    api_client, page_client = clients(user, client_for)
    hidden = {ids["rerun"], ids["rerun2"]}
    listed = {r["id"] for r in api_client.get("/api/v1/runs/?page_size=200").json()["results"]}
    assert ids["run"] in listed
    assert not listed & hidden
    assert api_client.get(f"/api/v1/runs/?node__name={NODE_NAME}").json()["results"] == []
    runs_page = page_client.get("/runs/").content.decode()
    assert f'data-run="{ids["run"]}"' in runs_page
    assert not any(f'data-run="{run_id}"' in runs_page for run_id in hidden)

    def socket_group(run_id: int) -> str | None:
        consumer = RunEventsConsumer()
        consumer.scope = {"user": user, "url_route": {"kwargs": {"run_id": run_id}}}
        group: str | None = async_to_sync(consumer.group_for_requester)()
        return group

    assert socket_group(ids["run"]) == f"run.{ids['run']}"
    assert all(socket_group(run_id) is None for run_id in hidden)
    assert not runs_visible_to(user).filter(pk__in=hidden).exists()


@pytest.mark.parametrize("role", AUTHOR_ROLES)
def test_author_actions_answer_without_naming_the_reviewer(reviewed, team, client_for, role):
    """What an author may POST about the review or its reruns (cancel or reproduce a rerun,
    resolve a thread, reply, try reviewer or editor actions) answers as expected and never
    names the reviewer."""
    ids = reviewed.ids()
    api_client, page_client = clients(team[role], client_for)
    failures = []
    for probe in POST_PROBES:
        url = probe.url.format(**ids)
        data = {k: (v.format(**ids) if isinstance(v, str) else v) for k, v in probe.data.items()}
        response = api_client.post(url, data, format="json") if probe.api else page_client.post(url, data)
        text = text_of(response)
        where = f"POST {probe.name} {url} as {role}"
        expected = probe.viewer_status if role == "viewer" and probe.viewer_status else probe.author_status
        if response.status_code != expected:
            failures.append(f"{where}: status {response.status_code}, expected {expected}")
        lowered = text.lower()
        if SECRET in lowered or REVIEWER_EMAIL in lowered:
            failures.append(f"{where}: LEAK …{_around(lowered, SECRET if SECRET in lowered else REVIEWER_EMAIL)}…")
    assert not failures, "\n".join(failures)
    # Nothing the probes did touched the reruns.
    assert set(Run.objects.filter(pk__in=[ids["rerun"], ids["rerun2"]]).values_list("state", flat=True)) == {
        "succeeded"
    }
    assert Reproduction.objects.count() == 1


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_outsiders_never_see_the_reviewer_either(reviewed, team, client_for, who, production_metrics):
    """The publication is public once accepted: outsiders and anonymous visitors read it, and
    nothing they can reach names the reviewer (review surfaces are 404 or a login to them)."""
    ids = reviewed.ids()
    api_client, page_client = clients(team[who], client_for)
    assert page_client.get(f"/pub/{ids['pub']}/v1").status_code == 200
    leaks = []
    for surface in SURFACES:
        status, text = fetch(surface, ids, api_client, page_client)
        assert_anonymous(text, f"{surface.name} {surface.path(ids)} as {who} ({status})")
        leaks += [f"{surface.path(ids)}: {leak}" for leak in machine_leaks(text, MACHINE_HIDDEN_FROM_OUTSIDERS)]
    assert not leaks, "the reviewer's machine, shown to an outsider:\n" + "\n".join(leaks)
    assert api_client.get(f"/api/v1/reviews/{ids['review']}/").status_code in (401, 403, 404)


def test_emails_to_authors_never_name_the_reviewer(reviewed, team, mailoutbox):
    """Every notification e-mail sent to an author masks the reviewer; the editors' e-mails
    name them (the same notifications, written for each recipient)."""
    invitations = len(mailoutbox)  # the reviewer's invitation, sent before
    sent = send_notification_emails(list(Notification.objects.values_list("pk", flat=True)))
    assert sent == len(mailoutbox) - invitations > 0
    by_recipient: dict[str, list[str]] = {}
    for message in mailoutbox:
        [to] = message.to
        by_recipient.setdefault(to, []).append(f"{message.subject}\n{message.body}")
    for role in AUTHOR_ROLES:
        texts = by_recipient[team[role].email]
        for text in texts:
            assert_anonymous(text, f"an e-mail to the {role}")
        assert any(f"{ALIAS} submitted a review" in text for text in texts)
    for role in EDITOR_ROLES:
        assert any(REVIEWER_NAME in text for text in by_recipient[team[role].email]), role


# --- but the masking is by role and mode -------------------------------------------------------------------
@pytest.mark.parametrize("role", EDITOR_ROLES)
def test_editors_see_who_reviewed(reviewed, team, client_for, role):
    """Editors (owner, maintainer) know the reviewer: review, comments, pages, the reruns with
    their node, the reproduction, and their notifications."""
    ids = reviewed.ids()
    api_client, page_client = clients(team[role], client_for)
    assert api_client.get(f"/api/v1/reviews/{ids['review']}/").json()["reviewer"] == REVIEWER_NAME
    comments = api_client.get(f"/api/v1/reviews/{ids['review']}/comments/").json()["comments"]
    assert comments[0]["author"] == REVIEWER_NAME
    assert REVIEWER_NAME in page_client.get(f"/pub/{ids['pub']}/v1").content.decode()
    assert f"Review by {REVIEWER_NAME}" in page_client.get(f"/reviews/{ids['review']}/").content.decode()
    rerun = api_client.get(f"/api/v1/runs/{ids['rerun']}/")
    assert rerun.status_code == 200
    assert (rerun.json()["created_by"], rerun.json()["node"]) == (REVIEWER_NAME, NODE_NAME)
    reproduction = api_client.get(f"/api/v1/reproductions/{ids['repro']}/")
    assert reproduction.status_code == 200
    assert {r["node"] for r in reproduction.json()["reruns"]} == {NODE_NAME}
    assert NODE_NAME in page_client.get(f"/runs/{ids['rerun']}/").content.decode()
    messages = [n["message"] for n in api_client.get("/api/v1/notifications/").json()]
    assert f"{REVIEWER_NAME} submitted a review: accept." in messages


def test_the_reviewer_sees_their_own_name_and_reruns(reviewed, client_for):
    """The reviewer is not masked from themself: their review, comments and reruns (with the
    whole evidence). The runs themselves belong to the private project, which the reviewer is
    not a member of: the review is where they see them."""
    ids = reviewed.ids()
    api_client = client_for(reviewed.reviewer)
    review = api_client.get(f"/api/v1/reviews/{ids['review']}/").json()
    assert review["reviewer"] == REVIEWER_NAME
    assert review["reruns"]
    assert "withheld" not in review["reruns"][0]
    assert api_client.get(f"/api/v1/reviews/{ids['review']}/comments/").json()["comments"][0]["author"] == REVIEWER_NAME
    assert api_client.get(f"/api/v1/runs/{ids['rerun']}/").status_code == 404
    assert api_client.get(f"/api/v1/reproductions/{ids['repro']}/").status_code == 404


def test_open_mode_shows_authors_the_reviewer(private_project, team, client_for):
    """In open mode the same flow names the reviewer to the authors: the single-blind masking
    is the mode's doing."""
    version = publish(private_project, team["owner"], review_mode="open")
    reviewed = review_it(version, team, client_for)
    ids = reviewed.ids()
    api_client, page_client = clients(team["member"], client_for)
    assert api_client.get(f"/api/v1/reviews/{ids['review']}/").json()["reviewer"] == REVIEWER_NAME
    comments = api_client.get(f"/api/v1/reviews/{ids['review']}/comments/").json()["comments"]
    assert comments[0]["author"] == REVIEWER_NAME
    assert REVIEWER_NAME in page_client.get(f"/pub/{ids['pub']}/v1").content.decode()
    assert f"Review by {REVIEWER_NAME}" in page_client.get(f"/reviews/{ids['review']}/").content.decode()
    messages = [n["message"] for n in api_client.get("/api/v1/notifications/").json()]
    assert f"{REVIEWER_NAME} submitted a review: accept." in messages
    # Open-mode reruns are ordinary runs of the project.
    assert api_client.get(f"/api/v1/runs/{ids['rerun']}/").json()["node"] == NODE_NAME


# --- probing by inviting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", AUTHOR_ROLES)
def test_authors_cannot_probe_who_reviews_by_inviting(reviewed, team, client_for, role):
    """An author must not learn whether someone reviews a single-blind publication by trying to
    invite them (API or the landing page's form): inviting the hidden reviewer answers exactly
    as inviting a bystander, and it is a refusal -- an author who could invite would know the
    reviewers they picked, so in single-blind mode the editors choose."""
    make_user("bystander")
    api_client, page_client = clients(team[role], client_for)
    publication_id = reviewed.ids()["pub"]

    def by_api(who: str) -> tuple[int, str]:
        response = api_client.post(
            f"/api/v1/publications/{publication_id}/reviewers/", {"reviewer": who}, format="json"
        )
        return response.status_code, text_of(response).replace(who, "<who>")

    def by_form(who: str) -> tuple[int, str]:
        response = page_client.post(f"/pub/{publication_id}/invite", {"reviewer": who}, follow=True)
        shown = re.search(r'<ul class="messages">(.*?)</ul>', text_of(response), re.DOTALL)
        return response.status_code, (shown.group(1) if shown else "").replace(who, "<who>")

    for attempt in (by_api, by_form):
        hidden, bystander = attempt(REVIEWER_NAME), attempt("bystander")
        assert hidden == bystander, f"{attempt.__name__}: the reviewer: {hidden}; a bystander: {bystander}"
        assert hidden[0] >= 400, f"{attempt.__name__}: an author invited a reviewer in single-blind mode"
    assert list(Review.objects.filter(publication_id=publication_id).values_list("number", flat=True)) == [1]


def test_editors_invite_in_single_blind_mode(reviewed, team, client_for):
    """The editors (owner, maintainer) still invite reviewers to a single-blind publication."""
    make_user("second-referee")
    response = client_for(team["maintainer"]).post(
        f"/api/v1/publications/{reviewed.ids()['pub']}/reviewers/", {"reviewer": "second-referee"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["reviewer"] == "second-referee"  # editors see identities


# --- what the reviewer's machine writes into the evidence -------------------------------------------------
REVIEWERS_HOME = f"/home/{REVIEWER_NAME}"


def _with_warning(original: bytes) -> bytes:
    """The original's executed notebook with what numpy prints to stderr on the reviewer's
    machine: the warning names the file, under the reviewer's home directory."""
    notebook = json.loads(original)
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"][-1]
    code["outputs"].append(
        {
            "output_type": "stream",
            "name": "stderr",
            "text": [
                f"{REVIEWERS_HOME}/.venv/lib/python3.12/site-packages/numpy/_core/fromnumeric.py:3596: "
                "RuntimeWarning: Mean of empty slice.\n"
            ],
        }
    )
    return json.dumps(notebook).encode()


@pytest.mark.parametrize("outcome", ["failed", "warned"])
def test_rerun_evidence_from_the_reviewers_machine_does_not_reach_authors(blind, team, client_for, outcome):
    """A rerun's verdict is shown to the authors, but what the reviewer's node wrote into its
    evidence -- the agent's error text when the rerun fails (the kernel's last log line), or a
    rerun's differing output (a warning printed with its file path) -- carries paths under the
    reviewer's home directory, i.e. their username. Authors get the verdict and the statuses
    without it; the editors and the reviewer get it all."""
    reviewer = make_user(REVIEWER_NAME)
    review = services.review_invite(publication=blind.publication, inviter=team["owner"], who=REVIEWER_NAME)
    services.review_respond(review=review, user=reviewer, accept=True)
    reproduction = services.review_rerun(review=review, user=reviewer, repeats=1)
    node = compute.node_register(owner=reviewer, name="lab-box").node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    compute.run_heartbeat(run=claim.run, lease_id=claim.lease_id, running=True)
    if outcome == "failed":
        error = (
            "papermill or the kernel failed: FileNotFoundError: [Errno 2] No such file or directory: "
            f"'{REVIEWERS_HOME}/reprolab/work/run-{claim.run.pk}/data.csv'"
        )
        compute.run_complete(run=claim.run, lease_id=claim.lease_id, state="failed", error=error)
    else:
        with default_storage.open(blind.run.output_storage_name, "rb") as handle:
            body = _with_warning(handle.read())
        compute.run_output_upload(
            run=claim.run, lease_id=claim.lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
        )
        compute.run_complete(run=claim.run, lease_id=claim.lease_id, state="succeeded")
    settled = reproducibility.reproduction_settle(reproduction_id=reproduction.pk)
    assert settled.verdict == ("could_not_run" if outcome == "failed" else "not_reproduced")

    leaks = []
    for role in AUTHOR_ROLES:
        api_client, page_client = clients(team[role], client_for)
        shown = api_client.get(f"/api/v1/reviews/{review.pk}/")
        assert [r["verdict"] for r in shown.json()["reruns"]] == [settled.verdict]
        for where, response in (
            ("GET /api/v1/reviews/<id>/", shown),
            ("GET /api/v1/reviews/", api_client.get("/api/v1/reviews/")),
            ("page /reviews/<id>/", page_client.get(f"/reviews/{review.pk}/")),
            ("page /pub/<id>/v1", page_client.get(f"/pub/{blind.publication_id}/v1")),
        ):
            lowered = text_of(response).lower()
            if SECRET in lowered:
                leaks.append(f"{where} as {role}: …{_around(lowered, SECRET)}…")
        # The verdict and the per-cell statuses stay; what the reviewer's machine wrote does not
        # (redacting names out of it would itself answer "is it X?").
        evidence = text_of(shown)
        assert ("FileNotFoundError" if outcome == "failed" else "RuntimeWarning") not in evidence
        assert "shown to the editors only" in evidence
    assert not leaks, "\n".join(leaks)
    # The editors and the reviewer know who reran: they get the evidence as it came.
    for user in (team["owner"], reviewer):
        assert REVIEWERS_HOME in text_of(client_for(user).get(f"/api/v1/reviews/{review.pk}/"))


@pytest.mark.parametrize("who", [*AUTHOR_ROLES, "outsider", "anonymous"])
def test_single_blind_badge_shows_the_verdict_date_and_tolerances_only(reviewed, team, client_for, who):
    """The public badge of a single-blind publication says what the check found, when, and
    within which tolerances; not where it ran (Python, OS, GPU of the reviewer's machine)."""
    _, page_client = clients(team[who], client_for)
    landing = text_of(page_client.get(f"/pub/{reviewed.ids()['pub']}/v1"))

    badge = re.search(r'<div class="badge-box[^"]*" id="repro-badge">(.*?)</div>', landing, re.DOTALL)
    assert badge is not None
    shown = " ".join(re.sub(r"<[^>]+>", " ", badge.group(1)).split())
    finished_at = Reproduction.objects.get(pk=reviewed.reproduction.pk).finished_at
    assert finished_at is not None
    date = finished_at.strftime("%Y-%m-%d")
    assert shown == f"Reproduced on {date}, by a reviewer · rtol 1e-06, atol 0"


def test_open_mode_badge_still_says_where_the_check_ran(private_project, team, client_for):
    version = publish(private_project, team["owner"], review_mode="open")
    reviewed = review_it(version, team, client_for)
    _, page_client = clients(team["member"], client_for)

    landing = text_of(page_client.get(f"/pub/{reviewed.ids()['pub']}/v1"))

    assert "Python 3.12.3, FreeBSD, CPU only" in landing
