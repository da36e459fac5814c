from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from .middleware import DATABASE_DOWN_ERRORS, unavailable_response
from .outages import DATABASE


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness and database readiness, for load balancers and tests that wait on a server:
    200 when the database answers, 503 with Retry-After when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DATABASE_DOWN_ERRORS as error:
        DATABASE.failed(error, action="answer the health check")
        return unavailable_response(request)
    DATABASE.succeeded()
    return JsonResponse({"status": "ok"})
