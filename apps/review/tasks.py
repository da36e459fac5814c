"""Celery tasks: notification e-mails."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

logger = logging.getLogger(__name__)


def site_link(path: str) -> str:
    """An absolute link for an e-mail (no request at hand in a worker to build one from)."""
    from django.conf import settings

    return f"{settings.REPROLAB_SITE_URL.rstrip('/')}{path}"


@shared_task(name="review.send_notification_emails", time_limit=120, soft_time_limit=100)
def send_notification_emails(notification_ids: list[int]) -> int:
    """Send each notification's e-mail once (a row is claimed by setting `emailed_at` first, so a
    duplicate task sends nothing twice)."""
    from django.conf import settings
    from django.core.mail import send_mail
    from django.utils import timezone

    from .models import Notification

    sent = 0
    for notification in Notification.objects.filter(pk__in=notification_ids, emailed_at__isnull=True).select_related(
        "user"
    ):
        claimed = Notification.objects.filter(pk=notification.pk, emailed_at__isnull=True).update(
            emailed_at=timezone.now()
        )
        if not claimed or not notification.user.email:
            continue
        link = site_link(notification.url) if notification.url else ""
        try:
            send_mail(
                subject=f"[ReproLab] {' '.join(notification.message.split())[:120]}",
                message=f"{notification.message}\n\n{link}\n".strip() + "\n",
                from_email=settings.DEFAULT_FROM_EMAIL,
                recipient_list=[notification.user.email],
            )
        except Exception:
            # Give the row back for the sweep to retry; the in-site notice is there already.
            Notification.objects.filter(pk=notification.pk).update(emailed_at=None)
            logger.warning("Could not e-mail notification %s", notification.pk, exc_info=True)
            continue
        sent += 1
    return sent


@shared_task(name="review.send_pending_emails", time_limit=300, soft_time_limit=240)
def send_pending_emails() -> int:
    """The reconciler: e-mail notifications whose task was lost (broker down at commit)."""
    from django.utils import timezone

    from .models import Notification, Review, ReviewState

    stale = timezone.now() - timedelta(minutes=2)
    ids = list(
        Notification.objects.filter(emailed_at__isnull=True, created_at__lt=stale).values_list("pk", flat=True)[:500]
    )
    sent = send_notification_emails(ids) if ids else 0
    invitations = Review.objects.filter(
        reviewer__isnull=True, state=ReviewState.INVITED, invitation_sent_at__isnull=True, created_at__lt=stale
    ).values_list("pk", flat=True)[:100]
    return sent + sum(send_reviewer_invitation(pk) for pk in invitations)


@shared_task(name="review.send_reviewer_invitation", time_limit=60, soft_time_limit=50)
def send_reviewer_invitation(review_id: int) -> bool:
    """E-mail an invitation to an address without an account, with a fresh link (the token is
    made here, so no secret travels through the broker)."""
    from django.conf import settings
    from django.core.mail import send_mail
    from django.utils import timezone

    from .models import Review, ReviewState
    from .services import invitation_issue_token, publication_title

    review = (
        Review.objects.filter(pk=review_id, reviewer__isnull=True, state=ReviewState.INVITED)
        .select_related("publication__notebook", "invited_by")
        .first()
    )
    if review is None:
        return False
    token = invitation_issue_token(review)
    link = site_link(f"/reviews/invitation/{token}/")
    inviter = review.invited_by.username if review.invited_by else "An editor"
    send_mail(
        subject=f"[ReproLab] Invitation to review “{publication_title(review.publication)}”",
        message=(
            f"{inviter} invites you to review “{publication_title(review.publication)}” on ReproLab.\n\n"
            f"Open this link, signed in (or sign up first), to accept or decline:\n{link}\n\n"
            "The link works once; anyone who has it can take the invitation, so keep it to yourself.\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[review.invited_email],
    )
    # Only once it went out: a failed send leaves it to the sweep, which sends a fresh link.
    Review.objects.filter(pk=review.pk).update(invitation_sent_at=timezone.now())
    return True
