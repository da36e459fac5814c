"""The site's CSP in a real browser: Debian's Chromium (Playwright) against daphne visits the main
pages, signed in and not, and no page of the site reports a Content-Security-Policy violation
(a policy that blocked the site's own scripts, styles, images or sockets would)."""

from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from apps.projects.models import Role
from apps.reproducibility.diff import fingerprint
from apps.reproducibility.models import EnvironmentSnapshot
from apps.reproducibility.tasks import build_run_report
from tests.factories import PASSWORD, make_project, make_user
from tests.integration.browser import in_orm_thread, log_in
from tests.integration.conftest import browser_page, live_server_url  # noqa: F401 - fixtures
from tests.review.conftest import publish

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Installed in every frame before the page's own scripts: what the browser blocked, and where.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""

# An environment snapshot shaped as the agent captures it.
ENVIRONMENT = {
    "python": {"version": "3.11.9", "implementation": "CPython", "executable": "/home/cspella/.venv/bin/python3"},
    "packages": {"numpy": "1.26.4", "papermill": "2.6.0"},
    "os": {"system": "Linux", "release": "6.8.0", "version": "#1 SMP", "machine": "x86_64", "libc": "glibc 2.39"},
    "cpu": {"model": "AMD EPYC 9654", "count": 8, "count_total": 16},
    "memory_mb": 65536,
    "gpus": [],
    "cuda": {},
    "kernel": {"name": "python3", "argv": ["/home/cspella/.venv/bin/python3", "-m", "ipykernel_launcher"]},
    "env": {"LANG": "C.UTF-8"},
    "inputs": [{"role": "notebook", "path": "analysis.ipynb", "sha256": "0" * 64, "size": 1}],
    "agent_version": "0.4.0",
}


@pytest.fixture
def lab(transactional_db) -> dict[str, Any]:
    def build() -> dict[str, Any]:
        owner = make_user("cspella")
        project = make_project(
            owner, slug="csp-lab", visibility="public", members={make_user("cspviewer"): Role.VIEWER}
        )
        version = publish(project, owner, submit_for_review=False)
        EnvironmentSnapshot.objects.create(
            run_id=version.run_id, attempt=1, data=ENVIRONMENT, fingerprint=fingerprint(ENVIRONMENT)
        )
        build_run_report(version.run_id)
        return {"project": project.slug, "path": version.notebook_version.notebook.path, "run": version.run_id,
                "pub": version.publication_id}  # fmt: skip

    return in_orm_thread(build)


def violations(page: Any) -> dict[str, list[str]]:
    """What each frame recorded, once the tasks queued so far (the violation events) have run."""
    found: dict[str, list[str]] = {}
    for frame in page.frames:
        try:
            recorded = frame.evaluate("() => new Promise((done) => setTimeout(() => done(window.__csp || []), 0))")
        except PlaywrightError:  # a frame that navigated away meanwhile has nothing to report
            recorded = []
        if recorded:
            found[frame.url] = recorded
    return found


def test_main_pages_report_no_csp_violation(lab, live_server_url, browser_page):  # noqa: F811 - fixtures
    page = browser_page
    page.add_init_script(RECORD_VIOLATIONS)
    console = []
    page.on("console", lambda message: console.append(message.text))
    base = live_server_url
    site_violations: dict[str, Any] = {}
    render_violations: dict[str, Any] = {}

    def visit(path: str, ready: str) -> None:
        response = page.goto(f"{base}{path}")
        assert response is not None
        assert response.status == 200, path
        page.wait_for_selector(ready, state="attached")
        for url, found in violations(page).items():
            (render_violations if "/render" in url else site_violations)[f"{path} ({url})"] = found

    for path, ready in [
        ("/accounts/login/", "input[name=username]"),
        ("/accounts/signup/", "input[name=username]"),
        ("/", "main"),
        (f"/pub/{lab['pub']}/v1", "#repro-badge"),
        ("/api/docs/", ".swagger-ui .info"),  # Swagger UI drawn from the schema: its scripts ran
    ]:
        visit(path, ready)
    log_in(page, base, "cspella", PASSWORD)
    for path, ready in [
        ("/", "main"),
        (f"/p/{lab['project']}/", "#live-status"),
        (f"/p/{lab['project']}/notebooks/{lab['path']}", "iframe.notebook-frame"),
        ("/runs/", "table.runs"),
        ("/runs/?state=succeeded", "table.runs"),
        (f"/runs/{lab['run']}/", "#cells[data-socket]"),  # run.js ran and opened its WebSocket
        (f"/runs/{lab['run']}/report/", "#checklist"),
        (f"/runs/{lab['run']}/environment/", "main"),
        ("/nodes/", "main"),
        ("/nodes/new/", "input[name=name]"),
        ("/accounts/tokens/", "main"),
        ("/reviews/", "main"),
        ("/notifications/", "main"),
        ("/api/docs/", ".swagger-ui .info"),
    ]:
        visit(path, ready)

    # The run page shows the executed notebook rendered, beside the cells (here, under the CSP).
    page.goto(f"{base}/runs/{lab['run']}/")
    page.frame_locator("#executed-frame").locator("body", has_text="42").wait_for()
    assert violations(page) == {}

    blocked = [text for text in console if "Content Security Policy" in text and "/render" not in text]
    assert site_violations == {}
    assert blocked == []
    # The render documents run under their own sandbox policy; it is reported, not the site's.
    print("render documents' own CSP reports:", render_violations)
