"""Live notifications over Channels. Notifications only: the database is the record, and a lost
message (Redis down, a full channel) costs a viewer one refresh or REST resync, never data."""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .channel_layers import LAYER_ERRORS
from .outages import CHANNEL_LAYER

logger = logging.getLogger(__name__)


def broadcast(group: str, event_type: str, payload: dict[str, Any]) -> bool:
    """Send `{"type": event_type, ...payload}` to a group now; False when the layer failed (logged
    once per outage through CHANNEL_LAYER, not a traceback per message)."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, {"type": event_type, **payload})
    except LAYER_ERRORS as error:  # Redis down or saturated: best-effort, never fail the request
        CHANNEL_LAYER.failed(error, action=f"broadcast {event_type} to {group}")
        return False
    except Exception:  # a bug (say, a payload the layer cannot serialize): still never fail the request
        logger.exception("Could not broadcast %s to %s", event_type, group)
        return False
    CHANNEL_LAYER.succeeded()
    return True


def broadcast_on_commit(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Broadcast once the transaction commits (nothing if it rolls back)."""
    transaction.on_commit(lambda: broadcast(group, event_type, payload))
