"""When a run ends, queue its report and the settling of reproduction checks it belongs to.

A broker outage loses nothing: the beat reconcilers (settle_pending, build_missing_reports) find
the work in the database later, and the failed enqueue is logged once per outage."""

from typing import Any

from django.dispatch import receiver

from apps.compute.signals import run_finished
from apps.core.queueing import enqueue

from .services import pending_reproductions_for
from .tasks import build_run_report, settle_reproduction


@receiver(run_finished)
def queue_reproduction_settling(sender: Any, run_id: int, **kwargs: Any) -> None:
    for reproduction_id in pending_reproductions_for(run_id):
        enqueue(settle_reproduction, reproduction_id)


@receiver(run_finished)
def queue_run_report(sender: Any, run_id: int, **kwargs: Any) -> None:
    enqueue(build_run_report, run_id)
