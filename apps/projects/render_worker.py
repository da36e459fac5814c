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

import nh3

# Markup a notebook may show: ammonia's safe defaults plus the attributes that notebook HTML
# (markdown headings, pandas tables) relies on for anchors and styling. No event handlers, no
# style, no script, no SVG (it can carry script), and only ammonia's safe URL schemes.
ALLOWED_TAGS = set(nh3.ALLOWED_TAGS) | {"tfoot"}
ALLOWED_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "*": {"class", "id", "title", "lang", "dir"}, "tfoot": {"align"}}


# Globals the page's own scripts read (MathJax's loader and config, require.js). An element with
# such an `id` becomes `window.<id>` (DOM clobbering) and would feed MathJax a hostile config.
RESERVED_IDS = frozenset({"MathJax", "require", "requirejs", "define", "init_mathjax"})


def _drop_clobbering_ids(tag: str, attribute: str, value: str) -> str | None:
    return None if attribute in ("id", "name") and value.strip() in RESERVED_IDS else value


def clean_html(element: object) -> str:
    """Replaces nbconvert's bleach-based `clean_html`, which escapes ordinary markup such as
    headings and paragraphs (it only allows a dozen inline tags) instead of keeping it."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(
        text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_drop_clobbering_ids,
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


def render(notebook_json: str) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.reads(notebook_json, as_version=4)
    defuse(nb)
    # sanitize_html routes markdown, raw cells and HTML/markdown/SVG outputs through
    # `clean_html` and drops JavaScript outputs. Images stay data URIs (embed_images stays off).
    exporter = HTMLExporter(template_name="lab", sanitize_html=True)
    exporter.register_filter("clean_html", clean_html)
    body, _ = exporter.from_notebook_node(nb)
    return body


def main() -> int:
    if len(sys.argv) > 1:
        # Set by the child itself (not preexec_fn, which is unsafe in a threaded web server).
        limit = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.stdout.write(render(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
