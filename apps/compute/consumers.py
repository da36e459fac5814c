"""Live run progress (`ws/runs/<id>/`). Authorised in `connect()` through the run's project:
an outsider's socket to a private project's run is refused exactly like one to a missing run.
Messages are notifications; a client that reconnects resumes from its last seq over REST
(`GET /api/v1/runs/<id>/events/?after=SEQ`)."""

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .selectors import runs_visible_to
from .services import run_group

NOT_FOUND_CLOSE_CODE = 4404


class RunEventsConsumer(AsyncJsonWebsocketConsumer):
    group_name: str | None = None

    async def connect(self) -> None:
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        if not await self._visible(run_id):
            await self.close(code=NOT_FOUND_CLOSE_CODE)
            return
        self.group_name = run_group(run_id)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group_name is not None:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    @database_sync_to_async
    def _visible(self, run_id: int) -> bool:
        return runs_visible_to(self.scope.get("user")).filter(pk=run_id).exists()

    async def run_event(self, event: dict[str, Any]) -> None:
        await self.send_json({k: v for k, v in event.items() if k != "type"})
