"""A reviewer's rerun settles: its verdict lands on the review, and the people involved hear of it."""

from typing import Any

from django.dispatch import receiver

from apps.reproducibility.models import Reproduction
from apps.reproducibility.signals import reproduction_settled

from . import access
from .models import Review
from .notifications import notify


@receiver(reproduction_settled)
def announce_rerun_verdict(sender: Any, reproduction: Reproduction, **kwargs: Any) -> None:
    verdict = reproduction.verdict.replace("_", " ")
    for review in Review.objects.filter(reproductions=reproduction).select_related("publication", "reviewer"):
        editors = [m.user for m in review.publication.project.memberships.select_related("user")]
        notify(
            [review.reviewer, *editors],
            kind="rerun_verdict",
            message=lambda viewer, review=review: (  # type: ignore[misc]
                f"The rerun requested by {access.reviewer_name(viewer, review)} settled: {verdict}."
            ),
            url=f"/reviews/{review.pk}/",
            actor=None,
        )
