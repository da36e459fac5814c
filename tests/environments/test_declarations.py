"""Declaring environments through the API: resolved by real uv against the local index; bad
declarations are a 400 that says what is wrong; private projects stay invisible."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.compute.models import Run
from apps.environments.models import EnvironmentLock
from apps.projects.models import Project
from tests.factories import make_project, make_user, notebook_file, upload_notebook

URL = "/api/v1/projects/{}/environment/"


@pytest.fixture
def index(settings, package_index_url, tmp_path):
    settings.REPROLAB_PACKAGE_INDEX_URL = package_index_url
    settings.REPROLAB_UV_CACHE_DIR = tmp_path / "uv"
    return package_index_url


def put(client, project: Project, text: str, name: str = "requirements.txt", **extra):
    upload = SimpleUploadedFile(name, text.encode())
    return client.put(URL.format(project.slug), {"file": upload, **extra}, format="multipart")


def test_a_declaration_is_resolved_into_a_lock_with_hashes(client_for, team, private_project, index):
    client = client_for(team["maintainer"])
    response = put(client, private_project, "tabulate>=0.9\n")
    assert response.status_code == 200, response.content
    body = response.json()
    names = {p["name"]: p["version"] for p in body["packages"]}
    assert names["tabulate"] == "0.10.0"
    assert "ipykernel" in names  # the kernel the node runs the notebook on
    assert body["python_version"] == "3.11"
    assert body["platform"] == "linux"
    assert body["layered"] is False
    lock = EnvironmentLock.objects.get(sha256=body["sha256"])
    assert lock.lock.count("--hash=sha256:") >= len(body["packages"])
    assert client.get(URL.format(private_project.slug)).json()["sha256"] == body["sha256"]
    # The same packages resolve to the same lock: content-addressed, not duplicated.
    assert put(client, private_project, "tabulate >= 0.9  # again\n").json()["sha256"] == body["sha256"]
    assert EnvironmentLock.objects.count() == 1
    assert client.delete(URL.format(private_project.slug)).status_code == 204
    assert client.get(URL.format(private_project.slug)).status_code == 404


def test_pyproject_and_uv_lock_declarations(client_for, team, private_project, index):
    client = client_for(team["owner"])
    pyproject = '[project]\nname = "x"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = ["toolz"]\n'
    body = put(client, private_project, pyproject, name="pyproject.toml").json()
    assert body["requires_python"] == ">=3.11"
    assert body["declaration_kind"] == "pyproject"
    assert any(p["name"] == "toolz" for p in body["packages"])
    uv_lock = (
        'version = 1\nrequires-python = ">=3.11"\n'
        '[[package]]\nname = "x"\nversion = "0"\nsource = { virtual = "." }\n'
        '[[package]]\nname = "humanize"\nversion = "4.17.0"\nsource = { registry = "https://pypi.org/simple" }\n'
    )
    body = put(client, private_project, uv_lock, name="uv.lock").json()
    assert {"name": "humanize", "version": "4.17.0"} in body["packages"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("requirements.txt", "-r /etc/passwd\n", "the option -r is not accepted"),
        ("requirements.txt", "--index-url http://evil.example/simple\ntabulate\n", "the option --index-url"),
        ("requirements.txt", "tabulate @ https://evil.example/t.whl\n", "names a URL or path"),
        ("requirements.txt", "tabulate >>> 1\n", "is not a requirement"),
        ("requirements.txt", "no-such-package-anywhere\n", "could not be resolved"),
        ("requirements.txt", "reprolab-broken-build\n", "could not be resolved"),  # an sdist: never built here
        ("pyproject.toml", "[project\n", "not valid TOML"),
        ("pyproject.toml", "[tool.x]\n", "no [project] table"),
        ("pyproject.toml", '[project]\nrequires-python = ">=4"\ndependencies = []\n', "allows none of the Pythons"),
        ("uv.lock", '[[package]]\nname = "a"\nversion = "1"\nsource = { git = "https://x" }\n', "only index packages"),
        ("environment.yml", "dependencies: []\n", "is not a declaration"),
        ("requirements.txt", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "must be UTF-8"),
    ],
)
def test_bad_declarations_are_a_400_that_says_why(client_for, team, private_project, index, name, text, message):
    upload = SimpleUploadedFile(name, text.encode("latin-1") if "must be UTF-8" in message else text.encode())
    response = client_for(team["owner"]).put(URL.format(private_project.slug), {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content
    assert message in str(response.json()), response.json()
    assert EnvironmentLock.objects.count() == 0


def test_who_may_see_and_declare(client_for, team, private_project, index):
    assert put(client_for(team["outsider"]), private_project, "tabulate\n").status_code == 404
    assert client_for(team["outsider"]).get(URL.format(private_project.slug)).status_code == 404
    assert client_for(None).get(URL.format(private_project.slug)).status_code in (401, 404)
    assert put(client_for(team["member"]), private_project, "tabulate\n").status_code == 403
    assert EnvironmentLock.objects.count() == 0


def test_runs_take_the_versions_then_the_projects_environment_or_the_one_named(
    client_for, team, private_project, index
):
    owner = client_for(team["owner"])
    project_lock = put(owner, private_project, "tabulate\n").json()["sha256"]
    plain = upload_notebook(private_project, team["owner"], "plain.ipynb").notebook
    # A version with its own declaration beside it.
    response = owner.post(
        f"/api/v1/projects/{private_project.slug}/notebooks/",
        {
            "file": SimpleUploadedFile("own.ipynb", notebook_file().read()),
            "environment": SimpleUploadedFile("requirements.txt", b"toolz\n"),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    own = response.json()
    own_lock = own["latest_version"]["environment"]
    assert own_lock
    assert own_lock != project_lock

    def submit(notebook_id: int, **fields):
        return owner.post(
            "/api/v1/runs/", {"project": private_project.slug, "notebook": notebook_id, **fields}, format="json"
        )

    assert submit(plain.pk).json()["environment"] == project_lock
    assert submit(own["id"]).json()["environment"] == own_lock
    assert submit(plain.pk, environment=own_lock).json()["environment"] == own_lock  # a lock of this project
    unknown = submit(plain.pk, environment="f" * 64)
    assert unknown.status_code == 400
    assert "belongs to this project" in str(unknown.json())
    assert submit(plain.pk, environment="not-a-sha").status_code == 400
    assert Run.objects.count() == 3


def test_another_projects_lock_cannot_be_named(client_for, team, private_project, public_project, index):
    owner = client_for(team["owner"])
    theirs = put(owner, private_project, "tabulate\n").json()["sha256"]
    notebook = upload_notebook(public_project, team["owner"], "n.ipynb").notebook
    response = owner.post(
        "/api/v1/runs/",
        {"project": public_project.slug, "notebook": notebook.pk, "environment": theirs},
        format="json",
    )
    assert response.status_code == 400


def test_the_pages_show_the_declared_environment(client, team, private_project, index):
    client.force_login(team["owner"])
    response = client.post(
        f"/p/{private_project.slug}/-/environment/",
        {"file": SimpleUploadedFile("requirements.txt", b"tabulate\n")},
    )
    assert response.status_code == 302
    page = client.get(f"/p/{private_project.slug}/").content.decode()
    assert "tabulate==0.10.0" in page
    assert "requirements.txt" in page
    upload_notebook(private_project, team["owner"], "n.ipynb")
    page = client.get(f"/p/{private_project.slug}/notebooks/n.ipynb").content.decode()
    assert "Declared by the project" in page
    bad = client.post(
        f"/p/{private_project.slug}/-/environment/",
        {"file": SimpleUploadedFile("requirements.txt", b"-e .\n")},
    )
    assert bad.status_code == 400
    assert "not accepted" in bad.content.decode()


def test_a_fresh_resolve_of_an_unchanged_index_is_the_same_lock(client_for, team, private_project, index):
    from apps.environments.services import fresh_resolve

    sha = put(client_for(team["owner"]), private_project, "tabulate\n", layered="true").json()["sha256"]
    lock = EnvironmentLock.objects.get(sha256=sha)
    assert lock.layered is True
    assert "# layered: yes" in lock.lock  # part of what its sha256 names
    declaration = private_project.__class__.objects.get(pk=private_project.pk).environment
    assert declaration is not None
    fresh = fresh_resolve(declaration)
    assert fresh.lock == lock
    assert fresh.pk != declaration.pk  # a new row: the project's own


def test_a_declaration_is_its_projects_own_even_when_another_resolves_to_the_same_lock(
    client_for, team, private_project, public_project, index
):
    secret = "# internal mirror: token-abc123\ntoolz\n"
    theirs = put(client_for(team["owner"]), private_project, secret).json()
    stranger = make_user("stranger")
    own = make_project(stranger, slug="strangers")
    mine = put(client_for(stranger), own, "toolz\n").json()
    assert mine["sha256"] == theirs["sha256"]  # one lock: the same packages
    assert mine["declaration"] == "toolz\n"
    assert "token-abc123" not in str(client_for(stranger).get(URL.format(own.slug)).json())
    assert client_for(stranger).get(URL.format(private_project.slug)).status_code == 404


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("pyproject.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
        ("uv.lock", "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nests too deeply"),
        ("pyproject.toml", '[project]\nrequires-python = "' + ">=3.8," * 40 + '"\ndependencies = []\n', "at most 100"),
        ("requirements.txt", "ipykernel; python_version < '3'\n", "must install ipykernel"),
    ],
)
def test_odd_declarations_are_a_400_not_a_500(client_for, team, private_project, index, name, text, message):
    response = put(client_for(team["owner"]), private_project, text, name=name)
    assert response.status_code == 400, response.content
    assert message in str(response.json())
