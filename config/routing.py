"""WebSocket routes. Every consumer authorises in `connect()` before joining a group."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from apps.compute.consumers import RunEventsConsumer
from apps.core.consumers import NOT_FOUND_CLOSE_CODE
from apps.projects.consumers import ProjectEventsConsumer


class NoSuchRouteConsumer(AsyncWebsocketConsumer):
    """Any other path (`/ws/runs/None/`): refused with 4404 exactly like a socket to an object
    one may not see. Without it, channels' router raises ValueError and the server logs an error
    with a traceback for each such socket."""

    async def connect(self) -> None:
        await self.close(code=NOT_FOUND_CLOSE_CODE)


websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", ProjectEventsConsumer.as_asgi()),
    path("ws/runs/<id:run_id>/", RunEventsConsumer.as_asgi()),
    re_path(r"", NoSuchRouteConsumer.as_asgi()),  # last: matches every path
]
