"""Notifications: one row per recipient, written in the same transaction as what it announces;
the e-mails go out through Celery once that transaction commits (a lost task leaves the row,
and `emailed_at` empty, for the beat sweep to resend)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from apps.accounts.models import User
from apps.core.queueing import enqueue_on_commit

from .models import Notification


def notify(
    recipients: Iterable[User], *, kind: str, message: Callable[[User], str], url: str, actor: User | None
) -> None:
    """Tell each recipient (never the actor: they know). `message` is per recipient, because
    what a recipient may know differs (single-blind reviews name reviewers to editors only)."""
    seen: set[int] = set()
    rows = []
    for user in recipients:
        if user.pk in seen or (actor is not None and user.pk == actor.pk) or not user.is_active:
            continue
        seen.add(user.pk)
        rows.append(Notification(user=user, kind=kind, message=message(user)[:500], url=url))
    created = Notification.objects.bulk_create(rows)
    ids = [n.pk for n in created if n.pk is not None]
    if ids:
        from .tasks import send_notification_emails

        # A broker outage loses nothing: the beat sweep sends them later.
        enqueue_on_commit(send_notification_emails, ids)
