"""WebSocket routes. Every consumer authorises in `connect()` before joining a group."""

from django.urls import path

from apps.compute.consumers import RunEventsConsumer
from apps.projects.consumers import ProjectEventsConsumer

websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", ProjectEventsConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunEventsConsumer.as_asgi()),
]
