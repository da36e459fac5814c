"""When a run ends, queue the settling of reproduction checks it belongs to (nothing else)."""

import logging
from typing import Any

from django.dispatch import receiver

from apps.compute.signals import run_finished

from .services import pending_reproductions_for
from .tasks import settle_reproduction

logger = logging.getLogger(__name__)


@receiver(run_finished)
def queue_reproduction_settling(sender: Any, run_id: int, **kwargs: Any) -> None:
    for reproduction_id in pending_reproductions_for(run_id):
        try:
            settle_reproduction.delay(reproduction_id)
        except Exception:  # the beat reconciler (settle_pending) picks it up later
            logger.warning("Could not queue settling reproduction %s", reproduction_id, exc_info=True)
