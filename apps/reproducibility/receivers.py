"""When a run ends, queue its report and the settling of reproduction checks it belongs to."""

import logging
from typing import Any

from django.dispatch import receiver

from apps.compute.signals import run_finished

from .services import pending_reproductions_for
from .tasks import build_run_report, settle_reproduction

logger = logging.getLogger(__name__)


@receiver(run_finished)
def queue_reproduction_settling(sender: Any, run_id: int, **kwargs: Any) -> None:
    for reproduction_id in pending_reproductions_for(run_id):
        try:
            settle_reproduction.delay(reproduction_id)
        except Exception:  # the beat reconciler (settle_pending) picks it up later
            logger.warning("Could not queue settling reproduction %s", reproduction_id, exc_info=True)


@receiver(run_finished)
def queue_run_report(sender: Any, run_id: int, **kwargs: Any) -> None:
    try:
        build_run_report.delay(run_id)
    except Exception:  # the report page offers to build it again
        logger.warning("Could not queue the report of run %s", run_id, exc_info=True)
