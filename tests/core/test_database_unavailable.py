"""With the database unreachable, the health check, the API and pages answer 503 with
Retry-After (JSON `{"detail": ...}` for the API, a short page for browsers), never a bare 500;
the outage is logged once, and its end. The connection is pointed at a closed port (or, on
SQLite, a path that cannot exist) and put back afterwards, so the real database returns."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from apps.core.consumers import TRY_AGAIN_LATER_CLOSE_CODE
from config.asgi import application  # at import: django.setup() there reconfigures logging (caplog)
from tests.integration.servers import free_port


@pytest.fixture
def unreachable(django_db_blocker):
    """`with unreachable():` -> the default database cannot be reached inside the block."""

    @contextmanager
    def block() -> Iterator[None]:
        saved = dict(connection.settings_dict)
        connection.close()
        if connection.vendor == "sqlite":
            connection.settings_dict["NAME"] = "/nonexistent/reprolab/db.sqlite3"
        else:
            connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))  # nothing listens there
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)

    with django_db_blocker.unblock():
        yield block


def test_the_health_check_answers_503_with_retry_after(unreachable):
    with unreachable():
        response = Client().get("/healthz")

    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    assert "database is unavailable" in response.json()["detail"]


def test_the_api_answers_503_json_with_retry_after(unreachable):
    with unreachable():
        response = Client(HTTP_ACCEPT="application/json").get("/api/v1/projects/")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"].isdigit()
    assert set(response.json()) == {"detail"}


def test_the_api_answers_json_even_to_a_browser(unreachable):
    with unreachable():
        response = Client(HTTP_ACCEPT="text/html,*/*").get("/api/v1/projects/")

    assert response.status_code == 503
    assert response.json()["detail"]


def test_a_page_answers_a_short_503_page(unreachable):
    with unreachable():
        response = Client(HTTP_ACCEPT="text/html,application/xhtml+xml").get("/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"].isdigit()
    assert b"Temporarily unavailable" in response.content


def test_the_outage_is_logged_once_and_the_database_comes_back(transactional_db, unreachable, caplog):
    with unreachable():
        statuses = [Client().get(path).status_code for path in ["/healthz", "/api/v1/projects/", "/healthz"] * 5]
    outage = [r.getMessage() for r in caplog.records if r.name == "apps.core.outages"]
    caplog.clear()

    assert statuses == [503] * 15
    assert len(outage) == 1
    assert outage[0].startswith("Database unavailable")

    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    back = [r.getMessage() for r in caplog.records if r.name == "apps.core.outages" and r.levelno >= logging.WARNING]
    assert len(back) == 1
    assert back[0].startswith("Database back")


def test_a_websocket_handshake_during_the_outage_is_closed_for_a_retry_not_a_500(unreachable, caplog):
    """The session lookup runs in channels' AuthMiddleware, before any consumer: its database
    error must still end as a clean close the client retries, logged once."""

    async def handshake() -> tuple[bool, object]:
        communicator = WebsocketCommunicator(
            application,
            "/ws/runs/1/",
            headers=[
                (b"host", b"127.0.0.1"),
                (b"origin", b"http://127.0.0.1"),
                (b"cookie", b"sessionid=0123456789abcdefghijklmnopqrstuv"),  # any key: the lookup queries
            ],
        )
        connected, code = await communicator.connect(timeout=5)
        await communicator.wait(timeout=5)  # the application ended; it did not raise
        return connected, code

    with unreachable():
        results = [async_to_sync(handshake)() for _ in range(3)]

    assert results == [(False, TRY_AGAIN_LATER_CLOSE_CODE)] * 3
    outage = [r.getMessage() for r in caplog.records if r.name == "apps.core.outages"]
    assert len(outage) == 1
    assert "session" in outage[0]
