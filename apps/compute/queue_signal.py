"""Wake long-polling claims when work may have appeared (a submit, a requeue, a finished
dependency), so an idle agent picks up a run at once instead of at its next poll.

The channel layer is an optimisation here, never a requirement: when it is missing, down, or
drops while a claim waits, the claim falls back to looking at the database every
OUTAGE_POLL_SECONDS and answers as usual."""

import asyncio
import contextlib
import time

from channels.layers import get_channel_layer

from apps.core.broadcast import broadcast_on_commit
from apps.core.channel_layers import LAYER_ERRORS
from apps.core.outages import CHANNEL_LAYER

QUEUE_GROUP = "compute.queue"
# Even with no signal (a lost message), a waiting claim looks again this often.
FALLBACK_POLL_SECONDS = 2.0
# Without a working channel layer nothing wakes a claim: look at the database more often.
OUTAGE_POLL_SECONDS = 1.0
# Leaving the group must not hold a claim (or a shutting-down server) on a dead Redis.
DISCARD_TIMEOUT_SECONDS = 1.0


def announce_work() -> None:
    broadcast_on_commit(QUEUE_GROUP, "queue.changed", {})


async def wait_for_work(timeout: float) -> None:
    """Return when work may be available, or after `timeout` (capped by the fallback poll)."""
    timeout = min(timeout, FALLBACK_POLL_SECONDS)
    if timeout <= 0:
        return
    layer = get_channel_layer()
    if layer is None:
        await asyncio.sleep(timeout)
        return
    started = time.monotonic()
    try:
        channel = await layer.new_channel()
        await asyncio.wait_for(layer.group_add(QUEUE_GROUP, channel), timeout=timeout)
    except LAYER_ERRORS as error:  # down, or too slow to join (asyncio's TimeoutError is an OSError)
        CHANNEL_LAYER.failed(error, action="wake waiting claims")
        await _poll_interval(started, timeout)
        return
    CHANNEL_LAYER.succeeded()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), timeout=timeout - (time.monotonic() - started))
    except LAYER_ERRORS as error:  # Redis dropped while we waited: poll the database instead
        CHANNEL_LAYER.failed(error, action="wake waiting claims")
        await _poll_interval(started, timeout)
    finally:
        with contextlib.suppress(*LAYER_ERRORS):
            await asyncio.wait_for(layer.group_discard(QUEUE_GROUP, channel), timeout=DISCARD_TIMEOUT_SECONDS)


async def _poll_interval(started: float, timeout: float) -> None:
    """Sleep out the rest of a short database-poll interval that began at `started`."""
    await asyncio.sleep(max(0.0, min(timeout, OUTAGE_POLL_SECONDS) - (time.monotonic() - started)))
