"""Live project events for browsers (`ws/projects/<slug>/`), authorised through the same
visibility rule as every page: an outsider's socket to a private project is refused exactly as
for a project that does not exist."""

from typing import Any

from channels.db import database_sync_to_async

from apps.core.consumers import NOT_FOUND_CLOSE_CODE, AuthorizedGroupConsumer

from .events import project_group
from .models import Project

__all__ = ["NOT_FOUND_CLOSE_CODE", "ProjectEventsConsumer"]


class ProjectEventsConsumer(AuthorizedGroupConsumer):
    async def group_for_requester(self) -> str | None:
        project_id = await self._visible_project_id(self.scope["url_route"]["kwargs"]["slug"])
        return None if project_id is None else project_group(project_id)

    @database_sync_to_async
    def _visible_project_id(self, slug: str) -> int | None:
        return Project.objects.visible_to(self.scope.get("user")).filter(slug=slug).values_list("pk", flat=True).first()

    async def notebook_version_created(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def dataset_version_created(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
