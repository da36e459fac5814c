"""Fixtures of the compute tests: a project with a notebook version, a registered node and an
agent client with its token."""

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services
from apps.projects.models import NotebookVersion, Project

from ..factories import make_project, upload_notebook


@pytest.fixture
def project(owner: User) -> Project:
    return make_project(owner, slug="lab")


@pytest.fixture
def version(project: Project, owner: User) -> NotebookVersion:
    # Declares alpha = 0.5 (float) and steps = 10 (int).
    return upload_notebook(project, owner).version


@pytest.fixture
def registered(owner: User) -> services.RegisteredNode:
    return services.node_register(owner=owner, name="box", max_concurrency=2)


@pytest.fixture
def agent(registered: services.RegisteredNode) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {registered.token}")
    return client
