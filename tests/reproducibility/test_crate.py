"""The run's RO-Crate validates (roc-validator, Process Run Crate 0.5, REQUIRED level) and says
what ran, on what, with what."""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from rocrate_validator import services as validator
from rocrate_validator.models import Severity

from apps.compute import services as compute
from apps.projects import services as project_services
from apps.projects.models import Role
from apps.reproducibility.services import environment_record
from tests.factories import make_project, make_user, upload_notebook

from .test_environment import SNAPSHOT

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
# The RO-Crate 1.1 context document, as ro-crate-py 0.11 shipped it (rocrate/data/ro-crate.jsonld).
CONTEXT_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "ro-crate-1.1-context.jsonld"


def offline_validator_cache(tmp_path) -> str:
    """The validator fetches the RO-Crate JSON-LD context over HTTP into its requests-cache; this
    machine has no network, so put the published context document there from a local copy (the
    edge of the world: the download is substituted, not the validation)."""
    import requests
    import requests_cache
    import urllib3

    cache_path = str(tmp_path / "validator-cache")
    session = requests_cache.CachedSession(cache_name=cache_path, backend="sqlite", allowable_methods=("GET",))
    response = requests.Response()
    response.status_code = 200
    response.reason = "OK"
    response.url = CONTEXT_URL
    response.headers["Content-Type"] = "application/ld+json"
    content = CONTEXT_FILE.read_bytes()
    response._content = content
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(content),
        headers=dict(response.headers),
        status=200,
        preload_content=False,
        request_url=CONTEXT_URL,
    )
    response.request = requests.Request("GET", CONTEXT_URL).prepare()
    session.cache.save_response(response)
    session.close()
    return cache_path


@pytest.fixture
def finished_run(db):
    owner = make_user("crate-author")
    project = make_project(owner, slug="crate-lab", members={make_user("crate-viewer"): Role.VIEWER})
    project.license = "MIT"
    project.save()
    dataset = project_services.dataset_create(project=project, name="obs", creator=owner)
    data_version, _ = project_services.dataset_add_files(
        dataset=dataset, files=[project_services.IncomingFile("obs.csv", io.BytesIO(b"x\n1\n"))], uploader=owner
    )
    version = upload_notebook(project, owner).version
    run = compute.run_submit(
        project=project,
        user=owner,
        notebook_version=version,
        parameters={"alpha": 0.25},
        dataset_versions=[data_version],
    )
    node = compute.node_register(owner=owner, name="crate-node").node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    environment_record(run=run, lease_id=claim.lease_id, data=SNAPSHOT)
    body = b"step,loss\n1,0.5\n"
    compute.run_artifact_upload(
        run=run,
        lease_id=claim.lease_id,
        path="out/loss.csv",
        stream=io.BytesIO(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )
    compute.run_complete(run=run, lease_id=claim.lease_id, state="failed", error="placeholder")
    return owner, run


def validated_crate(client, run, tmp_path) -> Path:
    """The run's crate.zip as `client` downloads it, checked against Process Run Crate 0.5 at
    REQUIRED level (offline); its path."""
    response = client.get(f"/api/v1/runs/{run.pk}/crate.zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    crate_zip = tmp_path / "crate.zip"
    crate_zip.write_bytes(b"".join(response.streaming_content))
    result = validator.validate(
        {
            "rocrate_uri": str(crate_zip),
            "profile_identifier": "process-run-crate-0.5",
            "requirement_severity": Severity.REQUIRED,
            "offline": True,
            "cache_path": offline_validator_cache(tmp_path),
        }
    )
    assert result.passed(), [issue.message for issue in result.get_issues()]
    return crate_zip


def test_run_crate_validates_and_describes_the_run(client_for, finished_run, tmp_path):
    owner, run = finished_run
    crate_zip = validated_crate(client_for(owner), run, tmp_path)

    with zipfile.ZipFile(crate_zip) as archive:
        metadata = json.loads(archive.read("ro-crate-metadata.json"))
        names = set(archive.namelist())
    graph = {entity["@id"]: entity for entity in metadata["@graph"]}
    root = graph["./"]
    assert {"@id": "https://w3id.org/ro/wfrun/process/0.5"} in (
        root["conformsTo"] if isinstance(root["conformsTo"], list) else [root["conformsTo"]]
    )
    action = graph[f"#run-{run.pk}"]
    assert action["@type"] == "CreateAction"
    assert {"@id": action["@id"]} in (root["mentions"] if isinstance(root["mentions"], list) else [root["mentions"]])
    assert action["actionStatus"] == {"@id": "http://schema.org/FailedActionStatus"}
    assert action["agent"] == {"@id": "#person-crate-author"}
    objects = {o["@id"] for o in action["object"]}
    assert "#param-alpha" in objects
    assert graph["#param-alpha"]["value"] == "0.25"
    notebook_entry = graph["notebook/analysis.ipynb"]
    assert notebook_entry["sha256"] == run.notebook_version.sha256
    assert "data/obs/obs.csv" in names
    assert "environment.json" in names
    assert "artifacts/out/loss.csv" in names
    assert graph["artifacts/out/loss.csv"]["sha256"] == hashlib.sha256(b"step,loss\n1,0.5\n").hexdigest()
    assert {"@id": "artifacts/out/loss.csv"} in action["result"]
    assert graph["#env-PYTHONHASHSEED"]["value"] == "0"
    assert root["license"] in ("https://spdx.org/licenses/MIT", {"@id": "https://spdx.org/licenses/MIT"})


def test_crate_is_404_for_outsiders_and_400_before_the_run_ends(client_for, finished_run):
    owner, run = finished_run
    assert client_for(make_user()).get(f"/api/v1/runs/{run.pk}/crate.zip").status_code == 404
    pending = compute.run_submit(project=run.project, user=owner, notebook_version=run.notebook_version)
    response = client_for(owner).get(f"/api/v1/runs/{pending.pk}/crate.zip")
    assert response.status_code == 400
    assert "not ended" in response.json()["detail"]
