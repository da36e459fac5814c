"""Role rules. Lookups that fail for an outsider raise Http404, never 403: a private project must
not even be confirmed to exist. A member without enough rights gets 403 (they can see it)."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import ROLE_RANK, Project, Role


def get_project_for(user: Any, slug: str) -> Project:
    project = Project.objects.visible_to(user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    return project


def role_of(project: Project) -> Role | None:
    """The requester's role, as annotated by `visible_to`."""
    value = getattr(project, "user_role", None)
    return Role(value) if value else None


def has_role(project: Project, minimum: Role) -> bool:
    role = role_of(project)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


# What each role may do. Reading needs no role on a public project.
CAN_UPLOAD = Role.MEMBER
CAN_MANAGE_MEMBERS = Role.MAINTAINER
CAN_EDIT_PROJECT = Role.MAINTAINER
CAN_DELETE_PROJECT = Role.OWNER
# The roles that edit a project's publications: they invite reviewers, decide, and see what
# single-blind review hides from the other members.
EDITOR_ROLES = (Role.OWNER, Role.MAINTAINER)


def require_role(project: Project, minimum: Role, action: str) -> None:
    if not has_role(project, minimum):
        raise PermissionDenied(f"You need the {minimum.label.lower()} role or higher in this project to {action}.")
