"""Writes for projects, members, notebooks and datasets. Views and API call these; each is one
transaction and validates before saving. Permission checks stay in the callers (they know who
is asking); these functions enforce the invariants of the data itself."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.accounts.models import User
from apps.core.hashing import store_blob
from apps.environments.models import Declaration

from . import tasks
from .events import broadcast_project_event
from .models import (
    ROLE_RANK,
    Dataset,
    DatasetFile,
    DatasetVersion,
    Membership,
    Notebook,
    NotebookVersion,
    Project,
    Role,
)
from .validation import clean_relative_path, notebook_info, parse_notebook


# --- projects -------------------------------------------------------------------------------------
@transaction.atomic
def project_create(
    *, creator: User, name: str, slug: str, description: str = "", license: str = "", visibility: str = "private"
) -> Project:
    project = Project(
        name=name, slug=slug, description=description, license=license, visibility=visibility, created_by=creator
    )
    project.full_clean()
    project.save()
    Membership.objects.create(project=project, user=creator, role=Role.OWNER)
    return project


PROJECT_EDITABLE_FIELDS = ("name", "description", "license", "visibility")


MANAGED_BY_COURSE = "This project holds a course's grading runs: the course decides its members and visibility."


def _check_not_managed(project: Project) -> None:
    """A course's grading project (apps.courses.grading) keeps the members the course gives it
    and stays private: its notebooks hold hidden tests."""
    if hasattr(project, "grading_course"):  # the reverse side of Course.grading_project
        raise ValidationError({"project": MANAGED_BY_COURSE})


@transaction.atomic
def project_update(*, project: Project, **changes: Any) -> Project:
    if "visibility" in changes and changes["visibility"] != project.visibility:
        _check_not_managed(project)
    unknown = set(changes) - set(PROJECT_EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({field: "This field cannot be changed." for field in unknown})
    for field, value in changes.items():
        setattr(project, field, value)
    project.full_clean()
    project.save()
    return project


# --- members ----------------------------------------------------------------------------------------
def _check_role_change(*, actor_role: Role | None, old: Role | None, new: Role | None) -> None:
    """Only owners hand out or take away ownership; maintainers manage the roles below."""
    touches_owner = Role.OWNER in (old, new)
    if touches_owner and actor_role != Role.OWNER:
        raise ValidationError({"role": "Only an owner can grant, change or remove the owner role."})
    if actor_role is not None and new is not None and ROLE_RANK[new] > ROLE_RANK[actor_role]:
        raise ValidationError({"role": "You cannot grant a role above your own."})


def _ensure_an_owner_remains(project: Project) -> None:
    if not Membership.objects.filter(project=project, role=Role.OWNER).exists():
        raise ValidationError({"role": "A project must keep at least one owner."})


@transaction.atomic
def membership_set(*, project: Project, user: User, role: str, actor_role: Role | None) -> Membership:
    """Add a member or change a member's role."""
    _check_not_managed(project)
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role '{role}'; choose one of {', '.join(Role.values)}."})
    # Lock the project's memberships so two concurrent demotions cannot both pass the owner check.
    list(Membership.objects.select_for_update().filter(project=project))
    membership = Membership.objects.filter(project=project, user=user).first()
    old = Role(membership.role) if membership else None
    _check_role_change(actor_role=actor_role, old=old, new=Role(role))
    if membership is None:
        membership = Membership(project=project, user=user, role=role)
    membership.role = role
    membership.full_clean()
    membership.save()
    _ensure_an_owner_remains(project)
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor_role: Role | None) -> None:
    _check_not_managed(membership.project)
    list(Membership.objects.select_for_update().filter(project_id=membership.project_id))
    _check_role_change(actor_role=actor_role, old=Role(membership.role), new=None)
    project = membership.project
    membership.delete()
    _ensure_an_owner_remains(project)


# --- notebooks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NotebookUpload:
    notebook: Notebook
    version: NotebookVersion
    created: bool  # False when the content equals the latest version's


def notebook_upload(
    *,
    project: Project,
    path: str,
    content: IO[bytes],
    uploader: User | None,
    message: str = "",
    environment: Declaration | None = None,
    prerender: bool = True,
) -> NotebookUpload:
    """A new version of the notebook at `path`, unless its content and declared environment
    (`environment`, resolved beside it; it wins over the project's) are the latest version's.
    `prerender=False`: render it when someone first opens it (a notebook few will open)."""
    path = clean_relative_path(path)
    if not path.endswith(".ipynb"):
        raise ValidationError({"path": "A notebook path must end with .ipynb."})
    content.seek(0)
    nb = parse_notebook(content.read())
    info = notebook_info(nb)
    blob = store_blob(content)  # outside the transaction: storage is not transactional, and an
    # orphan blob after a rollback is harmless (content-addressed, reused by the next upload).
    with transaction.atomic():
        notebook, _ = Notebook.objects.select_for_update().get_or_create(project=project, path=path)
        latest = notebook.latest_version
        if (
            latest is not None
            and latest.sha256 == blob.sha256
            and latest.environment_id == getattr(environment, "pk", None)
        ):
            return NotebookUpload(notebook=notebook, version=latest, created=False)
        version = NotebookVersion(
            notebook=notebook,
            number=(latest.number + 1) if latest else 1,
            sha256=blob.sha256,
            size=blob.size,
            storage_name=blob.storage_name,
            parameters=info.parameters,
            kernel_name=info.kernel_name,
            language=info.language,
            message=message,
            environment=environment,
            created_by=uploader,
        )
        version.full_clean()
        version.save()
        notebook.latest_version = version
        notebook.save(update_fields=["latest_version", "updated_at"])
        Project.objects.filter(pk=project.pk).update(updated_at=version.created_at)
        broadcast_project_event(
            project.pk,
            "notebook.version_created",
            {"notebook_id": notebook.pk, "path": path, "version": version.number, "sha256": blob.sha256},
        )
        if prerender:
            tasks.enqueue_prerender(version.pk)
    return NotebookUpload(notebook=notebook, version=version, created=True)


# --- datasets ---------------------------------------------------------------------------------------
@transaction.atomic
def dataset_create(*, project: Project, name: str, description: str = "", creator: User | None) -> Dataset:
    dataset = Dataset(project=project, name=name, description=description, created_by=creator)
    dataset.full_clean()
    try:
        with transaction.atomic():
            dataset.save()
    except IntegrityError as exc:  # lost a race with a same-named create
        raise ValidationError({"name": f"A dataset named '{name}' already exists in this project."}) from exc
    return dataset


@dataclass(frozen=True)
class IncomingFile:
    path: str
    content: IO[bytes]


def dataset_add_files(
    *, dataset: Dataset, files: Sequence[IncomingFile], uploader: User | None, message: str = ""
) -> tuple[DatasetVersion, bool]:
    """Create a new version: the previous version's files, with these added or replaced.

    Returns (version, created). Uploading files identical to what the latest version already
    holds creates nothing and returns the latest version."""
    if not files:
        raise ValidationError({"files": "Upload at least one file."})
    cleaned = {clean_relative_path(f.path, field="files"): f.content for f in files}
    if len(cleaned) != len(files):
        raise ValidationError({"files": "Two uploaded files have the same path."})
    blobs = {path: store_blob(content) for path, content in cleaned.items()}

    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        latest = dataset.latest_version
        entries: dict[str, tuple[str, int, str]] = {}
        if latest is not None:
            for f in latest.files.all():
                entries[f.path] = (f.sha256, f.size, f.storage_name)
        before = dict(entries)
        for path, blob in blobs.items():
            entries[path] = (blob.sha256, blob.size, blob.storage_name)
        if latest is not None and entries == before:
            return latest, False
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=(latest.number + 1) if latest else 1,
            message=message,
            file_count=len(entries),
            total_size=sum(size for _, size, _ in entries.values()),
            created_by=uploader,
        )
        DatasetFile.objects.bulk_create(
            DatasetFile(version=version, path=path, sha256=sha, size=size, storage_name=name)
            for path, (sha, size, name) in sorted(entries.items())
        )
        Dataset.objects.filter(pk=dataset.pk).update(latest_version=version, updated_at=version.created_at)
        Project.objects.filter(pk=dataset.project_id).update(updated_at=version.created_at)
        broadcast_project_event(
            dataset.project_id,
            "dataset.version_created",
            {"dataset": dataset.name, "version": version.number, "file_count": version.file_count},
        )
    return version, True
