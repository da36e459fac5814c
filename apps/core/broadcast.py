"""Live notifications over Channels. Notifications only: the database is the record, and a lost
message (Redis down, a full channel) costs a viewer one refresh or REST resync, never data."""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def broadcast_on_commit(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Send `{"type": event_type, ...payload}` to a group once the transaction commits."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, {"type": event_type, **payload})
        except Exception:  # the channel layer is best-effort; never fail the request over it
            logger.warning("Could not broadcast %s to %s", event_type, group, exc_info=True)

    transaction.on_commit(send)
