"""Live project events over Channels. Notifications only: the database is the record, and a
lost message (Redis down, a full channel) costs a browser one refresh, never data."""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def broadcast_on_commit(project_id: int, event_type: str, payload: dict[str, Any]) -> None:
    """Send `{"type": event_type, ...payload}` to the project's group once the transaction commits."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(project_group(project_id), {"type": event_type, **payload})
        except Exception:  # the channel layer is best-effort; never fail the request over it
            logger.warning("Could not broadcast %s for project %s", event_type, project_id, exc_info=True)

    transaction.on_commit(send)
