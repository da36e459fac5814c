import pytest
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.projects.models import Project, Role

from .factories import make_project, make_token, make_user


@pytest.fixture
def api() -> APIClient:
    """An anonymous API client."""
    return APIClient()


@pytest.fixture
def client_for():
    """`client_for(user)` -> an APIClient sending that user's Bearer token (None: anonymous)."""

    def build(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
        return client

    return build


@pytest.fixture
def owner(db) -> User:
    return make_user("olivia")


@pytest.fixture
def outsider(db) -> User:
    return make_user("otto")


@pytest.fixture
def team(db, owner: User) -> dict[str, User | None]:
    """One user per relationship to a project: each role, an outsider and anonymous."""
    return {
        "owner": owner,
        "maintainer": make_user("maya"),
        "member": make_user("mo"),
        "viewer": make_user("vic"),
        "outsider": make_user("oscar"),
        "anonymous": None,
    }


@pytest.fixture
def private_project(team) -> Project:
    return make_project(
        team["owner"],
        slug="secret-lab",
        visibility="private",
        members={team["maintainer"]: Role.MAINTAINER, team["member"]: Role.MEMBER, team["viewer"]: Role.VIEWER},
    )


@pytest.fixture
def public_project(team) -> Project:
    return make_project(
        team["owner"],
        slug="open-lab",
        visibility="public",
        members={team["maintainer"]: Role.MAINTAINER, team["member"]: Role.MEMBER, team["viewer"]: Role.VIEWER},
    )
