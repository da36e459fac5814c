"""Who may see and change what: a role matrix over every API endpoint and web page.

A private project, and everything in it, answers 404 to anyone who is not a member (as if it did
not exist); a public project is readable by everyone. Writes need a role: members upload,
maintainers manage settings and members, only owners delete the project or touch the owner role.
"""

import hashlib
import io
from dataclasses import dataclass

import pytest
from django.http import HttpResponseBase
from django.test import Client

from apps.accounts.models import User
from apps.projects import services
from apps.projects.models import Dataset, DatasetVersion, Membership, Notebook, NotebookVersion, Project, Role

from ..factories import make_user, notebook_file, upload_notebook

MEMBER_ROLES = ["owner", "maintainer", "member", "viewer"]
NON_MEMBERS = ["outsider", "anonymous"]
ROLES = MEMBER_ROLES + NON_MEMBERS

DATASET_FILE = b"step,loss\n1,0.9\n2,0.4\n"


@dataclass(frozen=True)
class Stock:
    """What a project holds for the read matrix: one notebook version, one dataset version."""

    slug: str
    notebook_id: int
    version_id: int

    def url(self, template: str) -> str:
        return template.format(slug=self.slug, nb=self.notebook_id, version_id=self.version_id)


def stock(project: Project, uploader: User) -> Stock:
    upload = upload_notebook(project, uploader)
    dataset = services.dataset_create(project=project, name="measurements", creator=uploader)
    services.dataset_add_files(
        dataset=dataset,
        files=[services.IncomingFile(path="data/train.csv", content=io.BytesIO(DATASET_FILE))],
        uploader=uploader,
    )
    return Stock(slug=project.slug, notebook_id=upload.notebook.pk, version_id=upload.version.pk)


@pytest.fixture
def private_stock(private_project: Project, owner: User) -> Stock:
    return stock(private_project, owner)


@pytest.fixture
def public_stock(public_project: Project, owner: User) -> Stock:
    return stock(public_project, owner)


def web_client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def body(response: HttpResponseBase) -> bytes:
    """The response's bytes; a streamed download is read and its file closed."""
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        response.close()
        return content
    return response.content  # type: ignore[attr-defined]


# --- reads --------------------------------------------------------------------------------------
API_READS = [
    "/api/v1/projects/{slug}/",
    "/api/v1/projects/{slug}/members/",
    "/api/v1/projects/{slug}/members/olivia/",
    "/api/v1/projects/{slug}/notebooks/",
    "/api/v1/projects/{slug}/notebooks/{nb}/",
    "/api/v1/projects/{slug}/notebooks/{nb}/versions/",
    "/api/v1/projects/{slug}/notebooks/{nb}/versions/1/",
    "/api/v1/projects/{slug}/notebooks/{nb}/versions/1/download/",
    "/api/v1/projects/{slug}/datasets/",
    "/api/v1/projects/{slug}/datasets/measurements/",
    "/api/v1/projects/{slug}/datasets/measurements/versions/",
    "/api/v1/projects/{slug}/datasets/measurements/versions/1/",
    "/api/v1/projects/{slug}/datasets/measurements/versions/1/download/?path=data/train.csv",
]

# The render page is left out: it runs the renderer subprocess, so it has its own few tests.
WEB_READS = [
    "/p/{slug}/",
    "/p/{slug}/notebooks/analysis.ipynb",
    "/p/{slug}/-/download/{version_id}/",
    "/p/{slug}/datasets/measurements/",
    "/p/{slug}/datasets/measurements/v1/data/train.csv",
]


@pytest.mark.parametrize("role", NON_MEMBERS)
@pytest.mark.parametrize("url", API_READS)
def test_api_answers_non_member_of_private_project_as_if_it_did_not_exist(client_for, team, private_stock, role, url):
    client = client_for(team[role])
    response = client.get(private_stock.url(url))
    nonexistent = client.get(url.format(slug="no-such-lab", nb=private_stock.notebook_id, version_id=0))
    assert response.status_code == 404
    assert nonexistent.status_code == 404
    assert response.json() == nonexistent.json()


@pytest.mark.parametrize("role", MEMBER_ROLES)
@pytest.mark.parametrize("url", API_READS)
def test_api_lets_every_member_read_private_project(client_for, team, private_stock, role, url):
    response = client_for(team[role]).get(private_stock.url(url))
    assert response.status_code == 200
    assert body(response)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", API_READS)
def test_api_lets_anyone_read_public_project(client_for, team, public_stock, role, url):
    response = client_for(team[role]).get(public_stock.url(url))
    assert response.status_code == 200
    assert body(response)


@pytest.mark.parametrize("role", NON_MEMBERS)
@pytest.mark.parametrize("url", WEB_READS)
def test_web_answers_non_member_of_private_project_as_if_it_did_not_exist(team, private_stock, role, url):
    client = web_client_for(team[role])
    response = client.get(private_stock.url(url))
    nonexistent = client.get(url.format(slug="no-such-lab", version_id=private_stock.version_id))
    assert response.status_code == 404
    assert body(response) == body(nonexistent)
    assert b"secret-lab" not in body(response)


@pytest.mark.parametrize("role", MEMBER_ROLES)
@pytest.mark.parametrize("url", WEB_READS)
def test_web_lets_every_member_read_private_project(team, private_stock, role, url):
    response = web_client_for(team[role]).get(private_stock.url(url))
    assert response.status_code == 200
    assert body(response)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", WEB_READS)
def test_web_lets_anyone_read_public_project(team, public_stock, role, url):
    response = web_client_for(team[role]).get(public_stock.url(url))
    assert response.status_code == 200
    assert body(response)


def test_api_download_gives_member_the_uploaded_notebook_bytes(client_for, team, private_stock):
    response = client_for(team["viewer"]).get(private_stock.url(API_READS[7]))
    stored = NotebookVersion.objects.get(pk=private_stock.version_id)
    assert hashlib.sha256(body(response)).hexdigest() == stored.sha256 == response["X-Content-SHA256"]


def test_api_download_gives_member_the_uploaded_dataset_file(client_for, team, private_stock):
    response = client_for(team["viewer"]).get(private_stock.url(API_READS[12]))
    assert body(response) == DATASET_FILE


def test_web_dataset_file_download_gives_member_the_uploaded_bytes(team, private_stock):
    response = web_client_for(team["viewer"]).get(private_stock.url(WEB_READS[4]))
    assert body(response) == DATASET_FILE


@pytest.mark.parametrize("role", NON_MEMBERS)
def test_render_hides_private_notebook_from_non_member(team, private_stock, role):
    response = web_client_for(team[role]).get(private_stock.url("/p/{slug}/-/render/{version_id}/"))
    assert response.status_code == 404


def test_render_shows_private_notebook_to_member(team, private_stock):
    response = web_client_for(team["viewer"]).get(private_stock.url("/p/{slug}/-/render/{version_id}/"))
    assert response.status_code == 200
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"A test notebook" in response.content


def test_render_refuses_version_of_private_project_through_public_slug(team, private_stock, public_stock):
    # The outsider of `secret-lab` may read `open-lab`; a version id from the private project
    # must not resolve under the public project's URL.
    url = f"/p/{public_stock.slug}/-/render/{private_stock.version_id}/"
    response = web_client_for(team["outsider"]).get(url)
    assert response.status_code == 404


def test_web_download_refuses_version_of_private_project_through_public_slug(team, private_stock, public_stock):
    url = f"/p/{public_stock.slug}/-/download/{private_stock.version_id}/"
    response = web_client_for(team["outsider"]).get(url)
    assert response.status_code == 404


def test_api_refuses_notebook_of_private_project_through_public_slug(client_for, team, private_stock, public_stock):
    url = f"/api/v1/projects/{public_stock.slug}/notebooks/{private_stock.notebook_id}/versions/1/download/"
    response = client_for(team["outsider"]).get(url)
    assert response.status_code == 404


# --- project lists ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", MEMBER_ROLES)
def test_api_project_list_includes_private_project_for_member_with_their_role(
    client_for, team, private_project, public_project, role
):
    response = client_for(team[role]).get("/api/v1/projects/")
    assert response.status_code == 200
    roles = {p["slug"]: p["your_role"] for p in response.json()["results"]}
    assert roles == {"secret-lab": role, "open-lab": role}


@pytest.mark.parametrize("role", NON_MEMBERS)
def test_api_project_list_hides_private_project_from_non_member(
    client_for, team, private_project, public_project, role
):
    response = client_for(team[role]).get("/api/v1/projects/")
    assert response.status_code == 200
    assert [(p["slug"], p["your_role"]) for p in response.json()["results"]] == [("open-lab", None)]
    assert response.json()["count"] == 1


@pytest.mark.parametrize("role", NON_MEMBERS)
def test_api_project_search_does_not_find_private_project_for_non_member(
    client_for, team, private_project, public_project, role
):
    response = client_for(team[role]).get("/api/v1/projects/", {"search": "secret"})
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("role", MEMBER_ROLES)
def test_web_project_list_includes_private_project_for_member_with_their_role(
    team, private_project, public_project, role
):
    response = web_client_for(team[role]).get("/")
    assert response.status_code == 200
    roles = {p.slug: p.user_role for p in response.context["page"].object_list}
    assert roles == {"secret-lab": role, "open-lab": role}
    assert b"/p/secret-lab/" in response.content


@pytest.mark.parametrize("role", NON_MEMBERS)
def test_web_project_list_hides_private_project_from_non_member(team, private_project, public_project, role):
    response = web_client_for(team[role]).get("/")
    assert response.status_code == 200
    assert [p.slug for p in response.context["page"].object_list] == ["open-lab"]
    assert b"secret-lab" not in response.content
    assert b"Secret-Lab" not in response.content


@pytest.mark.parametrize("role", NON_MEMBERS)
def test_web_project_search_does_not_find_private_project_for_non_member(team, private_project, public_project, role):
    response = web_client_for(team[role]).get("/", {"q": "secret"})
    assert response.status_code == 200
    assert list(response.context["page"].object_list) == []


# --- API writes ---------------------------------------------------------------------------------
def write_matrix(allowed: set[str], success: int) -> list:
    """(visibility, role, expected status) for a write that `allowed` roles may make."""
    params = []
    for visibility in ("private", "public"):
        for role in ROLES:
            if role == "anonymous":
                expected = 401
            elif role == "outsider":
                expected = 404 if visibility == "private" else 403
            else:
                expected = success if role in allowed else 403
            params.append(pytest.param(visibility, role, expected, id=f"{visibility}-{role}-{expected}"))
    return params


UPLOADERS = {"owner", "maintainer", "member"}
MANAGERS = {"owner", "maintainer"}
OWNERS = {"owner"}


@pytest.fixture
def project_of(request, team):
    """`project_of(visibility)` -> the private or public project, with its stock."""

    def get(visibility: str) -> Project:
        request.getfixturevalue(f"{visibility}_stock")
        return request.getfixturevalue(f"{visibility}_project")

    return get


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(UPLOADERS, 201))
def test_api_notebook_upload_needs_member_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = client_for(team[role]).post(
        f"/api/v1/projects/{project.slug}/notebooks/", {"file": notebook_file("new.ipynb")}, format="multipart"
    )
    assert response.status_code == expected
    assert Notebook.objects.filter(project=project, path="new.ipynb").exists() == (expected == 201)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(UPLOADERS, 201))
def test_api_dataset_create_needs_member_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = client_for(team[role]).post(
        f"/api/v1/projects/{project.slug}/datasets/", {"name": "fresh-data"}, format="json"
    )
    assert response.status_code == expected
    assert Dataset.objects.filter(project=project, name="fresh-data").exists() == (expected == 201)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(UPLOADERS, 201))
def test_api_dataset_file_upload_needs_member_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    upload = io.BytesIO(b"step,loss\n3,0.1\n")
    upload.name = "more.csv"
    response = client_for(team[role]).post(
        f"/api/v1/projects/{project.slug}/datasets/measurements/versions/", {"files": [upload]}, format="multipart"
    )
    assert response.status_code == expected
    versions = DatasetVersion.objects.filter(dataset__project=project, dataset__name="measurements").count()
    assert versions == (2 if expected == 201 else 1)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(MANAGERS, 200))
def test_api_project_settings_need_maintainer_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = client_for(team[role]).patch(
        f"/api/v1/projects/{project.slug}/", {"description": "Changed."}, format="json"
    )
    assert response.status_code == expected
    project.refresh_from_db()
    assert (project.description == "Changed.") == (expected == 200)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(OWNERS, 204))
def test_api_project_delete_needs_owner_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = client_for(team[role]).delete(f"/api/v1/projects/{project.slug}/")
    assert response.status_code == expected
    assert Project.objects.filter(pk=project.pk).exists() == (expected != 204)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(MANAGERS, 201))
def test_api_member_add_needs_maintainer_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    newcomer = make_user("nina")
    response = client_for(team[role]).post(
        f"/api/v1/projects/{project.slug}/members/", {"username": "nina", "role": "viewer"}, format="json"
    )
    assert response.status_code == expected
    assert Membership.objects.filter(project=project, user=newcomer).exists() == (expected == 201)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(MANAGERS, 200))
def test_api_member_role_change_needs_maintainer_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = client_for(team[role]).patch(
        f"/api/v1/projects/{project.slug}/members/mo/", {"role": "viewer"}, format="json"
    )
    assert response.status_code == expected
    membership = Membership.objects.get(project=project, user=team["member"])
    assert membership.role == (Role.VIEWER if expected == 200 else Role.MEMBER)


@pytest.mark.parametrize(("visibility", "role", "expected"), write_matrix(MANAGERS, 204))
def test_api_member_remove_needs_maintainer_role(client_for, team, project_of, visibility, role, expected):
    project = project_of(visibility)
    nina = make_user("nina")
    services.membership_set(project=project, user=nina, role=Role.VIEWER, actor_role=Role.OWNER)
    response = client_for(team[role]).delete(f"/api/v1/projects/{project.slug}/members/nina/")
    assert response.status_code == expected
    assert Membership.objects.filter(project=project, user=nina).exists() == (expected != 204)


def test_api_denial_names_the_role_needed(client_for, team, private_project):
    response = client_for(team["viewer"]).post(
        f"/api/v1/projects/{private_project.slug}/notebooks/", {"file": notebook_file()}, format="multipart"
    )
    assert response.status_code == 403
    assert "member role or higher" in response.json()["detail"]


def test_api_anonymous_write_asks_for_bearer_credentials(api, public_project):
    response = api.patch(f"/api/v1/projects/{public_project.slug}/", {"description": "x"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# --- the owner role -----------------------------------------------------------------------------
def member_url(project: Project, username: str) -> str:
    return f"/api/v1/projects/{project.slug}/members/{username}/"


def test_maintainer_cannot_grant_owner_role(client_for, team, private_project):
    response = client_for(team["maintainer"]).patch(member_url(private_project, "mo"), {"role": "owner"})
    assert response.status_code == 400
    assert "Only an owner" in response.json()["detail"]
    assert Membership.objects.get(project=private_project, user=team["member"]).role == Role.MEMBER


def test_maintainer_cannot_add_a_new_owner(client_for, team, private_project):
    make_user("nina")
    response = client_for(team["maintainer"]).post(
        f"/api/v1/projects/{private_project.slug}/members/", {"username": "nina", "role": "owner"}
    )
    assert response.status_code == 400
    assert "Only an owner" in response.json()["detail"]
    assert not Membership.objects.filter(project=private_project, user__username="nina").exists()


def test_maintainer_cannot_demote_an_owner(client_for, team, private_project):
    response = client_for(team["maintainer"]).patch(member_url(private_project, "olivia"), {"role": "viewer"})
    assert response.status_code == 400
    assert "Only an owner" in response.json()["detail"]
    assert Membership.objects.get(project=private_project, user=team["owner"]).role == Role.OWNER


def test_maintainer_cannot_remove_an_owner(client_for, team, private_project):
    response = client_for(team["maintainer"]).delete(member_url(private_project, "olivia"))
    assert response.status_code == 400
    assert "Only an owner" in response.json()["detail"]
    assert Membership.objects.filter(project=private_project, user=team["owner"]).exists()


def test_owner_can_grant_owner_role(client_for, team, private_project):
    response = client_for(team["owner"]).patch(member_url(private_project, "maya"), {"role": "owner"})
    assert response.status_code == 200
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(project=private_project, user=team["maintainer"]).role == Role.OWNER


def test_owner_can_remove_another_owner(client_for, team, private_project):
    services.membership_set(project=private_project, user=team["maintainer"], role=Role.OWNER, actor_role=Role.OWNER)
    response = client_for(team["owner"]).delete(member_url(private_project, "maya"))
    assert response.status_code == 204
    assert not Membership.objects.filter(project=private_project, user=team["maintainer"]).exists()


def test_last_owner_cannot_leave(client_for, team, private_project):
    response = client_for(team["owner"]).delete(member_url(private_project, "olivia"))
    assert response.status_code == 400
    assert "at least one owner" in response.json()["detail"]
    assert Membership.objects.get(project=private_project, user=team["owner"]).role == Role.OWNER


def test_last_owner_cannot_demote_themselves(client_for, team, private_project):
    response = client_for(team["owner"]).patch(member_url(private_project, "olivia"), {"role": "maintainer"})
    assert response.status_code == 400
    assert "at least one owner" in response.json()["detail"]
    assert Membership.objects.get(project=private_project, user=team["owner"]).role == Role.OWNER


def test_owner_can_leave_while_another_owner_remains(client_for, team, private_project):
    services.membership_set(project=private_project, user=team["maintainer"], role=Role.OWNER, actor_role=Role.OWNER)
    response = client_for(team["owner"]).delete(member_url(private_project, "olivia"))
    assert response.status_code == 204
    assert list(Membership.objects.filter(project=private_project, role=Role.OWNER).values_list("user", flat=True)) == [
        team["maintainer"].pk
    ]


def test_viewer_can_leave_a_project(client_for, team, private_project):
    response = client_for(team["viewer"]).delete(member_url(private_project, "vic"))
    assert response.status_code == 204
    assert not Membership.objects.filter(project=private_project, user=team["viewer"]).exists()


def test_former_member_loses_access_to_private_project(client_for, team, private_project):
    client = client_for(team["viewer"])
    client.delete(member_url(private_project, "vic"))
    response = client.get(f"/api/v1/projects/{private_project.slug}/")
    assert response.status_code == 404


# --- web writes ---------------------------------------------------------------------------------
def web_write_expected(visibility: str, role: str, allowed: set[str]) -> str:
    """What a form post answers: 'done' (a redirect after success), 'login' (a redirect to the
    login page), or a status code."""
    if role == "anonymous":
        return "login"
    if role == "outsider":
        return "404" if visibility == "private" else "403"
    return "done" if role in allowed else "403"


def web_matrix(allowed: set[str]) -> list:
    return [
        pytest.param(v, r, web_write_expected(v, r, allowed), id=f"{v}-{r}")
        for v in ("private", "public")
        for r in ROLES
    ]


def assert_web_outcome(response: HttpResponseBase, expected: str) -> None:
    if expected == "login":
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    elif expected == "done":
        assert response.status_code == 302
        assert not response["Location"].startswith("/accounts/login/")
    else:
        assert response.status_code == int(expected)


@pytest.mark.parametrize(("visibility", "role", "expected"), web_matrix(UPLOADERS))
def test_web_notebook_upload_needs_member_role(team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = web_client_for(team[role]).post(
        f"/p/{project.slug}/-/upload/", {"file": notebook_file("new.ipynb"), "path": "", "message": ""}
    )
    assert_web_outcome(response, expected)
    assert Notebook.objects.filter(project=project, path="new.ipynb").exists() == (expected == "done")


@pytest.mark.parametrize(("visibility", "role", "expected"), web_matrix(UPLOADERS))
def test_web_dataset_create_needs_member_role(team, project_of, visibility, role, expected):
    project = project_of(visibility)
    response = web_client_for(team[role]).post(f"/p/{project.slug}/-/datasets/new/", {"name": "fresh-data"})
    assert_web_outcome(response, expected)
    assert Dataset.objects.filter(project=project, name="fresh-data").exists() == (expected == "done")


@pytest.mark.parametrize(("visibility", "role", "expected"), web_matrix(UPLOADERS))
def test_web_dataset_file_upload_needs_member_role(team, project_of, visibility, role, expected):
    project = project_of(visibility)
    upload = io.BytesIO(b"step,loss\n3,0.1\n")
    upload.name = "more.csv"
    response = web_client_for(team[role]).post(f"/p/{project.slug}/datasets/measurements/", {"data_files": [upload]})
    # The dataset page is readable without a login, so the project is resolved first: anonymous
    # posts to a private project get its 404, to a public one the login redirect.
    if expected == "login" and visibility == "private":
        expected = "404"
    assert_web_outcome(response, expected)
    versions = DatasetVersion.objects.filter(dataset__project=project, dataset__name="measurements").count()
    assert versions == (2 if expected == "done" else 1)


@pytest.mark.parametrize(("visibility", "role", "expected"), web_matrix(MANAGERS))
def test_web_member_add_needs_maintainer_role(team, project_of, visibility, role, expected):
    project = project_of(visibility)
    newcomer = make_user("nina")
    response = web_client_for(team[role]).post(f"/p/{project.slug}/-/members/", {"username": "nina", "role": "viewer"})
    assert_web_outcome(response, expected)
    assert Membership.objects.filter(project=project, user=newcomer).exists() == (expected == "done")


@pytest.mark.parametrize(("visibility", "role", "expected"), web_matrix(MANAGERS))
def test_web_member_remove_needs_maintainer_role(team, project_of, visibility, role, expected):
    project = project_of(visibility)
    nina = make_user("nina")
    services.membership_set(project=project, user=nina, role=Role.VIEWER, actor_role=Role.OWNER)
    response = web_client_for(team[role]).post(f"/p/{project.slug}/-/members/nina/remove/")
    assert_web_outcome(response, expected)
    assert Membership.objects.filter(project=project, user=nina).exists() == (expected != "done")


def test_web_maintainer_cannot_grant_owner_role(team, private_project):
    response = web_client_for(team["maintainer"]).post(
        f"/p/{private_project.slug}/-/members/", {"username": "mo", "role": "owner"}
    )
    assert response.status_code == 400
    assert "Only an owner" in response.content.decode()
    assert Membership.objects.get(project=private_project, user=team["member"]).role == Role.MEMBER


def test_web_last_owner_cannot_leave(team, private_project):
    client = web_client_for(team["owner"])
    response = client.post(f"/p/{private_project.slug}/-/members/olivia/remove/", follow=True)
    assert response.status_code == 200
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.filter(project=private_project, user=team["owner"], role=Role.OWNER).exists()


def test_web_project_page_offers_upload_only_to_uploaders(team, private_project):
    member_page = web_client_for(team["member"]).get(f"/p/{private_project.slug}/")
    viewer_page = web_client_for(team["viewer"]).get(f"/p/{private_project.slug}/")
    assert member_page.context["can_upload"] is True
    assert viewer_page.context["can_upload"] is False
    assert b"/-/upload/" in member_page.content
    assert b"/-/upload/" not in viewer_page.content


def test_web_dataset_upload_by_member_stores_every_file(team, private_stock):
    uploads = []
    for name in ("a.csv", "b.csv"):
        upload = io.BytesIO(f"{name}\n".encode())
        upload.name = name
        uploads.append(upload)
    response = web_client_for(team["member"]).post(
        private_stock.url("/p/{slug}/datasets/measurements/"), {"data_files": uploads, "message": "two more"}
    )
    assert response.status_code == 302
    latest = Dataset.objects.get(project__slug=private_stock.slug, name="measurements").latest_version
    assert latest is not None
    assert sorted(latest.files.values_list("path", flat=True)) == ["a.csv", "b.csv", "data/train.csv"]
