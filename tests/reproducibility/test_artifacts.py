"""Run artifacts (files a notebook writes): uploaded per attempt with a verified sha256, listed
once the run ends, dropped when an attempt is lost; `.npy` arrays compared within tolerance."""

import hashlib
import io
import json
from datetime import timedelta

import numpy as np
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from apps.compute import services as compute
from apps.compute.agent_views import claim_payload
from apps.compute.models import Run, RunArtifact
from apps.reproducibility.compare import ArtifactFile, Tolerance, compare_artifacts
from apps.reproducibility.services import reproduction_start
from tests.factories import make_user


def npy(path, array):
    np.save(path, array)
    return str(path)


def test_artifacts_compare_by_bytes_then_numbers_on_the_site(tmp_path):
    same = ArtifactFile("s" * 64, str(tmp_path / "x"))
    original = {"notes.txt": same, "table.npy": ArtifactFile("a" * 64, npy(tmp_path / "a.npy", np.ones(4)))}
    rerun = {"notes.txt": same, "table.npy": ArtifactFile("b" * 64, npy(tmp_path / "b.npy", np.ones(4) + 1e-14))}
    rows = compare_artifacts(original, [rerun], Tolerance(rtol=1e-9))
    assert rows[0] == {"path": "notes.txt", "status": "same"}
    assert rows[1]["status"] == "within_tolerance"
    [evidence] = rows[1]["arrays"]
    assert (evidence["where"], evidence["device"], evidence["against_sha256"]) == ("site", "cpu", "a" * 64)
    assert (evidence["elements"], evidence["unequal"], evidence["mismatched"]) == (4, 4, 0)
    missing = compare_artifacts(original, [{"notes.txt": same}], Tolerance())
    assert {"path": "table.npy", "status": "different"} in missing


def node_said(status: str, against: str, rtol: float = 1e-9, atol: float = 0.0) -> dict:
    return {
        "status": status, "against_sha256": against, "rtol": rtol, "atol": atol, "elements": 4, "unequal": 4,
        "mismatched": 0, "max_abs_diff": 1e-14, "max_rel_diff": 1e-14, "device": "cuda:0 NVIDIA H200",
        "seconds": 0.01, "reason": "",
    }  # fmt: skip


def test_the_nodes_comparison_counts_when_it_compared_the_same_bytes_with_the_same_tolerance(tmp_path):
    original = {"t.npy": ArtifactFile("a" * 64, npy(tmp_path / "a.npy", np.ones(4)))}
    path = npy(tmp_path / "b.npy", np.ones(4) + 1e-14)
    from_node = {"t.npy": ArtifactFile("b" * 64, path, node_said("within_tolerance", "a" * 64))}
    [row] = compare_artifacts(original, [from_node], Tolerance(rtol=1e-9))
    assert row["arrays"][0]["where"] == "node"
    assert row["arrays"][0]["device"] == "cuda:0 NVIDIA H200"

    # A comparison against other bytes, or with another tolerance, does not count: the site
    # compares again itself.
    for said in (node_said("same", "c" * 64), node_said("same", "a" * 64, rtol=1e-3)):
        [row] = compare_artifacts(original, [{"t.npy": ArtifactFile("b" * 64, path, said)}], Tolerance(rtol=1e-9))
        assert (row["status"], row["arrays"][0]["where"]) == ("within_tolerance", "site")


def put_artifact(run: Run, claim, path: str, body: bytes, *, sha256: str | None = None, lease: str | None = None):
    return APIClient().put(
        f"/api/v1/agent/runs/{run.pk}/artifacts/{path}",
        body,
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {claim.run_token}",
        HTTP_X_LEASE_ID=lease or claim.lease_id,
        HTTP_X_CONTENT_SHA256=sha256 or hashlib.sha256(body).hexdigest(),
    )


def test_artifacts_are_uploaded_verified_and_listed_after_the_run(client_for, leased_run):
    owner, run, claim = leased_run
    assert put_artifact(run, claim, "out/result.csv", b"a,b\n1,2\n").status_code == 200
    assert put_artifact(run, claim, "bad.bin", b"x", sha256="0" * 64).status_code == 400
    assert put_artifact(run, claim, "../escape.txt", b"x").status_code in (400, 404)
    assert client_for(owner).get(f"/api/v1/runs/{run.pk}/artifacts/").json() == []  # not ended yet

    output = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    compute.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
    )
    compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")
    listed = client_for(owner).get(f"/api/v1/runs/{run.pk}/artifacts/").json()
    assert [(a["path"], a["size"]) for a in listed] == [("out/result.csv", 8)]
    download = client_for(owner).get(listed[0]["download_url"])
    assert b"".join(download.streaming_content) == b"a,b\n1,2\n"
    assert client_for(make_user()).get(f"/api/v1/runs/{run.pk}/artifacts/").status_code == 404


def test_a_stale_lease_cannot_upload_and_a_lost_attempt_leaves_no_artifacts(leased_run):
    _, run, claim = leased_run
    assert put_artifact(run, claim, "partial.txt", b"half").status_code == 200
    assert put_artifact(run, claim, "x.txt", b"x", lease="00000000-0000-0000-0000-000000000000").status_code == 409
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert compute.expire_leases() == 1
    assert not RunArtifact.objects.filter(run=run).exists()


def finish(run: Run, claim, artifacts: dict[str, bytes]) -> None:
    for path, body in artifacts.items():
        assert put_artifact(run, claim, path, body).status_code == 200
    output = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    compute.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
    )
    compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_rerun_is_told_its_reference_arrays_may_fetch_them_and_sends_back_its_comparison(leased_run):
    owner, original, claim = leased_run
    field = npy_bytes(np.ones(4))
    finish(original, claim, {"out/field.npy": field, "out/notes.txt": b"n"})
    original.refresh_from_db()
    reproduction = reproduction_start(original=original, user=owner, rtol=1e-6, atol=1e-9)
    [rerun] = reproduction.reruns.all()
    # The claim's payload as the (async, long-polling) claim endpoint sends it.
    rerun_claim = compute.run_claim(node=original.node)
    assert rerun_claim is not None
    claimed = claim_payload(rerun_claim, RequestFactory().post("/api/v1/agent/claim/"))
    assert claimed["run"]["id"] == rerun.pk
    reference = claimed["reference"]
    assert (reference["run"], reference["rtol"], reference["atol"]) == (original.pk, 1e-6, 1e-9)
    [array] = reference["arrays"]  # arrays only: other artifacts compare by their bytes on the site
    assert (array["path"], array["sha256"]) == ("out/field.npy", hashlib.sha256(field).hexdigest())

    rerun_client = APIClient()
    rerun_client.credentials(HTTP_AUTHORIZATION=f"Bearer {claimed['run_token']}")
    assert rerun_client.get(array["url"]).getvalue() == field
    # The original's token reads nothing through the rerun, and the rerun nothing else.
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {claim.run_token}").get(array["url"]).status_code in (401, 403)
    notes_sha = hashlib.sha256(b"n").hexdigest()
    assert rerun_client.get(array["url"].replace(array["sha256"], notes_sha)).status_code == 200  # an artifact
    assert rerun_client.get(array["url"].replace(array["sha256"], "0" * 64)).status_code == 404

    said = {**node_said("within_tolerance", array["sha256"], rtol=1e-6, atol=1e-9)}
    mine = npy_bytes(np.ones(4) + 1e-12)
    url = claimed["urls"]["artifacts"] + "out/field.npy"
    headers = {"HTTP_X_LEASE_ID": claimed["lease"]["id"], "HTTP_X_CONTENT_SHA256": hashlib.sha256(mine).hexdigest()}
    bad = rerun_client.put(
        url, mine, content_type="application/octet-stream", HTTP_X_REFERENCE_COMPARISON="{oops", **headers
    )
    assert bad.status_code == 400
    assert "JSON" in bad.json()["detail"]
    wrong = rerun_client.put(
        url,
        mine,
        content_type="application/octet-stream",
        HTTP_X_REFERENCE_COMPARISON=json.dumps({**said, "status": "maybe"}),
        **headers,
    )
    assert wrong.status_code == 400
    assert "status" in wrong.json()
    assert not RunArtifact.objects.filter(run=rerun).exists()  # nothing stored from a refused upload
    good = rerun_client.put(
        url, mine, content_type="application/octet-stream", HTTP_X_REFERENCE_COMPARISON=json.dumps(said), **headers
    )
    assert good.status_code == 200
    assert RunArtifact.objects.get(run=rerun, path="out/field.npy").comparison == said
