import pytest

from apps.accounts.models import User

from ..factories import make_user


@pytest.fixture
def alice(db) -> User:
    return make_user("alice")


@pytest.fixture
def bob(db) -> User:
    return make_user("bob")
