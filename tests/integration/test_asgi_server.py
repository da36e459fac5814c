"""The real ASGI server (daphne) serves HTTP and WebSocket, with the same privacy rules."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets
from django.db import connection

from tests.factories import make_project, make_user, upload_notebook

pytestmark = pytest.mark.integration


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_daphne_serves_pages_api_and_hides_private_projects(live_server_url):
    owner = make_user()
    make_project(owner, slug="open", visibility="public")
    make_project(owner, slug="hidden", visibility="private")

    assert _status(f"{live_server_url}/p/open/") == 200
    assert _status(f"{live_server_url}/p/hidden/") == 404
    assert _status(f"{live_server_url}/api/v1/projects/hidden/") == 404
    with urllib.request.urlopen(f"{live_server_url}/api/v1/projects/", timeout=5) as response:
        slugs = [p["slug"] for p in json.load(response)["results"]]
    assert slugs == ["open"]


def _upload_in_thread(project, owner) -> None:
    try:
        upload_notebook(project, owner, "live.ipynb")
    finally:
        connection.close()  # this thread's own connection; left open it blocks the test DB's teardown


def test_daphne_streams_project_events_over_websocket(require_redis, live_server_url):
    owner = make_user()
    project = make_project(owner, slug="live", visibility="public")
    ws_url = live_server_url.replace("http://", "ws://") + "/ws/projects/live/"

    async def listen() -> dict:
        async with websockets.connect(ws_url, origin=live_server_url) as socket:
            # The upload happens while the socket is subscribed; the event arrives through the
            # channel layer (Redis when REDIS_URL is set).
            await asyncio.to_thread(_upload_in_thread, project, owner)
            return json.loads(await asyncio.wait_for(socket.recv(), timeout=10))

    event = asyncio.run(listen())
    assert event["type"] == "notebook.version_created"
    assert event["path"] == "live.ipynb"
    assert event["version"] == 1


def test_daphne_refuses_websocket_to_private_project(live_server_url):
    owner = make_user()
    make_project(owner, slug="closed", visibility="private")
    ws_url = live_server_url.replace("http://", "ws://") + "/ws/projects/closed/"

    async def connect() -> None:
        async with websockets.connect(ws_url, origin=live_server_url):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as rejected:
        asyncio.run(connect())
    assert rejected.value.response.status_code == 403
