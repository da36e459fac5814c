"""Declaring environments and choosing the one a run uses."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from apps.projects.models import NotebookVersion, Project

from .declarations import Declaration as Declared
from .declarations import read_declaration
from .models import Declaration, EnvironmentLock
from .resolver import resolve


def lock_for(declared: Declared, *, layered: bool = False) -> EnvironmentLock:
    """The lock `declared` resolves to now: an existing row when the same packages were resolved
    before (locks are content-addressed), else a new one."""
    resolved = resolve(declared, layered=layered)
    existing = EnvironmentLock.objects.filter(sha256=resolved.sha256).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return EnvironmentLock.objects.create(
                sha256=resolved.sha256,
                lock=resolved.lock,
                packages=resolved.packages,
                requires_python=resolved.requires_python,
                python_version=resolved.python_version,
                platform=resolved.platform,
                layered=layered,
                resolver=resolved.resolver,
            )
    except IntegrityError:  # the same lock, resolved at the same moment by another request
        return EnvironmentLock.objects.get(sha256=resolved.sha256)


def declare(filename: str, content: bytes, *, layered: bool = False) -> Declaration:
    """A new declaration (the uploader's own row) and the lock it resolves to."""
    declared = read_declaration(filename, content)
    lock = lock_for(declared, layered=layered)
    return Declaration.objects.create(lock=lock, kind=declared.kind, name=declared.name, text=declared.text)


def set_project_environment(*, project: Project, declaration: Declaration | None) -> None:
    Project.objects.filter(pk=project.pk).update(environment=declaration)
    project.environment = declaration


def fresh_resolve(declaration: Declaration) -> Declaration:
    """The same declaration resolved today (a drift check: new releases since), as a new row."""
    return declare(declaration.name, declaration.text.encode(), layered=declaration.lock.layered)


def known_to(project: Project) -> Q:
    """Declarations a run of `project` may name by their lock: its default, its versions' and
    its runs' (never another project's)."""
    return Q(projects=project) | Q(notebook_versions__notebook__project=project) | Q(runs__project=project)


def environment_for_run(*, project: Project, notebook_version: NotebookVersion, sha256: str = "") -> Declaration | None:
    """The declaration a run uses: the one of this project whose lock it names, else its notebook
    version's own, else the project's default, else none (the node's base environment)."""
    if sha256:
        declaration = (
            Declaration.objects.filter(known_to(project), lock__sha256=sha256.strip().lower())
            .select_related("lock")
            .order_by("-created_at", "-id")
            .first()
        )
        if declaration is None:
            raise ValidationError(
                {"environment": f"No environment {sha256[:64]!r} belongs to this project (give a lock's sha256)."}
            )
        return declaration
    return notebook_version.environment or project.environment
