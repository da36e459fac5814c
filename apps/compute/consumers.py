"""Live run progress (`ws/runs/<id>/`), authorised through the run's project: an outsider's
socket to a private project's run is refused exactly like one to a missing run. Messages are
notifications; a client that reconnects resumes from its last seq over REST
(`GET /api/v1/runs/<id>/events/?after=SEQ`)."""

from typing import Any

from channels.db import database_sync_to_async

from apps.core.consumers import AuthorizedGroupConsumer

from .selectors import runs_visible_to
from .services import run_group


class RunEventsConsumer(AuthorizedGroupConsumer):
    async def group_for_requester(self) -> str | None:
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        return run_group(run_id) if await self._visible(run_id) else None

    async def _visible(self, run_id: int) -> bool:
        # On the database thread, like every other read: a read on a pool thread of its own was
        # faster under a burst of handshakes, but saw a different connection from the request's
        # (and so not the test database's open transaction).
        return await database_sync_to_async(self._visible_sync)(run_id)

    def _visible_sync(self, run_id: int) -> bool:
        return runs_visible_to(self.scope.get("user")).filter(pk=run_id).exists()

    async def run_event(self, event: dict[str, Any]) -> None:
        await self.send_json({k: v for k, v in event.items() if k != "type"})
