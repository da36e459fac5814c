import os

import pytest
from django.conf import settings

from .browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from .fabric import stack  # noqa: F401 - the end-to-end compute stack fixture
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


@pytest.fixture
def browser_page(request):
    """A page in Debian's Chromium driven by Playwright; a screenshot is kept per test."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required under CI=true (scripts/run-tests.sh installs it)")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
            browser.close()
