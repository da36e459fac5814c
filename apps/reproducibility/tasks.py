"""Celery tasks: settle reproduction checks when their reruns end, build run reports, and the
beat reconcilers that do both for whatever a lost message or a down broker left undone."""

import datetime as dt
import logging

from celery import shared_task
from django.db.models import F, Max, Q
from django.utils import timezone

logger = logging.getLogger(__name__)

# Reports the reconciler builds per beat tick (newest runs first): a backlog after a long broker
# outage drains over a few ticks instead of one task past its time limit.
REPORT_BATCH = 20
# A run that ended this recently is left to its own build task, which is likely still on its way.
REPORT_GRACE = dt.timedelta(seconds=30)


@shared_task(name="reproducibility.settle_reproduction", time_limit=300, soft_time_limit=240)
def settle_reproduction(reproduction_id: int) -> str:
    from .services import reproduction_settle

    return reproduction_settle(reproduction_id=reproduction_id).verdict


@shared_task(name="reproducibility.settle_pending", time_limit=300, soft_time_limit=240)
def settle_pending() -> int:
    """The reconciler: settle any pending reproduction whose reruns all ended (a lost message
    or a down broker must not leave one pending forever)."""
    from apps.compute.models import FINAL_STATES

    from .models import Reproduction, Verdict
    from .services import reproduction_settle

    settled = 0
    for reproduction in Reproduction.objects.filter(verdict=Verdict.PENDING).prefetch_related("reruns")[:200]:
        if all(r.state in FINAL_STATES for r in reproduction.reruns.all()):
            reproduction_settle(reproduction_id=reproduction.pk)
            settled += 1
    return settled


@shared_task(name="reproducibility.build_run_report", time_limit=120, soft_time_limit=100)
def build_run_report(run_id: int) -> bool:
    """Build (or rebuild) the human report of an ended run."""
    from apps.compute.models import Run, RunKind

    from .models import RunReport
    from .report import build_report

    run = Run.objects.select_related("notebook_version__notebook", "project", "node").filter(pk=run_id).first()
    if run is None or not run.is_final or run.kind != RunKind.NOTEBOOK:  # a grading run has none
        return False
    # update_or_create: building twice (a task and the reconciler) leaves one, current report.
    RunReport.objects.update_or_create(run=run, defaults={"data": build_report(run)})
    return True


@shared_task(name="reproducibility.build_missing_reports", time_limit=300, soft_time_limit=240)
def build_missing_reports() -> int:
    """The reconciler: build the report of every ended run that has none (its task was never
    queued: the broker was down when it ended), or whose report predates a reproduction that
    settled since (the rebuild was lost). At most REPORT_BATCH per call; returns how many."""
    from apps.compute.models import FINAL_STATES, Run, RunKind

    cutoff = timezone.now() - REPORT_GRACE
    ended = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True)
    # Grading runs have no report: their results are the course's (apps.courses).
    missing = Run.objects.filter(ended, state__in=FINAL_STATES, report__isnull=True, kind=RunKind.NOTEBOOK)
    stale = Run.objects.annotate(settled=Max("reproductions__finished_at")).filter(
        report__isnull=False, settled__lt=cutoff, settled__gt=F("report__built_at")
    )
    run_ids = [
        *missing.order_by(F("finished_at").desc(nulls_last=True), "-pk").values_list("pk", flat=True)[:REPORT_BATCH],
        *stale.order_by("-settled").values_list("pk", flat=True)[:REPORT_BATCH],
    ][:REPORT_BATCH]
    built = 0
    for run_id in run_ids:
        try:
            built += build_run_report(run_id)
        except Exception:  # one broken run must not starve the others; it is retried next tick
            logger.exception("Could not build the report of run %s", run_id)
    return built
