"""Reads scoped to the requester, in one place: every page, endpoint and consumer that loads a
project goes through `ProjectQuerySet.visible_to`, so a private project is invisible (404) to
anyone who is not a member."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from .models import Project  # noqa: F401 - named in the QuerySet["Project"] string below


class ProjectQuerySet(models.QuerySet["Project"]):
    def visible_to(self, user: Any) -> ProjectQuerySet:
        """Public projects, plus private ones the user is a member of. Annotates `user_role`."""
        if user is None or not user.is_authenticated:
            return self.filter(visibility="public").annotate(user_role=models.Value(None, models.CharField()))
        from .models import Membership  # models imports this module

        role = models.Subquery(Membership.objects.filter(project=models.OuterRef("pk"), user=user).values("role")[:1])
        return self.annotate(user_role=role).filter(models.Q(visibility="public") | models.Q(user_role__isnull=False))
