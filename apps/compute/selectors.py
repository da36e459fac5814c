"""Reads scoped to the requester: runs live in projects, so a run is visible exactly when its
project is (`Project.objects.visible_to`); nodes are visible to their owners only."""

from typing import Any

from django.db.models import QuerySet

from apps.projects.models import Project

from .models import Node, Run, RunArtifact


def runs_visible_to(user: Any) -> QuerySet[Run]:
    return Run.objects.filter(project__in=Project.objects.visible_to(user).values("pk"))


def runs_for_listing(user: Any) -> QuerySet[Run]:
    return (
        runs_visible_to(user)
        .select_related("project", "notebook_version__notebook", "node", "created_by")
        .prefetch_related("input_datasets__dataset", "depends_on")
    )


def nodes_of(user: Any) -> QuerySet[Node]:
    if not user.is_authenticated:
        return Node.objects.none()
    return Node.objects.filter(owner=user).select_related("owner").prefetch_related("projects")


def final_artifacts(run: Run) -> QuerySet[RunArtifact]:
    """Artifacts of the attempt the run ended with; none while it is still going."""
    if not run.is_final:
        return RunArtifact.objects.none()
    return RunArtifact.objects.filter(run=run, attempt=run.attempt).order_by("path")
