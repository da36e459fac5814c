"""The site's Content-Security-Policy: strict on every site page (no inline script, no on*
handlers, no style attributes), and never in the way of the stricter policies of the notebook
render documents and the lineage picture, which send their own."""

import hashlib
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from django.conf import settings
from nbformat.v4 import new_code_cell, new_notebook

from apps.compute import services as compute
from apps.compute.models import Run
from apps.projects import rendering
from apps.projects.views import RENDER_CSP
from tests.factories import upload_notebook

TEMPLATES = Path(settings.BASE_DIR) / "templates"
# Served only as a render document, under RENDER_CSP (which allows its inline style).
RENDER_DOCUMENT_TEMPLATES = {"projects/render_failed.html"}
# Script elements that are data, not code (CSP does not apply to them).
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}


def directives(header: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in header.split(";"):
        if part.strip():
            name, *values = part.split()
            found[name] = values
    return found


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def fake_renderer(monkeypatch):
    monkeypatch.setattr(rendering, "_render_in_child", lambda _: "<!doctype html><p>rendered</p>")


@pytest.fixture
def finished_run(private_project) -> Run:
    owner = private_project.created_by
    version = upload_notebook(private_project, owner).version
    run = compute.run_submit(project=private_project, user=owner, notebook_version=version)
    node = compute.node_register(owner=owner, name="csp-node", projects=[private_project]).node
    compute.node_seen(node=node)
    claim = compute.run_claim(node=node)
    assert claim is not None
    output = nbformat.writes(new_notebook(cells=[new_code_cell("1")])).encode()
    compute.run_output_upload(
        run=run, lease_id=claim.lease_id, stream=io.BytesIO(output), sha256=hashlib.sha256(output).hexdigest()
    )
    return compute.run_complete(run=run, lease_id=claim.lease_id, state="succeeded")


# --- site pages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/", "/runs/", "/accounts/login/", "/accounts/signup/", "/api/docs/", "/api/v1/projects/"]
)
def test_site_pages_send_a_strict_csp(db, client, path):
    response = client.get(path)

    policy = directives(response["Content-Security-Policy"])
    assert response.status_code == 200
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no hosts
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


def test_a_members_pages_send_it_too(client, finished_run):
    client.force_login(finished_run.created_by)
    project = finished_run.project
    notebook = finished_run.notebook_version.notebook
    for path in (
        f"/p/{project.slug}/",
        f"/p/{project.slug}/notebooks/{notebook.path}",
        f"/runs/{finished_run.pk}/",
        "/nodes/",
        "/accounts/tokens/",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert directives(response["Content-Security-Policy"])["script-src"] == ["'self'"], path


def test_the_api_docs_page_runs_no_inline_script(client):
    page = client.get("/api/docs/").content.decode()
    script = client.get("/api/docs/?script=")

    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


# --- the render documents keep their own policy -------------------------------------------------------------
def test_notebook_render_keeps_its_sandbox_csp(client, private_project, fake_renderer):
    owner = private_project.created_by
    version = upload_notebook(private_project, owner).version
    client.force_login(owner)

    response = client.get(f"/p/{private_project.slug}/-/render/{version.pk}/")

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == RENDER_CSP


def test_a_failed_render_keeps_its_sandbox_csp(client, private_project, monkeypatch):
    def crash(_: bytes) -> str:
        raise RuntimeError("renderer exited with 1")

    monkeypatch.setattr(rendering, "_render_in_child", crash)
    owner = private_project.created_by
    version = upload_notebook(private_project, owner, source="print('fails')").version
    client.force_login(owner)

    response = client.get(f"/p/{private_project.slug}/-/render/{version.pk}/")

    assert response.status_code == 422
    assert response["Content-Security-Policy"] == RENDER_CSP


def test_run_render_and_lineage_keep_their_own_csp(client, finished_run, fake_renderer):
    client.force_login(finished_run.created_by)

    render = client.get(f"/runs/{finished_run.pk}/render/")
    lineage = client.get(f"/runs/{finished_run.pk}/lineage.svg")

    assert render["Content-Security-Policy"] == RENDER_CSP
    assert "sandbox" in directives(render["Content-Security-Policy"])
    assert directives(lineage["Content-Security-Policy"])["default-src"] == ["'none'"]


# --- templates: nothing inline that the policy would block ---------------------------------------------------
class InlineFinder(HTMLParser):
    """Inline scripts, on* handler attributes, style attributes and <style> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower(): value or "" for name, value in attrs}
        if tag == "script" and "src" not in names and names.get("type", "").lower() not in DATA_SCRIPT_TYPES:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{name}= on <{tag}>" for name in names if name.startswith("on") or name == "style"]
        if any(value.strip().lower().startswith("javascript:") for value in names.values()):
            self.found.append(f"javascript: URL on <{tag}>")


def template_files() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def test_templates_are_found():
    assert len(template_files()) > 20


@pytest.mark.parametrize("template", template_files(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_has_inline_script_handlers_or_styles(template):
    if str(template.relative_to(TEMPLATES)) in RENDER_DOCUMENT_TEMPLATES:
        pytest.skip("a render document, served under its own CSP")
    # Template tags become inert text so the parser sees the markup around them.
    text = re.sub(r"{%.*?%}|{{.*?}}|{#.*?#}", "x", template.read_text(), flags=re.S)
    finder = InlineFinder()
    finder.feed(text)

    assert finder.found == []
