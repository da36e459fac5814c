"""The OpenAPI schema's error answers: one error shape for the whole API, and the error codes
each operation can give, documented so clients (and the schemathesis test) can rely on them.

Every error is `{"detail": "what is wrong", ...}` (apps.core.exceptions); a 400 for invalid
fields adds one key per field beside the summary. `AutoSchema` adds the errors any operation
of its kind can answer (401 for a wrong credential, 400 where it reads input, 403 where it
writes, 404 where it names an object or a page); views add what is particular to them with
`errors(409)`, `errors(413)`, `errors(429)` in their `extend_schema(responses=...)`. Error
answers declared without a body (or as a free-form `dict`) are documented in the shared shape."""

from http import HTTPStatus
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERROR_DESCRIPTIONS = {
    400: "Invalid input: the summary in `detail`, and one key per invalid field.",
    401: "No credential where one is needed, or a wrong, expired or revoked one.",
    403: "Authenticated, but not allowed (your role in the project, or a token for another run).",
    404: "No such object, or not one you may see.",
    409: "The lease is not the current one (the run was requeued or ended): stop working on it.",
    413: "The upload is larger than allowed.",
    415: "The body's media type is not one this operation reads.",
    429: "Too many requests: wait and retry.",
    503: "The database is unreachable for now: retry after the Retry-After seconds.",
}


class ErrorSerializer(serializers.Serializer):
    """An error: `detail` says what is wrong; a 400 adds one key per invalid field."""

    detail = serializers.CharField(help_text="What is wrong, in a sentence.")


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """`responses={201: Thing, **errors(404, 409)}`: these error answers, documented."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS.get(code) or HTTPStatus(code).phrase)
        for code in codes
    }


UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers every operation of a kind gives."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses: dict[str, Any] = operation.setdefault("responses", {})
        for code in self._common_error_codes(operation):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(errors(code)[code], str(code))
        for status, response in responses.items():
            if status >= "400" and self._says_nothing_about_its_body(response):
                # Declared as `dict` or with a description only: it is still the one error shape.
                shaped = self._get_response_for_code(errors(int(status))[int(status)], status)
                responses[status] = {**shaped, "description": response.get("description") or shaped["description"]}
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    @staticmethod
    def _says_nothing_about_its_body(response: dict[str, Any]) -> bool:
        schemas = [media.get("schema", {}) for media in response.get("content", {}).values()]
        free_form = {"type": "object", "additionalProperties": {}}
        return not schemas or all(schema in ({}, free_form) for schema in schemas)

    def _common_error_codes(self, operation: dict[str, Any]) -> set[int]:
        parameters = operation.get("parameters", [])
        # Any credential can be wrong or revoked, and anonymous writes need one; any request can
        # meet a database outage (apps.core.middleware answers 503 with Retry-After).
        codes = {401, 503}
        if "requestBody" in operation or any(p["in"] in ("query", "header") for p in parameters):
            codes.add(400)
        if self.method in UNSAFE_METHODS:
            codes.update({400, 403})  # a malformed body; a role too low for the change
        if "requestBody" in operation:
            codes.add(415)
        if any(p["in"] == "path" for p in parameters) or self._is_paginated():
            codes.add(404)  # a path names an object; a page number may be past the end
        return codes

    def _is_paginated(self) -> bool:
        return self.method == "GET" and self._is_list_view() and self._get_paginator() is not None
