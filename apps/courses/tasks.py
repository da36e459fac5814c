"""Celery beat: grading work a crash or an outage left undone (apps.courses.grading.reconcile)."""

from celery import shared_task


@shared_task(name="courses.reconcile_grading", time_limit=300, soft_time_limit=240)
def reconcile_grading() -> int:
    from .grading import reconcile

    return reconcile()
