"""Wake long-polling claims when work may have appeared (a submit, a requeue, a finished
dependency), so an idle agent picks up a run at once instead of at its next poll."""

import asyncio
import contextlib
import logging

from channels.layers import get_channel_layer

from apps.core.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)

QUEUE_GROUP = "compute.queue"
# Even with no signal (a lost message, no channel layer), a waiting claim looks again this often.
FALLBACK_POLL_SECONDS = 2.0


def announce_work() -> None:
    broadcast_on_commit(QUEUE_GROUP, "queue.changed", {})


async def wait_for_work(timeout: float) -> None:
    """Return when work may be available, or after `timeout` (capped by the fallback poll)."""
    timeout = max(0.0, min(timeout, FALLBACK_POLL_SECONDS))
    layer = get_channel_layer()
    if layer is None:
        await asyncio.sleep(timeout)
        return
    try:
        channel = await layer.new_channel()
        await layer.group_add(QUEUE_GROUP, channel)
    except Exception:  # the channel layer is an optimisation here, never a requirement
        logger.debug("Channel layer unavailable; polling", exc_info=True)
        await asyncio.sleep(timeout)
        return
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), timeout=timeout)
    finally:
        with contextlib.suppress(Exception):
            await layer.group_discard(QUEUE_GROUP, channel)
