from typing import Any

from django.core.exceptions import PermissionDenied

from .models import User


def authenticated_user(request: Any) -> User:
    """The requester as a User, for code behind a login requirement (narrows the type too)."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("Log in first.")
    return user
