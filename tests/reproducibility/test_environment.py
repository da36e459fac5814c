"""Environment snapshots: recorded under a live lease, readable by those who see the run,
compared with the most consequential differences first."""

import copy
from typing import Any

from rest_framework.test import APIClient

from apps.compute import services as compute
from apps.compute.models import Run
from apps.reproducibility.diff import environment_diff, fingerprint
from apps.reproducibility.models import EnvironmentSnapshot
from tests.factories import make_user

SHA = "a" * 64
SNAPSHOT: dict[str, Any] = {
    "python": {"version": "3.11.7", "implementation": "CPython", "executable": "/usr/bin/python3"},
    "packages": {"numpy": "2.1.0", "papermill": "2.7.0", "pandas": "2.2.0"},
    "os": {"system": "Linux", "release": "6.1", "version": "#1", "machine": "x86_64", "libc": "glibc 2.36"},
    "cpu": {"model": "Xeon", "count": 2, "count_total": 2},
    "memory_mb": 24000,
    "gpus": [],
    "cuda": {},
    "kernel": {"name": "python3", "language": "python", "argv": ["python", "-m", "ipykernel_launcher"]},
    "env": {"PYTHONHASHSEED": "0"},
    "inputs": [
        {"role": "notebook", "path": "analysis.ipynb", "sha256": SHA, "size": 10},
        {"role": "data", "path": "data.csv", "sha256": "b" * 64, "size": 5, "dataset": "obs@v1"},
    ],
}


def test_identical_snapshots_have_no_differences():
    diff = environment_diff(SNAPSHOT, copy.deepcopy(SNAPSHOT))
    assert diff["identical"] is True
    assert diff["changes"] == 0
    assert diff["same_stack"] is True


def test_package_changes_come_first_and_are_itemised():
    other = copy.deepcopy(SNAPSHOT)
    other["packages"] = {"numpy": "2.2.0", "papermill": "2.7.0", "scipy": "1.14.0"}
    diff = environment_diff(SNAPSHOT, other)
    assert list(diff)[3] == "packages"  # after identical/changes/same_stack
    assert diff["packages"] == {
        "added": {"scipy": "1.14.0"},
        "removed": {"pandas": "2.2.0"},
        "changed": {"numpy": ["2.1.0", "2.2.0"]},
    }
    assert diff["same_stack"] is False
    assert diff["changes"] == 3


def test_gpu_and_cuda_differences_are_reported():
    other = copy.deepcopy(SNAPSHOT)
    other["gpus"] = [{"index": 0, "name": "NVIDIA H200", "memory_total_mb": 143000, "compute_capability": "9.0"}]
    other["cuda"] = {"runtime_version": "12.4", "driver_version": "12.6", "cupy_version": "13.3.0"}
    diff = environment_diff(SNAPSHOT, other)
    assert diff["gpus"] == [[], ["NVIDIA H200 (143000 MB, cc 9.0)"]]
    assert diff["cuda"]["runtime_version"] == [None, "12.4"]


def test_a_changed_input_file_is_a_changed_input():
    other = copy.deepcopy(SNAPSHOT)
    other["inputs"][1]["sha256"] = "c" * 64
    diff = environment_diff(SNAPSHOT, other)
    assert diff["inputs"]["changed"] == {"data.csv": ["b" * 64, "c" * 64]}
    assert diff["same_stack"] is True  # inputs are not part of the software stack


def test_fingerprint_ignores_inputs_and_executable_path():
    other = copy.deepcopy(SNAPSHOT)
    other["inputs"] = []
    other["python"]["executable"] = "/opt/venv/bin/python"
    assert fingerprint(other) == fingerprint(SNAPSHOT)


def _post(client, run: Run, token: str, body: dict):
    return client.post(
        f"/api/v1/agent/runs/{run.pk}/environment/", body, format="json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_agent_records_the_environment_under_its_lease(client_for, leased_run):
    owner, run, claim = leased_run
    response = _post(APIClient(), run, claim.run_token, {"lease_id": claim.lease_id, "environment": SNAPSHOT})
    assert response.status_code == 201
    stored = EnvironmentSnapshot.objects.get(run=run)
    assert stored.fingerprint == fingerprint(SNAPSHOT)
    assert stored.attempt == 1

    read = client_for(owner).get(f"/api/v1/runs/{run.pk}/environment/")
    assert read.status_code == 200
    assert read.json()["environment"]["packages"]["papermill"] == "2.7.0"


def test_a_stale_lease_cannot_record_an_environment(leased_run):
    _, run, claim = leased_run
    response = _post(
        APIClient(), run, claim.run_token, {"lease_id": "00000000-0000-0000-0000-000000000000", "environment": SNAPSHOT}
    )
    assert response.status_code == 409
    assert not EnvironmentSnapshot.objects.exists()


def test_a_malformed_environment_is_refused_with_a_message(leased_run):
    _, run, claim = leased_run
    broken = copy.deepcopy(SNAPSHOT)
    broken["inputs"][0]["sha256"] = "not-a-digest"
    response = _post(APIClient(), run, claim.run_token, {"lease_id": claim.lease_id, "environment": broken})
    assert response.status_code == 400
    assert "sha256" in response.json()["detail"]
    assert not EnvironmentSnapshot.objects.exists()


def test_outsiders_cannot_read_a_private_runs_environment(client_for, leased_run):
    _, run, claim = leased_run
    assert (
        _post(APIClient(), run, claim.run_token, {"lease_id": claim.lease_id, "environment": SNAPSHOT}).status_code
        == 201
    )
    outsider = make_user()
    assert client_for(outsider).get(f"/api/v1/runs/{run.pk}/environment/").status_code == 404
    assert client_for(None).get(f"/api/v1/runs/{run.pk}/environment/").status_code == 404


def test_diff_needs_the_other_run_and_answers_404_for_unstarted_runs(client_for, leased_run):
    owner, run, _ = leased_run
    response = client_for(owner).get(f"/api/v1/runs/{run.pk}/environment/diff/?against=abc")
    assert response.status_code == 400
    assert "against" in response.json()["detail"]
    assert client_for(owner).get(f"/api/v1/runs/{run.pk}/environment/").status_code == 404


def _record(run: Run, claim, data: dict) -> None:
    response = _post(APIClient(), run, claim.run_token, {"lease_id": claim.lease_id, "environment": data})
    assert response.status_code == 201


def test_environment_page_lists_packages_inputs_and_platform(client, leased_run):
    owner, run, claim = leased_run
    hostile = copy.deepcopy(SNAPSHOT)
    hostile["packages"]["<script>alert(1)</script>"] = "1.0"
    _record(run, claim, hostile)
    client.force_login(owner)
    page = client.get(f"/runs/{run.pk}/environment/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "papermill" in html
    assert "data.csv" in html
    assert "glibc 2.36" in html
    assert "<script>alert(1)</script>" not in html  # escaped, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_environment_diff_page_puts_package_changes_first(client, leased_run):
    owner, run, claim = leased_run
    _record(run, claim, SNAPSHOT)
    other_run = compute.run_submit(project=run.project, user=owner, notebook_version=run.notebook_version)
    compute.run_complete(run=run, lease_id=claim.lease_id, state="failed", error="done")
    run.refresh_from_db()
    second_claim = compute.run_claim(node=claim.run.node)
    assert second_claim is not None
    assert second_claim.run.pk == other_run.pk
    changed = copy.deepcopy(SNAPSHOT)
    changed["packages"]["numpy"] = "2.2.0"
    _record(other_run, second_claim, changed)

    client.force_login(owner)
    page = client.get(f"/runs/{other_run.pk}/environment/diff/?against={run.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.index('id="diff-packages"') < html.index('id="diff-platform"') < html.index('id="diff-inputs"')
    assert "2.1.0" in html
    assert "2.2.0" in html
    assert client.get(f"/runs/{other_run.pk}/environment/diff/?against=x").status_code == 400
    client.force_login(make_user())
    assert client.get(f"/runs/{other_run.pk}/environment/diff/?against={run.pk}").status_code == 404
