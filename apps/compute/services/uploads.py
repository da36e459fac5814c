"""What an agent uploads under its lease: the output notebook and the run's artifacts. Each is
checked (sha256, and for the notebook its format) before anything is stored."""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core.hashing import blob_for_row, verify_sha256
from apps.projects.validation import clean_relative_path, parse_notebook

from ..models import Run, RunArtifact
from .leases import locked_with_lease


def run_output_upload(*, run: Run, lease_id: str, stream: IO[bytes], sha256: str) -> dict[str, Any]:
    """Store the output notebook under the current lease once its sha256 checks out and it is a
    valid notebook. A refused upload (corrupted, not a notebook, stale lease) stores nothing."""
    verify_sha256(stream, sha256)
    parse_notebook(stream.read())  # pages, reports and reproduction checks all read it
    stream.seek(0)
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        with blob_for_row(stream) as blob:
            run.pending_output = {"sha256": blob.sha256, "size": blob.size, "storage_name": blob.storage_name}
            run.save(update_fields=["pending_output"])
    return run.pending_output


def run_artifact_upload(
    *, run: Run, lease_id: str, path: str, stream: IO[bytes], sha256: str, comparison: dict[str, Any] | None = None
) -> RunArtifact:
    """Store one artifact of the current attempt once its sha256 checks out (resending the same
    path replaces it), with the node's comparison against the reference run's, if it made one."""
    path = clean_relative_path(path)
    verify_sha256(stream, sha256)  # before anything is stored: a refused upload stores nothing
    with transaction.atomic():
        run = locked_with_lease(run.pk, lease_id)
        if (
            RunArtifact.objects.filter(run=run, attempt=run.attempt).exclude(path=path).count()
            >= settings.REPROLAB_ARTIFACTS_PER_RUN
        ):
            raise ValidationError({"path": f"A run may keep at most {settings.REPROLAB_ARTIFACTS_PER_RUN} artifacts."})
        with blob_for_row(stream) as blob:
            artifact, _ = RunArtifact.objects.update_or_create(
                run=run,
                attempt=run.attempt,
                path=path,
                defaults={
                    "sha256": blob.sha256,
                    "size": blob.size,
                    "storage_name": blob.storage_name,
                    "comparison": comparison or {},
                },
            )
    return artifact
