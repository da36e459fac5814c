"""Our middleware. Every class here handles both sync and async requests without a thread hop.

Under daphne the request path is async; a single sync-only middleware makes Django run the chain
below it in a worker thread that waits, through async_to_sync, for async views on the event
loop. On SIGTERM daphne stops that loop while a claim long-poll is still waiting, the worker
thread waits forever, and the interpreter, which joins its worker threads at exit, never exits:
the server ignores SIGTERM and keeps its port and sockets (CLOSE-WAIT). Keeping the whole chain
async-capable (WhiteNoise included, through the subclass below) removes that thread."""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponse, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from .outages import DATABASE
from .uploads import MULTIPART_OVERHEAD, human_size

GetResponse = Callable[[HttpRequest], Any]  # returns a response, or an awaitable of one

# What the driver raises when the database is down, restarting or unreachable (psycopg and
# sqlite errors arrive wrapped in these); a programming error (ProgrammingError, IntegrityError)
# is not an outage and stays a 500.
DATABASE_DOWN_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_DETAIL = "The database is unavailable; try again in a few seconds."
UNAVAILABLE_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Temporarily unavailable</title>"
    "<h1>Temporarily unavailable</h1><p>ReproLab cannot reach its database right now. "
    "Nothing you saved is lost; try again in a few seconds.</p></html>"
)


class BothModesMiddleware:
    """Base of a middleware that answers some requests itself (`answer`) and passes the rest
    on, in whichever mode (sync or async) Django calls it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def answer(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self.answer(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = self.answer(request)
        if response is None:
            response = await self.get_response(request)
        return response


class RequestSizeLimitMiddleware(BothModesMiddleware):
    """Answer 413 for a body over the largest upload the site accepts, before anything parses it.

    Runs ahead of the CSRF check, which reads the whole form of a session-authenticated POST;
    each upload view then applies its own, smaller limit. A proxy in front should cap bodies too.
    """

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        self.limit = max(settings.REPROLAB_NOTEBOOK_MAX_BYTES, settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES)

    def answer(self, request: HttpRequest) -> HttpResponse | None:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if declared > self.limit + MULTIPART_OVERHEAD:
            message = (
                f"The request body is {human_size(declared)}; the largest upload accepted is {human_size(self.limit)}."
            )
            return JsonResponse({"detail": message}, status=413)
        return None


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, able to run in async mode (it is sync-only): a static file is served from a
    worker thread (it reads the disk), every other request goes straight on to the async chain."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    def static_file(self, request: HttpRequest) -> Any:
        return self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # development and tests: the lookup scans the disk
            static_file = await sync_to_async(self.static_file, thread_sensitive=False)(request)
        else:
            static_file = self.static_file(request)
        if static_file is None:
            response: Awaitable[HttpResponse] = self.get_response(request)
            return await response
        return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: JSON `{"detail": ...}` for the API and scripts, a short page for browsers."""
    wants_page = not request.path.startswith(("/api/", "/healthz", "/metrics")) and "text/html" in request.headers.get(
        "Accept", ""
    )
    if wants_page:
        response = HttpResponse(UNAVAILABLE_PAGE, status=503, content_type="text/html; charset=utf-8")
    else:
        response = JsonResponse({"detail": UNAVAILABLE_DETAIL}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware(BothModesMiddleware):
    """Answer 503 (with Retry-After) instead of a bare 500 when a view fails because the database
    is down; the outage is logged once, and its end when a connection succeeds again.

    Works through `process_exception`, which Django calls for exceptions raised by views (sync,
    async and DRF's, which re-raise what their exception handler does not know)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_DOWN_ERRORS):
            return None
        DATABASE.failed(exception, action=f"serve {request.method} {request.path}")
        return unavailable_response(request)


def _database_answered(**kwargs: Any) -> None:
    DATABASE.succeeded()  # a new connection opened: if the database was down, it is back


# Connected here because this module is loaded once at startup by every process that serves
# requests (and the receiver is a no-op unless an outage is in progress).
connection_created.connect(_database_answered, dispatch_uid="apps.core.database_answered")
