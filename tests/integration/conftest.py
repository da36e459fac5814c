import pytest
from django.conf import settings

from .servers import daphne_server


@pytest.fixture
def live_server_url(transactional_db):
    """A real daphne process serving the site against the test database."""
    with daphne_server() as url:
        yield url


@pytest.fixture
def require_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL); run-tests.sh requires it under CI=true")
