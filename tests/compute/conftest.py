"""Fixtures of the compute tests: a registered node and an agent client with its token."""

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.compute import services


@pytest.fixture
def registered(owner: User) -> services.RegisteredNode:
    return services.node_register(owner=owner, name="box", max_concurrency=2)


@pytest.fixture
def agent(registered: services.RegisteredNode) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {registered.token}")
    return client
