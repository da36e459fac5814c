from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from .outages import DATABASE
from .uploads import MULTIPART_OVERHEAD, human_size

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


class RequestSizeLimitMiddleware:
    """Answer 413 for a body over the largest upload the site accepts, before anything parses it.

    Runs ahead of the CSRF check, which reads the whole form of a session-authenticated POST;
    each upload view then applies its own, smaller limit. A proxy in front should cap bodies too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.limit = max(settings.REPROLAB_NOTEBOOK_MAX_BYTES, settings.REPROLAB_DATASET_UPLOAD_MAX_BYTES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if declared > self.limit + MULTIPART_OVERHEAD:
            message = (
                f"The request body is {human_size(declared)}; the largest upload accepted is {human_size(self.limit)}."
            )
            return JsonResponse({"detail": message}, status=413)
        return self.get_response(request)


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


class DatabaseUnavailableMiddleware:
    """Answer 503 (with Retry-After) instead of a bare 500 when a view fails because the database
    is down; the outage is logged once, and its end when a request reaches the database again.

    Works through `process_exception`, which Django calls for exceptions raised by views (sync,
    async and DRF's, which re-raise what their exception handler does not know)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if DATABASE.down and response.status_code < 500 and connection.connection is not None:
            DATABASE.succeeded()  # this request opened a connection and did not fail
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_DOWN_ERRORS):
            return None
        DATABASE.failed(exception, action=f"serve {request.method} {request.path}")
        return unavailable_response(request)
