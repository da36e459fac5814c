"""Live project events over WebSocket (`ws/projects/<slug>/`), through the real ASGI application:
origin check, session authentication, the project visibility rule, and events after commit.

Each test runs its async part in one event loop (`run`), with a channel layer instance of its own:
a Redis layer refuses to receive on two loops, and a private prefix keeps concurrent runs apart."""

import copy
import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from apps.accounts.models import User
from apps.projects import services
from apps.projects.models import Project
from config.asgi import application

from ..factories import make_project, notebook_file

pytestmark = pytest.mark.django_db(transaction=True)

SITE_ORIGIN = b"http://127.0.0.1"
TIMEOUT = 5  # seconds to wait for a handshake or an event before failing
IN_MEMORY_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def fresh_channel_layer(settings):
    """The configured channel layer (Redis under run-tests.sh), as a new instance for this test."""
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    if "CONFIG" in layers["default"]:
        layers["default"]["CONFIG"]["prefix"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = layers  # also drops the cached layer instance


@pytest.fixture
def session_for(client) -> Callable[[User | None], str | None]:
    """`session_for(user)` -> the session id of a logged-in browser (None: anonymous)."""

    def build(user: User | None) -> str | None:
        if user is None:
            return None
        client.force_login(user)
        return client.cookies[django_settings.SESSION_COOKIE_NAME].value

    return build


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async scenario to completion in one event loop, then release the layer's connections."""

    async def in_loop() -> Any:
        try:
            return await scenario()
        finally:
            layer = get_channel_layer()
            if hasattr(layer, "close_pools"):
                await layer.close_pools()

    return async_to_sync(in_loop)()


def communicator_for(
    slug: str, session: str | None = None, origin: bytes | None = SITE_ORIGIN
) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    if session is not None:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode()))
    return WebsocketCommunicator(application, f"/ws/projects/{slug}/", headers=headers)


def handshake(slug: str, session: str | None = None, origin: bytes | None = SITE_ORIGIN) -> tuple[bool, int | None]:
    """Open and close a socket; returns (connected, close code when refused)."""

    async def scenario() -> tuple[bool, int | None]:
        communicator = communicator_for(slug, session, origin)
        connected, detail = await communicator.connect(timeout=TIMEOUT)
        await communicator.disconnect()
        return connected, None if connected else detail

    return run(scenario)


def upload_notebook(project: Project, user: User, path: str = "analysis.ipynb") -> services.NotebookUpload:
    return services.notebook_upload(project=project, path=path, content=notebook_file(), uploader=user)


# --- who may connect ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["owner", "maintainer", "member", "viewer"])
def test_project_member_connects_to_private_project(private_project, team, session_for, role):
    connected, _ = handshake(private_project.slug, session_for(team[role]))

    assert connected


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_non_member_is_refused_like_a_missing_project(private_project, team, session_for, who):
    session = session_for(team[who])

    outcome = handshake(private_project.slug, session)

    assert outcome[0] is False
    assert outcome == handshake("no-such-project", session)


def test_missing_project_is_refused(owner, session_for):
    connected, _ = handshake("no-such-project", session_for(owner))

    assert not connected


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_anyone_connects_to_public_project(public_project, team, session_for, who):
    connected, _ = handshake(public_project.slug, session_for(team[who]))

    assert connected


def test_foreign_origin_is_refused(private_project, team, session_for):
    connected, _ = handshake(private_project.slug, session_for(team["member"]), origin=b"https://evil.example")

    assert not connected


def test_missing_origin_is_refused(private_project, team, session_for):
    connected, _ = handshake(private_project.slug, session_for(team["member"]), origin=None)

    assert not connected


# --- events ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["configured", "in-memory"])
def test_member_receives_notebook_version_created_after_upload(private_project, team, session_for, settings, layer):
    if layer == "in-memory":
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYERS
    elif not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set: the configured layer is the in-memory one")
    member = team["member"]
    session = session_for(member)

    async def scenario() -> tuple[dict, services.NotebookUpload]:
        communicator = communicator_for(private_project.slug, session)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        try:
            upload = await database_sync_to_async(upload_notebook)(private_project, member)
            return await communicator.receive_json_from(timeout=TIMEOUT), upload
        finally:
            await communicator.disconnect()

    event, upload = run(scenario)

    assert event == {
        "type": "notebook.version_created",
        "notebook_id": upload.notebook.pk,
        "path": "analysis.ipynb",
        "version": 1,
        "sha256": upload.version.sha256,
    }


def test_second_upload_announces_the_next_version(private_project, team, session_for):
    member = team["member"]
    upload_notebook(private_project, member)
    session = session_for(member)

    async def scenario() -> dict:
        communicator = communicator_for(private_project.slug, session)
        await communicator.connect(timeout=TIMEOUT)
        try:
            content = notebook_file(source="print('changed')")
            await database_sync_to_async(services.notebook_upload)(
                project=private_project, path="analysis.ipynb", content=content, uploader=member
            )
            return await communicator.receive_json_from(timeout=TIMEOUT)
        finally:
            await communicator.disconnect()

    event = run(scenario)

    assert (event["type"], event["path"], event["version"]) == ("notebook.version_created", "analysis.ipynb", 2)


def test_events_of_other_projects_are_not_delivered(private_project, team, session_for):
    member = team["member"]
    other = make_project(member, slug="other-lab")
    session = session_for(member)

    async def scenario() -> dict:
        communicator = communicator_for(private_project.slug, session)
        await communicator.connect(timeout=TIMEOUT)
        try:
            # The other project's event is sent first; the first event to arrive must be ours.
            await database_sync_to_async(upload_notebook)(other, member, "elsewhere.ipynb")
            await database_sync_to_async(upload_notebook)(private_project, member, "ours.ipynb")
            return await communicator.receive_json_from(timeout=TIMEOUT)
        finally:
            await communicator.disconnect()

    event = run(scenario)

    assert event["path"] == "ours.ipynb"


def test_member_receives_dataset_version_created_after_upload(private_project, team, session_for):
    member = team["member"]
    dataset = services.dataset_create(project=private_project, name="measurements", creator=member)
    session = session_for(member)

    def add_file() -> None:
        incoming = services.IncomingFile(path="data/values.csv", content=io.BytesIO(b"x,y\n1,2\n"))
        services.dataset_add_files(dataset=dataset, files=[incoming], uploader=member)

    async def scenario() -> dict:
        communicator = communicator_for(private_project.slug, session)
        await communicator.connect(timeout=TIMEOUT)
        try:
            await database_sync_to_async(add_file)()
            return await communicator.receive_json_from(timeout=TIMEOUT)
        finally:
            await communicator.disconnect()

    event = run(scenario)

    assert event == {"type": "dataset.version_created", "dataset": "measurements", "version": 1, "file_count": 1}
