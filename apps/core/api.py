"""Small helpers shared by the apps' API views."""

from typing import Any

from rest_framework import serializers
from rest_framework.serializers import BaseSerializer

from .inputs import JSONTooDeep, check_json_depth, json_problem, without_nul


def validated(serializer_class: type[BaseSerializer], data: Any) -> dict[str, Any]:
    """Validate request data with a serializer; a 400 with field messages when it is invalid."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class BoundedJSONField(serializers.JSONField):
    """A JSONField whose value can be stored: nested at most `inputs.MAX_JSON_DEPTH` levels (a
    form-encoded value is a JSON string that DRF decodes here, where a very deep one raised
    RecursionError) and without NUL characters, which PostgreSQL's jsonb refuses. With
    `replace_nul`, NULs become U+FFFD instead of refusing the value (text a notebook printed)."""

    def __init__(self, *, replace_nul: bool = False, **kwargs: Any) -> None:
        self.replace_nul = replace_nul
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        try:
            value = check_json_depth(super().to_internal_value(data))
        except (RecursionError, JSONTooDeep):
            raise serializers.ValidationError(str(JSONTooDeep())) from None
        if self.replace_nul:
            value = without_nul(value)
        problem = json_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value
