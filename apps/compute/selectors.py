"""Reads scoped to the requester: runs live in projects, so a run is visible exactly when its
project is (`Project.objects.visible_to`); nodes are managed by their owners only, and a user
sees which other nodes may take their runs (`nodes_serving`)."""

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from apps.projects.models import Membership, Project
from apps.projects.permissions import EDITOR_ROLES

from . import trust
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
        .select_related("project", "notebook_version__notebook", "node", "created_by", "environment_lock")
        .prefetch_related("input_datasets__dataset", "depends_on")
    )


def nodes_of(user: Any) -> QuerySet[Node]:
    if not user.is_authenticated:
        return Node.objects.none()
    return Node.objects.filter(owner=user).select_related("owner").prefetch_related("projects")


@dataclass(frozen=True)
class ServingNode:
    """Someone else's node that may take the user's runs: every run (staff-shared) or those of
    `projects`; the same rule as the scheduler's (`trust.may_take`)."""

    node: Node
    everyone: bool
    projects: list[Project]


def nodes_serving(user: Any) -> list[ServingNode]:
    if not user.is_authenticated:
        return []
    writing = set(
        Membership.objects.filter(user=user, role__in=trust.WRITER_ROLES).values_list("project_id", flat=True)
    )
    candidates = list(
        Node.objects.filter(revoked_at__isnull=True, owner__is_active=True)
        .exclude(owner=user)
        .filter(Q(shared=True, owner__is_staff=True) | Q(projects__in=writing))
        .distinct()
        .select_related("owner")
        .prefetch_related("projects")
    )
    crews = trust.crews(writing, {n.owner_id for n in candidates})
    serving = []
    for node in candidates:
        projects = [p for p in node.projects.all() if p.pk in writing and node.owner_id in crews[p.pk].writers]
        everyone = trust.is_staff_shared(node)
        if everyone or projects:
            serving.append(ServingNode(node=node, everyone=everyone, projects=projects))
    return serving


def final_artifacts(run: Run) -> QuerySet[RunArtifact]:
    """Artifacts of the attempt the run ended with; none while it is still going."""
    if not run.is_final:
        return RunArtifact.objects.none()
    return RunArtifact.objects.filter(run=run, attempt=run.attempt).order_by("path")
