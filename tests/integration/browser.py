"""Shared pieces of the browser tests: Debian's Chromium and ORM access beside Playwright."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.db import connection

CHROMIUM = "/usr/bin/chromium"
# Quiet, offline-friendly flags: this machine has no network beyond the package registries.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


def in_orm_thread(query):
    """Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls:
    run a query in a worker thread (with its own connection, closed afterwards)."""

    def run():
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Log in through the login form, as a person would."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
