"""Bad input to the projects API: a 4xx whose `detail` says what is wrong, and nothing stored.

Each test snapshots the row counts and the blob files under MEDIA_ROOT/blobs before the request
and checks both are unchanged after it."""

import io
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from apps.accounts.models import User
from apps.projects import services
from apps.projects.models import Dataset, DatasetFile, DatasetVersion, Membership, Notebook, NotebookVersion, Project
from tests.factories import make_user, notebook_bytes, upload_notebook

MODELS = (Project, Membership, Notebook, NotebookVersion, Dataset, DatasetVersion, DatasetFile)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """A private MEDIA_ROOT, so blob files written by other tests cannot blur the checks."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def stored_state() -> tuple[dict[str, int], set[Path]]:
    counts = {model.__name__: model.objects.count() for model in MODELS}
    blobs_dir = Path(django_settings.MEDIA_ROOT) / "blobs"
    blobs = {p for p in blobs_dir.rglob("*") if p.is_file()} if blobs_dir.exists() else set()
    return counts, blobs


@pytest.fixture
def unchanged(db):
    """Call the returned function after the request: it asserts nothing was stored since setup.
    List it after the fixtures that build the test's starting data."""
    before: list[tuple[dict[str, int], set[Path]]] = []

    def check() -> None:
        assert stored_state() == before[0]

    before.append(stored_state())
    return check


def assert_error(response, status: int, *words: str) -> str:
    """The status, a `detail` string, and each word (case-insensitive) in that detail."""
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body.get("detail"), str), body
    assert body["detail"].strip()
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body["detail"]


def upload_file(content: bytes, name: str = "analysis.ipynb") -> io.BytesIO:
    stream = io.BytesIO(content)
    stream.name = name
    return stream


def notebooks_url(project: Project) -> str:
    return f"/api/v1/projects/{project.slug}/notebooks/"


def dataset_versions_url(project: Project, name: str = "measurements") -> str:
    return f"/api/v1/projects/{project.slug}/datasets/{name}/versions/"


@pytest.fixture
def dataset(private_project: Project, owner: User) -> Dataset:
    return services.dataset_create(project=private_project, name="measurements", creator=owner)


# --- malformed bodies -------------------------------------------------------------------------------
def test_project_create_with_invalid_json_body_is_400_naming_json(client_for, owner, unchanged):
    response = client_for(owner).post(
        "/api/v1/projects/", data='{"name": "Genomes", "slug": "genomes",', content_type="application/json"
    )

    assert_error(response, 400, "JSON")
    unchanged()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not json at all", id="plain-text"),
        pytest.param(b'{"cells": [', id="truncated-json"),
        pytest.param(b"\xff\xfe\x00binary", id="not-utf8"),
    ],
)
def test_notebook_upload_that_is_not_json_is_400_naming_notebook(
    client_for, owner, private_project, unchanged, content
):
    response = client_for(owner).post(notebooks_url(private_project), {"file": upload_file(content)})

    assert_error(response, 400, "notebook", "JSON")
    unchanged()


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"hello": "world"}, id="unrelated-object"),
        pytest.param([], id="array"),
        pytest.param({"cells": [], "nbformat": 4, "nbformat_minor": 5}, id="no-metadata"),
        pytest.param(
            {"cells": [{"cell_type": "teleport", "source": ""}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
            id="unknown-cell-type",
        ),
    ],
)
def test_notebook_upload_of_json_that_is_not_a_valid_notebook_is_400(
    client_for, owner, private_project, unchanged, document
):
    content = json.dumps(document).encode()

    response = client_for(owner).post(notebooks_url(private_project), {"file": upload_file(content)})

    assert_error(response, 400, "not a valid jupyter notebook")
    unchanged()


# --- size limits ------------------------------------------------------------------------------------
def test_notebook_upload_whose_declared_length_is_over_the_limit_is_413(
    client_for, owner, private_project, settings, unchanged
):
    settings.REPROLAB_NOTEBOOK_MAX_BYTES = 1000
    big = notebook_bytes(source="x = 1\n" + "#" * 200_000)  # body well beyond limit + multipart overhead

    response = client_for(owner).post(notebooks_url(private_project), {"file": upload_file(big)})

    detail = assert_error(response, 413, "the upload is", "limit")
    assert "1000 bytes" in detail
    unchanged()


def test_notebook_upload_length_precheck_rejects_before_reading_the_body(
    client_for, owner, private_project, settings, unchanged
):
    # The declared Content-Length is all it takes: the body behind it is never read (reading
    # past the real payload would make the test client raise).
    settings.REPROLAB_NOTEBOOK_MAX_BYTES = 1000

    response = client_for(owner).post(
        notebooks_url(private_project), {"file": upload_file(notebook_bytes())}, CONTENT_LENGTH=str(10**9)
    )

    assert_error(response, 413, "the upload is", "limit")
    unchanged()


def test_notebook_file_over_the_limit_within_the_multipart_allowance_is_413(
    client_for, owner, private_project, settings, unchanged
):
    settings.REPROLAB_NOTEBOOK_MAX_BYTES = 1000
    content = notebook_bytes(source="#" * 3000)  # passes the Content-Length precheck (limit + 64 KiB)
    assert 1000 < len(content) < 10_000

    response = client_for(owner).post(notebooks_url(private_project), {"file": upload_file(content, "big.ipynb")})

    assert_error(response, 413, "'big.ipynb'", "limit")
    unchanged()


def test_dataset_upload_whose_declared_length_is_over_the_limit_is_413(
    client_for, owner, private_project, dataset, settings, unchanged
):
    settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES = 1000

    response = client_for(owner).post(
        dataset_versions_url(private_project), {"files": [upload_file(b"x" * 200_000, "big.csv")]}
    )

    assert_error(response, 413, "the upload is", "limit")
    unchanged()


def test_dataset_files_over_the_limit_together_are_413(
    client_for, owner, private_project, dataset, settings, unchanged
):
    # Each file fits; together they do not.
    settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES = 1000
    files = [upload_file(b"a" * 600, "a.csv"), upload_file(b"b" * 600, "b.csv")]

    response = client_for(owner).post(dataset_versions_url(private_project), {"files": files})

    assert_error(response, 413, "the upload", "limit")
    unchanged()


# --- paths ------------------------------------------------------------------------------------------
BAD_PATHS = [
    pytest.param("../escape.ipynb", id="dotdot-leading"),
    pytest.param("notes/../../escape.ipynb", id="dotdot-inside"),
    pytest.param("/etc/analysis.ipynb", id="absolute"),
    pytest.param("C:/work/analysis.ipynb", id="drive-letter"),
    pytest.param("~/analysis.ipynb", id="home"),
    pytest.param("notes\\analysis.ipynb", id="backslash"),
    pytest.param("notes//analysis.ipynb", id="empty-segment"),
    pytest.param("notes/./analysis.ipynb", id="dot-segment"),
    pytest.param("notes/analysis.ipynb/", id="trailing-slash"),
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_notebook_upload_to_an_unclean_path_is_400(client_for, owner, private_project, unchanged, path):
    response = client_for(owner).post(
        notebooks_url(private_project), {"file": upload_file(notebook_bytes()), "path": path}
    )

    assert_error(response, 400, "path")
    unchanged()


def test_notebook_upload_to_a_path_without_ipynb_suffix_is_400(client_for, owner, private_project, unchanged):
    response = client_for(owner).post(
        notebooks_url(private_project), {"file": upload_file(notebook_bytes()), "path": "analysis/model.py"}
    )

    assert_error(response, 400, "path", ".ipynb")
    unchanged()


def test_notebook_upload_of_a_non_ipynb_file_name_without_path_is_400(client_for, owner, private_project, unchanged):
    response = client_for(owner).post(
        notebooks_url(private_project), {"file": upload_file(notebook_bytes(), "analysis.json")}
    )

    assert_error(response, 400, ".ipynb")
    unchanged()


@pytest.mark.parametrize("path", [str(p.values[0]).replace(".ipynb", ".csv") for p in BAD_PATHS])
def test_dataset_upload_to_an_unclean_path_is_400(client_for, owner, private_project, dataset, unchanged, path):
    response = client_for(owner).post(
        dataset_versions_url(private_project), {"files": [upload_file(b"a,b\n1,2\n", "data.csv")], "paths": [path]}
    )

    assert_error(response, 400, "path")
    unchanged()


def test_dataset_upload_with_one_bad_path_among_good_ones_stores_none_of_them(
    client_for, owner, private_project, dataset, unchanged
):
    files = [upload_file(b"1\n", "a.csv"), upload_file(b"2\n", "b.csv")]

    response = client_for(owner).post(
        dataset_versions_url(private_project), {"files": files, "paths": ["ok/a.csv", "../b.csv"]}
    )

    assert_error(response, 400, "'../b.csv'")
    unchanged()


def test_dataset_upload_with_two_files_at_the_same_path_is_400(client_for, owner, private_project, dataset, unchanged):
    files = [upload_file(b"1\n", "a.csv"), upload_file(b"2\n", "b.csv")]

    response = client_for(owner).post(
        dataset_versions_url(private_project), {"files": files, "paths": ["same.csv", "same.csv"]}
    )

    assert_error(response, 400, "same path")
    unchanged()


def test_dataset_upload_with_paths_count_not_matching_files_is_400(
    client_for, owner, private_project, dataset, unchanged
):
    files = [upload_file(b"1\n", "a.csv"), upload_file(b"2\n", "b.csv")]

    response = client_for(owner).post(dataset_versions_url(private_project), {"files": files, "paths": ["only.csv"]})

    assert_error(response, 400, "paths", "one path per uploaded file")
    unchanged()


# --- missing parts ----------------------------------------------------------------------------------
def test_notebook_upload_without_a_file_is_400(client_for, owner, private_project, unchanged):
    response = client_for(owner).post(notebooks_url(private_project), {"path": "analysis.ipynb"})

    assert_error(response, 400, "file")
    unchanged()


def test_dataset_upload_without_files_is_400(client_for, owner, private_project, dataset, unchanged):
    response = client_for(owner).post(dataset_versions_url(private_project), {"message": "nothing attached"})

    assert_error(response, 400, "files")
    unchanged()


@pytest.fixture
def dataset_with_a_file(dataset: Dataset, owner: User) -> Dataset:
    services.dataset_add_files(
        dataset=dataset, files=[services.IncomingFile(path="a.csv", content=io.BytesIO(b"1\n"))], uploader=owner
    )
    return dataset


def test_dataset_file_download_without_a_path_is_400(
    client_for, owner, private_project, dataset_with_a_file, unchanged
):
    response = client_for(owner).get(f"{dataset_versions_url(private_project)}1/download/")

    assert_error(response, 400, "path")
    unchanged()


# --- members, projects, datasets --------------------------------------------------------------------
@pytest.fixture
def newcomer(db) -> User:
    return make_user("newcomer")


def test_adding_a_member_with_an_unknown_role_is_400(client_for, owner, private_project, newcomer, unchanged):
    response = client_for(owner).post(
        f"/api/v1/projects/{private_project.slug}/members/", {"username": "newcomer", "role": "overlord"}, format="json"
    )

    assert_error(response, 400, "role", "overlord")
    unchanged()


def test_adding_a_member_with_an_unknown_username_is_400(client_for, owner, private_project, unchanged):
    response = client_for(owner).post(
        f"/api/v1/projects/{private_project.slug}/members/",
        {"username": "nobody-here", "role": "member"},
        format="json",
    )

    assert_error(response, 400, "username", "nobody-here")
    unchanged()


def test_creating_a_project_with_a_taken_slug_is_400(client_for, owner, private_project, unchanged):
    response = client_for(owner).post(
        "/api/v1/projects/", {"name": "Another", "slug": private_project.slug}, format="json"
    )

    assert_error(response, 400, "slug", "already exists")
    unchanged()


def test_creating_a_project_with_a_slug_taken_by_someone_elses_private_project_is_400(
    client_for, team, private_project, unchanged
):
    response = client_for(team["outsider"]).post(
        "/api/v1/projects/", {"name": "Mine", "slug": private_project.slug}, format="json"
    )

    assert_error(response, 400, "slug")
    unchanged()


def test_creating_a_dataset_with_a_taken_name_is_400(client_for, owner, private_project, dataset, unchanged):
    response = client_for(owner).post(
        f"/api/v1/projects/{private_project.slug}/datasets/", {"name": dataset.name}, format="json"
    )

    assert_error(response, 400, "already exists")
    unchanged()


def test_a_dataset_name_may_repeat_across_projects(client_for, owner, private_project, public_project, dataset):
    response = client_for(owner).post(
        f"/api/v1/projects/{public_project.slug}/datasets/", {"name": dataset.name}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Dataset.objects.filter(name=dataset.name).count() == 2


# --- numbers past the database's range, documents nested past the bound ---------------------------
BEYOND = 2**70  # past every integer column: the database driver raised OverflowError


@pytest.fixture
def notebook(private_project: Project, owner: User) -> Notebook:
    return upload_notebook(private_project, owner).notebook


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        pytest.param({"depends_on": [BEYOND]}, "depends_on", id="depends-on"),
        pytest.param({"depends_on": [0]}, "depends_on", id="depends-on-zero"),
        pytest.param({"depends_on": list(range(1, 200))}, "depends_on", id="depends-on-too-many"),
        pytest.param({"notebook": BEYOND}, "notebook", id="notebook"),
        pytest.param({"version": BEYOND}, "version", id="version"),
        pytest.param({"datasets": [{"name": "measurements", "version": BEYOND}]}, "datasets", id="dataset-version"),
        pytest.param({"priority": BEYOND}, "priority", id="priority"),
        pytest.param({"timeout_seconds": BEYOND}, "timeout_seconds", id="timeout"),
    ],
)
def test_run_submission_with_a_number_past_the_range_is_400(client_for, owner, private_project, notebook, fields, name):
    from apps.compute.models import Run

    body = {"project": private_project.slug, "notebook": notebook.pk, **fields}

    response = client_for(owner).post("/api/v1/runs/", body, format="json")

    assert_error(response, 400, name)
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "notebooks/{big}/",
        "notebooks/{big}/versions/",
        "notebooks/{notebook}/versions/{big}/",
        "notebooks/{notebook}/versions/{big}/download/",
        "datasets/measurements/versions/{big}/",
    ],
)
def test_an_id_past_the_range_in_a_url_is_404(client_for, owner, private_project, notebook, dataset, url):
    path = url.format(big=BEYOND, notebook=notebook.pk)

    response = client_for(owner).get(f"/api/v1/projects/{private_project.slug}/{path}")

    assert response.status_code == 404


def test_notebook_upload_nested_5000_levels_is_400_and_stores_nothing(client_for, owner, private_project, unchanged):
    deep = "[" * 5000 + "]" * 5000
    content = ('{"cells": [], "metadata": {"x": %s}, "nbformat": 4, "nbformat_minor": 5}' % deep).encode()  # noqa: UP031

    response = client_for(owner).post(notebooks_url(private_project), {"file": upload_file(content)})

    assert_error(response, 400, "nested too deeply")
    unchanged()


def test_notebook_upload_one_level_past_the_bound_is_400(client_for, owner, private_project, unchanged):
    from apps.core.inputs import MAX_JSON_DEPTH

    document = json.loads(notebook_bytes())
    value: object = 1
    for _ in range(MAX_JSON_DEPTH):
        value = {"a": value}
    document["metadata"]["deep"] = value  # notebook -> metadata -> deep: past the bound

    response = client_for(owner).post(
        notebooks_url(private_project), {"file": upload_file(json.dumps(document).encode())}
    )

    assert_error(response, 400, "nested too deeply")
    unchanged()
