"""Fixtures for publication and review: a private project with a notebook version that has a
succeeded run (its executed output stored as an agent would upload it), published or in review."""

import hashlib
import io
import json
from typing import Any

import pytest

from apps.compute import services as compute
from apps.compute.models import Node, Run
from apps.projects.models import NotebookVersion, Project
from apps.projects.permissions import get_project_for
from apps.review import services
from apps.review.models import PublicationVersion
from tests.factories import make_user, upload_notebook

AUTHORS = [
    {"given_names": "Ada", "family_names": "Lovelace", "orcid": "0000-0002-1825-0097", "affiliation": "Analytical"},
    {"given_names": "Charles", "family_names": "Babbage"},
]


def executed(version: NotebookVersion) -> bytes:
    """The version's notebook with an output on every code cell, as papermill would leave it."""
    from django.core.files.storage import default_storage

    with default_storage.open(version.storage_name, "rb") as handle:
        notebook = json.load(handle)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]
            cell["execution_count"] = 1
    return json.dumps(notebook).encode()


def succeeded_run(project: Project, user, version: NotebookVersion) -> Run:
    """A run of `version` that a node claimed, executed and completed with an output."""
    run = compute.run_submit(project=project, user=user, notebook_version=version)
    node = Node.objects.filter(owner=user).first() or compute.node_register(owner=user, name="lab-node").node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == run.pk
    body = executed(version)
    compute.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
    )
    compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")
    run.refresh_from_db()
    return run


def revise(version: NotebookVersion, user, source: str) -> tuple[NotebookVersion, Run]:
    """Edit the last code cell of `version` as Jupyter would (cell ids kept), upload it as the
    notebook's next version and run it."""
    from django.core.files.storage import default_storage

    from apps.projects import services as projects

    with default_storage.open(version.storage_name, "rb") as handle:
        notebook = json.load(handle)
    [*_, last] = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    last["source"] = source
    content = io.BytesIO(json.dumps(notebook).encode())
    content.name = "analysis.ipynb"
    project = version.notebook.project
    new = projects.notebook_upload(project=project, path=version.notebook.path, content=content, uploader=user).version
    return new, succeeded_run(project, user, new)


def metadata(**overrides):
    values: dict[str, Any] = {
        "title": "Noise in the Analytical Engine",
        "authors": AUTHORS,
        "license": "CC-BY-4.0",
        "abstract": "We measure how the engine's results vary between runs.",
        "keywords": ["reproducibility", "engines"],
    }
    values.update(overrides)
    return services.clean_metadata(**values)


def publish(project: Project, user, *, review_mode: str = "open", submit_for_review: bool = True, **meta):
    version = upload_notebook(project, user, source="print(6 * 7)").version
    run = succeeded_run(project, user, version)
    return services.publication_create(
        project=get_project_for(user, project.slug),
        user=user,
        notebook_version=version,
        run=run,
        metadata=metadata(**meta),
        review_mode=review_mode,
        submit_for_review=submit_for_review,
    )


@pytest.fixture
def reviewer(db):
    return make_user("rhea")


@pytest.fixture
def in_review(private_project, team) -> PublicationVersion:
    """Version 1 of a publication in review (open mode), by the project's owner."""
    return publish(private_project, team["owner"])


@pytest.fixture
def blind(private_project, team) -> PublicationVersion:
    """Version 1 of a single-blind publication in review."""
    return publish(private_project, team["owner"], review_mode="single_blind")


@pytest.fixture
def published(private_project, team) -> PublicationVersion:
    """Version 1 published at once (no review), from a private project."""
    return publish(private_project, team["owner"], submit_for_review=False)
