"""A small but complete world for the API fuzzer: one project with a member, a notebook, a
dataset, finished and live runs, an environment snapshot, an artifact, a reproduction, a
publication in review with an accepted reviewer and a comment, and the credentials of each
kind (personal, node, run). Path parameters of the fuzzed operations point at these objects,
so the fuzzer reaches the code behind the 404s."""

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

from apps.accounts.models import User
from apps.accounts.services import api_token_create
from apps.compute import services as compute
from apps.compute.models import Node, Run
from apps.projects import services as projects
from apps.projects.models import Dataset, DatasetVersion, Notebook, NotebookVersion, Project, Role
from apps.projects.permissions import get_project_for
from apps.reproducibility import services as reproducibility
from apps.review import services as review
from apps.review.models import PublicationVersion, Review, ReviewComment
from tests.factories import PASSWORD, make_project, make_user, notebook_bytes, upload_notebook

ENVIRONMENT: dict[str, Any] = {
    "python": {"version": "3.11.7", "implementation": "CPython"},
    "packages": {"numpy": "2.1.0"},
    "os": {"system": "Linux", "release": "6.1"},
    "cpu": {"model": "Xeon", "count": 2},
    "memory_mb": 8000,
    "gpus": [],
    "inputs": [],
}


@dataclass
class World:
    owner: User
    owner_token: str
    owner_token_id: int
    reviewer: User
    reviewer_token: str
    member: User
    project: Project
    notebook: Notebook
    version: NotebookVersion
    dataset: Dataset
    dataset_version: DatasetVersion
    dataset_file: str
    dataset_file_sha256: str
    node: Node
    node_token: str
    finished_run: Run
    artifact_path: str
    live_run: Run
    lease_id: str
    run_token: str
    reproduction_id: int
    publication_version: PublicationVersion
    review: Review
    comment: ReviewComment
    extra: dict[str, Any] = field(default_factory=dict)


def _lease(node: Node, run: Run) -> compute.Claim:
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    assert claim.run.pk == run.pk, "the world's node must claim the run just submitted"
    return claim


def _upload(run: Run, lease_id: str, body: bytes) -> None:
    compute.run_output_upload(
        run=run, lease_id=lease_id, stream=io.BytesIO(body), sha256=hashlib.sha256(body).hexdigest()
    )


def build_world() -> World:
    owner = make_user("fuzz-owner")
    reviewer = make_user("fuzz-reviewer")
    member = make_user("fuzz-member")
    guest = make_user("fuzz-guest")  # no relation to anything: to be invited, added as a member
    issued = api_token_create(user=owner, name="fuzz")
    spare = api_token_create(user=owner, name="spare")  # to revoke, without revoking the one in use
    project = make_project(owner, slug="fuzz-lab", visibility="private", members={member: Role.MEMBER})
    version = upload_notebook(project, owner, path="analysis.ipynb").version

    dataset = projects.dataset_create(project=project, name="obs", description="Observations", creator=owner)
    content = io.BytesIO(b"x,y\n1,2\n")
    dataset_version, _ = projects.dataset_add_files(
        dataset=dataset, files=[projects.IncomingFile(path="data.csv", content=content)], uploader=owner
    )
    data_file = dataset_version.files.get()

    registered = compute.node_register(owner=owner, name="fuzz-node", max_concurrency=1, projects=[project])
    node = registered.node

    # A run that ran to the end: environment, an artifact, the executed notebook.
    finished = compute.run_submit(project=project, user=owner, notebook_version=version)
    claim = _lease(node, finished)
    reproducibility.environment_record(run=finished, lease_id=claim.lease_id, data=ENVIRONMENT)
    artifact = b"42\n"
    compute.run_artifact_upload(
        run=finished,
        lease_id=claim.lease_id,
        path="result.txt",
        stream=io.BytesIO(artifact),
        sha256=hashlib.sha256(artifact).hexdigest(),
    )
    _upload(finished, claim.lease_id, notebook_bytes())
    compute.run_complete(run=finished, lease_id=claim.lease_id, state="succeeded")
    finished.refresh_from_db()

    # A run an agent holds right now: its run token opens the agent endpoints.
    live = compute.run_submit(project=project, user=owner, notebook_version=version, dataset_versions=[dataset_version])
    live_claim = _lease(node, live)

    reproduction = reproducibility.reproduction_start(original=finished, user=owner)
    queued = reproduction.reruns.get()  # nobody claims it: a run that can still be cancelled
    make_project(owner, slug="fuzz-empty")  # nothing refers to it: it can be deleted

    publication_version = review.publication_create(
        project=get_project_for(owner, project.slug),
        user=owner,
        notebook_version=version,
        run=finished,
        metadata=review.clean_metadata(
            title="Fuzzing the engine", authors=[{"family_names": "Lovelace"}], license="CC-BY-4.0"
        ),
    )
    the_review = review.review_invite(publication=publication_version.publication, inviter=owner, who=reviewer.username)
    the_review = review.review_respond(review=the_review, user=reviewer, accept=True)
    comment = review.comment_add(review=the_review, user=reviewer, body="Why 42?")

    return World(
        owner=owner,
        owner_token=issued.raw,
        owner_token_id=issued.token.pk,
        reviewer=reviewer,
        reviewer_token=api_token_create(user=reviewer, name="fuzz").raw,
        member=member,
        project=project,
        notebook=version.notebook,
        version=version,
        dataset=dataset,
        dataset_version=dataset_version,
        dataset_file=data_file.path,
        dataset_file_sha256=data_file.sha256,
        node=node,
        node_token=registered.token,
        finished_run=finished,
        artifact_path="result.txt",
        live_run=live,
        lease_id=live_claim.lease_id,
        run_token=live_claim.run_token,
        reproduction_id=reproduction.pk,
        publication_version=publication_version,
        review=the_review,
        comment=comment,
        extra={
            "password": PASSWORD,
            "guest": guest.username,
            "spare_token_id": spare.token.pk,
            "queued_run_id": queued.pk,
            "empty_project": "fuzz-empty",
        },
    )
