"""Notebook and dataset versions through the API, content-addressed storage, project listing
(pagination, search, filters), constant query counts for lists, and the OpenAPI schema/docs."""

import hashlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.core import hashing
from apps.core.hashing import CHUNK_SIZE, blob_name, sha256_of
from apps.projects import services
from apps.projects.models import Dataset, DatasetVersion, NotebookVersion, Project, Role
from tests.factories import make_project, make_user, notebook_bytes, upload_notebook


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """A private MEDIA_ROOT, so blob checks see only this test's files."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


def upload_file(content: bytes, name: str = "analysis.ipynb") -> io.BytesIO:
    stream = io.BytesIO(content)
    stream.name = name
    return stream


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def blob_files(media_root: Path) -> list[Path]:
    return sorted(p for p in (media_root / "blobs").rglob("*") if p.is_file())


def download_bytes(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def api_owner(client_for, owner) -> APIClient:
    return client_for(owner)


@pytest.fixture
def project(owner) -> Project:
    return make_project(owner, slug="lab")


NOTEBOOKS = "/api/v1/projects/lab/notebooks/"


def post_notebook(client: APIClient, content: bytes, name: str = "analysis.ipynb", **fields: str):
    return client.post(NOTEBOOKS, {"file": upload_file(content, name), **fields})


# --- notebooks --------------------------------------------------------------------------------------
def test_notebook_upload_creates_version_one_with_sha256_size_and_kernel(api_owner, project):
    content = notebook_bytes()

    response = post_notebook(api_owner, content)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["path"] == "analysis.ipynb"
    version = body["latest_version"]
    assert version["number"] == 1
    assert version["sha256"] == sha256_hex(content)
    assert version["size"] == len(content)
    assert version["kernel_name"] == "python3"
    assert version["language"] == "python"
    assert version["created_by"] == "olivia"
    assert version["download_url"] == f"{NOTEBOOKS}{body['id']}/versions/1/download/"


def test_notebook_upload_stores_at_the_given_path(api_owner, project):
    response = post_notebook(api_owner, notebook_bytes(), path="models/fit.ipynb", message="first fit")

    assert response.status_code == 201, response.content
    assert response.json()["path"] == "models/fit.ipynb"
    assert response.json()["latest_version"]["message"] == "first fit"


def test_notebook_upload_records_parameters_as_papermill_infers_them(api_owner, project):
    content = notebook_bytes(parameters="alpha = 0.5\nsteps = 10")

    response = post_notebook(api_owner, content)

    assert response.status_code == 201, response.content
    assert response.json()["latest_version"]["parameters"] == [
        {"name": "alpha", "inferred_type_name": "float", "default": "0.5", "help": ""},
        {"name": "steps", "inferred_type_name": "int", "default": "10", "help": ""},
    ]


def test_notebook_parameters_keep_annotations_help_and_non_literal_defaults(api_owner, project):
    cell = 'n: int = 3\nlabel = "run"  # shown on the plot\nflags = [1, 2]\nseed = make_seed()'

    response = post_notebook(api_owner, notebook_bytes(parameters=cell))

    assert response.status_code == 201, response.content
    parameters = {p["name"]: p for p in response.json()["latest_version"]["parameters"]}
    assert list(parameters) == ["n", "label", "flags", "seed"]
    assert parameters["n"]["inferred_type_name"] == "int"
    assert parameters["n"]["default"] == "3"
    assert parameters["label"]["inferred_type_name"] == "str"
    assert parameters["label"]["help"] == "shown on the plot"
    assert parameters["flags"]["inferred_type_name"] == "list"
    assert parameters["seed"]["inferred_type_name"] == "None"  # not a literal: papermill cannot tell
    assert parameters["seed"]["default"] == "make_seed()"


def test_notebook_without_a_parameters_cell_has_no_parameters(api_owner, project):
    response = post_notebook(api_owner, notebook_bytes(parameters=None))

    assert response.status_code == 201, response.content
    assert response.json()["latest_version"]["parameters"] == []


def test_notebook_blob_is_stored_under_its_sha256(api_owner, project, media_root):
    content = notebook_bytes()
    sha = sha256_hex(content)

    post_notebook(api_owner, content)

    version = NotebookVersion.objects.get()
    assert version.storage_name == blob_name(sha)
    assert blob_name(sha) == f"blobs/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    assert default_storage.exists(blob_name(sha))
    with default_storage.open(blob_name(sha), "rb") as stored:
        assert stored.read() == content
    assert blob_files(media_root) == [media_root / blob_name(sha)]


def test_identical_notebooks_at_two_paths_share_one_blob(api_owner, project, media_root):
    content = notebook_bytes()

    post_notebook(api_owner, content, path="a.ipynb")
    post_notebook(api_owner, content, path="b.ipynb")

    assert NotebookVersion.objects.count() == 2
    assert blob_files(media_root) == [media_root / blob_name(sha256_hex(content))]


def test_reuploading_identical_notebook_creates_no_version(api_owner, project):
    content = notebook_bytes()
    first = post_notebook(api_owner, content)

    again = post_notebook(api_owner, content, message="same again")

    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["latest_version"]["number"] == 1
    assert again.json()["latest_version"]["message"] == ""
    assert NotebookVersion.objects.count() == 1


def test_uploading_changed_notebook_creates_version_two(api_owner, project):
    post_notebook(api_owner, notebook_bytes(source="print(1)"))
    changed = notebook_bytes(source="print(2)")

    response = post_notebook(api_owner, changed)

    assert response.status_code == 201, response.content
    assert response.json()["latest_version"]["number"] == 2
    assert response.json()["latest_version"]["sha256"] == sha256_hex(changed)
    assert NotebookVersion.objects.count() == 2


def test_reuploading_an_older_version_creates_a_new_version(api_owner, project):
    # Only the latest version counts as "unchanged": going back is a change too.
    original = notebook_bytes(source="print(1)")
    post_notebook(api_owner, original)
    post_notebook(api_owner, notebook_bytes(source="print(2)"))

    response = post_notebook(api_owner, original)

    assert response.status_code == 201, response.content
    assert response.json()["latest_version"]["number"] == 3
    assert response.json()["latest_version"]["sha256"] == sha256_hex(original)


def test_notebook_versions_are_listed_newest_first(api_owner, project, owner):
    for i in range(3):
        result = upload_notebook(project, owner, source=f"print({i})")
    notebook_id = result.notebook.pk

    response = api_owner.get(f"{NOTEBOOKS}{notebook_id}/versions/")

    assert response.status_code == 200, response.content
    versions = response.json()["results"]
    assert [v["number"] for v in versions] == [3, 2, 1]
    assert response.json()["count"] == 3


def test_notebook_version_download_returns_the_exact_bytes(api_owner, project):
    content = notebook_bytes(source="print('exact bytes')")
    notebook_id = post_notebook(api_owner, content, path="models/fit.ipynb").json()["id"]

    response = api_owner.get(f"{NOTEBOOKS}{notebook_id}/versions/1/download/")

    assert response.status_code == 200
    assert download_bytes(response) == content
    assert response["ETag"] == f'"{sha256_hex(content)}"'
    assert response["Content-Disposition"].startswith("attachment")
    assert 'filename="fit.ipynb"' in response["Content-Disposition"]
    assert response["Content-Type"] == "application/x-ipynb+json"


def test_old_notebook_version_download_still_returns_its_own_bytes(api_owner, project):
    first = notebook_bytes(source="print(1)")
    notebook_id = post_notebook(api_owner, first).json()["id"]
    post_notebook(api_owner, notebook_bytes(source="print(2)"))

    response = api_owner.get(f"{NOTEBOOKS}{notebook_id}/versions/1/download/")

    assert download_bytes(response) == first


# --- datasets ---------------------------------------------------------------------------------------
DATASETS = "/api/v1/projects/lab/datasets/"
VERSIONS = f"{DATASETS}measurements/versions/"


@pytest.fixture
def dataset(api_owner, project) -> dict:
    response = api_owner.post(DATASETS, {"name": "measurements", "description": "Raw runs"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def post_files(client: APIClient, files: dict[str, bytes], *, use_paths: bool = True, message: str = ""):
    data: dict = {"files": [upload_file(content, path.rsplit("/", 1)[-1]) for path, content in files.items()]}
    if use_paths:
        data["paths"] = list(files)
    if message:
        data["message"] = message
    return client.post(VERSIONS, data)


def test_dataset_create_returns_it_without_versions(dataset):
    assert dataset["name"] == "measurements"
    assert dataset["description"] == "Raw runs"
    assert dataset["latest_version"] is None
    assert Dataset.objects.values_list("created_by__username", flat=True).get() == "olivia"


def test_dataset_upload_creates_version_one_with_each_file_hashed(api_owner, dataset):
    files = {"train.csv": b"x,y\n1,2\n", "test.csv": b"x,y\n3,4\n5,6\n"}

    response = post_files(api_owner, files, use_paths=False, message="initial")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 1
    assert body["message"] == "initial"
    assert body["file_count"] == 2
    assert body["total_size"] == sum(len(c) for c in files.values())
    assert body["files"] == [
        {"path": "test.csv", "sha256": sha256_hex(files["test.csv"]), "size": len(files["test.csv"])},
        {"path": "train.csv", "sha256": sha256_hex(files["train.csv"]), "size": len(files["train.csv"])},
    ]


def test_dataset_upload_places_files_at_the_given_paths(api_owner, dataset, media_root):
    content = b"a,b\n1,2\n"

    response = post_files(api_owner, {"raw/2024/run.csv": content})

    assert response.status_code == 201, response.content
    assert [f["path"] for f in response.json()["files"]] == ["raw/2024/run.csv"]
    assert blob_files(media_root) == [media_root / blob_name(sha256_hex(content))]


def test_second_dataset_upload_adds_and_replaces_files_and_keeps_the_rest(api_owner, dataset):
    post_files(api_owner, {"a.csv": b"a1\n", "b.csv": b"b1\n"})

    response = post_files(api_owner, {"b.csv": b"b2\n", "c.csv": b"c1\n"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 2
    assert {f["path"]: f["sha256"] for f in body["files"]} == {
        "a.csv": sha256_hex(b"a1\n"),
        "b.csv": sha256_hex(b"b2\n"),
        "c.csv": sha256_hex(b"c1\n"),
    }
    assert body["file_count"] == 3
    first = api_owner.get(f"{VERSIONS}1/").json()
    assert {f["path"]: f["sha256"] for f in first["files"]} == {
        "a.csv": sha256_hex(b"a1\n"),
        "b.csv": sha256_hex(b"b1\n"),
    }


def test_identical_dataset_reupload_creates_no_version(api_owner, dataset):
    post_files(api_owner, {"a.csv": b"a1\n", "b.csv": b"b1\n"})

    response = post_files(api_owner, {"b.csv": b"b1\n"})  # already in the latest version

    assert response.status_code == 200, response.content
    assert response.json()["number"] == 1
    assert DatasetVersion.objects.count() == 1


def test_dataset_versions_list_newest_first_and_dataset_points_at_latest(api_owner, dataset):
    for i in range(3):
        post_files(api_owner, {"a.csv": f"{i}\n".encode()})

    versions = api_owner.get(VERSIONS).json()["results"]
    detail = api_owner.get(f"{DATASETS}measurements/").json()

    assert [v["number"] for v in versions] == [3, 2, 1]
    assert detail["latest_version"]["number"] == 3


def test_dataset_file_download_returns_the_exact_bytes(api_owner, dataset):
    content = bytes(range(256)) * 10
    post_files(api_owner, {"raw/blob.bin": content, "other.csv": b"1\n"})

    response = api_owner.get(f"{VERSIONS}1/download/", {"path": "raw/blob.bin"})

    assert response.status_code == 200
    assert download_bytes(response) == content
    assert response["ETag"] == f'"{sha256_hex(content)}"'
    assert response["Content-Disposition"].startswith("attachment")
    assert 'filename="blob.bin"' in response["Content-Disposition"]


def test_dataset_file_download_of_an_unknown_path_is_404(api_owner, dataset):
    post_files(api_owner, {"a.csv": b"1\n"})

    response = api_owner.get(f"{VERSIONS}1/download/", {"path": "missing.csv"})

    assert response.status_code == 404


# --- hashing ----------------------------------------------------------------------------------------
class ReadRecordingStream(io.BytesIO):
    """A BytesIO that records the size asked for by every read()."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.read_sizes.append(size)
        return super().read(size)


def test_sha256_of_hashes_a_stream_larger_than_one_chunk():
    data = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 3)  # two chunks and a bit
    assert len(data) > 2 * CHUNK_SIZE

    assert sha256_of(io.BytesIO(data)) == (sha256_hex(data), len(data))


def test_sha256_of_never_reads_more_than_one_chunk_at_a_time():
    data = b"\x5a" * (CHUNK_SIZE * 2 + 17)
    stream = ReadRecordingStream(data)

    sha256_of(stream)

    assert len(stream.read_sizes) >= 3  # at least three chunks read, then the empty read at the end
    assert all(size is not None and 0 < size <= CHUNK_SIZE for size in stream.read_sizes), stream.read_sizes


def test_sha256_of_hashes_from_the_start_and_rewinds():
    stream = io.BytesIO(b"hello world")
    stream.seek(6)

    assert sha256_of(stream) == (sha256_hex(b"hello world"), 11)
    assert stream.tell() == 0


def test_store_blob_streams_large_files_in_chunks(media_root, db):
    data = b"\x01" * (CHUNK_SIZE + 5)
    stream = ReadRecordingStream(data)

    blob = hashing.store_blob(stream)

    assert blob == hashing.StoredBlob(sha256=sha256_hex(data), size=len(data), storage_name=blob_name(sha256_hex(data)))
    assert all(size is not None and 0 < size <= CHUNK_SIZE for size in stream.read_sizes), stream.read_sizes
    assert (media_root / blob.storage_name).read_bytes() == data


# --- project list: pagination, search, filters -----------------------------------------------------
PROJECTS = "/api/v1/projects/"


def slugs(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {p["slug"] for p in response.json()["results"]}


@pytest.fixture
def mixed_projects(team) -> dict[str, Project]:
    """Olivia's projects, one public and one private; Oscar's public and private projects."""
    olivia, oscar = team["owner"], team["outsider"]
    return {
        "mine-public": make_project(olivia, slug="genome-atlas", visibility="public"),
        "mine-private": make_project(olivia, slug="protein-folding", visibility="private"),
        "other-public": make_project(oscar, slug="ocean-genome", visibility="public"),
        "other-private": make_project(oscar, slug="oscar-secret", visibility="private"),
    }


def test_project_list_page_size_limits_the_page(api_owner, owner):
    for i in range(5):
        make_project(owner, slug=f"p{i}")

    response = api_owner.get(PROJECTS, {"page_size": 2})

    body = response.json()
    assert body["count"] == 5
    assert len(body["results"]) == 2
    assert body["next"] is not None
    last = api_owner.get(PROJECTS, {"page_size": 2, "page": 3}).json()
    assert len(last["results"]) == 1
    assert last["next"] is None


def test_project_list_pages_cover_every_project_once(api_owner, owner):
    expected = {make_project(owner, slug=f"p{i}").slug for i in range(5)}

    seen = [
        p["slug"]
        for page in (1, 2, 3)
        for p in api_owner.get(PROJECTS, {"page_size": 2, "page": page}).json()["results"]
    ]

    assert sorted(seen) == sorted(expected)


def test_project_list_shows_public_and_own_private_projects(api_owner, mixed_projects):
    assert slugs(api_owner.get(PROJECTS)) == {"genome-atlas", "protein-folding", "ocean-genome"}


def test_project_list_search_matches_name_slug_and_description(api_owner, owner, mixed_projects):
    services.project_update(project=mixed_projects["mine-private"], description="Folding of GENOME-encoded proteins")

    assert slugs(api_owner.get(PROJECTS, {"search": "genome"})) == {"genome-atlas", "ocean-genome", "protein-folding"}
    assert slugs(api_owner.get(PROJECTS, {"search": "atlas"})) == {"genome-atlas"}
    assert slugs(api_owner.get(PROJECTS, {"search": "secret"})) == set()  # someone else's private project


def test_project_list_filters_by_visibility(api_owner, mixed_projects):
    assert slugs(api_owner.get(PROJECTS, {"visibility": "public"})) == {"genome-atlas", "ocean-genome"}
    assert slugs(api_owner.get(PROJECTS, {"visibility": "private"})) == {"protein-folding"}


def test_project_list_member_filter_keeps_only_your_projects(api_owner, mixed_projects):
    assert slugs(api_owner.get(PROJECTS, {"member": "true"})) == {"genome-atlas", "protein-folding"}
    assert slugs(api_owner.get(PROJECTS, {"member": "false"})) == {"ocean-genome"}


def test_project_list_member_filter_for_anonymous_is_empty(api, mixed_projects):
    assert slugs(api.get(PROJECTS)) == {"genome-atlas", "ocean-genome"}
    assert slugs(api.get(PROJECTS, {"member": "true"})) == set()


def test_project_list_reports_your_role(client_for, team, mixed_projects):
    response = client_for(team["outsider"]).get(PROJECTS)

    roles = {p["slug"]: p["your_role"] for p in response.json()["results"]}
    assert roles == {"genome-atlas": None, "ocean-genome": "owner", "oscar-secret": "owner"}


# --- constant query counts for list endpoints ------------------------------------------------------
def add_projects(owner: User, project: Project, start: int, count: int) -> str:
    for i in range(start, start + count):
        make_project(owner, slug=f"extra-{i}")
    return PROJECTS


def add_members(owner: User, project: Project, start: int, count: int) -> str:
    roles = [Role.VIEWER, Role.MEMBER, Role.MAINTAINER]
    for i in range(start, start + count):
        services.membership_set(project=project, user=make_user(f"m{i}"), role=roles[i % 3], actor_role=Role.OWNER)
    return "/api/v1/projects/lab/members/"


def add_notebooks(owner: User, project: Project, start: int, count: int) -> str:
    for i in range(start, start + count):
        upload_notebook(project, owner, path=f"nb{i}.ipynb", source=f"print({i})")
    return NOTEBOOKS


def add_notebook_versions(owner: User, project: Project, start: int, count: int) -> str:
    for i in range(start, start + count):
        result = upload_notebook(project, owner, path="one.ipynb", source=f"print({i})")
    return f"{NOTEBOOKS}{result.notebook.pk}/versions/"


def add_datasets(owner: User, project: Project, start: int, count: int) -> str:
    for i in range(start, start + count):
        dataset = services.dataset_create(project=project, name=f"d{i}", creator=owner)
        if i % 2:  # some with a latest version, some without
            services.dataset_add_files(
                dataset=dataset, files=[services.IncomingFile("a.csv", io.BytesIO(b"%d" % i))], uploader=owner
            )
    return DATASETS


def add_dataset_versions(owner: User, project: Project, start: int, count: int) -> str:
    dataset = Dataset.objects.filter(project=project, name="series").first() or services.dataset_create(
        project=project, name="series", creator=owner
    )
    for i in range(start, start + count):
        files = [services.IncomingFile(f"f{i}.csv", io.BytesIO(b"%d" % i))]
        services.dataset_add_files(dataset=dataset, files=files, uploader=owner)
    return f"{DATASETS}series/versions/"


def count_list_queries(client: APIClient, url: str) -> tuple[int, int]:
    """(queries, items) for one GET of a list, after a warm-up request (token last-used write,
    per-process caches)."""
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries), len(response.json()["results"])


@pytest.mark.parametrize(
    ("add", "already_there"),
    [
        pytest.param(add_projects, 1, id="projects"),  # `lab` itself
        pytest.param(add_members, 1, id="members"),  # the owner
        pytest.param(add_notebooks, 0, id="notebooks"),
        pytest.param(add_notebook_versions, 0, id="notebook-versions"),
        pytest.param(add_datasets, 0, id="datasets"),
        pytest.param(add_dataset_versions, 0, id="dataset-versions"),
    ],
)
def test_list_endpoint_query_count_does_not_grow_with_items(
    api_owner, owner, project, add: Callable[..., str], already_there: int
):
    url = add(owner, project, 0, 2 - already_there)
    queries_for_two, items = count_list_queries(api_owner, url)
    assert items == 2

    add(owner, project, 2, 4)
    queries_for_six, items = count_list_queries(api_owner, url)
    assert items == 6

    assert queries_for_six == queries_for_two


# --- OpenAPI ----------------------------------------------------------------------------------------
def test_schema_endpoint_serves_openapi_yaml(api, db):
    response = api.get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    text = response.content.decode()
    assert text.startswith("openapi: 3.")
    assert "/api/v1/projects/{slug}/notebooks/:" in text


def test_schema_endpoint_serves_openapi_json(api, db):
    response = api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "ReproLab API"
    assert "/api/v1/projects/{slug}/datasets/{name}/versions/{number}/download/" in schema["paths"]


def test_schema_generates_without_warnings_and_validates(tmp_path):
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert target.read_text().startswith("openapi: 3.")


def test_api_docs_page_loads_assets_from_the_sidecar_not_a_cdn(api, db):
    response = api.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        if asset.startswith("/api/docs/?"):
            continue  # the page's own init script, a file of its own for the site's CSP
        assert asset.startswith(("/static/drf_spectacular_sidecar/", "/static/css/")), asset
        assert finders.find(asset.removeprefix("/static/")), asset


def test_api_docs_assets_are_served(api, db):
    html = api.get("/api/docs/").content.decode()

    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        response = api.get(asset)
        assert response.status_code == 200, asset
        if response.streaming:  # static files; the init script is an ordinary response
            b"".join(response.streaming_content)
        response.close()
