"""Small helpers shared by the apps' API views."""

from typing import Any

from rest_framework.serializers import BaseSerializer


def validated(serializer_class: type[BaseSerializer], data: Any) -> dict[str, Any]:
    """Validate request data with a serializer; a 400 with field messages when it is invalid."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
