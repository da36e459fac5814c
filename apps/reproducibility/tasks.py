"""Celery tasks: settle reproduction checks when their reruns end."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


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
    from apps.compute.models import Run

    from .models import RunReport
    from .report import build_report

    run = Run.objects.select_related("notebook_version__notebook", "project", "node").filter(pk=run_id).first()
    if run is None or not run.is_final:
        return False
    RunReport.objects.update_or_create(run=run, defaults={"data": build_report(run)})
    return True
