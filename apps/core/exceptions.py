"""One error shape for the whole API: `{"detail": "...", ...field errors}` with a useful message."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError, RestrictedError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is larger than allowed."
    default_code = "payload_too_large"


class StillReferenced(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Other records still refer to it."
    default_code = "still_referenced"


def _still_referenced(exc: ProtectedError | RestrictedError) -> StillReferenced:
    """A delete that the database's PROTECT/RESTRICT keys refuse: 409, naming what refers to it
    (runs and publications are the record of what was done, and are never deleted with it)."""
    kinds = sorted({str(obj._meta.verbose_name_plural) for obj in exc.args[1]}) if len(exc.args) > 1 else []
    named = f" ({', '.join(kinds)})" if kinds else ""
    return StillReferenced(f"It cannot be deleted: other records still refer to it{named}.")


def api_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an API path that matches no route answers JSON like every other API error;
    site pages keep Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "No such API endpoint (or an id in the path is malformed)."}, status=404)
    return defaults.page_not_found(request, exception)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Service functions raise Django's ValidationError (they are not API-specific): surface it
    # as a 400 with its messages instead of a 500.
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = _still_referenced(exc)
    else:
        from .uploads import REQUEST_LIMIT_ERRORS, request_limit_exception  # uploads imports this module

        if isinstance(exc, REQUEST_LIMIT_ERRORS):  # over DATA_UPLOAD_MAX_NUMBER_FILES and the like
            exc = request_limit_exception(exc)
    response = exception_handler(exc, context)
    # One shape, `{"detail": "..."}`: a bare list of messages (`ValidationError("...")`, a filter
    # form's) and a list under "detail" (Django's ValidationError without fields) become one line.
    if response is not None and isinstance(response.data, list):
        response.data = {"detail": _flat(response.data)}
    elif response is not None and isinstance(response.data, dict) and isinstance(response.data.get("detail"), list):
        response.data = {**response.data, "detail": _flat(response.data["detail"])}
    if response is not None and isinstance(response.data, dict) and "detail" not in response.data:
        # Field errors: add a one-line summary so a script author sees what was wrong at once.
        summary = "; ".join(f"{field}: {_flat(messages)}" for field, messages in response.data.items())
        response.data = {"detail": summary, **response.data}
    return response


def _flat(messages: Any, where: str = "") -> str:
    """Nested field errors as readable text: `authors[1].family_names: This field is required.`"""
    if isinstance(messages, dict):
        parts = [_flat(inner, f"{where}.{key}" if where else str(key)) for key, inner in messages.items()]
        return " ".join(p for p in parts if p)
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            text = " ".join(str(m) for m in messages)
            return f"{where}: {text}" if where else text
        return " ".join(
            _flat(inner, f"{where}[{index}]" if where else f"[{index}]")
            for index, inner in enumerate(messages)
            if inner
        )
    return f"{where}: {messages}" if where else str(messages)
