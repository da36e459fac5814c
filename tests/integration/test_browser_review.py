"""The reviewer's path in a real browser (Debian's Chromium driven by Playwright) against the real
stack: accept the invitation, comment on a cell, rerun on one's own node, see the verdict land,
submit a recommendation."""

import re

import pytest

from apps.compute import services as compute
from apps.projects.permissions import get_project_for
from apps.review import services
from apps.review.models import Review
from tests.factories import PASSWORD, make_user, upload_notebook

from .browser import in_orm_thread, log_in
from .fabric import FINAL, wait_for_state
from .servers import agent_process, stopping, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_reviewer_accepts_comments_reruns_and_recommends(stack, browser_page, tmp_path):
    def prepare():
        """A single-blind-free (open) publication in review, its reviewer invited, and a node
        of the reviewer's own (ORM work runs beside Playwright's loop, in its own thread)."""
        owner = stack.user
        notebook = upload_notebook(stack.project, owner, "engine.ipynb", source="print('answer', 6 * 7)").notebook
        run = wait_for_state(stack.submit(notebook), FINAL)
        assert run.state == "succeeded"
        assert notebook.latest_version is not None
        version = services.publication_create(
            project=get_project_for(owner, stack.project.slug),
            user=owner,
            notebook_version=notebook.latest_version,
            run=run,
            metadata=services.clean_metadata(
                title="The <answer> engine", authors=[{"given_names": "Ada", "family_names": "Lovelace"}], license="MIT"
            ),
        )
        reviewer = make_user("rhea")
        review = services.review_invite(publication=version.publication, inviter=owner, who="rhea")
        return version, review, compute.node_register(owner=reviewer, name="rhea-laptop")

    version, review, node = in_orm_thread(prepare)
    page = browser_page
    base = stack.url

    log_in(page, base, "rhea", PASSWORD)

    page.goto(f"{base}/reviews/")
    page.click(f"#my-reviews a[href='/reviews/{review.pk}/']")
    page.wait_for_url(re.compile(rf".*/reviews/{review.pk}/$"))
    page.click("#respond button[value=accept]")
    page.locator("#review-state", has_text="Accepted").wait_for()

    # Comment on the code cell that prints the answer.
    cell = page.locator(".review-cell", has_text="print('answer', 6 * 7)")
    cell.locator("summary", has_text="Comment on this cell").click()
    cell.locator("textarea[name=body]").fill("Why <b>42</b>? Please seed everything.")
    cell.locator("button", has_text="Comment").click()
    thread = page.locator(".review-cell", has_text="print('answer', 6 * 7)").locator(".thread")
    thread.wait_for()
    assert "Why <b>42</b>? Please seed everything." in thread.locator(".comment-body").inner_text()
    assert page.locator(".comment-body b").count() == 0  # the comment is text, not markup

    # Rerun with the reviewer's tolerances, on the reviewer's own node.
    with stopping(agent_process(base, node.token, tmp_path / "rhea", name="rhea-browser-agent")):
        page.fill("#rerun-form input[name=rtol]", "1e-6")
        page.click("#rerun-form button[type=submit]")
        page.locator(".message", has_text="Rerun started").wait_for()
        wait_until(
            lambda: in_orm_thread(
                lambda: not Review.objects.get(pk=review.pk).reproductions.filter(verdict="pending").exists()
            ),
            timeout=120,
            what="the rerun's verdict",
        )
    page.reload()
    rerun = page.locator("#reruns .rerun").first
    assert rerun.locator(".verdict").inner_text() == "reproduced"
    assert "rtol 1e-06" in rerun.inner_text()

    page.select_option("#submit-form select[name=recommendation]", "minor_revision")
    page.fill("#submit-form textarea[name=summary]", "Reproduced on my laptop; seed the RNG.")
    page.click("#submit-form button[type=submit]")
    page.locator("#review-state", has_text="Submitted").wait_for()
    assert "Reproduced on my laptop" in page.locator("#summary").inner_text()

    # The landing page (the reviewer may see it while it is in review) carries the badge.
    page.goto(f"{base}/pub/{version.publication_id}/v1")
    assert page.locator("#pub-title").inner_text() == "The <answer> engine"
    assert "Reproduced" in page.locator("#repro-badge").inner_text()
    frame = page.locator("iframe.notebook-frame")
    assert "allow-same-origin" not in (frame.get_attribute("sandbox") or "")

    saved = in_orm_thread(lambda: Review.objects.get(pk=review.pk))
    assert (saved.state, saved.recommendation) == ("submitted", "minor_revision")
