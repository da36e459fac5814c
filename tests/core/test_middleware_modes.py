"""The middleware chain stays async under daphne: one sync-only middleware puts a worker thread
between daphne and every async view (the claim long-poll), and that thread, waiting on a loop
daphne stopped, kept the process from exiting on SIGTERM (tests/integration/test_faults.py has
the end-to-end proof). Ours work in both modes, WhiteNoise through our subclass."""

import json

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.utils.module_loading import import_string

from apps.core.middleware import RequestSizeLimitMiddleware


def test_every_middleware_runs_in_async_mode():
    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]

    assert sync_only == []


def test_static_files_are_served_in_sync_mode():
    response = Client().get("/static/js/run.js")

    assert response.status_code == 200
    assert b"".join(response.streaming_content)  # type: ignore[attr-defined]  # a FileResponse; the stubs type the test client's answer as plain


def test_static_files_are_served_in_async_mode():
    response = async_to_sync(AsyncClient().get)("/static/js/run.js")

    assert response.status_code == 200
    assert response.streaming


def test_an_oversized_body_is_refused_in_async_mode():
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("passed on")

    middleware = RequestSizeLimitMiddleware(view)
    limit = middleware.limit
    too_big = RequestFactory().post("/upload/", b"", content_type="application/json", CONTENT_LENGTH=str(limit * 2))
    small = RequestFactory().post("/upload/", b"{}", content_type="application/json")

    assert iscoroutinefunction(middleware)
    refused = async_to_sync(middleware)(too_big)
    assert refused.status_code == 413
    assert "largest upload" in json.loads(refused.content)["detail"]
    assert async_to_sync(middleware)(small).content == b"passed on"
