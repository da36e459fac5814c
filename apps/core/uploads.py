"""Upload limits and downloads of content-addressed blobs."""

import mimetypes

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults

from .exceptions import PayloadTooLarge

# Multipart framing and the other form fields around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def reject_oversized_body(request: HttpRequest, limit: int) -> None:
    """413 before the body is parsed, when the declared length is already over the limit."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The upload is {human_size(declared)}; the limit is {human_size(limit)}.")


def reject_oversized_file(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"'{name}' is {human_size(size)}; the limit is {human_size(limit)}.")


def blob_response(*, storage_name: str, filename: str, sha256: str, content_type: str | None = None) -> FileResponse:
    """Stream a stored blob as an attachment; its sha256 is the ETag and is sent for checking."""
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = FileResponse(
        default_storage.open(storage_name, "rb"), content_type=content_type, as_attachment=True, filename=filename
    )
    response["ETag"] = f'"{sha256}"'
    response["X-Content-SHA256"] = sha256
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


# Django refuses these while it parses a request body (SuspiciousOperation: a 400 HTML page).
REQUEST_LIMIT_ERRORS = (TooManyFilesSent, TooManyFieldsSent, RequestDataTooBig)


def request_limit_message(exc: Exception) -> str:
    if isinstance(exc, TooManyFilesSent):
        return (
            f"Too many files in one upload: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} "
            "(REPROLAB_DATASET_MAX_FILES). Upload them in several parts; each adds to the dataset's files."
        )
    if isinstance(exc, TooManyFieldsSent):
        return f"Too many form fields: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}."
    return "The request body is larger than allowed."


def request_limit_exception(exc: Exception) -> PayloadTooLarge:
    """For the API's exception handler: the limit as a 413 in the `{"detail": ...}` shape."""
    return PayloadTooLarge(request_limit_message(exc))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400. A body over one of Django's request limits is refused while it is parsed,
    often by the CSRF check before any view runs: the API answers its JSON 413, a page says
    what the limit is and offers the way back. Any other bad request keeps Django's page."""
    if not isinstance(exception, REQUEST_LIMIT_ERRORS):
        return defaults.bad_request(request, exception or Exception())
    message = request_limit_message(exception)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=413)
    context = {"message": message, "back": request.path}
    return render(request, "core/upload_refused.html", context, status=413)
