"""Render one notebook to sanitized HTML: notebook JSON on stdin, HTML on stdout. The optional
argument caps the process's address space in bytes.

Run as a child process (`python -m apps.projects.render_worker`) so the parent can kill it when
it runs too long and cap its memory: a pathological notebook must never hang a web worker.
Deliberately free of Django.
"""

import html
import re
import resource
import sys
from typing import Any

import nbformat
import nh3
from jinja2 import pass_context
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

# Markup a notebook may show: ammonia's safe defaults plus the attributes that notebook HTML
# (markdown headings, pandas tables) relies on for anchors and styling. No event handlers, no
# style, no script, no SVG (it can carry script), and only ammonia's safe URL schemes plus
# `data:`, which `_filter_attribute` narrows to raster images in `<img src>`.
ALLOWED_TAGS = set(nh3.ALLOWED_TAGS) | {"tfoot"}
ALLOWED_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "*": {"class", "id", "title", "lang", "dir"}, "tfoot": {"align"}}
URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"data"}

# Images pasted into markdown cells (cell attachments) and inline images arrive as data URLs.
# Only raster types may pass: an SVG document can carry script and an HTML one is a page.
RASTER_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_RASTER_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|gif|webp));base64,[A-Za-z0-9+/]*={0,2}")
# Browsers skip leading spaces and control characters and drop tabs and newlines anywhere in a
# URL (`da\ta:` is `data:`): all of them are removed before looking at the scheme.
_URL_NOISE = re.compile(r"[\x00-\x20]+")
# Attributes a browser loads or follows as URLs (nh3 keeps only some of them; all are checked).
URL_ATTRIBUTES = frozenset(
    {"href", "src", "srcset", "cite", "action", "formaction", "data", "ping", "poster", "longdesc", "background"}
)


# Globals the page's own scripts read (MathJax's loader and config, require.js). An element with
# such an `id` becomes `window.<id>` (DOM clobbering) and would feed MathJax a hostile config.
RESERVED_IDS = frozenset({"MathJax", "require", "requirejs", "define", "init_mathjax"})


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Drop ids that clobber the page's globals, and every `data:` URL but a raster image's
    `<img src>` (nh3 calls this before it checks the URL scheme, with the raw value)."""
    if attribute in ("id", "name") and value.strip() in RESERVED_IDS:
        return None
    url = _URL_NOISE.sub("", value) if attribute in URL_ATTRIBUTES else ""
    if url[:5].lower() == "data:":
        if tag == "img" and attribute == "src" and _RASTER_DATA_URL.fullmatch(url):
            return url
        return None
    return value


def clean_html(element: object) -> str:
    """Replaces nbconvert's bleach-based `clean_html`, which escapes ordinary markup such as
    headings and paragraphs (it only allows a dozen inline tags) instead of keeping it."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(
        text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes=URL_SCHEMES,
        clean_content_tags={"script", "style", "iframe", "object", "embed", "svg", "math", "template"},
        link_rel="noopener noreferrer nofollow",
    )


# An image size nbconvert may print into its *unquoted* `width=`/`height=` attributes.
_DIMENSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?%?")


def defuse(nb: Any) -> None:
    """Close the spots where nbconvert's lab template puts notebook data into the page without
    `clean_html`: image `width`/`height` metadata lands in unquoted attributes (`1 onerror=…`
    becomes an event handler), `filenames` metadata becomes an `<img src>` (we never extract
    outputs, so it can only point somewhere hostile), and `text/vnd.mermaid` output is inserted
    raw (the page reads diagrams back through `textContent`, so escaping keeps them working).
    Widget state is dropped: the template renders it unsanitized through a manager loaded from a
    CDN that serves arbitrary packages, so a rendered page shows widgets as their text fallback."""
    metadata = nb.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("widgets", None)
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            metadata = output.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("filenames", None)
                for scope in (metadata, *(v for v in metadata.values() if isinstance(v, dict))):
                    for key in ("width", "height"):
                        value = scope.get(key)
                        if value is not None and (isinstance(value, bool) or not _DIMENSION.fullmatch(str(value))):
                            del scope[key]
            data = output.get("data")
            if isinstance(data, dict) and "text/vnd.mermaid" in data:
                data["text/vnd.mermaid"] = html.escape(str(data["text/vnd.mermaid"]))


ATTACHMENT_PREFIX = "attachment:"
# Shown where a markdown cell refers to an attachment the notebook lacks (or has only in a type we
# do not show): the rest of the notebook renders. Styled by PLACEHOLDER_STYLE, added to the head.
PLACEHOLDER_CLASS = "reprolab-missing-attachment"
PLACEHOLDER_STYLE = (
    f"<style>.{PLACEHOLDER_CLASS}{{display:inline-block;padding:.2em .5em;border:1px dashed #b45309;"
    "border-radius:4px;background:#fffbeb;color:#92400e;font-size:.9em}</style>"
)


class AttachmentRenderer(IPythonRenderer):
    """nbconvert's markdown renderer, but attachments become raster data URLs only (nbconvert
    prefers SVG, which the sanitizer drops), and a missing one becomes a visible placeholder
    instead of failing the whole notebook (nbconvert raises InvalidNotebook)."""

    def attachment_url(self, name: str) -> str | None:
        bundle = self.attachments.get(name) if isinstance(self.attachments, dict) else None
        if not isinstance(bundle, dict):
            return None
        for mime_type in RASTER_IMAGE_TYPES:
            data = bundle.get(mime_type)
            if isinstance(data, list):  # nbformat allows multiline strings here
                data = "".join(str(part) for part in data)
            if isinstance(data, str):
                return f"data:{mime_type};base64,{_URL_NOISE.sub('', data)}"
        return None

    def image(self, text: str, url: str, title: str | None = None) -> str:
        if not url.startswith(ATTACHMENT_PREFIX):
            return str(super().image(text, url, title))
        name = url[len(ATTACHMENT_PREFIX) :]
        data_url = self.attachment_url(name)
        if data_url is None:
            bundle = self.attachments.get(name) if isinstance(self.attachments, dict) else None
            why = "is not in this notebook" if not bundle else "is not a PNG, JPEG, GIF or WebP image"
            label = html.escape(f"Image not shown: attachment “{name}” {why}", quote=True)
            return f'<span class="{PLACEHOLDER_CLASS}" title="{label}">{label}</span>'
        return str(super(IPythonRenderer, self).image(text, data_url, title))


class SafeHTMLExporter(HTMLExporter):
    """The lab template with our markdown renderer; `clean_html` is ours too (see render)."""

    @pass_context
    def markdown2html(self, context: Any, source: str) -> str:
        cell = context.get("cell", {})
        renderer = AttachmentRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=False,
            path="",
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options,
        )
        return str(MarkdownWithMath(renderer=renderer).render(source))


def render(notebook_json: str) -> str:
    nb = nbformat.reads(notebook_json, as_version=4)
    defuse(nb)
    # sanitize_html routes markdown, raw cells and HTML/markdown/SVG outputs through
    # `clean_html` and drops JavaScript outputs. Images stay data URIs (embed_images stays off).
    exporter = SafeHTMLExporter(template_name="lab", sanitize_html=True)
    exporter.register_filter("clean_html", clean_html)
    body, _ = exporter.from_notebook_node(nb)
    if PLACEHOLDER_CLASS in body:
        body = body.replace("</head>", PLACEHOLDER_STYLE + "</head>", 1)
    return str(body)


def main() -> int:
    if len(sys.argv) > 1:
        # Set by the child itself (not preexec_fn, which is unsafe in a threaded web server).
        limit = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.stdout.write(render(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
