"""Reproduction checks through the services and the API, with runs driven by hand (no agent):
the lease protocol is the same one a real node uses."""

import hashlib
import io

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from apps.compute import services as compute
from apps.compute.models import Run
from apps.projects.models import Role
from apps.reproducibility import services
from apps.reproducibility.models import Reproduction
from tests.factories import make_project, make_user, upload_notebook


def executed(text: str) -> bytes:
    nb = new_notebook()
    cell = new_code_cell("print(x)")
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    nb.cells = [cell]
    return nbformat.writes(nb).encode()


def finish(run: Run, node, *, output: bytes | None, state: str = "succeeded") -> Run:
    """Claim the run on `node` and complete it with this output, as an agent would."""
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == run.pk
    if output is not None:
        compute.run_output_upload(
            run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
        )
    return compute.run_complete(run=run, lease_id=claim.lease_id, state=state)


@pytest.fixture
def lab(db):
    owner = make_user()
    viewer = make_user()
    project = make_project(owner, slug="repro-lab", members={viewer: Role.VIEWER})
    version = upload_notebook(project, owner).version
    node = compute.node_register(owner=owner, name="hand").node
    original = compute.run_submit(project=project, user=owner, notebook_version=version)
    finish(original, node, output=executed("<b>0.5</b>\n"))
    original.refresh_from_db()
    return owner, viewer, node, original


def test_a_rerun_with_the_same_output_reproduces(lab):
    owner, _, node, original = lab
    reproduction = services.reproduction_start(original=original, user=owner)
    rerun = reproduction.reruns.get()
    assert rerun.parameters == original.parameters
    assert rerun.notebook_version_id == original.notebook_version_id
    finish(rerun, node, output=executed("<b>0.5</b>\n"))
    settled = services.reproduction_settle(reproduction_id=reproduction.pk)
    assert settled.verdict == "reproduced"
    assert settled.finished_at is not None


def test_a_failed_rerun_means_could_not_run(lab):
    owner, _, node, original = lab
    reproduction = services.reproduction_start(original=original, user=owner)
    finish(reproduction.reruns.get(), node, output=None, state="failed")
    settled = services.reproduction_settle(reproduction_id=reproduction.pk)
    assert settled.verdict == "could_not_run"
    assert "failed" in settled.report["reason"]


def test_settling_waits_for_every_rerun_and_is_idempotent(lab):
    owner, _, node, original = lab
    reproduction = services.reproduction_start(original=original, user=owner, repeats=2)
    first, second = reproduction.reruns.order_by("pk")
    finish(first, node, output=executed("<b>0.9</b>\n"))
    assert services.reproduction_settle(reproduction_id=reproduction.pk).verdict == "pending"
    finish(second, node, output=executed("<b>0.95</b>\n"))
    assert services.reproduction_settle(reproduction_id=reproduction.pk).verdict == "not_reproduced"
    Reproduction.objects.filter(pk=reproduction.pk).update(report={"kept": True})
    assert services.reproduction_settle(reproduction_id=reproduction.pk).report == {"kept": True}


def test_api_rules_viewer_403_outsider_404_bad_settings_400(client_for, lab):
    owner, viewer, _, original = lab
    url = f"/api/v1/runs/{original.pk}/reproduce/"
    assert client_for(viewer).post(url, {}, format="json").status_code == 403
    assert client_for(make_user()).post(url, {}, format="json").status_code == 404
    bad = client_for(owner).post(url, {"rtol": -1}, format="json")
    assert bad.status_code == 400
    assert "rtol" in bad.json()["detail"]
    assert not Reproduction.objects.exists()
    created = client_for(owner).post(url, {"repeats": 2, "rtol": 1e-6}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["verdict"] == "pending"
    assert len(body["reruns"]) == 2
    assert client_for(viewer).get(f"/api/v1/reproductions/{body['id']}/").status_code == 200
    assert client_for(make_user()).get(f"/api/v1/reproductions/{body['id']}/").status_code == 404


def test_reruns_need_what_the_original_needed_unless_told_otherwise(lab):
    owner, _, _, original = lab
    # A row stored before gpus, isolation and network existed.
    Run.objects.filter(pk=original.pk).update(requirements={"tags": ["lab"], "gpu": True, "min_gpu_memory_mb": 0})
    original.refresh_from_db()
    inherited = services.reproduction_start(original=original, user=owner).reruns.get()
    assert inherited.requirements == {
        "tags": ["lab"],
        "gpu": True,
        "gpus": 1,
        "min_gpu_memory_mb": 0,
        "isolation": None,
        "network": False,
    }
    told = services.reproduction_start(original=original, user=owner, requirements={"isolation": "sandbox"})
    assert told.requirements == told.reruns.get().requirements
    assert told.requirements["isolation"] == "sandbox"
    assert told.requirements["gpus"] == 0


def test_bad_requirements_for_the_reruns_are_400_and_start_nothing(client_for, lab):
    owner, _, _, original = lab
    url = f"/api/v1/runs/{original.pk}/reproduce/"
    response = client_for(owner).post(url, {"requirements": {"gpus": -1, "cores": 2}}, format="json")
    assert response.status_code == 400
    assert "Unknown requirement(s): cores." in response.json()["detail"]
    assert not Reproduction.objects.exists()
    assert Run.objects.count() == 1


def test_reproduction_page_shows_evidence_escaped(client, lab):
    owner, _, node, original = lab
    reproduction = services.reproduction_start(original=original, user=owner)
    finish(reproduction.reruns.get(), node, output=executed("<b>0.7</b>\n"))
    services.reproduction_settle(reproduction_id=reproduction.pk)
    client.force_login(owner)
    page = client.get(f"/reproductions/{reproduction.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Not reproduced" in html
    assert "&lt;b&gt;0.5&lt;/b&gt;" in html
    assert "<b>0.5</b>" not in html


def test_rerunning_on_the_latest_data_names_the_changed_input(db):
    from apps.projects import services as project_services
    from apps.reproducibility.services import environment_record

    from .test_environment import SNAPSHOT

    owner = make_user()
    project = make_project(owner, slug="drift-lab")
    dataset = project_services.dataset_create(project=project, name="obs", creator=owner)
    v1, _ = project_services.dataset_add_files(
        dataset=dataset, files=[project_services.IncomingFile("obs.csv", io.BytesIO(b"x\n1\n"))], uploader=owner
    )
    version = upload_notebook(project, owner).version
    node = compute.node_register(owner=owner, name="drift-node").node

    def run_with_snapshot(run: Run, data_sha: str, output: str) -> None:
        compute.node_seen(node=node)
        claim = compute.run_claim(node=node)
        assert claim is not None
        snapshot = {**SNAPSHOT, "inputs": [{"role": "data", "path": "obs.csv", "sha256": data_sha, "size": 4}]}
        environment_record(run=run, lease_id=claim.lease_id, data=snapshot)
        body = executed(output)  # new cell ids each call: hash the very bytes sent
        compute.run_output_upload(
            run=run, lease_id=claim.lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
        )
        compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")

    original = compute.run_submit(project=project, user=owner, notebook_version=version, dataset_versions=[v1])
    run_with_snapshot(original, v1.files.get().sha256, "mean 1.0\n")
    v2, _ = project_services.dataset_add_files(
        dataset=dataset, files=[project_services.IncomingFile("obs.csv", io.BytesIO(b"x\n2\n"))], uploader=owner
    )
    original.refresh_from_db()
    reproduction = services.reproduction_start(original=original, user=owner, latest_data=True)
    rerun = reproduction.reruns.get()
    assert list(rerun.input_datasets.all()) == [v2]
    run_with_snapshot(rerun, v2.files.get().sha256, "mean 2.0\n")

    settled = services.reproduction_settle(reproduction_id=reproduction.pk)
    assert settled.verdict == "not_reproduced"
    assert settled.report["changed_inputs"]["changed"] == {"obs.csv": [v1.files.get().sha256, v2.files.get().sha256]}
