"""Run artifacts (files a notebook writes): uploaded per attempt with a verified sha256, listed
once the run ends, dropped when an attempt is lost; `.npy` arrays compared within tolerance."""

import hashlib
import io
from datetime import timedelta

import numpy as np
from django.utils import timezone
from rest_framework.test import APIClient

from apps.compute import services as compute
from apps.compute.models import Run, RunArtifact
from apps.reproducibility.compare import NPY_CHUNK, Tolerance, compare_artifacts, compare_npy
from tests.factories import make_user


def npy(path, array):
    np.save(path, array)
    return str(path)


def test_equal_arrays_are_the_same(tmp_path):
    a = npy(tmp_path / "a.npy", np.arange(10.0))
    assert compare_npy(a, npy(tmp_path / "b.npy", np.arange(10.0)), Tolerance()) == "same"


def test_large_arrays_compare_in_chunks_within_tolerance(tmp_path):
    base = np.linspace(0, 1, NPY_CHUNK * 3 + 7)
    a = npy(tmp_path / "a.npy", base)
    b = npy(tmp_path / "b.npy", base + 1e-13)
    assert compare_npy(a, b, Tolerance(rtol=1e-9, atol=1e-12)) == "within_tolerance"
    c = npy(tmp_path / "c.npy", np.concatenate([base[:-1], [5.0]]))  # only the last chunk differs
    assert compare_npy(a, c, Tolerance(rtol=1e-9)) == "different"


def test_shape_or_dtype_changes_are_different(tmp_path):
    a = npy(tmp_path / "a.npy", np.zeros((2, 3)))
    assert compare_npy(a, npy(tmp_path / "b.npy", np.zeros((3, 2))), Tolerance()) == "different"
    assert compare_npy(a, npy(tmp_path / "c.npy", np.zeros((2, 3), dtype=np.float32)), Tolerance()) == "different"


def test_artifacts_compare_by_bytes_then_numbers(tmp_path):
    same = ("s" * 64, str(tmp_path / "x"))
    original = {"notes.txt": same, "table.npy": ("a" * 64, npy(tmp_path / "a.npy", np.ones(4)))}
    rerun = {"notes.txt": same, "table.npy": ("b" * 64, npy(tmp_path / "b.npy", np.ones(4) + 1e-14))}
    rows = compare_artifacts(original, [rerun], Tolerance(rtol=1e-9))
    assert rows == [{"path": "notes.txt", "status": "same"}, {"path": "table.npy", "status": "within_tolerance"}]
    missing = compare_artifacts(original, [{"notes.txt": same}], Tolerance())
    assert {"path": "table.npy", "status": "different"} in missing


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
