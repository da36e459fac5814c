"""Live project events for browsers (`ws/projects/<slug>/`).

Authorisation happens in `connect()` before the group is joined, through the same visibility
rule as every page: an outsider's socket to a private project is closed with code 4404, exactly
as for a project that does not exist."""

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .events import project_group
from .models import Project

NOT_FOUND_CLOSE_CODE = 4404


class ProjectEventsConsumer(AsyncJsonWebsocketConsumer):
    group_name: str | None = None

    async def connect(self) -> None:
        project_id = await self._visible_project_id(self.scope["url_route"]["kwargs"]["slug"])
        if project_id is None:
            await self.close(code=NOT_FOUND_CLOSE_CODE)
            return
        self.group_name = project_group(project_id)
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group_name is not None:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    @database_sync_to_async
    def _visible_project_id(self, slug: str) -> int | None:
        return Project.objects.visible_to(self.scope.get("user")).filter(slug=slug).values_list("pk", flat=True).first()

    async def notebook_version_created(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def dataset_version_created(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
