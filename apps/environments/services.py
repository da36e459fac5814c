"""Declaring environments and choosing the one a run uses."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from apps.projects.models import NotebookVersion, Project

from .declarations import Declaration, read_declaration
from .models import EnvironmentLock
from .resolver import resolve


def lock_for(declaration: Declaration, *, layered: bool = False) -> EnvironmentLock:
    """The lock `declaration` resolves to now: an existing row when the same packages were
    resolved before (locks are content-addressed), else a new one."""
    resolved = resolve(declaration, layered=layered)
    existing = EnvironmentLock.objects.filter(sha256=resolved.sha256).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return EnvironmentLock.objects.create(
                sha256=resolved.sha256,
                lock=resolved.lock,
                packages=resolved.packages,
                declaration_kind=declaration.kind,
                declaration_name=declaration.name,
                declaration=declaration.text,
                requires_python=declaration.requires_python,
                python_version=resolved.python_version,
                platform=resolved.platform,
                layered=layered,
                resolver=resolved.resolver,
            )
    except IntegrityError:  # the same lock, resolved at the same moment by another request
        return EnvironmentLock.objects.get(sha256=resolved.sha256)


def declare(filename: str, content: bytes, *, layered: bool = False) -> EnvironmentLock:
    return lock_for(read_declaration(filename, content), layered=layered)


def set_project_environment(*, project: Project, lock: EnvironmentLock | None) -> None:
    Project.objects.filter(pk=project.pk).update(environment=lock)
    project.environment = lock


def fresh_resolve(lock: EnvironmentLock) -> EnvironmentLock:
    """The lock the same declaration resolves to today (a drift check: new releases since)."""
    return lock_for(read_declaration(lock.declaration_name, lock.declaration.encode()), layered=lock.layered)


def known_to(project: Project) -> Q:
    """Locks a run of `project` may name: its default, its versions' and its runs' locks."""
    return Q(projects=project) | Q(notebook_versions__notebook__project=project) | Q(runs__project=project)


def environment_for_run(
    *, project: Project, notebook_version: NotebookVersion, sha256: str | None = None
) -> EnvironmentLock | None:
    """The lock a run uses: the one it names, else its notebook version's own, else the
    project's default, else none (the node's base environment)."""
    if sha256:
        lock = EnvironmentLock.objects.filter(known_to(project), sha256=sha256.strip().lower()).distinct().first()
        if lock is None:
            raise ValidationError(
                {"environment": f"No environment {sha256[:64]!r} belongs to this project (give a lock's sha256)."}
            )
        return lock
    return notebook_version.environment or project.environment
