"""A reviewer's rerun settles: its verdict lands on the review, and the people involved hear of it."""

from typing import Any

from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from apps.reproducibility.models import Reproduction
from apps.reproducibility.signals import reproduction_settled

from . import access
from .models import ImmutableVersion, PublicationVersion, Review
from .notifications import notify


@receiver(reproduction_settled)
def announce_rerun_verdict(sender: Any, reproduction: Reproduction, **kwargs: Any) -> None:
    verdict = reproduction.verdict.replace("_", " ")
    for review in Review.objects.filter(reproductions=reproduction).select_related("publication", "reviewer"):
        editors = [m.user for m in review.publication.project.memberships.select_related("user")]
        notify(
            [*([review.reviewer] if review.reviewer else []), *editors],
            kind="rerun_verdict",
            message=lambda viewer, review=review: (  # type: ignore[misc]
                f"The rerun requested by {access.reviewer_name(viewer, review)} settled: {verdict}."
            ),
            url=f"/reviews/{review.pk}/",
            actor=None,
        )


@receiver(m2m_changed, sender=PublicationVersion.datasets.through)
def keep_version_datasets(sender: Any, instance: Any, action: str, reverse: bool, **kwargs: Any) -> None:
    """A version's related datasets are part of its record: set once, when it is created."""
    if not action.startswith("pre_"):
        return
    if reverse or not getattr(instance, "_setting_datasets", False):
        raise ImmutableVersion("A publication version's datasets cannot change; publish a new version.")
