"""A researcher in a real browser (Debian's Chromium driven by Playwright) against daphne:
log in, create a project, upload a notebook, see it rendered in the sandboxed frame."""

import pytest

from apps.projects.models import NotebookVersion
from tests.factories import PASSWORD, make_user, notebook_bytes

from .browser import in_orm_thread, log_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def rita(transactional_db):
    return make_user("rita")


def test_researcher_creates_project_uploads_and_sees_rendered_notebook(rita, live_server_url, browser_page, tmp_path):
    notebook = tmp_path / "growth.ipynb"
    notebook.write_bytes(
        notebook_bytes(
            source="print('growth model')",
            parameters="rate = 0.25\nyears = 10",
            # A hostile payload that must stay inert inside the sandboxed frame.
        ).replace(b"# A test notebook", b"# Growth model <img src=x onerror=alert(1)>")
    )
    page = browser_page

    log_in(page, live_server_url, "rita", PASSWORD)

    page.click("text=New project")
    page.fill("input[name=name]", "Population growth")
    page.fill("input[name=slug]", "growth")
    page.select_option("select[name=visibility]", "private")
    page.click("button:has-text('Create project')")
    page.wait_for_url(f"{live_server_url}/p/growth/")

    page.set_input_files("input[name=file]", str(notebook))
    page.click("form[action$='/-/upload/'] button[type=submit]")
    page.wait_for_url(f"{live_server_url}/p/growth/notebooks/growth.ipynb")

    # Parameters as papermill sees them, with types inferred from the defaults.
    rows = [row.split("\t") for row in page.locator("#parameters tbody tr").all_inner_texts()]
    assert rows == [["rate", "float", "0.25"], ["years", "int", "10"]]

    iframe = page.locator("iframe.notebook-frame")
    sandbox = (iframe.get_attribute("sandbox") or "").split()
    assert "allow-scripts" in sandbox
    assert "allow-same-origin" not in sandbox

    frame = page.frame_locator("iframe.notebook-frame")
    frame.locator("h1:has-text('Growth model')").wait_for()
    assert "growth model" in frame.locator("body").inner_text()
    assert frame.locator("img[onerror]").count() == 0

    # The frame runs in an opaque origin: it can neither read the site's cookies nor its DOM.
    inner = page.frames[1]
    assert inner.evaluate("() => { try { return document.cookie; } catch (e) { return 'blocked'; } }") == "blocked"
    assert (
        inner.evaluate("() => { try { return parent.document.title; } catch (e) { return 'blocked'; } }") == "blocked"
    )

    stored = in_orm_thread(
        lambda: list(
            NotebookVersion.objects.filter(notebook__project__slug="growth").values_list(
                "number", "notebook__project__visibility"
            )
        )
    )
    assert stored == [(1, "private")]
