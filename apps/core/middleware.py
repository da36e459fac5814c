from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from .uploads import MULTIPART_OVERHEAD, human_size


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
