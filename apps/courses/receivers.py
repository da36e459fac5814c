"""When a grading run ends, record its grades (and settle its submission). A failure here loses
nothing: the beat reconciler (courses.reconcile_grading) records it later."""

import logging
from typing import Any

from django.dispatch import receiver

from apps.compute.signals import run_finished

from .grading import record_grading

logger = logging.getLogger(__name__)


@receiver(run_finished)
def record_finished_grading(sender: Any, run_id: int, **kwargs: Any) -> None:
    try:
        record_grading(run_id)
    except Exception:
        logger.exception("could not record grading run %s; the reconciler will", run_id)
