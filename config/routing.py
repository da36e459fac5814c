"""WebSocket routes. Every consumer authorises in `connect()` before joining a group."""

from django.urls import path

from apps.projects.consumers import ProjectEventsConsumer

websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", ProjectEventsConsumer.as_asgi()),
]
