"""Reads scoped to the requester: runs live in projects, so a run is visible exactly when its
project is (`Project.objects.visible_to`); nodes are visible to their owners only."""

from typing import Any

from django.db.models import Q, QuerySet

from apps.projects.models import Membership, Project
from apps.projects.permissions import EDITOR_ROLES

from .models import Node, Run, RunArtifact


def creator_hidden_rule(user: Any, project: str = "project") -> Q:
    """What a single-blind reviewer started (runs and reproductions with `creator_hidden`) shows
    only to that reviewer and the project's editors; `project` is the path to the project."""
    if not user.is_authenticated:
        return Q(creator_hidden=False)
    editing = Membership.objects.filter(user=user, role__in=EDITOR_ROLES).values("project_id")
    return Q(creator_hidden=False) | Q(created_by=user) | Q(**{f"{project}__in": editing})


def runs_visible_to(user: Any) -> QuerySet[Run]:
    """Runs of the projects the user may see (those with a hidden creator: see the rule)."""
    runs = Run.objects.filter(project__in=Project.objects.visible_to(user).values("pk"))
    return runs.filter(creator_hidden_rule(user))


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
